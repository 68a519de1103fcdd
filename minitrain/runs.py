"""A run's life: checked before anything heavy is loaded, its folder locked while it trains, logged, closed.

    prepare_run(args, subruns=()) -> (cfg, t0)           first thing in main(): checks that write nothing, then
                                                          the process group (torchrun), device, precision, seed
    start_run(cfg, subruns=(), fingerprints=None) -> RunLog   once the data and model are loaded: --resume's data
                                                          check, the folder, its lock, --overwrite's clean-up, the log
    finish_run(log, metrics, t0, wrote) -> metrics        metrics.json, the closing line, the lock released
    RunLog(output_dir)                                    log.jsonl (strict JSON lines) and train.log
    run_info(device, argv=None) -> dict                   command, hardware, versions for metrics.json

A folder holds a run when it has a log, metrics, a checkpoint or a best model. A new run refuses such a
folder unless --resume (continue it) or --overwrite (replace it) is given, so a failed start never
touches an earlier run's files. --overwrite clears every file the old run wrote, its results included, and
is refused when --model or data lies among them. `subruns` names subfolders that belong to the run
(train_paraphrase.py's denoise/). Under torchrun rank 0 alone writes; every function here is safe to call on
every rank.
"""
import argparse
import fcntl
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minicore.errors import UserError
from minicore.files import io_error, to_json, write_json
from minicore.runtime import configure_torch, set_seed
from minitrain.cli import INPUT_PATH_FLAGS
from minitrain.distributed import backend, broadcast_object, init_distributed, is_main_process, world_size
from minitrain.options import TrainConfig
from minitrain.reporting import require_tensorboard
from minitrain.saving import (TRAINER_STATE, check_settings, checkpoint_folders, checkpoints, last_checkpoint,
                              read_trainer_state)

LOCK_FILE = "run.lock"
_locks = {}  # this process's lock files, by folder: a run that failed in this process does not hold it against the next


def run_files(folder: Path) -> list[Path]:
    """What marks `folder` as holding a run: its log, metrics, checkpoints, best model (the scripts' results aside)."""
    names = ("log.jsonl", "train.log", "metrics.json", "curves.png", "tensorboard", "checkpoint", "checkpoint.tmp",
             "best", "best.tmp", "best.old")
    return [folder / n for n in names if (folder / n).exists()] + sorted(folder.glob("checkpoint-*"))


def written_files(folder: Path) -> list[Path]:
    """Every file a run writes in `folder`: run_files and the scripts' results, all of which --overwrite clears (an
    old predictions_test.tsv must not stay beside a new metrics.json without a test set)."""
    results = ("samples.md", "predictions.json", "null_odds.json", "generations.jsonl", "predictions_*.tsv")
    return run_files(folder) + sorted(p for pattern in results for p in folder.glob(pattern))


def _within(path: str | os.PathLike, folder: Path) -> bool:
    path, folder = Path(path).resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_inputs(folders: list[Path], inputs) -> None:
    """Refuse to --overwrite what the run reads: a --model or data (`inputs`: (flag, path) pairs) inside a file or
    folder of the run, which the clean-up would delete after the model is loaded."""
    cleared = [p for f in folders for p in written_files(f)]
    for flag, path in inputs:
        hit = next((c for c in cleared if _within(path, c)), None)
        if hit is not None:
            raise UserError(f"--overwrite would delete what the run reads ({hit} is part of the old run)", flag,
                            str(path), "copy it out of --output-dir and give that copy, or choose another --output-dir")


def _no_checkpoint_to_resume(out: Path, folders: list[Path]) -> UserError:
    """--resume where no checkpoint is whole: what to do, without advice to delete a model the user may want
    (--overwrite would clear an unfinished checkpoint and best/)."""
    unfinished = [p for f in folders for p in checkpoint_folders(f) if not (p / TRAINER_STATE).is_file()]
    models = unfinished + [f / "best" for f in folders if (f / "best").is_dir()]
    if unfinished:
        what = f"no checkpoint to resume: {unfinished[0]} has no {TRAINER_STATE} (damaged or unfinished)"
    elif any(run_files(f) for f in folders):
        what = "no checkpoint to resume (the run there saved none)"
    else:
        return UserError("no checkpoint to resume", "--output-dir", str(out), "leave out --resume")
    keep = (f"to keep {' and '.join(map(str, models))}, move {'them' if len(models) > 1 else 'it'} out of --output-dir "
            "(a new run can start from its weights with --model); then " if models else "")
    return UserError(what, "--output-dir", str(out), keep + "pass --overwrite to start again there")


def check_output_dir(output_dir: str | os.PathLike, resume: bool, overwrite: bool, subruns=(), inputs=()) -> None:
    """Refuse a folder that holds a run (unless --resume or --overwrite), --resume without a checkpoint,
    --overwrite of what the run reads (`inputs`: (flag, path) pairs), a folder another process is training in,
    or one that cannot be created. Writes nothing."""
    out = Path(output_dir)
    folders = [out, *(out / s for s in subruns)]
    if out.exists() and not out.is_dir():
        raise UserError("not a folder", "--output-dir", str(out), "choose a folder")
    if resume and overwrite:
        raise UserError("--resume continues the run in the folder, --overwrite replaces it", "--output-dir", str(out),
                        "pass one of them")
    if resume and not any(last_checkpoint(f) for f in folders):
        raise _no_checkpoint_to_resume(out, folders)
    if not resume and not overwrite and any(run_files(f) for f in folders):
        raise UserError("the folder already holds a run", "--output-dir", str(out),
                        "pass --resume to continue it, --overwrite to replace it, or choose another --output-dir")
    if overwrite:
        _check_inputs(folders, inputs)
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"a part of the path is a file, not a folder ({parent})", "--output-dir", str(out),
                        "choose another --output-dir")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError("cannot write there (permission denied)", "--output-dir", str(parent),
                        "choose a folder you can write to")
    lock = out / LOCK_FILE
    if lock.exists() and lock.resolve() not in _locks:
        with open(lock, encoding="utf-8") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError("another run is training in this folder", "--output-dir", str(out),
                                f"wait for it to end (process {f.read().strip() or '?'}) or choose another "
                                "--output-dir") from None


def _on_main_process(check) -> None:
    """check() on rank 0 alone (the ranks may not share a filesystem); its UserError is raised on every rank."""
    if world_size() == 1:
        return check()
    error = None
    if is_main_process():
        try:
            check()
        except UserError as e:
            error = str(e)
    error = broadcast_object(error)
    if error:
        raise UserError(error)


def prepare_run(args: argparse.Namespace, subruns=()) -> tuple[TrainConfig, float]:
    """What every script's main() begins with, before it loads data or a model: check the options and the
    output folder (writing nothing), join torchrun's process group, pick the device and the precision,
    set --tf32 / --deterministic, seed -> (TrainConfig, start time)."""
    t0 = time.perf_counter()
    cfg = TrainConfig.from_args(args)  # the device and precision resolved
    if cfg.report_to == "tensorboard":
        require_tensorboard()
    init_distributed(cfg.device)
    if cfg.batch_size < world_size() * cfg.grad_accum_steps:
        raise UserError("a batch needs an example for each process and accumulation step", "--batch-size",
                        cfg.batch_size, f"pass at least {world_size() * cfg.grad_accum_steps} ({world_size()} "
                                        f"processes x --grad-accum-steps {cfg.grad_accum_steps})")

    def check() -> None:
        check_output_dir(cfg.output_dir, cfg.resume, cfg.overwrite, subruns, _input_paths(args))
        if cfg.resume:  # the settings it can tell now; fit checks the data too
            _check_resumed(Path(cfg.output_dir), cfg.settings())
    _on_main_process(check)
    configure_torch(cfg.tf32, cfg.deterministic)
    set_seed(cfg.seed)
    return cfg, t0


def _input_paths(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(flag, path) of each file or folder the run reads, as given."""
    pairs = []
    for flag in INPUT_PATH_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        pairs += [(flag, v) for v in (value if isinstance(value, list) else [value]) if v]
    return pairs


def _lock(folder: Path) -> None:
    """Hold <folder>/run.lock until finish_run (or the process's end: the OS releases it even after kill -9)."""
    path = (folder / LOCK_FILE).resolve()
    if path in _locks:
        _locks.pop(path).close()
    while True:
        f = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise UserError("another run is training in this folder", "--output-dir", str(folder),
                            f"wait for it to end (process {holder}) or choose another --output-dir") from None
        if path.exists() and path.stat().st_ino == os.fstat(f.fileno()).st_ino:
            break
        f.close()  # a run that ended removed the file we locked: lock the one at the path now
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    _locks[path] = f


def _unlock(folder: Path) -> None:
    path = (folder / LOCK_FILE).resolve()
    f = _locks.pop(path, None)
    if f is not None:
        path.unlink(missing_ok=True)  # while still holding it (see _lock)
        f.close()


def _check_resumed(folder: Path, settings: dict) -> None:
    """Refuse other `settings` than those of the newest checkpoint in `folder` whose trainer_state.json reads
    (fit falls back past the others, and says so)."""
    for ckpt in checkpoints(folder):
        try:
            saved = read_trainer_state(ckpt)["settings"]
        except (OSError, ValueError, KeyError):
            continue
        return check_settings(saved, settings, ckpt)


def start_run(cfg: TrainConfig, subruns=(), fingerprints: dict[str, str] | None = None) -> "RunLog":
    """Create the output folder, lock it against a second run, clear the old run's files with --overwrite,
    and open the log (appending: resuming continues it). `fingerprints` ({"." or a subrun: fingerprint(...)
    of its training data}): --resume with other data is refused here, before the folder is touched."""
    out = Path(cfg.output_dir)
    if cfg.resume and fingerprints:
        _on_main_process(lambda: [_check_resumed(out / f, {"data": fp}) for f, fp in fingerprints.items()])
    if is_main_process():
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise io_error(out, e) from None
        _lock(out)
        if cfg.overwrite:
            for path in (p for f in [out, *(out / s for s in subruns)] for p in written_files(f)):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    return RunLog(out)


def finish_run(log: "RunLog", metrics: dict, t0: float, wrote: str) -> dict:
    """What main() ends with: the wall time into metrics.json, a closing line, the log closed, the folder unlocked."""
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 2)
    if is_main_process():
        write_json(log.dir / "metrics.json", metrics)
    log.print(f"wrote metrics.json, {wrote} to {log.dir} ({metrics['wall_time_s']:.0f} s)")
    log.close()
    _unlock(log.dir)
    return metrics


class RunLog:
    """`event(kind, **fields)` appends one strict-JSON object to <dir>/log.jsonl; `print(text)` prints a
    line (without breaking the progress bar) and appends it to <dir>/train.log. Only rank 0 writes and
    prints; elsewhere both return without a trace. The files are only ever appended to."""

    def __init__(self, output_dir: str | os.PathLike):
        self.dir = Path(output_dir)
        self.writes = is_main_process()
        if self.writes:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                self.jsonl = open(self.dir / "log.jsonl", "a", encoding="utf-8")
                self.text = open(self.dir / "train.log", "a", encoding="utf-8")
            except OSError as e:
                raise io_error(e.filename or self.dir, e) from None

    def _append(self, f, line: str) -> None:
        try:
            f.write(line + "\n")
            f.flush()
        except OSError as e:
            raise io_error(f.name, e) from None

    def event(self, kind: str, **fields) -> dict:
        record = {"event": kind, "time": round(time.time(), 3), **fields}
        if self.writes:
            self._append(self.jsonl, to_json(record))
        return record

    def print(self, text: str) -> None:
        if self.writes:
            tqdm.write(text)
            self._append(self.text, text)

    def close(self) -> None:
        if self.writes:
            self.jsonl.close()
            self.text.close()


def run_info(args: argparse.Namespace, device: torch.device, argv: list[str] | None = None) -> dict:
    """What metrics.json records about the run: the command line (`argv`, script name first, for a
    main() called with arguments; else sys.argv), every setting as parsed (`args`: what the run used,
    defaults included), processes, hardware and library versions."""
    info = {"command": " ".join(shlex.quote(a) for a in ["python", *(sys.argv if argv is None else argv)]),
            "settings": {k: v for k, v in vars(args).items() if k != "debug"},
            "world_size": world_size(), "backend": backend(), "device": str(device),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
