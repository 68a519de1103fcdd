"""The training loop the three scripts share (train_cola.py, train_squad.py, train_paraphrase.py).

Nothing task-specific lives here: a script builds its data and model, says how a batch becomes a loss
(a `Task`), and calls `fit`:

    cfg, t0 = prepare_run(args)                      checks that write nothing; torchrun's process group; seed;
                                                     cfg (a TrainConfig) holds the resolved device and precision
    ... load the data and the model ...
    log = start_run(cfg)                             the output folder, its lock, the log
    result = fit(model, cfg, Task(batches, collate, loss_fn, evaluate=..., metric=...), log)
    ... evaluate (rank 0: `is_main_process()`), write results ...
    finish_run(log, metrics, t0, "what it wrote")

A Task's contract, which makes the result independent of the number of processes and micro-batches:
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

`Trainer` is one run of fit, a method for each part: `step` (forward_backward, update), `log_step`,
`evaluate`, `save`, `resume`, `end_epoch`, `finish`; `TrainState` is where it stands, all a resume needs.
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

from minicore.errors import UserError
from minicore.runtime import autocast, preserved_rng, rng_states, set_rng_states, set_seed
from minitrain import distributed as dist
from minitrain.batching import micro_batches, to_device
from minitrain.distributed import is_main_process
from minitrain.optim import linear_schedule, make_optimizer
from minitrain.options import TrainConfig
from minitrain.reporting import add_scalars, plot_curves, tensorboard_writer
from minitrain.runs import RunLog
from minitrain.saving import check_settings, load_for_resume, save_best, save_checkpoint, weights_finite

__all__ = ["Task", "TrainState", "Trainer", "best_or_last", "fit"]

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


@dataclass(frozen=True)
class Task:
    """What a script tells the loop about its task (see the module docstring for batches, collate, loss_fn and
    evaluate). fingerprint: a hash of the training data (`fingerprint(...)`): --resume refuses other data.
    tokenizer_from: a checkpoint name or folder whose tokenizer files go into each checkpoint. unit: what an
    example is called in the log ("features" for SQuAD's windows)."""
    batches: Callable[[int], list[list[int]]]
    collate: Callable
    loss_fn: Callable
    evaluate: Callable[[nn.Module], dict] | None = None
    metric: str | None = None
    higher_is_better: bool = True
    fingerprint: str | None = None
    tokenizer_from: object = None
    unit: str = "examples"


def fit(model: nn.Module, cfg: TrainConfig, task: Task, log: RunLog | None = None) -> dict:
    """Train `model` with AdamW, a linear schedule (warmup_ratio), clipping and mixed precision, on every
    rank of a torchrun job or in a single process.

    Returns {"step", "epoch", "history" (a record per epoch), "evals", "best", "stopped_early",
    "train_time_s", "checkpoint"}. With --keep-best the model ends with the best evaluation's weights.
    The schedule spans epochs x steps per epoch; --max-steps only stops early, so a run cut by it and
    resumed ends with the parameters of an uninterrupted run.
    """
    trainer = Trainer(model, cfg, task, log)
    try:
        return trainer.run()
    finally:
        trainer.close()


class Clock:
    """Wall time of the run, of the epoch and of the window since the last log line, each counting training
    alone: `pause(seconds)` leaves out an evaluation or a checkpoint from the epoch and the window."""

    def __init__(self, elapsed_s: float):
        now = time.perf_counter()
        self.run_t0, self.epoch_t0, self.window_t0, self.window_examples = now - elapsed_s, now, now, 0

    def pause(self, seconds: float) -> None:
        self.epoch_t0, self.window_t0 = self.epoch_t0 + seconds, self.window_t0 + seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.run_t0

    def window_rate(self) -> float:
        """Examples per second since the last call (or the start); starts the next window."""
        now = time.perf_counter()
        rate = self.window_examples / max(now - self.window_t0, 1e-9)
        self.window_t0, self.window_examples = now, 0
        return rate


class Trainer:
    """One run of `fit`: `run` trains epoch after epoch; each step, evaluation, save and resume is one method."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, task: Task, log: RunLog | None = None):
        self.model, self.cfg, self.task = model, cfg, task
        self.out, self.own_log = Path(cfg.output_dir), log is None
        self.log = log or RunLog(self.out)
        self.steps_per_epoch = len(task.batches(0))
        if self.steps_per_epoch == 0:
            raise UserError("no training data: batches(0) is empty", fix="check the training files and filters")
        if (cfg.keep_best or cfg.early_stopping_patience) and not (task.evaluate and task.metric):
            raise ValueError("--keep-best and --early-stopping-patience need a Task with evaluate and metric")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.stop_at = min(self.total_steps, cfg.max_steps or self.total_steps)
        model.to(cfg.device)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.device)
        warmup = math.ceil(cfg.warmup_ratio * self.total_steps)
        self.scheduler = linear_schedule(self.optimizer, self.total_steps, warmup)
        self.scaler = torch.amp.GradScaler(cfg.device.type, enabled=cfg.precision == "fp16")
        self.state = TrainState(settings={**cfg.settings(), "data": task.fingerprint,
                                          "steps_per_epoch": self.steps_per_epoch},
                                optimizer_state=cfg.save_optimizer_state, world_size=dist.world_size())
        self.sums = DeviceSums(cfg.device)
        self.ckpt: Path | None = None  # the latest checkpoint written or resumed from
        self.board = None

    def run(self) -> dict:
        cfg = self.cfg
        if cfg.resume:
            self.resume()
        elif dist.rank() > 0:  # each rank its own dropout masks (rank 0 keeps the single-process stream)
            set_seed(int(np.random.SeedSequence([cfg.seed, dist.rank()]).generate_state(1)[0]))
        self.train_model = dist.wrap(self.model, cfg.device)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        if cfg.report_to == "tensorboard" and is_main_process():
            self.board = tensorboard_writer(self.out / "tensorboard")
        self.clock = Clock(self.state.elapsed_s)  # (the resumed run's)
        self.bar = tqdm(total=self.stop_at, initial=self.state.step, desc="train", dynamic_ncols=True, mininterval=1.0,
                        disable=not is_main_process())
        while not self.stopped():
            self.train_epoch()
        self.bar.close()
        return self.finish()

    def stopped(self) -> bool:
        """At --max-steps (or the last step), or out of --early-stopping-patience."""
        patience = self.cfg.early_stopping_patience
        return self.state.step >= self.stop_at or bool(patience and self.state.evals_since_best >= patience)

    def train_epoch(self) -> None:
        """The rest of the epoch in progress (from the batch a resumed run stopped at), with the logs, evaluations
        and checkpoints that fall inside it, then the epoch's end."""
        state, cfg = self.state, self.cfg
        self.model.train()
        order = self.task.batches(state.epoch)
        if len(order) != self.steps_per_epoch:
            raise ValueError(f"batches({state.epoch}) gave {len(order)} batches, batches(0) {self.steps_per_epoch}")
        self.clock.epoch_t0 = time.perf_counter() - state.epoch_time_s
        for indices in order[state.step_in_epoch:]:
            self.step(indices)
            if state.step % cfg.log_every == 0 or state.step == self.stop_at:
                self.log_step()
            left = min(self.steps_per_epoch - state.step_in_epoch, self.stop_at - state.step)  # to the epoch's end
            # an evaluation less than half an interval before the epoch-end one is left to that one
            if self.task.evaluate and cfg.eval_every and state.step % cfg.eval_every == 0 \
                    and left >= cfg.eval_every / 2:
                self.paused(self.evaluate)
            if cfg.save_every and state.step % cfg.save_every == 0 and left > 0 and not self.stopped():
                self.paused(self.save_mid_epoch)
            if self.stopped():
                break
        self.end_epoch()

    def paused(self, action: Callable[[], object]) -> None:
        """action() with the clock stopped: evaluation and checkpoint time is not training time."""
        t = time.perf_counter()
        action()
        self.clock.pause(time.perf_counter() - t)

    def step(self, indices: list[int]) -> None:
        """One optimizer step on the global batch `indices`, every rank with its share of it.

        A rank whose share is empty (a short last batch) runs a stand-in example with weight 0: DDP's gradient
        all-reduce needs every rank."""
        state, cfg = self.state, self.cfg
        parts = micro_batches(indices, dist.rank(), dist.world_size(), cfg.grad_accum_steps)
        micro = [(to_device(self.task.collate(part or indices[:1]), cfg.device), 1.0 if part else 0.0)
                 for part in parts]
        loss_sum, weight_sum = self.forward_backward(micro, len(indices))
        grad_norm = self.update()
        self.scheduler.step()
        state.step, state.step_in_epoch = state.step + 1, state.step_in_epoch + 1
        state.epoch_examples += len(indices)
        self.clock.window_examples += len(indices)
        self.sums.add(state.step, loss_sum, weight_sum, None if self.scaler.is_enabled() else grad_norm)  # fp16: inf
        self.bar.update(1)

    def forward_backward(self, batches: list[tuple[object, float]], n_examples: int) -> tuple[Tensor, Tensor]:
        """Gradients of the mean loss over a global batch of `n_examples`, from this rank's micro-batches
        [(batch on the device, keep 1.0 or 0.0)] -> (sum of loss x weight, sum of weights) on this rank, device
        tensors (no host sync).

        Each micro-batch's mean loss counts by its weight: backward on loss x weight / n_examples (any constant
        shared by the ranks would do; this one keeps fp16's scale near that of a mean), then, once DDP has
        averaged over the ranks, the gradients are scaled to the mean over the global batch's total weight. A
        single batch in a single process is already that mean and skips both.
        """
        model, device = self.train_model, self.cfg.device
        weighted = len(batches) > 1 or dist.world_size() > 1
        loss_sum = weight_sum = torch.zeros((), device=device)
        for i, (batch, keep) in enumerate(batches):
            with contextlib.nullcontext() if i == len(batches) - 1 else dist.no_sync(model):  # all-reduce once
                with autocast(device, self.cfg.precision):
                    loss, weight = self.task.loss_fn(model, batch)
                weight = weight * keep
                self.scaler.scale(loss * (weight / n_examples) if weighted else loss).backward()
            loss_sum = loss_sum + loss.detach().float() * weight
            weight_sum = weight_sum + weight
        if weighted:  # the gradient now is world_size^-1 sum_ranks sum_i grad(loss_i) w_i / n_examples
            total = dist.all_reduce(weight_sum.double().clone()).clamp(min=1e-12)
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            torch._foreach_mul_(grads, (dist.world_size() * n_examples / total).float())
        return loss_sum, weight_sum

    def update(self) -> Tensor | None:
        """Clip and apply the gradients -> their norm before clipping (None without clipping), on the device."""
        max_norm = self.cfg.max_grad_norm
        self.scaler.unscale_(self.optimizer)  # (a no-op unless fp16)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.train_model.parameters(), max_norm) if max_norm > 0 else None
        self.scaler.step(self.optimizer)  # fp16: skips the step when a gradient is inf or nan (then lowers the scale)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def log_step(self) -> None:
        """A log line: the mean loss and the throughput since the previous one."""
        state = self.state
        self.collect()
        loss = state.window_loss / max(state.window_weight, 1e-12)
        rate = self.clock.window_rate()
        state.losses.append([state.step, loss])
        state.window_loss = state.window_weight = 0.0
        record = self.log.event("step", step=state.step, epoch=state.epoch + 1, loss=loss,
                                lr=self.scheduler.get_last_lr()[0], examples_per_s=round(rate, 2),
                                elapsed=round(self.clock.elapsed(), 2))
        self.log.print(f"step {state.step}/{self.stop_at} | epoch {state.epoch + 1} | loss {loss:.4f} | "
                       f"lr {record['lr']:.3g} | {rate:.1f} {self.task.unit}/s")
        self.bar.set_postfix(loss=f"{loss:.4f}", rate=f"{rate:.1f}/s")
        if self.board:
            add_scalars(self.board, "train", state.step, record)

    def end_epoch(self) -> None:
        """The epoch's end, or training's: a record (with an evaluation unless one was just made) and a checkpoint."""
        state, cfg = self.state, self.cfg
        epoch_end = time.perf_counter()
        state.epoch_time_s = epoch_end - self.clock.epoch_t0
        self.collect()
        epoch_done = state.step_in_epoch == self.steps_per_epoch
        record = {"step": state.step, "epoch": state.epoch + 1, "partial": not epoch_done,
                  "train_loss": round(state.epoch_loss / max(state.epoch_weight, 1e-12), 6),
                  "epoch_time_s": round(state.epoch_time_s, 2),
                  "examples_per_s": round(state.epoch_examples / max(state.epoch_time_s, 1e-9), 2)}
        if self.task.evaluate and not (state.evals and state.evals[-1]["step"] == state.step):
            record.update(self.evaluate())
        elif self.task.evaluate:
            record.update({k: v for k, v in state.evals[-1].items() if k not in ("step", "epoch")})
        record["elapsed"] = round(self.clock.elapsed(), 2)
        state.history = [h for h in state.history if h["epoch"] != state.epoch + 1] + [record]  # replaces a partial
        self.log.event("epoch", **record)
        self.log.print(f"epoch {state.epoch + 1}/{cfg.epochs}" + "".join(
            f" | {k} {v:.4g}" if isinstance(v, float) else f" | {k} {v}"
            for k, v in record.items() if k not in ("epoch", "partial")))
        if epoch_done:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
            state.epoch_time_s = state.epoch_loss = state.epoch_weight = 0.0
            state.epoch_examples = 0
        state.elapsed_s = self.clock.elapsed()
        self.save()
        self.clock.window_t0 += time.perf_counter() - epoch_end  # the logged rate counts training time alone

    def collect(self) -> None:
        """Bring the device sums into the state; stop with a UserError if a loss or gradient was not finite."""
        state = self.state
        loss, weight, bad_step, bad_loss = self.sums.collect()
        if bad_step is not None:
            what = f"loss is {bad_loss}" if not math.isfinite(bad_loss) else "gradient norm is not finite"
            self.log.event("diverged", step=bad_step, last_checkpoint=self.ckpt and str(self.ckpt))
            raise UserError(f"training diverged at step {bad_step}: {what}; no checkpoint was written after it "
                            f"(the last one: {self.ckpt or 'none'})", fix=self.divergence_fix())
        state.window_loss, state.window_weight = state.window_loss + loss, state.window_weight + weight
        state.epoch_loss, state.epoch_weight = state.epoch_loss + loss, state.epoch_weight + weight

    def divergence_fix(self) -> str:
        return f"lower --lr (now {self.cfg.lr})" + (" or turn clipping on with --max-grad-norm 1"
                                                   if self.cfg.max_grad_norm == 0 else "")

    def evaluate(self) -> dict:
        """Evaluate on rank 0 (the others wait for its metrics), in eval mode and without gradients, with the
        random states restored afterwards; track the best evaluation -> the metrics."""
        state, model = self.state, self.model
        self.collect()  # never evaluate (nor save as best) a diverged model
        t = time.perf_counter()
        metrics = None
        if is_main_process():
            model.eval()
            with preserved_rng(), torch.no_grad():
                metrics = self.task.evaluate(model)
            metrics = {**metrics, "eval_time_s": round(time.perf_counter() - t, 2)}
        metrics = dist.broadcast_object(metrics)
        model.train()
        record = {"step": state.step, "epoch": state.epoch + 1, **metrics}
        state.evals.append(record)
        if self.task.metric is not None:
            self.track_best(record)
        self.log.event("validation", **record)
        self.log.print(f"validation at step {state.step}: " + " | ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
            + (" (best)" if state.best is record else ""))
        if self.board:
            add_scalars(self.board, "eval", state.step, metrics)
        return metrics

    def track_best(self, record: dict) -> None:
        """Is `record` the best evaluation so far (by the task's metric)? Then, with --keep-best, save its model."""
        metric, state = self.task.metric, self.state
        if metric not in record:
            raise ValueError(f"evaluate() returned no {metric!r}, only {sorted(record)}")
        best = state.best and state.best[metric]
        if best is None or (record[metric] > best if self.task.higher_is_better else record[metric] < best):
            state.best, state.evals_since_best = record, 0
            if self.cfg.keep_best and is_main_process():
                save_best(self.cfg.output_dir, self.model, record, self.task.tokenizer_from)
        else:
            state.evals_since_best += 1

    def save(self) -> Path:
        """Write a checkpoint (rank 0; every rank sends its random states) unless the loss, a gradient or a
        weight has gone non-finite -> its path."""
        state, cfg = self.state, self.cfg
        self.collect()
        if not weights_finite(self.model):
            raise UserError(f"training diverged before step {state.step}: a weight is not finite; no checkpoint was "
                            f"written after it (the last one: {self.ckpt or 'none'})",
                            fix=f"lower --lr (now {cfg.lr})")
        rng = dist.gather_objects(rng_states())
        self.ckpt = self.out / "checkpoint"
        if is_main_process():
            tensors = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                       "scaler": self.scaler.state_dict(), "rng": rng} if cfg.save_optimizer_state else None
            self.ckpt = save_checkpoint(self.out, self.model, dataclasses.asdict(state), tensors,
                                        self.task.tokenizer_from, cfg.save_total_limit)
            self.log.event("checkpoint", step=state.step, epoch=state.epoch + 1, path=str(self.ckpt))
            self.log.print(f"saved checkpoint {self.ckpt} (step {state.step})")
        return self.ckpt

    def save_mid_epoch(self) -> Path:
        """A checkpoint inside an epoch (--save-every), with the epoch's training time so far."""
        now = time.perf_counter()
        self.state.epoch_time_s, self.state.elapsed_s = now - self.clock.epoch_t0, now - self.clock.run_t0
        return self.save()

    def resume(self) -> None:
        """Load the newest readable checkpoint into the model, optimizer, schedule, loss scale and random
        states, and its TrainState. Refuses settings that would change the result."""
        ckpt, saved, tensors, notes = load_for_resume(self.out)
        for note in notes:
            self.log.print(f"{note}: resuming from the previous checkpoint, {ckpt}")
        check_settings(saved["settings"], self.state.settings, ckpt)
        self.model.load_state_dict(type(self.model).from_pretrained(ckpt).state_dict())
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.scheduler.load_state_dict(tensors["scheduler"])
        self.scaler.load_state_dict(tensors["scaler"])
        self.state, self.ckpt = TrainState(**saved), ckpt
        rank, world = dist.rank(), dist.world_size()
        if len(tensors["rng"]) == world:
            set_rng_states(tensors["rng"][rank])
        else:
            set_seed(int(np.random.SeedSequence([self.cfg.seed, rank, self.state.step]).generate_state(1)[0]))
            self.log.print(f"the checkpoint was written by {len(tensors['rng'])} processes, this run has {world}: the "
                           "batch order, weights and optimizer state carry over, the random draws (dropout) differ "
                           "from those of an uninterrupted run")
        self.state.world_size = world
        self.log.event("resume", step=self.state.step, epoch=self.state.epoch + 1, checkpoint=str(ckpt))
        self.log.print(f"resuming from {ckpt} at step {self.state.step} (epoch {self.state.epoch + 1}, batch "
                       f"{self.state.step_in_epoch})")

    def finish(self) -> dict:
        """Early stopping's note, the best model back in place (--keep-best), curves.png -> fit's result."""
        state, metric, out = self.state, self.task.metric, self.out
        stopped_early = state.step < self.stop_at
        if stopped_early:
            self.log.print(f"early stopping at step {state.step}: no better {metric} in "
                           f"{self.cfg.early_stopping_patience} evaluations (best {state.best[metric]:.4g} at step "
                           f"{state.best['step']})")
        if self.cfg.keep_best and state.best:
            self.model.load_state_dict(type(self.model).from_pretrained(out / "best").state_dict())
            self.log.print(f"the model now holds the best checkpoint, {out / 'best'}: step {state.best['step']}, "
                           f"{metric} {state.best[metric]:.4g}")
        if is_main_process() and not plot_curves(out / "curves.png", state.losses, state.evals, metric,
                                                 state.best and state.best["step"]):
            self.log.print("matplotlib is not installed: no curves.png (pip install matplotlib)")
        return {"step": state.step, "epoch": state.epoch, "history": state.history, "evals": state.evals,
                "best": state.best and {**state.best, "metric": metric,
                                        "path": str(out / "best") if self.cfg.keep_best else None},
                "stopped_early": stopped_early, "train_time_s": round(state.elapsed_s, 2),
                "checkpoint": str(self.ckpt) if self.ckpt else None}

    def close(self) -> None:
        if self.board:
            self.board.close()
        if self.own_log:
            self.log.close()


def best_or_last(result: dict) -> str:
    """Which model fit left for the final evaluation, in words for the log and metrics.json."""
    best = result["best"]
    if best and best["path"]:
        return f"best checkpoint ({best['path']}: step {best['step']}, {best['metric']} {best[best['metric']]:.4g})"
    return f"model after the last step ({result['step']})"
