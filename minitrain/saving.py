"""Training checkpoints: written so a crash never tears one, rotated, read back for --resume.

    <output_dir>/checkpoint/          the latest: the model in HF layout (save_pretrained), the tokenizer files,
                                      training_state.pt (optimizer, schedule, loss scale, every rank's random
                                      states; absent with --no-save-optimizer-state) and trainer_state.json
                                      (the TrainState), written last: a folder holding it is complete
    <output_dir>/checkpoint-<step>/   earlier ones, as many as --save-total-limit keeps
    <output_dir>/best/                with --keep-best: the model and tokenizer of the best evaluation,
                                      and that evaluation in evaluation.json

A checkpoint is written to checkpoint.tmp, the latest is renamed to checkpoint-<its step>, and the new one
renamed into place: at every moment the newest complete checkpoint is whole.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from minicore.checkpoint import copy_tokenizer_files
from minicore.errors import UserError
from minicore.files import atomic_write, io_error, to_json, write_json, write_text

STATE_FILE = "training_state.pt"
WEIGHTS_FILE = "model.safetensors"  # what save_pretrained writes
TRAINER_STATE = "trainer_state.json"


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint folders of the run in `output_dir`, complete or not, newest first."""
    out = Path(output_dir)
    older = sorted((p for p in out.glob("checkpoint-*") if p.name[len("checkpoint-"):].isdigit()),
                   key=lambda p: int(p.name[len("checkpoint-"):]), reverse=True)
    return [p for p in [out / "checkpoint", *older] if p.is_dir()]


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints of the run in `output_dir` (those with trainer_state.json, written last), newest
    first."""
    return [p for p in checkpoint_folders(output_dir) if (p / TRAINER_STATE).is_file()]


def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = checkpoints(output_dir)
    return found[0] if found else None


def read_trainer_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))


def _write_folder(tmp: Path, model: nn.Module, tokenizer_from, write_rest) -> None:
    """A fresh folder `tmp` with the model (HF layout), the tokenizer files, then write_rest(tmp);
    errors name the folder and the cause."""
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        if tokenizer_from is not None:
            copy_tokenizer_files(tokenizer_from, tmp)
        write_rest(tmp)
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports a full disk as a RuntimeError
        error = io_error(getattr(e, "filename", None) or tmp, e)  # first: removing the folder frees the disk
        shutil.rmtree(tmp, ignore_errors=True)
        raise error from None


def save_checkpoint(output_dir: str | os.PathLike, model: nn.Module, trainer_state: dict, tensors: dict | None,
                    tokenizer_from=None, keep: int = 1) -> Path:
    """Write a checkpoint as <output_dir>/checkpoint and keep the `keep` newest -> its path.
    `tensors`: what training_state.pt holds (None: no optimizer state, not resumable)."""
    out = Path(output_dir)
    tmp, final = out / "checkpoint.tmp", out / "checkpoint"

    def write_state(folder: Path) -> None:
        if tensors is not None:
            atomic_write(folder / STATE_FILE, lambda p: torch.save(tensors, p))
        write_text(folder / TRAINER_STATE, to_json(trainer_state, indent=1) + "\n")  # last: the folder is complete
    _write_folder(tmp, model, tokenizer_from, write_state)
    if final.exists():
        try:
            previous = read_trainer_state(final)["step"]
        except (OSError, ValueError, KeyError):
            previous = None  # an unreadable latest checkpoint is not kept
        if previous is None or previous == trainer_state["step"]:
            shutil.rmtree(final)
        else:
            shutil.rmtree(out / f"checkpoint-{previous}", ignore_errors=True)
            os.replace(final, out / f"checkpoint-{previous}")
    os.replace(tmp, final)
    for old in checkpoints(out)[keep:]:
        shutil.rmtree(old)
    return final


def save_best(output_dir: str | os.PathLike, model: nn.Module, evaluation: dict, tokenizer_from=None) -> Path:
    """Write the model (HF layout, tokenizer files) as <output_dir>/best, with `evaluation` -> its path."""
    out = Path(output_dir)
    tmp, final, old = out / "best.tmp", out / "best", out / "best.old"
    _write_folder(tmp, model, tokenizer_from, lambda folder: write_json(folder / "evaluation.json", evaluation))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_for_resume(output_dir: str | os.PathLike) -> tuple[Path, dict, dict, list[str]]:
    """-> (checkpoint, trainer state, training_state.pt's tensors, notes) of the newest checkpoint that
    reads; `notes` name each newer one that did not, and why."""
    if not checkpoints(output_dir):
        raise UserError("no checkpoint to resume", "--output-dir", str(output_dir),
                        "start the run without --resume")
    notes = []
    for ckpt in checkpoint_folders(output_dir):
        try:
            return (ckpt, *_read_for_resume(ckpt), notes)
        except _Unreadable as e:
            notes.append(str(e))
    raise UserError(f"cannot resume: {notes[0]}", fix="move the damaged checkpoints out of --output-dir if you "
                    "want to keep them (a new run can start from whole weights with --model), then pass --overwrite "
                    "to start again there")


class _Unreadable(Exception):
    """A checkpoint --resume passes over: what is missing or damaged, in words."""


def _read_for_resume(ckpt: Path) -> tuple[dict, dict]:
    """-> (trainer state, training_state.pt's tensors) of `ckpt`, each file checked to read; _Unreadable names the
    first that does not. A checkpoint saved without optimizer state is a UserError: there is nothing to resume."""
    if not (ckpt / TRAINER_STATE).is_file():
        raise _Unreadable(f"{ckpt} has no {TRAINER_STATE} (damaged or unfinished)")
    try:
        state = read_trainer_state(ckpt)
    except (OSError, ValueError) as e:
        raise _Unreadable(f"{ckpt / TRAINER_STATE} is unreadable ({type(e).__name__}: {e})") from None
    if not state.get("optimizer_state", True):
        raise UserError("the checkpoint holds no optimizer state (saved with --no-save-optimizer-state), so it "
                        "cannot be resumed", "--resume", str(ckpt),
                        f"start a new run from its weights with --model {ckpt}")
    try:
        with safe_open(ckpt / WEIGHTS_FILE, "pt"):
            pass  # the header, and a file size that covers it: a truncated file fails here
    except (SafetensorError, OSError) as e:
        raise _Unreadable(f"{ckpt / WEIGHTS_FILE} is unreadable ({type(e).__name__}: {e})") from None
    try:
        tensors = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or corrupt file fails in the zip reader or the unpickler
        raise _Unreadable(f"{ckpt / STATE_FILE} is unreadable ({type(e).__name__}: {str(e).splitlines()[0]})") \
            from None
    return state, tensors


def check_settings(saved: dict, current: dict, checkpoint: Path) -> None:
    """Refuse to resume with a setting that would change the result, naming each with both values."""
    names = {"data": "the training data (fingerprint)", "steps_per_epoch": "steps per epoch"}
    diffs = [f"{names.get(k, '--' + k.replace('_', '-'))} {saved[k]!r} in the checkpoint, {v!r} now"
             for k, v in current.items() if saved.get(k) is not None and v is not None and saved[k] != v]
    if diffs:
        raise UserError(f"--resume with other settings than the run's ({'; '.join(diffs)})", str(checkpoint),
                        fix="resume with the run's settings, or start a new run (--overwrite or another --output-dir)")


def weights_finite(model: nn.Module) -> bool:
    """Every parameter finite (one host sync)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def fingerprint(*columns) -> str:
    """A short hash of the training data, for --resume to notice other data: each column a list of
    ints (labels) or of int lists (token ids)."""
    h = hashlib.sha256()
    for col in columns:
        col = list(col)
        if col and not np.isscalar(col[0]):
            h.update(np.array([len(x) for x in col], dtype=np.int64).tobytes())
            col = np.concatenate([np.asarray(x, dtype=np.int64) for x in col])
        h.update(np.asarray(col, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]
