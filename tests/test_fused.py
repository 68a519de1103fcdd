"""minicore.fused: each op gives the plain ops' values and gradients, and keeps less for the backward pass."""
import pytest
import torch
import torch.nn.functional as F

from minicore.attention import scaled_dot_product
from minicore.fused import attention_with_dropout, drop_mask, dropout, gelu_linear


def saved_tensors(fn):
    """fn() under autograd -> (its output, the tensors autograd keeps for its backward)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn()
    return out, saved


def grads(out, upstream, *tensors):
    return torch.autograd.grad(out, tensors, upstream)


def seeded(seed, fn):
    torch.manual_seed(seed)
    return fn()


def test_drop_mask_drops_a_fraction_p():
    drop = seeded(0, lambda: drop_mask((1000, 1000), 0.1, "cpu"))
    assert drop.dtype == torch.bool and abs(drop.float().mean().item() - 0.1) < 2e-3  # 6 standard deviations


def test_dropout_scales_what_it_keeps_and_keeps_a_bool_mask():
    x = torch.randn(64, 33, dtype=torch.float64, requires_grad=True)
    out, saved = saved_tensors(lambda: seeded(1, lambda: dropout(x, 0.25)))
    keep = ~seeded(1, lambda: drop_mask(x.shape, 0.25, "cpu"))
    assert torch.allclose(out, torch.where(keep, x / 0.75, 0), rtol=1e-15, atol=0)
    assert [t.dtype for t in saved] == [torch.bool]
    upstream = torch.randn_like(x)
    assert torch.allclose(grads(out, upstream, x)[0], torch.where(keep, upstream / 0.75, 0), rtol=1e-15, atol=0)
    assert dropout(x, 0.25, training=False) is x and dropout(x, 0.0) is x


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_gelu_linear_equals_the_plain_ops_and_keeps_no_gelu_output(p):
    g = torch.Generator().manual_seed(0)
    h, weight, bias = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                       for shape in ((3, 5, 11), (7, 11), (7,)))
    out, saved = saved_tensors(lambda: seeded(2, lambda: gelu_linear(h, weight, bias, p, training=True)))
    keep = ~seeded(2, lambda: drop_mask(h.shape, p, "cpu")) if p else torch.ones_like(h, dtype=torch.bool)
    want = F.linear(F.gelu(h) * keep / (1 - p), weight, bias)
    assert torch.allclose(out, want, rtol=0, atol=1e-13)
    upstream = torch.randn_like(out)
    for a, b in zip(grads(out, upstream, h, weight, bias), grads(want, upstream, h, weight, bias)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert sum(t.numel() for t in saved if t.is_floating_point()) == h.numel() + weight.numel()  # h and W only


def test_gelu_linear_under_bf16_autocast_matches_autocast_linear():
    g = torch.Generator().manual_seed(0)
    h, weight, bias = (torch.randn(*shape, generator=g, requires_grad=True) for shape in ((4, 9, 32), (16, 32), (16,)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gelu_linear(h.bfloat16(), weight, bias)
        want = F.linear(F.gelu(h.bfloat16()), weight, bias)
    assert out.dtype == want.dtype == torch.bfloat16 and torch.equal(out, want)
    upstream = torch.randn_like(out)
    for a, b in zip(grads(out, upstream, h, weight, bias), grads(want, upstream, h, weight, bias)):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).abs().max() <= 1e-2 * b.abs().max()


def attention_inputs(B=2, H=3, Lq=5, Lk=7, D=4):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, Lq, D, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(B, H, Lk, D, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    mask = torch.rand(B, 1, Lq, Lk, generator=g) < 0.7
    mask[0, 0, 1] = False  # a query that sees nothing
    return q, k, v, mask


@pytest.mark.parametrize("masked", [False, True])
def test_attention_with_dropout_equals_the_math_path_with_the_same_mask(masked):
    """The same values and gradients as softmax, dropout with the same kept entries, and a matmul (float64); a query
    with no visible key gets zeros and zero gradients; autograd keeps no float tensor of the scores' size."""
    q, k, v, mask = attention_inputs()
    mask = mask if masked else None
    p = 0.2
    out, saved = saved_tensors(lambda: seeded(3, lambda: attention_with_dropout(q, k, v, mask, p)))
    keep = ~seeded(3, lambda: drop_mask((*q.shape[:3], k.size(2)), p, "cpu"))
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1).nan_to_num()  # the row that sees nothing: 0
    want = (probs * keep / (1 - p)) @ v
    assert torch.allclose(out, want, rtol=0, atol=1e-13)
    upstream = torch.randn_like(out)
    for a, b in zip(grads(out, upstream, q, k, v), grads(want, upstream, q, k, v)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12) and not a.isnan().any()
    if masked:
        assert not out[0, :, 1].any()
    assert sum(t.numel() for t in saved if t.is_floating_point()) == q.numel() + k.numel() + v.numel()


def test_cpu_sdpa_in_training_attends_with_dropout_as_sdpa_would_in_expectation():
    """scaled_dot_product routes CPU training with dropout to attention_with_dropout; averaged over many draws the
    output approaches the output without dropout (dropout is unbiased)."""
    q, k, v, _ = attention_inputs(B=1, H=1, Lq=3, Lk=4)
    torch.manual_seed(4)
    with torch.no_grad():
        exact = scaled_dot_product(q, k, v, is_causal=True)
    draws = torch.stack([scaled_dot_product(q, k, v, is_causal=True, dropout_p=0.5) for _ in range(4000)])
    assert draws.grad_fn is not None and (draws.mean(0) - exact).abs().max() < 0.1
    assert not torch.allclose(draws[0], exact)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gelu_linear_on_cuda_under_bf16_autocast_matches_autocast_linear():
    g = torch.Generator().manual_seed(0)
    h, weight, bias = (torch.randn(*shape, generator=g).cuda().requires_grad_()
                       for shape in ((4, 9, 32), (16, 32), (16,)))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = gelu_linear(h.bfloat16(), weight, bias)
        want = F.linear(F.gelu(h.bfloat16()), weight, bias)
    assert out.dtype == want.dtype == torch.bfloat16 and (out.float() - want.float()).abs().max() <= 1e-2
    upstream = torch.randn_like(out)
    for a, b in zip(grads(out, upstream, h, weight, bias), grads(want, upstream, h, weight, bias)):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).abs().max() <= 1e-2 * b.abs().max()
