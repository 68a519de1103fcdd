"""Properties of minibart that hold for any weights and inputs (hypothesis)."""
import dataclasses
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibart import BartConfig, BartForConditionalGeneration
from minibart.generation import DecodeStep, beam_search, greedy_or_sample, resolve_settings
from minibart.model import KVCache
from minicore.errors import UserError

V, PAD = 40, 1
CONFIG = BartConfig(vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                    decoder_attention_heads=4, encoder_ffn_dim=24, decoder_ffn_dim=32, max_position_embeddings=24,
                    init_std=0.3, eos_token_id=7, forced_eos_token_id=None)
SETTINGS = settings(max_examples=10, deadline=None)


@pytest.fixture(scope="module")
def model():
    """In float64: these properties are exact in real arithmetic, and in float32 different but equivalent
    orders of operations (padding, batching, a cache) differ by rounding alone by up to ~2e-5 on these
    logits (magnitude ~4), which would make a 1e-5 bound flaky; a real violation is O(1)."""
    torch.manual_seed(0)
    m = BartForConditionalGeneration(CONFIG).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.double()


@st.composite
def batches(draw, max_batch=3, max_len=8):
    """A right-padded batch of source ids [B, S] with its attention mask, and decoder ids [B, T]."""
    lengths = draw(st.lists(st.integers(1, max_len), min_size=1, max_size=max_batch))
    S, T = max(lengths), draw(st.integers(1, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    mask = (torch.arange(S) < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(3, V, (len(lengths), S), generator=g).masked_fill(mask == 0, PAD)
    return ids, mask, torch.randint(3, V, (len(lengths), T), generator=g)


@SETTINGS
@given(batches(), st.data())
def test_decoder_is_causal(model, batch, data):
    """The logits at position t do not change when decoder tokens after t change."""
    ids, mask, dec = batch
    t = data.draw(st.integers(0, dec.size(1) - 1))
    other = dec.clone()
    other[:, t + 1:] = torch.randint(3, V, other[:, t + 1:].shape)
    with torch.no_grad():
        a, b = model(ids, mask, dec), model(ids, mask, other)
    assert torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-5)


@SETTINGS
@given(batches(), st.lists(st.integers(1, 3), min_size=1, max_size=4))
def test_cached_decoding_equals_the_full_forward(model, batch, chunks):
    """Feeding the decoder ids through the KV cache in chunks gives the full forward pass's logits."""
    ids, mask, dec = batch
    with torch.no_grad():
        full = model(ids, mask, dec)
        cache = model.new_cache(model.encode(ids, mask), mask, max_len=dec.size(1))
        steps, start = [], 0
        for n in chunks * dec.size(1):
            if start >= dec.size(1):
                break
            steps.append(model.decode(dec[:, start:start + n], cache))
            start += n
    assert cache.pos == dec.size(1)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@SETTINGS
@given(batches(), st.integers(0, 6))
def test_cached_decoding_never_reads_stale_slots(model, batch, extra):
    """Slots at and after the write position hold anything (old beams, warm-up writes): filled with
    large garbage, a cache `extra` slots longer than needed still gives the full forward's logits."""
    ids, mask, dec = batch
    with torch.no_grad():
        full = model(ids, mask, dec)
        cache = model.new_cache(model.encode(ids, mask), mask, max_len=dec.size(1) + extra)
        cache.kv.copy_(torch.randn_like(cache.kv) * 1e4)
        steps = [model.decode(dec[:, t:t + 1], cache) for t in range(dec.size(1))]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@SETTINGS
@given(batches())
def test_decoding_with_the_lm_head_padded_as_on_cuda_gives_the_same_logits(model, batch):
    """On CUDA decoding reads the LM head with its rows padded to a multiple of 64 (zero rows, decoding_rows) and
    slices the logits back to the vocabulary, so they are those of the unpadded head, up to the GEMM's rounding
    (checked here on CPU in float64, padded as on CUDA)."""
    ids, mask, dec = batch
    with torch.no_grad():
        caches = [model.new_cache(model.encode(ids, mask), mask, max_len=dec.size(1)) for _ in range(2)]
        plain = model.decode(dec, caches[0])
        with mock.patch("minibart.model.decoding_rows", lambda rows, device: rows + (-rows % 64 or 64)):
            padded = model.decode(dec, caches[1])
            head = model.decoding_head(torch.float64)
    assert head.size(0) % 64 == 0 and head.size(0) > V and not head[V:].any()
    assert padded.shape == plain.shape == (*dec.shape, V)
    assert torch.allclose(padded, plain, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, head_dim", [(torch.float64, 8), (torch.bfloat16, 8), (torch.bfloat16, 3),
                                             (torch.float32, 5)])
def test_cache_reorder_permutes_sequences_in_every_layer(dtype, head_dim):
    """reorder(index) gives sequence i the keys and values of sequence index[i], at every layer and slot
    (whether or not its rows can be moved as 8-byte words)."""
    kv = torch.randn(2, 2, 6, 3, 7, head_dim).to(dtype)  # [layers, 2, N, H, max_len, Dh]
    cache = KVCache(kv=kv, cross_k=[], cross_v=[], memory_mask=None, pos=torch.tensor(0))
    before, index = kv.clone(), torch.tensor([2, 2, 0, 3, 5, 4])
    cache.reorder(index)
    assert torch.equal(cache.kv, before[:, :, index])


def test_cache_longer_than_the_positions_is_refused(model):
    ids = torch.randint(3, V, (1, 4))
    with pytest.raises(ValueError, match="cache of 25 positions is longer than max_position_embeddings 24"):
        model.new_cache(model.encode(ids), None, max_len=CONFIG.max_position_embeddings + 1)


@SETTINGS
@given(batches(max_batch=1), st.integers(1, 5), st.data())
def test_source_padding_and_batching_leave_outputs_unchanged(model, batch, extra, data):
    """Appending padding to the source, or batching it with longer sources, leaves the logits unchanged
    (the encoder and the decoder's cross-attention both ignore padded positions)."""
    ids, mask, dec = batch
    padded = torch.cat([ids, torch.full((1, extra), PAD)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, extra, dtype=torch.long)], dim=1)
    other = torch.randint(3, V, (2, padded.size(1)))
    batch_ids = torch.cat([other, padded])
    batch_mask = torch.cat([torch.ones_like(other), padded_mask])
    with torch.no_grad():
        alone = model(ids, mask, dec)
        assert torch.allclose(model(padded, padded_mask, dec), alone, atol=1e-5)
        assert torch.allclose(model(batch_ids, batch_mask, dec.expand(3, -1))[2:], alone, atol=1e-5)


@SETTINGS
@given(batches())
def test_sdpa_equals_math(model, batch):
    """The fused SDPA attention and the step-by-step reference give the same logits (float64, as every
    property here)."""
    ids, mask, dec = batch
    math = BartForConditionalGeneration(dataclasses.replace(CONFIG, attn_implementation="math")).eval().double()
    math.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model(ids, mask, dec), math(ids, mask, dec), atol=1e-5)


def reference_greedy(model, ids, mask, max_length):
    """Greedy decoding the slow way: a full forward pass per step, no cache, no early stop."""
    out = torch.full((ids.size(0), 1), CONFIG.decoder_start_token_id)
    while out.size(1) < max_length:
        out = torch.cat([out, model(ids, mask, out)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out


@SETTINGS
@given(batches(), st.integers(2, 10))
def test_greedy_is_argmax_and_one_beam_is_greedy(model, batch, max_length):
    """Greedy generation picks the full forward pass's argmax at each step up to EOS, then pads; beam
    search with num_beams=1 (early_stopping=True) returns the same ids."""
    ids, mask, _ = batch
    with torch.no_grad():
        out = model.generate(ids, mask, max_length=max_length)
        want = reference_greedy(model, ids, mask, max_length)
        s = resolve_settings(model.config, max_length=max_length, early_stopping=True)

        def new(reorder=False):  # a fresh decode step (with its cache) and start tokens
            cache = model.new_cache(model.encode(ids, mask), mask, max_length - 1)
            return (DecodeStep(model, cache, ids.size(0), reorder),
                    torch.full((ids.size(0), 1), CONFIG.decoder_start_token_id))
        one_beam = beam_search(*new(reorder=True), s)
        assert torch.equal(greedy_or_sample(*new(), s), out)
    assert torch.equal(one_beam, out)
    for row, ref in zip(out.tolist(), want.tolist(), strict=True):
        n = ref.index(CONFIG.eos_token_id, 1) + 1 if CONFIG.eos_token_id in ref[1:] else len(ref)
        assert row[:n] == ref[:n] and all(t == PAD for t in row[n:])


@SETTINGS
@given(batches(), st.integers(1, 3))
def test_fully_padded_rows_give_no_nan(model, batch, num_beams):
    """A source row with no real token yields finite logits; generate refuses it, naming the row."""
    ids, mask, dec = batch
    mask[0] = 0
    with torch.no_grad():
        assert torch.isfinite(model(ids, mask, dec)).all()
        with pytest.raises(UserError, match=r"^empty source \(attention_mask row 0\)"):
            model.generate(ids, mask, num_beams=num_beams, max_length=6)
