"""Weights for CPU inference: fewer bytes to read, in the layout the fastest kernel reads, where decoding is bound by
reading the weights (each decode step reads every decoder weight and the LM head for a handful of rows).

    inference_weights(model, "fp32" | "bf16" | "int8") -> a copy of `model` for inference, in eval mode
    PackedLinear(linear); packed(model)               nn.Linear layers that read oneDNN-packed weights
    onednn_packs(device, dtype); pack(weight); linear_packed(x, packed, bias)   the packing itself

fp32 and bf16: each nn.Linear becomes a PackedLinear, its weight also kept in oneDNN's blocked layout (on CPU; what
torch.compile's weight prepacking does): F.linear's BLAS call reads a decoder's weights at about 9 GB/s on one thread
of an AVX-512 CPU, oneDNN's kernel on packed weights 1.1-1.8x faster for 1-16 rows, in the same precision. bf16 also
halves the bytes (every floating-point parameter and buffer in bfloat16). int8: dynamic quantization (Jacob et al.
2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference";
torch.ao.quantization.quantize_dynamic): each nn.Linear's weight in int8 with one scale per output row, its input
quantized per call from its observed range, the products accumulated in int32: a quarter of fp32's bytes.

Only nn.Linear modules called as modules run the faster kernels: code that reads a module's `.weight` itself gets
the plain weight from a PackedLinear (correct, not faster) and an error from a quantized module.
"""
import copy

import torch
from torch import Tensor, nn

from minicore.errors import UserError

WEIGHTS = ("fp32", "bf16", "int8")


def onednn_packs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a weight of this device and dtype can be packed for oneDNN: fp32 or bf16 on CPU, in a PyTorch built
    with oneDNN, outside torch.compile (which packs weights itself, and cannot trace oneDNN's packed ones)."""
    return device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available() \
        and not torch.compiler.is_compiling()


def pack(weight: Tensor) -> Tensor:
    """A linear layer's weight [out, in] in oneDNN's blocked layout (an opaque tensor only linear_packed reads)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach())


def linear_packed(x: Tensor, packed: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias) [..., out] from the packed weight, in its dtype."""
    return torch.ops.mkldnn._linear_pointwise(x.to(packed.dtype), packed, bias, "none", [], "")


class PackedLinear(nn.Module):
    """An inference-only nn.Linear whose forward reads its weight in oneDNN's blocked layout (a copy made here, so
    pack after .to(): a later conversion does not reach it). `weight` and `bias` stay the linear's own Parameters:
    state_dict, tied weights and code that reads `.weight` see what they saw."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.packed = pack(linear.weight)

    def forward(self, x: Tensor) -> Tensor:
        return linear_packed(x, self.packed, self.bias)

    def __deepcopy__(self, memo) -> "PackedLinear":  # a oneDNN tensor cannot be copied: pack a copy of the linear
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight, linear.bias = copy.deepcopy(self.weight, memo), copy.deepcopy(self.bias, memo)
        return PackedLinear(linear)


def packed(model: nn.Module) -> nn.Module:
    """`model` with each nn.Linear replaced by a PackedLinear, in place, where oneDNN runs it (fp32, bf16 on CPU)."""
    for name, child in model.named_children():
        if type(child) is nn.Linear and onednn_packs(child.weight.device, child.weight.dtype):
            setattr(model, name, PackedLinear(child))
        else:
            packed(child)
    return model


def inference_weights(model: nn.Module, weights: str) -> nn.Module:
    """A copy of `model` in eval mode for inference on CPU: fp32 or bf16 weights with packed nn.Linear layers, or
    dynamic int8 nn.Linear layers. Elsewhere (CUDA) fp32 and bf16 are plain copies."""
    if weights not in WEIGHTS:
        raise UserError("unknown weight precision", "weights", weights, f"use one of {', '.join(WEIGHTS)}")
    model = copy.deepcopy(model).eval()
    if weights == "int8":
        # per output row (per channel): the rows of a Transformer's weights differ in range by 10x and more
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8)
    return packed(model.to(torch.bfloat16) if weights == "bf16" else model)
