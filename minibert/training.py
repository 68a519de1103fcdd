"""The training loop the three scripts share (train_cola.py, train_squad.py, train_paraphrase.py).

Nothing task-specific lives here: a script builds its data and model, says how to turn a batch into
a loss, and calls `fit`. Public API:

    add_training_args(parser, **defaults)          the common command-line options
    TrainConfig.from_args(args)                    those options as a dataclass
    set_seed(seed); pick_device(name) -> device; autocast(device) -> context manager
    param_groups(model, weight_decay) -> groups    no decay on biases and LayerNorm weights
    make_optimizer(model, lr, weight_decay, device) -> AdamW (fused kernel on CUDA and CPU)
    linear_schedule(optimizer, total_steps, warmup_steps) -> LambdaLR
    batch_indices(n, batch_size, seed, epoch, shuffle=True, lengths=None) -> list of index lists
    to_device(batch, device)
    RunLog(output_dir, resume=False)               JSON lines (log.jsonl) + printed lines (train.log)
    start_run(args, log_class=RunLog) -> (cfg, device, log, t0); finish_run(log, output_dir, metrics, t0, wrote)
    fit(model, cfg, batches, loss_fn, steps_per_epoch, on_epoch_end=None, log=None,
        tokenizer_from=None) -> dict
    last_checkpoint(output_dir) -> Path | None
    write_text(path, text); write_json(path, obj)  atomic (temp file, then os.replace)
    run_info(device, argv=None) -> dict            command line, hardware, versions for metrics.json

Checkpoints live in `<output_dir>/checkpoint/`: the model in Hugging Face layout (save_pretrained),
the tokenizer files, and training_state.pt (optimizer, scheduler, step, epoch, RNG states, history).
A new checkpoint is written to a temporary folder and swapped in, so a crash never leaves a torn
one. `--resume` continues from it and ends with the same parameters as an uninterrupted run.
"""
import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import random
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from minibert.checkpoint import atomic_write, copy_tokenizer_files

STATE_FILE = "training_state.pt"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _number(kind, lo, lo_ok, hi=None):
    def parse(s):
        try:
            x = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {s!r}") from None
        if (x < lo if lo_ok else x <= lo) or (hi is not None and x >= hi):
            bound = f"{'>=' if lo_ok else '>'} {lo}" + (f" and < {hi}" if hi is not None else "")
            raise argparse.ArgumentTypeError(f"expected a value {bound}, got {s!r}")
        return x
    parse.__name__ = kind.__name__
    return parse


def add_training_args(parser: argparse.ArgumentParser, **defaults) -> argparse.ArgumentParser:
    """Add the options every script shares; `defaults` sets the script's own values (e.g. lr=2e-5)."""
    g = parser.add_argument_group("training")
    g.add_argument("--model", default="bert-base-uncased",
                   help="checkpoint folder (HF layout), the alias 'minilm', or a Hub id")
    g.add_argument("--output-dir", default="out", help="log, metrics, samples and checkpoint go here")
    g.add_argument("--epochs", type=_number(int, 1, True), default=1)
    g.add_argument("--batch-size", type=_number(int, 1, True), default=32)
    g.add_argument("--lr", type=_number(float, 0, False), default=5e-5, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=_number(float, 0, True), default=0.0,
                   help="AdamW weight decay (never on biases and LayerNorm weights)")
    g.add_argument("--warmup-ratio", type=_number(float, 0, True, 1), default=0.0,
                   help="fraction of the steps with a linear warmup, then linear decay to 0")
    g.add_argument("--max-grad-norm", type=_number(float, 0, True), default=1.0, help="0 = no clipping")
    g.add_argument("--max-steps", type=_number(int, 1, True), default=None,
                   help="stop after this many optimizer steps (smoke runs); the schedule is unchanged")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--resume", action="store_true", help="continue from <output-dir>/checkpoint")
    g.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    g.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1")
    g.add_argument("--log-every", type=_number(int, 1, True), default=50, help="log every N steps")
    g.add_argument("--save-every", type=_number(int, 0, True), default=0,
                   help="also checkpoint every N steps (0 = at epoch ends only)")
    unknown = set(defaults) - {a.dest for a in g._group_actions}
    if unknown:
        raise ValueError(f"add_training_args: unknown defaults {sorted(unknown)}")
    parser.set_defaults(**defaults)
    return parser


@dataclass
class TrainConfig:
    output_dir: str
    epochs: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    max_steps: int | None = None
    seed: int = 42
    resume: bool = False
    compile: bool = False
    device: str = "auto"
    log_every: int = 50
    save_every: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainConfig":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------------------------------------
# Seeding, device, precision, optimizer, schedule
# ---------------------------------------------------------------------------------------------

def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def autocast(device: torch.device):
    """bf16 autocast on CUDA (parameters and optimizer stay fp32); a no-op on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay on weight matrices and embeddings, none on biases and
    LayerNorm weights (as BERT's original optimizer and HF's run_glue.py / run_squad.py)."""
    no_decay = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, nn.LayerNorm) or name.endswith("bias"):
                no_decay.add(p)
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    return [{"params": [p for p in params if p not in no_decay], "weight_decay": weight_decay},
            {"params": [p for p in params if p in no_decay], "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019), eps 1e-8, with the fused kernel on CUDA and on CPU (on CPU
    it is ~7x faster than the default for-each implementation on MiniLM's 22M parameters)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, eps=1e-8,
                             fused=device.type in ("cuda", "cpu"))


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0):
    """lr multiplier rising linearly 0 -> 1 over warmup_steps, then falling linearly to 0 at
    total_steps (HF's get_linear_schedule_with_warmup)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------

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


def to_device(batch, device: torch.device):
    """Move every tensor in a (nested) dict / list / tuple to `device`; None and other values stay."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# ---------------------------------------------------------------------------------------------
# Files and logs
# ---------------------------------------------------------------------------------------------

def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(Path(path), lambda p: Path(p).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def run_info(device: torch.device, argv: list[str] | None = None) -> dict:
    """What metrics.json records about the run: the command line (`argv`, script name first, for a
    main() called with arguments; else sys.argv), hardware and library versions."""
    info = {"command": " ".join(shlex.quote(a) for a in ["python", *(sys.argv if argv is None else argv)]),
            "device": str(device), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class RunLog:
    """`event(kind, **fields)` appends one JSON object to <dir>/log.jsonl; `print(text)` prints a
    human-readable line (without breaking the progress bar) and appends it to <dir>/train.log."""

    def __init__(self, output_dir: str | os.PathLike, resume: bool = False):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        mode = "a" if resume else "w"
        self.jsonl = open(self.dir / "log.jsonl", mode, encoding="utf-8")
        self.text = open(self.dir / "train.log", mode, encoding="utf-8")

    def event(self, kind: str, **fields) -> dict:
        record = {"event": kind, "time": round(time.time(), 3), **fields}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        return record

    def print(self, text: str) -> None:
        tqdm.write(text)
        self.text.write(text + "\n")
        self.text.flush()

    def close(self) -> None:
        self.jsonl.close()
        self.text.close()


def start_run(args: argparse.Namespace, log_class: type[RunLog] = RunLog):
    """What every script's main() begins with -> (TrainConfig, device, log, start time)."""
    t0 = time.perf_counter()
    set_seed(args.seed)
    return TrainConfig.from_args(args), pick_device(args.device), log_class(args.output_dir, resume=args.resume), t0


def finish_run(log: RunLog, output_dir: str | os.PathLike, metrics: dict, t0: float, wrote: str) -> dict:
    """What it ends with: the wall time into metrics.json, a closing line, the log closed."""
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 2)
    write_json(Path(output_dir) / "metrics.json", metrics)
    log.print(f"wrote metrics.json, {wrote} to {output_dir} ({metrics['wall_time_s']:.0f} s)")
    log.close()
    return metrics


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """<output_dir>/checkpoint, or the previous one if a crash came in the middle of the swap."""
    for name in ("checkpoint", "checkpoint.old"):
        folder = Path(output_dir) / name
        if (folder / STATE_FILE).exists():
            return folder
    return None


def _rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_states(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _save_checkpoint(output_dir: Path, model: nn.Module, state: dict, tokenizer_from) -> Path:
    """Write the model (HF layout), tokenizer files and training state to checkpoint.tmp, then
    swap it in for the previous checkpoint."""
    final, tmp, old = output_dir / "checkpoint", output_dir / "checkpoint.tmp", output_dir / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tokenizer_from is not None:
        copy_tokenizer_files(tokenizer_from, tmp)
    atomic_write(tmp / STATE_FILE, lambda p: torch.save(state, p))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def fit(model: nn.Module, cfg: TrainConfig, batches: Callable[[int], Iterable], loss_fn: Callable,
        steps_per_epoch: int, on_epoch_end: Callable[[int], dict | None] | None = None,
        log: RunLog | None = None, tokenizer_from: str | os.PathLike | None = None) -> dict:
    """Train `model` with AdamW, a linear schedule (warmup_ratio), clipping and autocast.

    batches(epoch) -> the batches of epoch `epoch` (0-based), exactly steps_per_epoch of them. It
        must depend on nothing but the epoch (seed its shuffling with it, e.g. with `batch_indices`):
        on resume the loop skips the batches of the interrupted epoch that were already trained on.
        A generator of collated batches or a DataLoader(ds, batch_sampler=batch_indices(...),
        collate_fn=..., num_workers=..., pin_memory=True) both work.
    loss_fn(model, batch) -> (mean loss tensor, n_examples int): runs under autocast; the batch is
        already on the device. `model` is the torch.compile'd module with --compile.
    on_epoch_end(epoch) -> dict of metrics (e.g. validation loss) merged into the epoch record; it is
        also called for the last, partial epoch when --max-steps stops early. Any RNG it uses is
        restored afterwards, so evaluation never changes the training run.
    tokenizer_from: a checkpoint name or folder whose tokenizer files go into each checkpoint.

    Returns {"step", "epoch", "history" (one record per epoch), "train_time_s", "checkpoint"}.
    The total number of steps for the schedule is epochs * steps_per_epoch; --max-steps only stops
    early, so a run cut by --max-steps and resumed matches an uninterrupted run.
    """
    out = Path(cfg.output_dir)
    own_log = log is None
    log = log or RunLog(out, resume=cfg.resume)
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(device)
    total_steps = cfg.epochs * steps_per_epoch
    stop_at = min(total_steps, cfg.max_steps or total_steps)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
    scheduler = linear_schedule(optimizer, total_steps, math.ceil(cfg.warmup_ratio * total_steps))
    step, epoch, step_in_epoch, history, prev_time = 0, 0, 0, [], 0.0
    epoch_loss, epoch_examples, epoch_time = 0.0, 0, 0.0

    if cfg.resume:
        ckpt = last_checkpoint(out)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {out} (expected {out / 'checkpoint' / STATE_FILE})")
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        if (state["steps_per_epoch"], state["total_steps"]) != (steps_per_epoch, total_steps):
            raise ValueError(f"--resume: {ckpt} was trained with {state['steps_per_epoch']} steps per epoch and "
                             f"{state['total_steps']} steps in all, this run has {steps_per_epoch} and "
                             f"{total_steps}: use the same data, --batch-size and --epochs")
        model.load_state_dict(type(model).from_pretrained(ckpt).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        history, prev_time = state["history"], state["train_time_s"]
        epoch_loss, epoch_examples, epoch_time = state["epoch_loss"], state["epoch_examples"], state["epoch_time"]
        _set_rng_states(state["rng"])
        log.event("resume", step=step, epoch=epoch + 1, checkpoint=str(ckpt))
        log.print(f"Resuming from {ckpt} at step {step} (epoch {epoch + 1}, batch {step_in_epoch})")

    train_model = torch.compile(model) if cfg.compile else model
    start = time.perf_counter()
    ckpt_path = last_checkpoint(out) if cfg.resume else None

    zero = torch.zeros((), device=device)
    loss_sum, n_sum, t_log = zero.clone(), 0, time.perf_counter()  # since the last log line
    ep_loss_sum = zero.clone()  # this epoch, on the device: no host sync per step

    def elapsed() -> float:
        return prev_time + time.perf_counter() - start

    def epoch_loss_total() -> float:
        return epoch_loss + ep_loss_sum.item()

    def save() -> Path:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                 "epoch": epoch, "step_in_epoch": step_in_epoch, "history": history,
                 "train_time_s": elapsed(), "epoch_loss": epoch_loss_total(), "epoch_examples": epoch_examples,
                 "epoch_time": epoch_time + time.perf_counter() - epoch_start, "rng": _rng_states(),
                 "steps_per_epoch": steps_per_epoch, "total_steps": total_steps}
        path = _save_checkpoint(out, model, state, tokenizer_from)
        log.event("checkpoint", step=step, epoch=epoch + 1, path=str(path))
        log.print(f"Saving model checkpoint to {path}")
        return path

    bar = tqdm(total=stop_at, initial=step, desc="train", dynamic_ncols=True, mininterval=1.0)
    while step < stop_at and epoch < cfg.epochs:
        model.train()
        epoch_start = time.perf_counter()
        for batch in itertools.islice(batches(epoch), step_in_epoch, None):
            if step_in_epoch == steps_per_epoch:
                raise ValueError(f"batches({epoch}) gave more than steps_per_epoch={steps_per_epoch} batches")
            batch = to_device(batch, device)
            with autocast(device):
                loss, n = loss_fn(train_model, batch)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, step_in_epoch = step + 1, step_in_epoch + 1
            weighted = loss.detach().float() * n
            loss_sum += weighted
            ep_loss_sum += weighted
            n_sum += n
            epoch_examples += n
            bar.update(1)
            if step % cfg.log_every == 0 or step == stop_at:
                now = time.perf_counter()
                avg = loss_sum.item() / max(1, n_sum)  # the one host sync, every log_every steps
                if not math.isfinite(avg):
                    raise FloatingPointError(f"training loss is {avg} at step {step}: lower --lr?")
                rate = n_sum / max(now - t_log, 1e-9)
                rec = log.event("step", step=step, epoch=epoch + 1, loss=round(avg, 6),
                                lr=scheduler.get_last_lr()[0], examples_per_s=round(rate, 2),
                                elapsed=round(elapsed(), 2))
                bar.set_postfix(loss=f"{avg:.4f}", ex_s=f"{rate:.1f}")
                log.print(f"step {step}/{stop_at} | epoch {epoch + 1} | loss {avg:.4f} | "
                          f"lr {rec['lr']:.3g} | {rate:.1f} examples/s")
                loss_sum, n_sum, t_log = zero.clone(), 0, now
            if cfg.save_every and step % cfg.save_every == 0 and step < stop_at:
                ckpt_path = save()
            if step >= stop_at:
                break
        epoch_done = step_in_epoch == steps_per_epoch
        if not epoch_done and step < stop_at:
            raise ValueError(f"batches({epoch}) gave {step_in_epoch} batches, steps_per_epoch={steps_per_epoch}")
        epoch_time += time.perf_counter() - epoch_start
        record = {"step": step, "epoch": epoch + 1, "partial": not epoch_done,
                  "train_loss": round(epoch_loss_total() / max(1, epoch_examples), 6),
                  "epoch_time_s": round(epoch_time, 2),
                  "examples_per_s": round(epoch_examples / max(epoch_time, 1e-9), 2)}
        if on_epoch_end is not None:
            rng = _rng_states()
            record.update(on_epoch_end(epoch) or {})
            _set_rng_states(rng)
            model.train()
        record["elapsed"] = round(elapsed(), 2)
        history = [r for r in history if r["epoch"] != epoch + 1] + [record]  # replaces a partial one
        log.event("epoch", **record)
        log.print(f"epoch {epoch + 1}/{cfg.epochs}" + "".join(
            f" | {k} {_fmt(v)}" for k, v in record.items() if k not in ("epoch", "partial")))
        if epoch_done:
            epoch, step_in_epoch = epoch + 1, 0
            epoch_loss, epoch_examples, epoch_time = 0.0, 0, 0.0
            ep_loss_sum = zero.clone()
        epoch_start = time.perf_counter()
        ckpt_path = save()
    bar.close()
    result = {"step": step, "epoch": epoch, "history": history, "train_time_s": round(elapsed(), 2),
              "checkpoint": str(ckpt_path) if ckpt_path else None}
    if own_log:
        log.close()
    return result
