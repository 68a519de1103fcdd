"""What the inference functions of the three tasks (squad.answer, classification.classify,
paraphrase.paraphrase) share: batches of similar length, and running a model for inference."""
import contextlib
from collections.abc import Iterable

import torch
from tqdm.auto import tqdm


def sorted_batches(lengths: list[int], batch_size: int, desc: str | None = None) -> Iterable[list[int]]:
    """Indices cut into batches of `batch_size` in order of length (stable), so that a batch pads
    little; `desc` wraps them in a progress bar of that name on stderr."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return tqdm(batches, desc=desc, dynamic_ncols=True, mininterval=1.0) if desc else batches


@contextlib.contextmanager
def evaluating(model: torch.nn.Module, amp_dtype: torch.dtype | None = None):
    """Yield the model's device with dropout off, no autograd, and autocast to `amp_dtype` when
    given (bf16 on CUDA, as in training); the model's train/eval mode is restored afterwards."""
    device = next(model.parameters()).device
    was_training = model.training
    amp = torch.autocast(device.type, amp_dtype) if amp_dtype else contextlib.nullcontext()
    model.eval()
    try:
        with torch.no_grad(), amp:
            yield device
    finally:
        model.train(was_training)
