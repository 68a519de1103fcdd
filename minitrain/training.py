"""The training loop the three scripts share (train_cola.py, train_squad.py, train_paraphrase.py).

Nothing task-specific lives here: a script builds its data and model, says how a batch becomes a loss,
and calls `fit`:

    cfg, device, t0 = prepare_run(args)              checks that write nothing; torchrun's process group; seed
    ... load the data and the model ...
    log = start_run(cfg)                             the output folder, its lock, the log
    result = fit(model, cfg, batches, collate, loss_fn, evaluate=..., metric=..., log=log)
    ... evaluate (rank 0: `is_main_process()`), write results ...
    finish_run(log, metrics, t0, "what it wrote")

fit's contract, which makes the result independent of the number of processes and micro-batches:
    batches(epoch) -> the epoch's global batches, lists of example indices (e.g. `batch_indices`: a pure
        function of seed and epoch, so --resume skips exactly the batches already trained on);
        --batch-size examples each, the last one possibly shorter.
    collate(indices) -> a batch (tensors on the CPU) of those examples.
    loss_fn(model, batch) -> (mean loss, weight): the mean over `weight` units (examples, or label
        tokens for a token-mean loss; an int or a device tensor). Every rank takes its share of each
        global batch (`micro_batches`) and each share's mean counts with its weight, so the gradient is
        the mean over the global batch, short last batch included.
    evaluate(model) -> dict of validation metrics, run on rank 0 every --eval-every steps, at each
        epoch end and when training stops, its random draws undone afterwards; `metric` (in that dict)
        and `higher_is_better` choose the best evaluation for --keep-best and --early-stopping-patience.

The pieces live in modules with one job each and are re-exported here, the one import a script needs:
options (add_training_args, TrainConfig), runs (prepare_run, start_run, finish_run, RunLog, run_info),
runtime (pick_device, autocast, set_seed), distributed (is_main_process, world_size), batching (batch_indices,
micro_batches, to_device), optim (make_optimizer, linear_schedule, param_groups), saving
(last_checkpoint, fingerprint), files (write_text, write_json).
"""
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from minitrain import distributed as dist
from minitrain.batching import batch_indices, micro_batches, to_device
from minicore.errors import UserError
from minitrain.distributed import is_main_process, world_size
from minicore.files import write_json, write_text
from minitrain.optim import linear_schedule, make_optimizer, param_groups
from minitrain.options import add_training_args, TrainConfig
from minitrain.reporting import add_scalars, plot_curves, tensorboard_writer
from minitrain.runs import finish_run, prepare_run, run_info, RunLog, start_run
from minicore.runtime import (autocast, pick_device, preserved_rng, resolve_precision, rng_states, set_rng_states,
    set_seed)
from minitrain.saving import (check_settings, fingerprint, last_checkpoint, load_for_resume, save_best,
    save_checkpoint, weights_finite)

__all__ = ["TrainConfig", "TrainState", "add_training_args", "autocast", "batch_indices", "best_or_last", "finish_run",
           "fingerprint", "fit", "is_main_process", "last_checkpoint", "linear_schedule", "make_optimizer",
           "micro_batches", "param_groups", "pick_device", "prepare_run", "run_info", "RunLog", "set_seed",
           "start_run", "to_device", "train_step", "world_size", "write_json", "write_text"]

NO_STEP = 2**62  # "no bad step yet", above any step so that the minimum over the ranks finds the first


@dataclass
class TrainState:
    """Where a run stands. With the tensors in training_state.pt (optimizer, schedule, loss scale, random
    states) it is all --resume needs; every checkpoint holds it as trainer_state.json."""
    settings: dict = field(default_factory=dict)  # what --resume must match (TrainConfig.settings, data, steps)
    optimizer_state: bool = True  # training_state.pt saved beside it: resumable
    world_size: int = 1
    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress, 0-based
    step_in_epoch: int = 0  # its global batches done
    elapsed_s: float = 0.0  # wall time inside fit, interruptions left out
    epoch_time_s: float = 0.0  # this epoch's training time, evaluations and checkpoints left out
    epoch_loss: float = 0.0  # this epoch, all ranks: sum of mean loss x weight, ...
    epoch_weight: float = 0.0  # ... sum of weights
    epoch_examples: int = 0
    window_loss: float = 0.0  # the same since the last log line
    window_weight: float = 0.0
    losses: list = field(default_factory=list)  # [step, mean loss] at each log line (curves.png)
    history: list = field(default_factory=list)  # a record per epoch
    evals: list = field(default_factory=list)  # a record per evaluation
    best: dict | None = None  # the best evaluation's record
    evals_since_best: int = 0


class DeviceSums:
    """Running sums kept on the device, so that a training step needs no host-device sync: loss x weight,
    weight, and the first step whose loss or gradient norm was not finite (and that loss)."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)
        self.bad_step = torch.full((), NO_STEP, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), device=device)

    def add(self, step: int, loss_sum: Tensor, weight_sum: Tensor, grad_norm: Tensor | None) -> None:
        self.sums[0] += loss_sum
        self.sums[1] += weight_sum
        finite = torch.isfinite(loss_sum) if grad_norm is None else torch.isfinite(loss_sum) & torch.isfinite(grad_norm)
        first = ~finite & (self.bad_step == NO_STEP)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_loss = torch.where(first, loss_sum / weight_sum, self.bad_loss)

    def collect(self) -> tuple[float, float, int | None, float]:
        """-> (loss x weight, weight) since the last call, summed over the ranks, the first bad step
        over the ranks (None: none) and this rank's loss there. The one host sync of the loop."""
        sums = dist.all_reduce(self.sums.clone())
        bad_step = dist.all_reduce(self.bad_step.clone(), "min")
        self.sums.zero_()
        values = torch.cat([sums, bad_step.double().view(1), self.bad_loss.double().view(1)])
        loss, weight, bad, bad_loss = values.tolist()
        return loss, weight, None if bad >= NO_STEP else int(bad), bad_loss


def train_step(model: nn.Module, batches: list[tuple[object, float]], loss_fn: Callable,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device, precision: str,
               max_grad_norm: float, n_examples: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """One optimizer step on a global batch of `n_examples`; every rank calls it with its micro-batches.

    batches: this rank's micro-batches [(batch on the device, 1.0)], or (a stand-in batch, 0.0) where its
    share is empty: the rank still runs forward and backward, as DDP's gradient all-reduce needs every rank.
    Each micro-batch's mean loss counts by its weight: backward on loss x weight / n_examples (any constant
    shared by the ranks would do; this one keeps fp16's scale near that of a mean), then, once DDP has
    averaged over the ranks, the gradients are scaled to the mean over the global batch's total weight. A
    single batch in a single process is already that mean and skips both.
    -> (sum of loss x weight, sum of weights) on this rank, and the gradient norm before clipping (None
    without clipping): device tensors, no host sync.
    """
    weighted = len(batches) > 1 or dist.world_size() > 1
    loss_sum = weight_sum = torch.zeros((), device=device)
    for i, (batch, keep) in enumerate(batches):
        with contextlib.nullcontext() if i == len(batches) - 1 else dist.no_sync(model):  # all-reduce once
            with autocast(device, precision):
                loss, weight = loss_fn(model, batch)
            weight = weight * keep
            scaler.scale(loss * (weight / n_examples) if weighted else loss).backward()
        loss_sum = loss_sum + loss.detach().float() * weight
        weight_sum = weight_sum + weight
    if weighted:  # the gradient now is world_size^-1 sum_ranks sum_i grad(loss_i) w_i / n_examples
        total = dist.all_reduce(weight_sum.double().clone()).clamp(min=1e-12)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        torch._foreach_mul_(grads, (dist.world_size() * n_examples / total).float())
    scaler.unscale_(optimizer)  # (a no-op unless fp16)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm) if max_grad_norm > 0 else None
    scaler.step(optimizer)  # fp16: skips the step when a gradient is inf or nan (then lowers the scale)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, weight_sum, grad_norm


def fit(model: nn.Module, cfg: TrainConfig, batches: Callable[[int], list[list[int]]], collate: Callable,
        loss_fn: Callable, *, evaluate: Callable[[nn.Module], dict] | None = None, metric: str | None = None,
        higher_is_better: bool = True, fingerprint: str | None = None, log: RunLog | None = None,
        tokenizer_from=None, unit: str = "examples") -> dict:
    """Train `model` with AdamW, a linear schedule (warmup_ratio), clipping and mixed precision, on every
    rank of a torchrun job or in a single process (see the module docstring for batches, collate,
    loss_fn, evaluate).

    fingerprint: a hash of the training data (`fingerprint(...)`): --resume refuses other data.
    tokenizer_from: a checkpoint name or folder whose tokenizer files go into each checkpoint.
    unit: what an example is called in the log ("features" for SQuAD's windows).

    Returns {"step", "epoch", "history" (a record per epoch), "evals", "best", "stopped_early",
    "train_time_s", "checkpoint"}. With --keep-best the model ends with the best evaluation's weights.
    The schedule spans epochs x steps per epoch; --max-steps only stops early, so a run cut by it and
    resumed ends with the parameters of an uninterrupted run.
    """
    out, own_log = Path(cfg.output_dir), log is None
    log = log or RunLog(out)
    device = pick_device(cfg.device, dist.local_rank())
    precision = resolve_precision(cfg.precision, device)
    rank, world = dist.rank(), dist.world_size()
    steps_per_epoch = len(batches(0))
    total_steps = cfg.epochs * steps_per_epoch
    stop_at = min(total_steps, cfg.max_steps or total_steps)
    if steps_per_epoch == 0:
        raise UserError("no training data: batches(0) is empty", fix="check the training files and filters")
    if (cfg.keep_best or cfg.early_stopping_patience) and not (evaluate and metric):
        raise ValueError("--keep-best and --early-stopping-patience need fit(evaluate=..., metric=...)")

    model.to(device)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
    scheduler = linear_schedule(optimizer, total_steps, math.ceil(cfg.warmup_ratio * total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    settings = dataclasses.replace(cfg, precision=precision).settings()
    state = TrainState(settings={**settings, "data": fingerprint, "steps_per_epoch": steps_per_epoch},
                       optimizer_state=cfg.save_optimizer_state, world_size=world)
    ckpt = None
    if cfg.resume:
        state, ckpt = _resume(out, cfg, model, optimizer, scheduler, scaler, state, log)
    elif rank > 0:  # each rank its own dropout masks (rank 0 keeps the single-process stream)
        set_seed(int(np.random.SeedSequence([cfg.seed, rank]).generate_state(1)[0]))
    train_model = dist.wrap(model, device)
    if cfg.compile:
        train_model = torch.compile(train_model)
    board = tensorboard_writer(out / "tensorboard") if cfg.report_to == "tensorboard" and is_main_process() else None
    sums = DeviceSums(device)
    run_t0 = time.perf_counter() - state.elapsed_s
    window_t0, window_examples = time.perf_counter(), 0
    bar = tqdm(total=stop_at, initial=state.step, desc="train", dynamic_ncols=True, mininterval=1.0,
               disable=not is_main_process())

    while not _stop(state, stop_at, cfg):
        model.train()
        order = batches(state.epoch)
        if len(order) != steps_per_epoch:
            raise ValueError(f"batches({state.epoch}) gave {len(order)} batches, batches(0) {steps_per_epoch}")
        epoch_t0 = time.perf_counter() - state.epoch_time_s
        for indices in order[state.step_in_epoch:]:
            parts = micro_batches(indices, rank, world, cfg.grad_accum_steps)
            micro = [(to_device(collate(part or indices[:1]), device), 1.0 if part else 0.0) for part in parts]
            loss_sum, weight_sum, grad_norm = train_step(train_model, micro, loss_fn, optimizer, scaler, device,
                                                         precision, cfg.max_grad_norm, len(indices))
            scheduler.step()
            state.step, state.step_in_epoch = state.step + 1, state.step_in_epoch + 1
            state.epoch_examples += len(indices)
            window_examples += len(indices)
            sums.add(state.step, loss_sum, weight_sum, None if scaler.is_enabled() else grad_norm)  # fp16: inf happens
            bar.update(1)
            at_epoch_end = state.step_in_epoch == steps_per_epoch
            if state.step % cfg.log_every == 0 or state.step == stop_at:
                _collect(state, sums, cfg, log, ckpt)
                now = time.perf_counter()
                loss = state.window_loss / max(state.window_weight, 1e-12)
                rate = window_examples / max(now - window_t0, 1e-9)
                state.losses.append([state.step, round(loss, 6)])
                state.window_loss = state.window_weight = 0.0
                window_t0, window_examples = now, 0
                record = log.event("step", step=state.step, epoch=state.epoch + 1, loss=round(loss, 6),
                                   lr=scheduler.get_last_lr()[0], examples_per_s=round(rate, 2),
                                   elapsed=round(now - run_t0, 2))
                log.print(f"step {state.step}/{stop_at} | epoch {state.epoch + 1} | loss {loss:.4f} | "
                          f"lr {record['lr']:.3g} | {rate:.1f} {unit}/s")
                bar.set_postfix(loss=f"{loss:.4f}", rate=f"{rate:.1f}/s")
                if board:
                    add_scalars(board, "train", state.step, record)
            if evaluate and cfg.eval_every and state.step % cfg.eval_every == 0 and not at_epoch_end \
                    and state.step < stop_at:
                t = time.perf_counter()
                _evaluate(evaluate, model, state, cfg, metric, higher_is_better, sums, log, board, ckpt, tokenizer_from)
                paused = time.perf_counter() - t  # evaluation time is not training time
                epoch_t0, window_t0 = epoch_t0 + paused, window_t0 + paused
            if cfg.save_every and state.step % cfg.save_every == 0 and not at_epoch_end \
                    and not _stop(state, stop_at, cfg):
                t = time.perf_counter()
                state.epoch_time_s, state.elapsed_s = t - epoch_t0, t - run_t0
                ckpt = _save(out, cfg, model, optimizer, scheduler, scaler, state, sums, log, ckpt, tokenizer_from)
                paused = time.perf_counter() - t
                epoch_t0, window_t0 = epoch_t0 + paused, window_t0 + paused
            if _stop(state, stop_at, cfg):
                break

        # the epoch's end, or training's: a record, an evaluation, a checkpoint
        epoch_end = time.perf_counter()
        state.epoch_time_s = epoch_end - epoch_t0
        _collect(state, sums, cfg, log, ckpt)
        epoch_done = state.step_in_epoch == steps_per_epoch
        record = {"step": state.step, "epoch": state.epoch + 1, "partial": not epoch_done,
                  "train_loss": round(state.epoch_loss / max(state.epoch_weight, 1e-12), 6),
                  "epoch_time_s": round(state.epoch_time_s, 2),
                  "examples_per_s": round(state.epoch_examples / max(state.epoch_time_s, 1e-9), 2)}
        if evaluate and not (state.evals and state.evals[-1]["step"] == state.step):
            record.update(_evaluate(evaluate, model, state, cfg, metric, higher_is_better, sums, log, board, ckpt,
                                    tokenizer_from))
        elif evaluate:
            record.update({k: v for k, v in state.evals[-1].items() if k not in ("step", "epoch")})
        record["elapsed"] = round(time.perf_counter() - run_t0, 2)
        state.history = [h for h in state.history if h["epoch"] != state.epoch + 1] + [record]  # replaces a partial one
        log.event("epoch", **record)
        log.print(f"epoch {state.epoch + 1}/{cfg.epochs}" + "".join(
            f" | {k} {v:.4g}" if isinstance(v, float) else f" | {k} {v}"
            for k, v in record.items() if k not in ("epoch", "partial")))
        if epoch_done:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
            state.epoch_time_s = state.epoch_loss = state.epoch_weight = 0.0
            state.epoch_examples = 0
        state.elapsed_s = time.perf_counter() - run_t0
        ckpt = _save(out, cfg, model, optimizer, scheduler, scaler, state, sums, log, ckpt, tokenizer_from)
        window_t0 += time.perf_counter() - epoch_end  # the logged rate counts training time alone
    bar.close()

    stopped_early = state.step < stop_at
    if stopped_early:
        log.print(f"early stopping at step {state.step}: no better {metric} in {cfg.early_stopping_patience} "
                  f"evaluations (best {state.best[metric]:.4g} at step {state.best['step']})")
    if cfg.keep_best and state.best:
        model.load_state_dict(type(model).from_pretrained(out / "best").state_dict())
        log.print(f"the model now holds the best checkpoint, {out / 'best'}: step {state.best['step']}, "
                  f"{metric} {state.best[metric]:.4g}")
    if board:
        board.close()
    if is_main_process() and not plot_curves(out / "curves.png", state.losses, state.evals, metric,
                                             state.best and state.best["step"]):
        log.print("matplotlib is not installed: no curves.png (pip install matplotlib)")
    result = {"step": state.step, "epoch": state.epoch, "history": state.history, "evals": state.evals,
              "best": state.best and {**state.best, "metric": metric,
                                      "path": str(out / "best") if cfg.keep_best else None},
              "stopped_early": stopped_early, "train_time_s": round(state.elapsed_s, 2),
              "checkpoint": str(ckpt) if ckpt else None}
    if own_log:
        log.close()
    return result


def best_or_last(result: dict) -> str:
    """Which model fit left for the final evaluation, in words for the log and metrics.json."""
    best = result["best"]
    if best and best["path"]:
        return f"best checkpoint ({best['path']}: step {best['step']}, {best['metric']} {best[best['metric']]:.4g})"
    return f"model after the last step ({result['step']})"


def _stop(state: TrainState, stop_at: int, cfg: TrainConfig) -> bool:
    """At --max-steps (or the last step), or out of --early-stopping-patience."""
    patience = cfg.early_stopping_patience
    return state.step >= stop_at or bool(patience and state.evals_since_best >= patience)


def _collect(state: TrainState, sums: DeviceSums, cfg: TrainConfig, log: RunLog, ckpt: Path | None) -> None:
    """Bring the device sums into `state`; stop with a UserError if a loss or gradient was not finite."""
    loss, weight, bad_step, bad_loss = sums.collect()
    if bad_step is not None:
        what = f"loss is {bad_loss}" if not math.isfinite(bad_loss) else "gradient norm is not finite"
        log.event("diverged", step=bad_step, last_checkpoint=ckpt and str(ckpt))
        raise UserError(f"training diverged at step {bad_step}: {what}; no checkpoint was written after it "
                        f"(the last one: {ckpt or 'none'})", fix=f"lower --lr (now {cfg.lr})"
                        + (" or turn clipping on with --max-grad-norm 1" if cfg.max_grad_norm == 0 else ""))
    state.window_loss, state.window_weight = state.window_loss + loss, state.window_weight + weight
    state.epoch_loss, state.epoch_weight = state.epoch_loss + loss, state.epoch_weight + weight


def _evaluate(evaluate: Callable, model: nn.Module, state: TrainState, cfg: TrainConfig, metric: str | None,
              higher_is_better: bool, sums: DeviceSums, log: RunLog, board, ckpt: Path | None,
              tokenizer_from) -> dict:
    """Evaluate on rank 0 (the others wait for its metrics), in eval mode and without gradients, with the
    random states restored afterwards; track the best evaluation and, with --keep-best, save its model
    -> the metrics."""
    _collect(state, sums, cfg, log, ckpt)  # never evaluate (nor save as best) a diverged model
    t = time.perf_counter()
    metrics = None
    if is_main_process():
        model.eval()
        with preserved_rng(), torch.no_grad():
            metrics = evaluate(model)
        metrics = {**metrics, "eval_time_s": round(time.perf_counter() - t, 2)}
    metrics = dist.broadcast_object(metrics)
    model.train()
    record = {"step": state.step, "epoch": state.epoch + 1, **metrics}
    state.evals.append(record)
    if metric is not None:
        if metric not in metrics:
            raise ValueError(f"evaluate() returned no {metric!r}, only {sorted(metrics)}")
        best = state.best and state.best[metric]
        if best is None or (metrics[metric] > best if higher_is_better else metrics[metric] < best):
            state.best, state.evals_since_best = record, 0
            if cfg.keep_best and is_main_process():
                save_best(cfg.output_dir, model, record, tokenizer_from)
        else:
            state.evals_since_best += 1
    log.event("validation", **record)
    log.print(f"validation at step {state.step}: " + " | ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        + (" (best)" if state.best is record else ""))
    if board:
        add_scalars(board, "eval", state.step, metrics)
    return metrics


def _save(out: Path, cfg: TrainConfig, model: nn.Module, optimizer, scheduler, scaler, state: TrainState,
          sums: DeviceSums, log: RunLog, ckpt: Path | None, tokenizer_from) -> Path:
    """Write a checkpoint (rank 0; every rank sends its random states) unless the loss, a gradient or a
    weight has gone non-finite -> its path."""
    _collect(state, sums, cfg, log, ckpt)
    if not weights_finite(model):
        raise UserError(f"training diverged before step {state.step}: a weight is not finite; no checkpoint was "
                        f"written after it (the last one: {ckpt or 'none'})", fix=f"lower --lr (now {cfg.lr})")
    rng = dist.gather_objects(rng_states())
    path = out / "checkpoint"
    if is_main_process():
        tensors = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "scaler": scaler.state_dict(), "rng": rng} if cfg.save_optimizer_state else None
        path = save_checkpoint(out, model, dataclasses.asdict(state), tensors, tokenizer_from, cfg.save_total_limit)
        log.event("checkpoint", step=state.step, epoch=state.epoch + 1, path=str(path))
        log.print(f"saved checkpoint {path} (step {state.step})")
    return path


def _resume(out: Path, cfg: TrainConfig, model: nn.Module, optimizer, scheduler, scaler, fresh: TrainState,
            log: RunLog) -> tuple[TrainState, Path]:
    """Load the newest readable checkpoint into the model, optimizer, schedule, loss scale and random
    states -> (its TrainState, its path). Refuses settings that would change the result."""
    ckpt, saved, tensors, notes = load_for_resume(out)
    for note in notes:
        log.print(f"{note}: resuming from the previous checkpoint, {ckpt}")
    check_settings(saved["settings"], fresh.settings, ckpt)
    model.load_state_dict(type(model).from_pretrained(ckpt).state_dict())
    optimizer.load_state_dict(tensors["optimizer"])
    scheduler.load_state_dict(tensors["scheduler"])
    scaler.load_state_dict(tensors["scaler"])
    state = TrainState(**saved)
    rank, world = dist.rank(), dist.world_size()
    if len(tensors["rng"]) == world:
        set_rng_states(tensors["rng"][rank])
    else:
        set_seed(int(np.random.SeedSequence([cfg.seed, rank, state.step]).generate_state(1)[0]))
        log.print(f"the checkpoint was written by {len(tensors['rng'])} processes, this run has {world}: the batch "
                  "order, weights and optimizer state carry over, the random draws (dropout) differ from those of "
                  "an uninterrupted run")
    state.world_size = world
    log.event("resume", step=state.step, epoch=state.epoch + 1, checkpoint=str(ckpt))
    log.print(f"resuming from {ckpt} at step {state.step} (epoch {state.epoch + 1}, batch {state.step_in_epoch})")
    return state, ckpt
