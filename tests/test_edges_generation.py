"""Beam sampling (do_sample with num_beams > 1) against transformers' generate: the same tokens from the same seed
over a grid of num_beams, top_k, top_p and temperature, and the same number of candidates drawn at each step."""
import itertools

import pytest
import torch

from minibart import BartForConditionalGeneration

transformers = pytest.importorskip("transformers")

# test_bart_generate's random tiny model: its EOS comes at varied steps, so that sampled candidates end (and must be
# replaced by open ones) at many steps: the candidate count decides which beams stay open.
from test_bart_generate import CONFIG, EOS, PAD, V  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(transformers' model, ours) with the same random weights."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("beam_sampling")
    transformers.BartForConditionalGeneration(transformers.BartConfig(**CONFIG)).save_pretrained(folder)
    return (transformers.BartForConditionalGeneration.from_pretrained(folder).eval(),
            BartForConditionalGeneration.from_pretrained(folder).eval())


def sources(seed: int, lengths=(7, 5, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, PAD), mask


def generate_both(models, seed: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """(transformers' tokens, ours), each drawn after torch.manual_seed(seed)."""
    hf, ours = models
    ids, mask = sources(seed)
    torch.manual_seed(seed)
    want = hf.generate(ids, attention_mask=mask, do_sample=True, max_length=12, **kw)
    torch.manual_seed(seed)
    got = ours.generate(ids, mask, do_sample=True, max_length=12, **kw)
    return want, got


# top_k 1 and top_p 0.02 leave a single token, where beams keep two (transformers' min_tokens_to_keep); top_k 0
# and top_p 1.0 filter nothing
GRID = list(itertools.product((2, 3, 5), (0, 1, 4), (1.0, 0.6, 0.02)))


@pytest.mark.parametrize("num_beams,top_k,top_p", GRID)
def test_beam_sampling_draws_transformers_tokens(models, num_beams, top_k, top_p):
    """Seeded beam sampling returns transformers' token ids, with 1 to num_beams sequences per source and two
    temperatures."""
    i = GRID.index((num_beams, top_k, top_p))
    kw = dict(num_beams=num_beams, top_k=top_k, top_p=top_p, temperature=(1.0, 0.7)[i % 2],
              num_return_sequences=min(num_beams, 1 + i % 3))
    want, got = generate_both(models, seed=i, **kw)
    assert got.shape == want.shape and torch.equal(got, want), f"{kw}\ntransformers:\n{want}\nours:\n{got}"


def test_the_grid_ends_beams_early(models):
    """Guards the grid: sampled beams end with EOS before max_length at some steps and not at others."""
    torch.manual_seed(0)
    out = models[1].generate(*sources(0), do_sample=True, num_beams=3, num_return_sequences=3, max_length=12)
    ends = [row.index(EOS) if EOS in row else None for row in out[:, 1:].tolist()]
    assert None in ends and any(e is not None and e < 10 for e in ends)


@pytest.mark.parametrize("num_beams,top_k,top_p", [(2, 0, 1.0), (3, 1, 1.0), (4, 4, 0.6), (5, 0, 0.02)])
def test_each_step_draws_transformers_number_of_candidates(models, monkeypatch, num_beams, top_k, top_p):
    """Every step samples 2 x num_beams candidates per source (transformers' max(2, 1 + EOS ids) x num_beams, so
    that num_beams stay open when some end) from the same probabilities' shape as transformers does."""
    draws = []
    multinomial = torch.multinomial

    def counted(probs, num_samples, *args, **kwargs):
        draws[-1].append((tuple(probs.shape), num_samples))
        return multinomial(probs, num_samples, *args, **kwargs)
    monkeypatch.setattr(torch, "multinomial", counted)
    hf, ours = models
    ids, mask = sources(1)
    kw = dict(do_sample=True, num_beams=num_beams, top_k=top_k, top_p=top_p, max_length=12)
    for generate in (lambda: hf.generate(ids, attention_mask=mask, **kw), lambda: ours.generate(ids, mask, **kw)):
        draws.append([])
        torch.manual_seed(1)
        generate()
    want, got = draws
    assert got == want and got, f"transformers: {want}\nours: {got}"
    assert {n for _, n in got} == {2 * num_beams} and {shape for shape, _ in got} == {(len(ids), num_beams * V)}
