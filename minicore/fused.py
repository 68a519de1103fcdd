"""Training ops with a hand-written backward that keeps less memory than autograd would.

Autograd keeps every intermediate an op's backward reads. Three places in a Transformer layer keep more
than they need to, and each function here gives the same values and gradients as the plain ops while keeping
only what is cheap to keep, recomputing the rest in backward (selective recomputation: Korthikanti et al.
2022, "Reducing Activation Recomputation in Large Transformer Models", section 4):

- `dropout`: its mask as bool (1 byte a value) instead of float32, drawn 32 random bits at a time (CPU
  `bernoulli_` is 3x slower). CUDA's fused dropout already keeps a bool mask, so CUDA uses it.
- `gelu_linear`: linear(dropout(GELU(h))) keeps h but not GELU(h), which is recomputed in backward.
- `attention_with_dropout`: on CPU SDPA has no fused kernel for dropout; its math path keeps the attention
  probabilities three times in float32 ([B, H, Lq, Lk] each). This keeps the bool dropout mask and the
  row log-sum-exp and recomputes the probabilities in backward, as FlashAttention does (Dao et al. 2022,
  "FlashAttention", section 3.1), without its tiling.

Outside autograd (inference, `torch.no_grad`) each is the plain op.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def drop_mask(shape, p: float, device) -> Tensor:
    """bool [shape], each True (dropped) with probability p (to 2^-31), from the default generator."""
    return torch.empty(shape, dtype=torch.int32, device=device).random_() < round(p * 2**31)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """F.dropout(x, p, training), keeping a bool mask for backward."""
    if not training or p == 0:
        return x
    if x.is_cuda or not torch.is_grad_enabled() or p == 1:
        return F.dropout(x, p, training)
    return _Dropout.apply(x, p)


class Dropout(nn.Dropout):
    """nn.Dropout that keeps a bool mask (see dropout)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        drop = drop_mask(x.shape, p, x.device)
        ctx.save_for_backward(drop)
        ctx.scale = 1 / (1 - p)
        return x.masked_fill(drop, 0).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        drop, = ctx.saved_tensors
        return grad.masked_fill(drop, 0).mul_(ctx.scale), None


def gelu_linear(h: Tensor, weight: Tensor, bias: Tensor | None, p: float = 0.0, training: bool = False) -> Tensor:
    """F.linear(F.dropout(F.gelu(h), p, training), weight, bias), keeping h (and a bool dropout mask), not GELU(h)."""
    if not torch.is_grad_enabled():
        return F.linear(F.dropout(F.gelu(h), p, training), weight, bias)
    return _GeluLinear.apply(h, weight, bias, p if training else 0.0)


class _GeluLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, p: float) -> Tensor:
        device = h.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
        h, w = h.to(dtype), weight.to(dtype)  # what autocast's F.linear would use
        b = None if bias is None else bias.to(dtype)
        drop = drop_mask(h.shape, p, h.device) if p > 0 else None
        ctx.save_for_backward(h, w, drop)
        ctx.p, ctx.has_bias, ctx.dtypes = p, bias is not None, (weight.dtype, None if bias is None else bias.dtype)
        with torch.autocast(device, enabled=False):
            return F.linear(_gelu_dropped(h, drop, p), w, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w, drop = ctx.saved_tensors
        grad = grad.to(w.dtype)
        a = _gelu_dropped(h, drop, ctx.p)  # [..., F], recomputed
        d_weight = (grad.flatten(0, -2).t() @ a.flatten(0, -2)).to(ctx.dtypes[0])
        d_bias = grad.flatten(0, -2).sum(0).to(ctx.dtypes[1]) if ctx.has_bias else None
        del a  # before d_a, its like
        d_a = grad @ w
        if drop is not None:
            d_a = d_a.masked_fill_(drop, 0).mul_(1 / (1 - ctx.p))
        return torch.ops.aten.gelu_backward(d_a, h), d_weight, d_bias, None


def _gelu_dropped(h: Tensor, drop: Tensor | None, p: float) -> Tensor:
    a = F.gelu(h)
    return a if drop is None else a.masked_fill_(drop, 0).mul_(1 / (1 - p))


def attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float) -> Tensor:
    """dropout(softmax(q k^T / sqrt(d) + mask), p) v with a bool mask [B|1, H|1, Lq|1, Lk] or None (all visible);
    q [B, H, Lq, D], k and v [B, H, Lk, D]. A query row with no visible key returns zeros with zero gradients."""
    return _AttentionWithDropout.apply(q, k, v, mask, p)


class _AttentionWithDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float) -> Tensor:
        probs = _probabilities(q, k, mask)
        drop = drop_mask(probs.shape, p, q.device)
        ctx.save_for_backward(q, k, v, mask, drop)
        ctx.scale = 1 / (1 - p)
        return (probs.masked_fill_(drop, 0) @ v).mul_(ctx.scale)  # the scale on [.., D], not on [.., Lk]

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, mask, drop = ctx.saved_tensors
        probs = _probabilities(q, k, mask)  # [B, H, Lq, Lk], recomputed
        grad = grad * ctx.scale
        d_v = probs.masked_fill(drop, 0).transpose(-2, -1) @ grad
        d_probs = (grad @ v.transpose(-2, -1)).masked_fill_(drop, 0)
        d_scores = torch.ops.aten._softmax_backward_data(d_probs, probs, -1, probs.dtype)
        d_q = (d_scores @ k).mul_(1 / math.sqrt(q.size(-1)))
        d_k = (d_scores.transpose(-2, -1) @ q).mul_(1 / math.sqrt(q.size(-1)))
        return d_q, d_k, d_v, None, None


def _probabilities(q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) [B, H, Lq, Lk]; rows with no visible key get probabilities 0."""
    scores = (q / math.sqrt(q.size(-1))) @ k.transpose(-2, -1)
    if mask is None:
        return scores.softmax(-1)
    # a finite fill keeps fully masked rows free of NaN; they are zeroed after the softmax
    return scores.masked_fill_(~mask, torch.finfo(scores.dtype).min).softmax(-1) * mask.any(-1, keepdim=True)
