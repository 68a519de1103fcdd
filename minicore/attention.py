"""Multi-head attention shared by BERT and BART.

One function computes scaled dot-product attention (Vaswani et al. 2017, eq. 1)

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V

either with PyTorch's fused `F.scaled_dot_product_attention` ("sdpa", flash / memory-efficient
kernels on CUDA) or step by step ("math", the readable reference the tests compare against).

Masks are boolean, True = "this query may look at this key", broadcastable to [B, H, Lq, Lk].
`None` means "nothing masked", which lets CUDA pick the flash kernel.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minicore.fused import attention_with_dropout


def scaled_dot_product(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                       is_causal: bool = False, dropout_p: float = 0.0, impl: str = "sdpa") -> Tensor:
    """q [B, H, Lq, D], k and v [B, H, Lk, D], mask bool [B|1, H|1, Lq|1, Lk] -> [B, H, Lq, D].

    is_causal: query i sees keys 0 .. Lk - Lq + i (aligned bottom-right, as with a KV cache).
    A query row with no visible key at all returns zeros, with zero gradients, in both paths.
    """
    if is_causal and (mask is not None or q.size(-2) != k.size(-2)):
        # SDPA's own is_causal aligns top-left and ignores Lk > Lq: spell the mask out instead
        causal = causal_mask(q.size(-2), k.size(-2), device=q.device)
        mask, is_causal = (causal if mask is None else mask & causal), False
    if impl == "sdpa" and dropout_p > 0 and q.device.type == "cpu" and torch.is_grad_enabled():
        # CPU SDPA has no fused kernel with dropout: its math path keeps 3 float copies of the probabilities
        mask = causal_mask(q.size(-2), k.size(-2), device=q.device) if is_causal else mask
        return attention_with_dropout(q, k, v, mask, dropout_p)
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # [B, H, Lq, Lk]
    if is_causal:
        mask = causal_mask(q.size(-2), k.size(-2), device=q.device)
    if mask is not None:  # a finite fill keeps fully masked rows (and their gradients) free of NaN
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)
    if mask is not None:
        probs = probs * mask.any(dim=-1, keepdim=True)  # fully masked rows -> 0, as SDPA
    return F.dropout(probs, p=dropout_p) @ v


def padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """[B, Lk] with 1 for real tokens and 0 for padding -> bool [B, 1, 1, Lk].

    A row with no real key at all (a fully padded sequence) is allowed to attend everywhere, so
    softmax never sees a row of -inf and never returns NaN; those outputs are meaningless anyway.
    No host-device sync: the check runs on the device.
    """
    if attention_mask is None:
        return None
    keep = attention_mask.bool()
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    return keep[:, None, None, :]


@dataclass
class Packing:
    """Where the real tokens of a padded batch are, for layers that compute on them alone (unpadding: Portes et al.
    2023, "MosaicBERT"; FlashAttention's bert_padding). A token is real where padding_mask lets keys be seen
    (every position of a row with no real token at all), so the real tokens compute exactly what they would padded."""
    index: Tensor  # long [n], into the B * L positions
    batch_shape: tuple[int, int]  # B, L

    @classmethod
    def of(cls, attention_mask: Tensor) -> "Packing":
        """attention_mask [B, L] -> its real tokens (reads the mask on the host)."""
        real = padding_mask(attention_mask)[:, 0, 0]  # [B, L]
        return cls(real.flatten().nonzero().squeeze(1), tuple(real.shape))

    def pack(self, x: Tensor) -> Tensor:
        """[B, L, ...] -> the real tokens' [n, ...]."""
        return x.flatten(0, 1).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """[n, ...] -> [B, L, ...], zeros at the padding."""
        B, L = self.batch_shape
        return x.new_zeros(B * L, *x.shape[1:]).index_copy(0, self.index, x).unflatten(0, (B, L))


def causal_mask(q_len: int, k_len: int, device=None) -> Tensor:
    """bool [q_len, k_len]: query i (the last q_len of k_len positions) sees keys 0 .. k_len - q_len + i."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)


class Attention(nn.Module):
    """What self- and cross-attention share: the heads' sizes, the attention itself and the output projection."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0, impl: str = "sdpa", **projections: int):
        """projections: the input projections' names and output widths, e.g. qkv=3 * dim; made before `out`, so the
        parameters come in the order earlier versions saved optimizer states in."""
        super().__init__()
        self.n_heads, self.head_dim, self.dropout, self.impl = n_heads, dim // n_heads, dropout, impl
        for name, width in projections.items():
            setattr(self, name, nn.Linear(dim, width))
        self.out = nn.Linear(dim, dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False,
               packing: Packing | None = None) -> Tensor:
        """Heads in, projected output [B, Lq, D] out (with a packing, the real tokens' [n, D])."""
        p = self.dropout if self.training else 0.0
        h = merge_heads(scaled_dot_product(q, k, v, mask, is_causal, p, self.impl))
        return self.out(h if packing is None else packing.pack(h))


class SelfAttention(Attention):
    """Multi-head self-attention with one fused Q/K/V projection (HF's q/k/v weights concatenated)."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0, impl: str = "sdpa"):
        super().__init__(dim, n_heads, dropout, impl, qkv=3 * dim)

    def project(self, x: Tensor, packing: Packing | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, D], or its real tokens [n, D] and their packing -> q, k, v, each [B, H, L, D/H]."""
        qkv = self.qkv(x)
        return split_heads(qkv if packing is None else packing.unpack(qkv), self.n_heads, self.head_dim).unbind(0)

    def forward(self, x: Tensor, mask: Tensor | None = None, is_causal: bool = False,
                packing: Packing | None = None) -> Tensor:
        """x [B, L, D] -> [B, L, D]; or the real tokens [n, D] of a padded batch and their packing -> [n, D]: the
        projections run on the real tokens alone, the attention on the padded layout (`mask` hides the padding)."""
        return self.attend(*self.project(x, packing), mask=mask, is_causal=is_causal, packing=packing)


class CrossAttention(Attention):
    """Queries from the decoder, keys and values from the encoder output (the "memory").

    The memory's keys and values come from one fused K/V projection and are computed once per
    source sequence; `forward` takes them precomputed so a decoder can cache them.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0, impl: str = "sdpa"):
        super().__init__(dim, n_heads, dropout, impl, q=dim, kv=2 * dim)

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """memory [B, S, D] -> k, v, each [B, H, S, D/H]."""
        return split_heads(self.kv(memory), self.n_heads, self.head_dim).unbind(0)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, Lq, D], the memory's k and v [B, H, S, D/H] -> [B, Lq, D]."""
        q = split_heads(self.q(x), self.n_heads, self.head_dim)[0]
        return self.attend(q, k, v, mask=mask)


def split_heads(x: Tensor, n_heads: int, head_dim: int) -> Tensor:
    """[B, L, n * H * Dh] (n fused projections) -> [n, B, H, L, Dh]."""
    return x.unflatten(-1, (-1, n_heads, head_dim)).permute(2, 0, 3, 1, 4)


def merge_heads(x: Tensor) -> Tensor:
    """[B, H, L, Dh] -> [B, L, H * Dh]."""
    return x.transpose(1, 2).flatten(2)
