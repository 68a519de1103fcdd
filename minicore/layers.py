"""The layers BERT and BART share, as modules: the feed-forward network, the post-LN Transformer block, and running a
stack of blocks with gradient checkpointing.

A post-LN block (Vaswani et al. 2017, section 5.4) follows every sub-layer with dropout, a residual add and
LayerNorm: x = LayerNorm(x + Dropout(Sublayer(x))). BERT's layers and BART's encoder layers are this block; BART's
decoder layers add cross-attention between its two sub-layers (minibart.model.DecoderBlock).
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from minicore.attention import Packing, SelfAttention
from minicore.fused import Dropout, gelu_linear


class FeedForward(nn.Module):
    """Position-wise FFN with exact (erf) GELU: down(Dropout(GELU(up(x)))), the dropout being BART's
    activation_dropout (BERT has none)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)  # [..., hidden]
        if type(self.down) is nn.Linear:  # the plain projection gelu_linear was written for: keep h, not GELU(h)
            return gelu_linear(h, self.down.weight, self.down.bias, self.drop.p, self.training)
        return self.down(self.drop(F.gelu(h)))  # a wrapped projection (LoRA, int8) runs its own forward


class Block(nn.Module):
    """Post-LN Transformer block: self-attention, then the FFN, each x = LayerNorm(x + Dropout(Sublayer(x)))."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, eps: float, dropout: float,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, impl: str = "sdpa"):
        super().__init__()
        self.attn = SelfAttention(dim, n_heads, attention_dropout, impl)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, ffn_dim, activation_dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, packing: Packing | None = None) -> Tensor:
        """x [B, L, D], mask bool [B|1, 1, 1|L, L] or None; or with a packing the real tokens [n, D]
        (see SelfAttention.forward)."""
        x = self.attn_norm(x + self.drop(self.attn(x, mask, packing=packing)))
        return self.feed_forward(x)

    def feed_forward(self, x: Tensor) -> Tensor:
        """The second sub-layer: x [..., D] -> LayerNorm(x + Dropout(FFN(x)))."""
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class GradientCheckpointing:
    """gradient_checkpointing_enable / _disable, as transformers' models have them: with it on, each block of a
    stack keeps only its input for the backward pass and computes its forward again there (Chen et al. 2016,
    "Training Deep Nets with Sublinear Memory Cost"): the blocks' inputs and one block's activations at a time are
    kept instead of every block's activations, for about one more forward pass. A stack runs its blocks through
    `run_block`."""

    gradient_checkpointing = False

    def gradient_checkpointing_enable(self) -> None:
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, on: bool) -> None:
        for m in self.modules():
            if isinstance(m, GradientCheckpointing):
                m.gradient_checkpointing = on

    def run_block(self, block: nn.Module, *args) -> Tensor:
        """block(*args), checkpointed when training with checkpointing on. The recomputation draws the same dropout
        masks (checkpoint restores the random state), so the gradients are the plain run's."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)


def init_weights(model: nn.Module, std: float) -> None:
    """HF's initialization: N(0, std) weights, zero biases and padding rows, unit LayerNorms."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                m.weight.data[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
