"""Properties of the attention and of BertModel that must hold for any input (hypothesis)."""
import functools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert import BertConfig, BertModel
from minicore.attention import causal_mask, merge_heads, padding_mask, scaled_dot_product, split_heads

IMPLS = ("sdpa", "math")
VOCAB = 50
FAST = settings(max_examples=25, deadline=None)


@functools.cache
def tiny_bert(impl: str) -> BertModel:
    """The same random weights for both impls; a large init so attention is far from uniform."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=29, max_position_embeddings=32, initializer_range=0.2,
                        attn_implementation=impl)
    return BertModel(config).eval()


token_lists = st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=10)


def pad(seqs: list[list[int]], length: int | None = None):
    """Right-pad with 0 -> ids [B, L], attention_mask [B, L], token_type_ids [B, L] (second half of each = 1)."""
    L = length or max(map(len, seqs))
    ids = torch.tensor([s + [0] * (L - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in seqs])
    types = torch.tensor([[0] * (len(s) // 2) + [1] * (L - len(s) // 2) for s in seqs]) * mask
    return ids, mask, types


@FAST
@given(seq=token_lists, n_pad=st.integers(1, 6), impl=st.sampled_from(IMPLS))
def test_padding_invariance(seq, n_pad, impl):
    """Appending pad tokens (masked out) leaves the outputs at the real positions unchanged."""
    model, L = tiny_bert(impl), len(seq)
    with torch.no_grad():
        alone = model(*pad([seq]))
        padded = model(*pad([seq], L + n_pad))
    assert (padded[:, :L] - alone).abs().max() < 1e-5


@FAST
@given(seqs=st.lists(token_lists, min_size=1, max_size=4), impl=st.sampled_from(IMPLS))
def test_batch_invariance(seqs, impl):
    """A sequence alone (no attention_mask at all) gives the same outputs as in a padded batch."""
    model = tiny_bert(impl)
    with torch.no_grad():
        batched = model(*pad(seqs))
        for i, s in enumerate(seqs):
            ids, _, types = pad([s])
            assert (model(ids, None, types)[0] - batched[i, :len(s)]).abs().max() < 1e-5


@st.composite
def attention_inputs(draw):
    """q, k, v and a boolean mask, fully masked rows included: padding_mask(any attention_mask [B, Lk]), or any
    pattern of any shape the API accepts, [B|1, H|1, Lq|1, Lk] (padding_mask's [B, 1, 1, Lk], full [B, 1, Lq, Lk],
    ...)."""
    B, H, Lq, Lk, D = (draw(st.integers(1, n)) for n in (3, 3, 6, 6, 5))
    from_attention_mask = draw(st.booleans())
    shape = (B, Lk) if from_attention_mask else tuple(draw(st.sampled_from([n, 1])) for n in (B, H, Lq)) + (Lk,)
    bits = draw(st.lists(st.booleans(), min_size=torch.Size(shape).numel(), max_size=torch.Size(shape).numel()))
    mask = torch.tensor(bits).view(shape)
    mask = padding_mask(mask.long()) if from_attention_mask else mask
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (Lq, Lk, Lk))
    return q, k, v, mask, draw(st.booleans())


@FAST
@given(inputs=attention_inputs())
def test_sdpa_equals_math(inputs):
    """For any boolean mask (with or without is_causal), the sdpa and math paths agree in output and gradients."""
    q, k, v, mask, is_causal = inputs
    results = []
    for impl in IMPLS:
        qkv = [t.clone().requires_grad_() for t in (q, k, v)]
        out = scaled_dot_product(*qkv, mask=mask, is_causal=is_causal, impl=impl)
        out.pow(2).sum().backward()
        results.append([out, *(t.grad for t in qkv)])
    for a, b in zip(*results):
        assert a.isfinite().all() and b.isfinite().all()
        assert (a - b).abs().max() < 1e-5


@settings(max_examples=10, deadline=None)
@given(seqs=st.lists(token_lists, min_size=1, max_size=3), dead=st.lists(st.booleans(), min_size=3, max_size=3),
       impl=st.sampled_from(IMPLS))
def test_no_nan_with_fully_masked_rows(seqs, dead, impl):
    """A sequence whose attention_mask is all zero gives finite outputs and finite gradients, the others unaffected."""
    dead = [True] + dead[1:]  # at least one fully masked row
    model = tiny_bert(impl)
    ids, mask, types = pad(seqs)
    mask[torch.tensor(dead[:len(seqs)])] = 0
    model.zero_grad()
    out = model(ids, mask, types)
    out.pow(2).sum().backward()
    assert out.isfinite().all()
    assert all(p.grad.isfinite().all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        for i, s in enumerate(seqs):
            if mask[i].any():
                assert (model(*pad([s]))[0] - out[i, :len(s)]).abs().max() < 1e-5


@settings(max_examples=30, deadline=None)
@given(q_len=st.integers(1, 8), offset=st.integers(0, 8))
def test_causal_mask_semantics(q_len, offset):
    """With k_len = q_len + offset, query i sees exactly the keys j <= offset + i."""
    m = causal_mask(q_len, q_len + offset)
    i, j = torch.meshgrid(torch.arange(q_len), torch.arange(q_len + offset), indexing="ij")
    assert m.dtype == torch.bool and torch.equal(m, j <= offset + i)


@FAST
@given(q_len=st.integers(1, 6), offset=st.integers(0, 4), cut=st.integers(0, 9), impl=st.sampled_from(IMPLS))
def test_causal_attention_ignores_the_future(q_len, offset, cut, impl):
    """With is_causal, changing keys and values at positions >= cut leaves every query that cannot see them
    unchanged."""
    k_len = q_len + offset
    q, k, v = (torch.randn(2, 2, n, 4) for n in (q_len, k_len, k_len))
    k2, v2 = k.clone(), v.clone()
    k2[:, :, cut:], v2[:, :, cut:] = torch.randn_like(k2[:, :, cut:]), torch.randn_like(v2[:, :, cut:])
    a = scaled_dot_product(q, k, v, is_causal=True, impl=impl)
    b = scaled_dot_product(q, k2, v2, is_causal=True, impl=impl)
    blind = torch.arange(q_len) + offset < cut  # queries whose last visible key is before the cut
    assert torch.equal(a[:, :, blind], b[:, :, blind])
    if cut < k_len:  # and the others do change: the test can see a leak
        assert not torch.equal(a[:, :, ~blind], b[:, :, ~blind])


@FAST
@given(B=st.integers(1, 3), L=st.integers(1, 5), H=st.integers(1, 4), Dh=st.integers(1, 4), n=st.integers(1, 3))
def test_split_merge_heads_inverse(B, L, H, Dh, n):
    """split_heads puts head h of projection j at features (j*H + h)*Dh onward, and merge_heads undoes it exactly."""
    x = torch.randn(B, L, n * H * Dh)
    s = split_heads(x, H, Dh)
    assert s.shape == (n, B, H, L, Dh)
    for j in range(n):
        for h in range(H):
            assert torch.equal(s[j, :, h], x[..., (j * H + h) * Dh:(j * H + h + 1) * Dh])
    assert torch.equal(torch.cat([merge_heads(part) for part in s], dim=-1), x)
