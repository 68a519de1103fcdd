"""Which examples go into which batch: the batch order of an epoch, each rank's share of a batch, and
the move to the device.

A script describes an epoch as a list of global batches of example indices (`batch_indices`, a pure
function of seed and epoch); the training loop gives each rank its share of every global batch
(`micro_batches`), so the batch order and what each optimizer step averages over never depend on
the number of processes.
"""
import numpy as np
import torch


def batch_indices(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  lengths: list[int] | None = None, chunk_batches: int = 50) -> list[list[int]]:
    """The example indices of each batch of one epoch; a pure function of (seed, epoch).

    Default: a random permutation cut into batches (PyTorch's RandomSampler). With `lengths`:
    shuffle, then sort by length within chunks of `chunk_batches` batches and shuffle the batch
    order, so each batch holds similar lengths and dynamic padding wastes little. The number of
    batches is ceil(n / batch_size) either way.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    if lengths is None:
        return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    if len(lengths) != n:
        raise ValueError(f"batch_indices: got {len(lengths)} lengths for {n} examples")
    lengths = np.asarray(lengths)
    chunk = batch_size * chunk_batches
    batches = []
    for i in range(0, n, chunk):
        part = order[i:i + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[j:j + batch_size].tolist() for j in range(0, len(part), batch_size)]
    return [batches[i] for i in (rng.permutation(len(batches)) if shuffle else range(len(batches)))]


def micro_batches(batch: list[int], rank: int, world_size: int, accum_steps: int) -> list[list[int]]:
    """This rank's share of a global batch, cut into `accum_steps` micro-batches.

    Rank r takes every world_size-th example from the r-th on (DistributedSampler's rule), then cuts
    its share into consecutive near-equal parts. A part may be empty (a short last batch); the rank
    still takes its part in the step, with weight 0.
    """
    share = batch[rank::world_size]
    return [part.tolist() for part in np.array_split(np.asarray(share, dtype=np.int64), accum_steps)]


def to_device(batch, device: torch.device):
    """Move every tensor in a (nested) dict / list / tuple to `device`; None and other values stay.
    To a GPU through pinned memory: a copy from pageable memory would wait for the queued kernels
    (a host-device sync per batch), a pinned one is queued behind them."""
    if isinstance(batch, torch.Tensor):
        if device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
