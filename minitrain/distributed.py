"""Data parallel training across processes: one process per GPU (or several on a CPU), started by torchrun.

`torchrun --nproc_per_node N script.py ...` (or `--nnodes M --node_rank ... --rdzv_endpoint ...` on
several machines) sets RANK, LOCAL_RANK and WORLD_SIZE; `init_distributed` joins the process group
they describe (nccl on GPUs, gloo on CPUs). Without torchrun there is one process and every function
here is a cheap no-op, so the single-process path pays nothing.

    local_rank() -> int | None                             this process's index on its machine (torchrun)
    init_distributed(device)                               join torchrun's process group, if any
    rank(); world_size(); is_main_process()                rank 0 alone writes files and prints
    backend() -> str | None                                "nccl" or "gloo" when distributed
    all_reduce(tensor, op="sum") -> tensor                 in place, on every rank
    broadcast_object(obj) -> obj                           rank 0's object on every rank
    gather_objects(obj) -> list | None                     every rank's object, on rank 0
    barrier()
    wrap(model, device) -> model                           DistributedDataParallel when distributed
    no_sync(model)                                         skip the gradient all-reduce (accumulation)
"""
import atexit
import contextlib
import inspect
import logging
import os

import torch
import torch.distributed as dist
from torch import nn


def local_rank() -> int | None:
    """This process's index on its machine under torchrun (it picks the GPU), None without torchrun."""
    return int(os.environ["LOCAL_RANK"]) if "LOCAL_RANK" in os.environ else None


def init_distributed(device: torch.device) -> None:
    """Join the process group that torchrun's environment describes (nothing to do without torchrun)."""
    if local_rank() is None or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(dist.destroy_process_group)
    if dist.get_rank() != 0:  # rank 0 alone speaks: the others' warnings would repeat its own (errors still show)
        logging.getLogger("minibert").setLevel(logging.ERROR)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def backend() -> str | None:
    return dist.get_backend() if dist.is_initialized() else None


def is_main_process() -> bool:
    """True in the process that writes logs, checkpoints and results (rank 0, or the only one)."""
    return rank() == 0


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `tensor` in place over all ranks ("sum", "min" or "max"); no-op in a single process."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
                                    "max": dist.ReduceOp.MAX}[op])
    return tensor


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. the metrics of an evaluation that ran on rank 0 only)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj) -> list | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None elsewhere (e.g. every rank's random state)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * world_size() if is_main_process() else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when distributed (it averages the gradients over the
    ranks during backward), else `model` itself. The models' buffers are constants (BART's
    final_logits_bias), so DDP need not broadcast them before each forward."""
    if not dist.is_initialized():
        return model
    ddp = nn.parallel.DistributedDataParallel
    constant_buffers = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                        else {"broadcast_buffers": False})  # the name before torch 2.13
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True,
               **constant_buffers)


def no_sync(model: nn.Module):
    """Inside it, backward accumulates gradients without DDP's all-reduce; a no-op for a plain module.
    `model` may be torch.compile'd around DDP."""
    inner = getattr(model, "_orig_mod", model)
    if isinstance(inner, nn.parallel.DistributedDataParallel):
        return inner.no_sync()
    return contextlib.nullcontext()
