"""Where and how the numbers are computed: device, precision, PyTorch's global switches, random states.

    pick_device(name, local_rank=None) -> device     auto, cpu, cuda, cuda:N; under torchrun cuda:LOCAL_RANK
    resolve_precision(name, device) -> "bf16" | "fp16" | "fp32"   name: one of PRECISIONS, "auto" or None
    cpu_has_bf16() -> bool                            native bf16 matmuls (AVX512-BF16 or AMX)
    amp_dtype(precision) -> torch.dtype | None
    autocast(device, precision)                       the context every forward pass (training and evaluation) runs in
    configure_torch(tf32, deterministic)              the process-wide switches, only when asked for
    set_seed(seed); rng_states() -> dict; set_rng_states(states); preserved_rng()
"""
import contextlib
import os
import random

import numpy as np
import torch

from minicore.errors import UserError

PRECISIONS = ("bf16", "fp16", "fp32")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def pick_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device named by --device. Under torchrun (`local_rank` given) "auto" and "cuda" mean this
    process's own GPU, cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError("unknown device", "--device", name, "expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError("unsupported device", "--device", name, "expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA is not available", "--device", name, "pass --device cpu")
    if device.type == "cuda" and local_rank is not None:
        if device.index is not None:
            raise UserError("under torchrun each process uses the GPU of its local rank", "--device", name,
                            "pass --device cuda or auto (CUDA_VISIBLE_DEVICES chooses the GPUs)")
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError("no such GPU", "--device", str(device), f"{torch.cuda.device_count()} GPU(s) visible")
    return device


def cpu_has_bf16() -> bool:
    """The CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 autocast is faster than fp32; elsewhere
    PyTorch emulates it, slower than fp32. PyTorch's kernel level says AVX512 or AMX; on Linux /proc/cpuinfo also
    lists the bf16 instructions (an AVX512 CPU without them, e.g. Skylake, emulates bf16)."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:  # not Linux: the kernel level is all there is to go by
        return True
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(name: str | None, device: torch.device) -> str:
    """--precision: "auto" is bf16 where the device computes it natively (a GPU that has it, a CPU with
    AVX512-BF16 or AMX), else fp32; None (the default) bf16 on a GPU that has it, else fp32. fp16 trains with
    loss scaling."""
    gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if name is None:
        return "bf16" if gpu_bf16 else "fp32"
    if name == "auto":
        return "bf16" if gpu_bf16 or (device.type == "cpu" and cpu_has_bf16()) else "fp32"
    if name not in PRECISIONS:
        raise UserError("unknown precision", "--precision", name, f"expected auto or one of {', '.join(PRECISIONS)}")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bf16", "--precision", name, "pass --precision fp16 (or fp32)")
    return name


def amp_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision (None for fp32)."""
    return _AMP_DTYPES[precision]


def autocast(device: torch.device, precision: str):
    """Mixed precision for the forward pass: parameters and optimizer state stay fp32, matmuls run in
    `precision`, a resolved one (resolve_precision); fp32 is no autocast."""
    dtype = amp_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def configure_torch(tf32: bool = False, deterministic: bool = False) -> None:
    """PyTorch's process-wide switches, each only when asked for: --tf32 lets fp32 matmuls and
    convolutions use TF32 tensor cores (faster, ~1e-3 relative error); --deterministic picks
    deterministic kernels where PyTorch has them (and warns where it has not)."""
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for reproducibility
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextlib.contextmanager
def preserved_rng():
    """Whatever random numbers the body draws, the random states afterwards are those before it
    (evaluation never changes the training run)."""
    states = rng_states()
    try:
        yield
    finally:
        set_rng_states(states)
