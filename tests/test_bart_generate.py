"""minibart.generation against transformers' generate: same token ids for the same weights and arguments."""
import math
import types

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minibart import BartConfig, BartForConditionalGeneration
from minibart.generation import GREEDY_TEMPERATURE, check_generation_args, generate
from minicore.errors import UserError
from minicore.validation import InvalidValue

transformers = pytest.importorskip("transformers")

# Random tiny models repeat a few tokens; EOS is one they emit at varied steps (and sometimes never),
# so beams finish at different times and the finishing logic is exercised (test_finishing_logic...).
V, EOS, PAD = 60, 46, 1
CONFIG = dict(vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
              decoder_attention_heads=4, encoder_ffn_dim=24, decoder_ffn_dim=40, max_position_embeddings=40,
              init_std=0.3, eos_token_id=EOS, forced_eos_token_id=None, dropout=0.0)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random HF checkpoint."""
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(transformers.BartConfig(**CONFIG))
    folder = tmp_path_factory.mktemp("gen")
    hf.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(hf_dir):
    """(HF's model, ours) with the same weights."""
    return (transformers.BartForConditionalGeneration.from_pretrained(hf_dir).eval(),
            BartForConditionalGeneration.from_pretrained(hf_dir).eval())


def batch(lengths=(7, 5, 3, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, PAD), mask


def assert_same(models, ids, mask, seed=None, **kw):
    hf, ours = models
    if seed is not None:
        torch.manual_seed(seed)
    want = hf.generate(ids, attention_mask=mask, **kw)
    if seed is not None:
        torch.manual_seed(seed)
    got = ours.generate(ids, mask, **kw)
    assert got.shape == want.shape and torch.equal(got, want), f"{kw}\nHF:\n{want}\nours:\n{got}"
    return got


GRID = [(b, lp, n, es) for b in (1, 3, 5) for lp in (0.6, 1.0, 2.0) for n in (0, 2, 3) for es in (True, False)
        if b > 1 or (lp == 1.0 and es is False)]  # length_penalty and early_stopping only matter with beams


@pytest.mark.parametrize("num_beams,length_penalty,no_repeat_ngram_size,early_stopping", GRID)
def test_greedy_and_beam_match_transformers(models, num_beams, length_penalty, no_repeat_ngram_size, early_stopping):
    """Token-identical to HF over the grid; min_length, num_return_sequences, forced BOS/EOS vary with it."""
    i = GRID.index((num_beams, length_penalty, no_repeat_ngram_size, early_stopping))
    kw = dict(num_beams=num_beams, length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
              early_stopping=early_stopping, max_length=14, min_length=(0, 5)[i % 2],
              num_return_sequences=min(num_beams, 1 + i % 3))
    if i % 3 == 0:
        kw.update(forced_bos_token_id=5, forced_eos_token_id=EOS)
    out = assert_same(models, *batch(seed=i), **kw)
    assert (out[:, 0] == models[1].config.decoder_start_token_id).all()


def test_finishing_logic_is_exercised(models):
    """The fixture's model ends some beams early and others at max_length (else the grid proves little)."""
    out = models[1].generate(*batch(), num_beams=3, max_length=14)
    ends = [row.index(EOS) if EOS in row else None for row in out[:, 1:].tolist()]
    assert any(e is None for e in ends) and any(e is not None and 0 < e < 12 for e in ends)


@pytest.mark.parametrize("kw", [
    dict(), dict(max_new_tokens=6), dict(num_beams=4, early_stopping="never", length_penalty=-0.5),
    dict(num_beams=3, early_stopping="never", length_penalty=2.0),
    dict(num_beams=5, early_stopping="never", no_repeat_ngram_size=2, num_return_sequences=3),
    dict(num_beams=2, max_new_tokens=3), dict(num_beams=3, min_length=13, max_length=14)])
def test_defaults_and_lengths_match_transformers(models, kw):
    """Default lengths (20 new tokens), max_new_tokens, 'never' stopping, min_length up to max_length."""
    assert_same(models, *batch(lengths=(9, 2)), **kw)


@pytest.mark.parametrize("kw", [
    dict(encoder_no_repeat_ngram_size=1), dict(encoder_no_repeat_ngram_size=2, num_beams=3, num_return_sequences=2),
    dict(encoder_no_repeat_ngram_size=3, no_repeat_ngram_size=2, num_beams=4, min_length=6),
    dict(encoder_no_repeat_ngram_size=12, num_beams=2)])  # longer than some sources: no ban for those
def test_encoder_no_repeat_ngram_matches_transformers(models, kw):
    """encoder_no_repeat_ngram_size: HF's tokens, and no n-gram of the source in any output. The sources
    are the model's own unconstrained outputs, so the constraint must change what it generates."""
    free = models[1].generate(*batch(), max_length=14)[:, 1:]
    mask = (free != PAD).long()
    ids = free.masked_fill(mask == 0, PAD)
    out = assert_same(models, ids, mask, max_length=14, **kw)
    n, copies = kw["encoder_no_repeat_ngram_size"], kw.get("num_return_sequences", 1)
    changed = False
    for row, seq in enumerate(out.tolist()):
        source = ids[row // copies][mask[row // copies].bool()].tolist()
        grams = {tuple(source[i:i + n]) for i in range(len(source) - n + 1)}
        assert not grams & {tuple(seq[i:i + n]) for i in range(1, len(seq) - n + 1)}
        changed |= seq[1:len(source) + 1] != source
    assert changed


def test_encoder_no_repeat_ngram_stops_a_copying_model():
    """A model that copies its source (logits = one-hot of the source token at the same position)
    copies it with no constraint and cannot with encoder_no_repeat_ngram_size=2."""
    src = torch.tensor([[5, 6, 7, 8, 9, EOS]])

    class Copier:
        config = BartConfig(**CONFIG)

        def encode(self, ids, mask=None):
            return torch.zeros(ids.size(0), ids.size(1), 16)

        def new_cache(self, memory, mask, max_len, copies=1):
            return types.SimpleNamespace(kv=memory, t=0)  # what DecodeStep reads: the device

        def decode(self, ids, cache):
            cache.t += 1
            logits = torch.zeros(ids.size(0), 1, V)
            logits[:, 0, src[0, min(cache.t - 1, src.size(1) - 1)]] = 10.0
            return logits

    copier = Copier()
    assert generate(copier, src, max_length=8)[0, 1:].tolist() == src[0].tolist()
    out = generate(copier, src, max_length=8, encoder_no_repeat_ngram_size=2)[0, 1:].tolist()
    assert not {tuple(out[i:i + 2]) for i in range(len(out) - 1)} & {(5, 6), (6, 7), (7, 8), (8, 9), (9, EOS)}


def test_pad_id_0_fills_finished_beams_like_transformers(hf_dir, models):
    """With pad_token_id 0, transformers fills finished beams with EOS (`pad or eos`); so do we."""
    ours = BartForConditionalGeneration.from_pretrained(hf_dir, pad_token_id=0).eval()
    ids, mask = batch()
    want = models[0].generate(ids, attention_mask=mask, num_beams=3, num_return_sequences=3, max_length=14,
                              pad_token_id=0)
    got = ours.generate(ids, mask, num_beams=3, num_return_sequences=3, max_length=14)
    assert torch.equal(got, want) and not (got == 0).any() and (got[:, -1] == EOS).any()


def test_batch_without_padding_and_single_example(models):
    assert_same(models, *batch(lengths=(5, 5, 5)), num_beams=3)
    assert_same(models, *batch(lengths=(4,)), num_beams=5, num_return_sequences=5)
    ids, _ = batch(lengths=(6, 6))
    assert_same(models, ids, None, num_beams=2)


def test_generation_defaults_come_from_the_config(hf_dir, tmp_path):
    """num_beams etc. saved in generation_config.json drive both HF's and our generate."""
    ours = BartForConditionalGeneration.from_pretrained(hf_dir, num_beams=3, no_repeat_ngram_size=2, max_length=11,
                                                        min_length=4, forced_eos_token_id=EOS, length_penalty=2.0)
    ours.save_pretrained(tmp_path)
    hf = transformers.BartForConditionalGeneration.from_pretrained(tmp_path)
    assert_same((hf.eval(), ours.eval()), *batch())


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**16), B=st.integers(1, 3), K=st.integers(1, 5), V=st.integers(2, 40),
       banned=st.floats(0.0, 0.9))
def test_two_stage_candidates_equal_one_top_k_over_all_continuations(seed, B, K, V, banned):
    """select_candidates (a top-2K per beam, then over the survivors) returns a top-2K over all K*V
    continuations, as transformers' single top-k does, with banned (-inf) tokens and placeholder beams."""
    from minibart.generation import select_candidates

    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(B, K, V, generator=g).log_softmax(-1)
    log_probs[torch.rand(B, K, V, generator=g) < banned] = -torch.inf
    beam_scores = torch.randn(B, K, generator=g) * 3
    beam_scores[:, 1:][torch.rand(B, K - 1, generator=g) < 0.3] = -1e9  # placeholder beams, as at the first step
    n = 2 * K
    top, origin, token = select_candidates(log_probs, beam_scores, n, do_sample=False)
    total = log_probs + beam_scores[:, :, None]
    assert torch.equal(top, total.view(B, K * V).topk(n)[0])  # the n best scores, best first
    rows = torch.arange(B)[:, None]
    assert torch.equal(total[rows, origin, token], top)  # each candidate has its score
    flat = origin * V + token
    assert all(len(set(row)) == n for row in flat.tolist())  # n distinct continuations (ties: any of them)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(0, 12), p=st.floats(0.01, 1.0), keep=st.integers(1, 3),
       n=st.integers(1, 4), length=st.integers(1, 8))
@example(seed=0, k=1, p=0.01, keep=2, n=2, length=6)
def test_logits_processors_match_transformers(seed, k, p, keep, n, length):
    """Each processor gives HF's processor's scores (ties, min_tokens_to_keep, short sequences included)."""
    from transformers.generation import logits_process as lp

    from minibart.generation import encoder_no_repeat_ngram, min_length, no_repeat_ngram, top_k_filter, top_p_filter

    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(3, 12, generator=g).round(decimals=1)  # rounding makes ties
    ids = torch.randint(0, 4, (3, length), generator=g)
    if k > 0:
        assert torch.equal(top_k_filter(scores, k, keep), lp.TopKLogitsWarper(k, min_tokens_to_keep=keep)(ids, scores))
    assert torch.equal(top_p_filter(scores, p, keep), lp.TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores))
    assert torch.equal(no_repeat_ngram(ids, scores, n), lp.NoRepeatNGramLogitsProcessor(n)(ids, scores))
    source = torch.randint(0, 4, (3, 6), generator=g)
    assert torch.equal(encoder_no_repeat_ngram(ids, scores, source.unfold(1, n, 1)),
                       lp.EncoderNoRepeatNGramLogitsProcessor(n, source)(ids, scores))
    assert torch.equal(min_length(ids, scores, 5, 2), lp.MinLengthLogitsProcessor(5, 2)(ids, scores))


@pytest.mark.parametrize("kw", [
    dict(), dict(top_k=5, temperature=0.7), dict(top_p=0.8, num_return_sequences=3),
    dict(num_beams=3, top_k=10), dict(num_beams=4, top_p=0.9, num_return_sequences=2, length_penalty=2.0)])
def test_sampling_matches_transformers_with_the_same_seed(models, kw):
    """Sampling and beam sampling draw the same tokens as HF from the same seed (same logits bit for bit)."""
    assert_same(models, *batch(), seed=1, do_sample=True, max_length=12, **kw)


def test_sampling_is_reproducible_and_top_k_1_is_greedy(models):
    ours = models[1]
    ids, mask = batch()
    torch.manual_seed(3)
    a = ours.generate(ids, mask, do_sample=True, max_length=12, num_return_sequences=2)
    torch.manual_seed(3)
    b = ours.generate(ids, mask, do_sample=True, max_length=12, num_return_sequences=2)
    assert torch.equal(a, b)
    assert torch.equal(ours.generate(ids, mask, do_sample=True, top_k=1, max_length=12),
                       ours.generate(ids, mask, max_length=12))


@settings(max_examples=8, deadline=None)
@given(top_k=st.integers(1, 8), top_p=st.floats(0.05, 1.0), temperature=st.floats(0.3, 2.0),
       seed=st.integers(0, 2**16))
def test_samples_stay_in_the_top_k_top_p_support(models, top_k, top_p, temperature, seed):
    """Every sampled token is among the top_k most likely, and the tokens more likely than it hold < top_p."""
    ours = models[1]
    ids, mask = batch(seed=seed)
    torch.manual_seed(seed)
    out = ours.generate(ids, mask, do_sample=True, top_k=top_k, top_p=top_p, temperature=temperature, max_length=10)
    with torch.no_grad():
        logits = ours(ids, mask, out[:, :-1]) / temperature  # teacher-forced: the logits each token was drawn from
    for b, t in torch.nonzero(torch.ones(out[:, 1:].shape)).tolist():
        if EOS in out[b, 1:t + 1].tolist():
            continue  # finished: padding, not a sample
        token, row = out[b, t + 1], logits[b, t]
        better = row > row[token]
        assert better.sum() < top_k
        probs = row.masked_fill(row < row.topk(top_k)[0][-1], -torch.inf).softmax(-1)  # after top-k
        assert probs[better].sum() < top_p + 1e-5


@pytest.mark.parametrize("kw,name", [
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(do_sample=True, top_p=0.0), "top_p"), (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, top_k=-1), "top_k"), (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(max_length=1), "max_length"), (dict(max_new_tokens=0), "max_new_tokens"), (dict(num_beams=0), "num_beams"),
    (dict(early_stopping="sometimes"), "early_stopping"), (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(encoder_no_repeat_ngram_size=1.5), "encoder_no_repeat_ngram_size"),
    (dict(min_length=-2), "min_length"), (dict(forced_bos_token_id=V), "forced_bos_token_id"),
    (dict(num_beam=3), "num_beam"), (dict(attention_mask=torch.ones(2, 3)), "attention_mask"),
    (dict(cuda_graph=True), "cuda_graph"),
    (dict(length_penalty=math.nan), "length_penalty"), (dict(length_penalty=-math.inf), "length_penalty"),
    (dict(num_beams=2, length_penalty="2"), "length_penalty"),
    (dict(do_sample=True, temperature=math.inf), "temperature"),
    (dict(do_sample=True, temperature=math.nan), "temperature"), (dict(do_sample=True, top_p=math.nan), "top_p"),
    (dict(do_sample="yes"), "do_sample"), (dict(num_beams=2.0), "num_beams"), (dict(top_k=True), "top_k"),
    (dict(max_length=CONFIG["max_position_embeddings"] + 2), "max_length"),
    (dict(max_new_tokens=CONFIG["max_position_embeddings"] + 1), "max_new_tokens"),
    (dict(decoder_start_token_id=-1), "decoder_start_token_id")])
def test_bad_arguments_name_the_argument(models, kw, name):
    """Each bad argument is a UserError (a ValueError) naming it, raised before the model runs."""
    ids, mask = batch()
    kw = {"attention_mask": mask, **kw}
    with pytest.raises(UserError, match=rf"\({name}\b"):
        models[1].generate(ids, **kw)


def test_max_length_up_to_the_decoder_positions_is_fine(models):
    """The decoder reads max_length - 1 tokens: max_length = positions + 1 is the longest, and the error says so."""
    P = CONFIG["max_position_embeddings"]
    assert models[1].generate(*batch(), max_length=P + 1, min_length=P + 1).shape[1] == P + 1
    with pytest.raises(UserError, match=rf"\(max_length, {P + 2}\): use at most {P + 1}: the decoder has {P} "):
        models[1].generate(*batch(), max_length=P + 2)


def long_ids(n):
    return torch.full((1, n), 5)


@pytest.mark.parametrize("ids,mask,message", [
    (torch.tensor([[5, V, 6]]), None, rf"token id outside the vocabulary \(input_ids, {V}\): use ids in \[0, {V}\)"),
    (torch.tensor([[5, -1, 6]]), None, r"token id outside the vocabulary \(input_ids, -1\)"),
    (torch.tensor([[5.0, 6.0]]), None, r"not a batch of token ids \(input_ids, 'torch.float32 \(1, 2\)'\)"),
    (torch.tensor([5, 6]), None, r"not a batch of token ids \(input_ids, 'torch.int64 \(2,\)'\)"),
    (torch.zeros(2, 0, dtype=torch.long), None, r"empty source \(input_ids, \(2, 0\)\)"),
    (torch.zeros(0, 4, dtype=torch.long), None, r"empty source \(input_ids, \(0, 4\)\)"),
    (torch.tensor([[5, 6], [7, 8]]), torch.tensor([[1, 1], [0, 0]]), r"empty source \(attention_mask row 1\)"),
    (long_ids(CONFIG["max_position_embeddings"] + 1), None,
     rf"source longer than the encoder's positions \(input_ids, {CONFIG['max_position_embeddings'] + 1}\)"),
])
def test_bad_inputs_name_the_input(models, ids, mask, message):
    with pytest.raises(UserError, match="^" + message):
        models[1].generate(ids, mask, max_length=5)


@pytest.mark.parametrize("temperature", [GREEDY_TEMPERATURE / 2, 1e-10, 1e-31, 1e-40, 1e-300])
def test_sampling_below_the_greedy_temperature_is_greedy(models, temperature):
    """The limit of sampling as the temperature tends to 0 is greedy decoding, and that of beam sampling beam search:
    below GREEDY_TEMPERATURE, also where scores / temperature would overflow float32 and the temperature itself
    rounds to 0 in float32 (at 1e-10 beam sampling returned only the start token)."""
    ids, mask = batch()
    greedy = models[1].generate(ids, mask, max_length=12)
    beams = models[1].generate(ids, mask, max_length=12, num_beams=3, num_return_sequences=3)
    torch.manual_seed(0)
    assert torch.equal(models[1].generate(ids, mask, do_sample=True, temperature=temperature, max_length=12), greedy)
    assert torch.equal(models[1].generate(ids, mask, do_sample=True, temperature=temperature, max_length=12,
                                          num_beams=3, num_return_sequences=3), beams)


@pytest.mark.parametrize("temperature", [GREEDY_TEMPERATURE, 1e-3, 1e-2])
def test_beam_sampling_at_a_low_temperature_draws_no_impossible_continuation(models, temperature):
    """Where softmax(scores / T) holds a probability for fewer than 2 x num_beams continuations, the candidates
    beyond them are the best of the rest (the limit of sampling without replacement), not any of probability 0:
    at these temperatures the tiny model's scores have no near-ties, so beam sampling returns beam search's
    sequences (before, some were banned tokens or empty)."""
    ids, mask = batch()
    beams = models[1].generate(ids, mask, max_length=12, num_beams=3, num_return_sequences=3)
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.equal(models[1].generate(ids, mask, do_sample=True, temperature=temperature, max_length=12,
                                              num_beams=3, num_return_sequences=3), beams)


def test_generation_args_are_checked_without_a_model():
    """check_generation_args: what a script calls at start-up with its flags; InvalidValue says which argument,
    its value and what would do. Without a config, only what needs the model (positions, vocabulary) waits."""
    with pytest.raises(InvalidValue) as e:
        check_generation_args(None, num_beams=4, do_sample=True, top_p=1.5)
    assert (e.value.name, e.value.value, e.value.valid) == ("top_p", 1.5, "a number in (0, 1]")
    with pytest.raises(InvalidValue) as e:
        check_generation_args(None, num_beams=4, num_return_sequences=5)
    assert (e.value.name, e.value.valid) == ("num_return_sequences", "at most num_beams (4)")
    assert check_generation_args(None, max_length=1024)["max_length"] == 1024
    with pytest.raises(InvalidValue, match=r"\(max_length, 1024\): use at most 41: the decoder has 40 positions"):
        check_generation_args(BartConfig(**CONFIG), max_length=1024)
    with pytest.raises(InvalidValue, match=r"\(num_return_sequences, from the model config, 3\): use at most "):
        check_generation_args(BartConfig(**CONFIG, num_beams=3, num_return_sequences=3), num_beams=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_reorder_through_the_spare_buffer_equals_in_place(dtype):
    """KVCache.reorder gives the same cache through its spare buffer (eager) as in place (a CUDA graph's), twice in a
    row (the second gathers into the first's old buffer): sequence i holds sequence index[i]'s history."""
    from minibart.model import KVCache

    kv = torch.randn(2, 2, 6, 3, 5, 4).to(dtype)  # [layers, k/v, N, H, max_len, Dh]
    caches = [KVCache(kv.clone(), [], [], None, torch.zeros((), dtype=torch.long)) for _ in range(2)]
    want = kv
    for index in (torch.tensor([0, 0, 1, 3, 3, 5]), torch.tensor([1, 0, 0, 5, 4, 3])):
        caches[0].reorder(index, in_place=True)
        caches[1].reorder(index)
        want = want[:, :, index]
        assert torch.equal(caches[0].kv, want) and torch.equal(caches[1].kv, want)
