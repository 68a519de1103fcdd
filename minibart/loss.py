"""The sequence-to-sequence training loss: mean token cross-entropy of the LM head's logits.

`seq2seq_loss` is the reference: HF's loss on logits [B, T, V]. `lm_head_loss` gives the same value and
gradients from the decoder's hidden states without ever holding all B x T x V logits (at BART's 50,265
words those are 200 KB per token in float32, 3x that with softmax and gradient): it runs the LM head on
a chunk of rows at a time, and computes each chunk's gradients right there in the forward pass, as
Liger-Kernel's fused linear cross-entropy does (Hsu et al. 2024, "Liger Kernel: Efficient Triton Kernels
for LLM Training", section 3.2). The backward pass then only scales the gradients it was handed. Three
GEMMs per chunk, as many as logits + backward take, and no logits kept for the backward.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # labels with this value are not predicted (padding), as in HF
# float32 logits per chunk at most: on CPU 32 MiB (128 rows at 50,265 words; more rows gain no speed); on CUDA
# 256 MiB (1,280 rows), as under bf16 autocast each chunk adds a pass over the float32 weight gradient
CHUNK_BYTES = {"cpu": 2**25, "cuda": 2**28}


def seq2seq_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean token cross-entropy over labels != -100 (HF's loss): logits [B, T, V], labels [B, T]."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


def lm_head_loss(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor,
                 chunk_rows: int | None = None) -> Tensor:
    """seq2seq_loss(hidden @ weight.T + bias, labels) without materializing the logits.

    hidden [..., D], weight [V, D], bias [V] or None, labels [...] (-100 = ignored). Under autocast the
    GEMMs run in its dtype and the softmax in float32, as the reference does. chunk_rows: rows of
    logits at a time (default: CHUNK_BYTES of them, rounded down to a multiple of 64 rows for the GEMMs).
    """
    chunk_bytes = CHUNK_BYTES.get(hidden.device.type, CHUNK_BYTES["cpu"])
    rows = chunk_rows or max(64, chunk_bytes // (4 * weight.size(0)) // 64 * 64)
    # under no_grad (evaluation) the forward pass computes no gradients: the Function cannot tell by itself
    return _LMHeadLoss.apply(hidden.flatten(0, -2), weight, bias, labels.flatten(), rows, torch.is_grad_enabled())


class _LMHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, rows: int,
                grad_enabled: bool) -> Tensor:
        dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) \
            else hidden.dtype
        exact = torch.promote_types(dtype, torch.float32)  # the softmax's dtype: float32 at least
        h, w = hidden.to(dtype), weight.to(dtype)
        keep = labels != IGNORE_INDEX
        count = keep.sum()
        targets = labels.where(keep, 0)[:, None]  # [N, 1], any valid index where ignored
        # d(mean loss)/d(logits) = (softmax - onehot) / count on kept rows, 0 on ignored ones (also when count = 0)
        row_scale = keep[:, None].to(exact) / count.clamp(min=1)
        need_h, need_w, need_b = (grad_enabled and n for n in ctx.needs_input_grad[:3])
        grads = need_h or need_w or need_b
        d_hidden = torch.empty_like(hidden) if need_h else None
        d_weight = torch.zeros_like(weight, dtype=exact) if need_w else None
        d_bias = torch.zeros_like(bias, dtype=exact) if need_b else None
        total = torch.zeros((), dtype=exact, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):  # the dtypes are chosen above
            for i in range(0, h.size(0), rows):
                part = slice(i, i + rows)
                logits = (h[part] @ w.t()).to(exact)  # [rows, V], the one chunk-sized tensor
                if bias is not None:
                    logits += bias
                target = logits.gather(1, targets[part])  # [rows, 1]
                top = logits.amax(-1, keepdim=True)
                g = logits.sub_(top).exp_()  # in place from here on
                norm = g.sum(-1, keepdim=True)
                total += ((top + norm.log() - target) * keep[part, None]).sum()  # log-sum-exp - target logit
                if not grads:
                    continue
                g /= norm  # softmax
                g.scatter_add_(1, targets[part], torch.full_like(norm, -1.0))
                g *= row_scale[part]
                if d_bias is not None:
                    d_bias += g.sum(0)
                g = g.to(dtype)
                if need_h:
                    d_hidden[part] = g @ w
                if need_w and dtype == exact:
                    d_weight.addmm_(g.t(), h[part])
                elif need_w:  # no mixed-dtype GEMM on every device: the chunk's product, then a float32 sum
                    d_weight += g.t() @ h[part]
        ctx.grads = (d_hidden, None if d_weight is None else d_weight.to(weight.dtype),
                     None if d_bias is None else d_bias.to(bias.dtype)) if grads else None
        return total / count  # nan when every label is ignored, as F.cross_entropy

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.grads is None:
            raise RuntimeError("lm_head_loss: backward ran twice (its gradients were computed in forward and are "
                               "handed out once; retain_graph is not supported)")
        grads = [None if g is None else g.mul_(grad) for g in ctx.grads]  # in place: handed out once
        ctx.grads = None
        return *grads, None, None, None
