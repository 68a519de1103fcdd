"""Faults around a run: a folder that holds a run, a second run in the same folder, divergence, resume with
other settings, a damaged checkpoint, a failing disk. Each ends in a clear error and loses nothing."""
import argparse
import json
import shutil
import subprocess
import sys
import time

import pytest
import torch
from fit_helpers import Tiny, train
from test_cola import write_cola

import train_cola
from minicore.errors import UserError
from minitrain.options import add_training_args
from minitrain.runs import prepare_run, start_run
from minitrain.saving import checkpoints


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_cola(tmp_path_factory, tiny_bert_dir):
    """A finished tiny CoLA run (3 steps, checkpoints at steps 2 and 3) -> (its data, its folder)."""
    root = tmp_path_factory.mktemp("finished")
    data, out = write_cola(root / "cola"), root / "out"
    train_cola.main(cola_args(tiny_bert_dir, data, out) + ["--max-steps", "3", "--save-every", "1",
                                                           "--save-total-limit", "2"])
    return data, out


def cola_args(model, data, out) -> list[str]:
    return ["--model", str(model), "--data-dir", str(data), "--output-dir", str(out), "--batch-size", "8",
            "--epochs", "2", "--device", "cpu", "--log-every", "1", "--lr", "1e-3"]


@pytest.fixture
def cola_run(finished_cola, tmp_path, tiny_bert_dir):
    """A copy of the finished run -> (its arguments, its folder)."""
    data, out = finished_cola
    shutil.copytree(out, tmp_path / "out")
    return cola_args(tiny_bert_dir, data, tmp_path / "out"), tmp_path / "out"


@pytest.mark.parametrize("extra,error", [
    ([], "the folder already holds a run .*pass --resume to continue it, --overwrite to replace it"),
    (["--overwrite", "--data-dir", "/nonexistent/cola"], "nonexistent"),  # overwrite clears only once all is loaded
    (["--resume", "--data-dir", "/nonexistent/cola"], "nonexistent"),
    (["--resume", "--lr", "0.01"], r"--lr 0.001 in the checkpoint, 0.01 now"),
    (["--resume", "--seed", "7", "--batch-size", "4"], r"--batch-size 8 in the checkpoint, 4 now; --seed 42 in the "
                                                       r"checkpoint, 7 now"),
    (["--resume", "--overwrite"], "--resume continues the run in the folder, --overwrite replaces it"),
])
def test_a_failed_start_leaves_the_run_untouched(cola_run, extra, error):
    argv, out = cola_run
    before = snapshot(out)
    with pytest.raises((UserError, OSError), match=error):
        train_cola.main(argv + extra)
    assert snapshot(out) == before


def test_resume_needs_a_checkpoint(tmp_path, tiny_bert_dir):
    args = argparse.Namespace(**vars(add_training_args(argparse.ArgumentParser()).parse_args(
        ["--output-dir", str(tmp_path / "new"), "--resume", "--device", "cpu"])))
    with pytest.raises(UserError, match="no checkpoint to resume .*leave out --resume"):
        prepare_run(args)
    assert not (tmp_path / "new").exists()


def test_overwrite_replaces_the_run(cola_run):
    argv, out = cola_run
    train_cola.main(argv + ["--overwrite", "--max-steps", "1"])
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines() if '"step"' in x and
             json.loads(x)["event"] == "step"]
    assert steps == [1] and [c.name for c in checkpoints(out)] == ["checkpoint"]
    assert not (out / "run.lock").exists()  # a finished run leaves no lock file behind


def test_a_second_run_in_the_folder_fails_at_once(tmp_path):
    """Another process holds the folder's lock: refused at the start, and when it takes the lock between
    the checks and the start."""
    args = add_training_args(argparse.ArgumentParser()).parse_args(["--output-dir", str(tmp_path), "--device", "cpu"])
    cfg, _ = prepare_run(args)  # the folder is free now
    hold = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); "
            "f.flush(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "run.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t = time.perf_counter()
        with pytest.raises(UserError, match=r"another run is training in this folder .*process 4242"):
            start_run(cfg)
        with pytest.raises(UserError, match=r"another run is training in this folder"):
            prepare_run(argparse.Namespace(**{**vars(args), "overwrite": True}))
        assert time.perf_counter() - t < 5  # at once, not after a timeout
        assert not (tmp_path / "log.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    start_run(cfg).close()  # the OS released the lock with the process


def test_divergence_keeps_only_finite_checkpoints(tmp_path, tiny_bert_dir):
    data, out = write_cola(tmp_path / "cola"), tmp_path / "out"
    with pytest.raises(UserError, match=r"training diverged at step \d+: .*no checkpoint was written after it.*"
                                        r"lower --lr \(now 1e\+20\)"):
        train_cola.main(["--model", str(tiny_bert_dir), "--data-dir", str(data), "--output-dir", str(out),
                         "--batch-size", "8", "--device", "cpu", "--lr", "1e20", "--save-every", "1",
                         "--save-total-limit", "5", "--log-every", "100"])
    saved = checkpoints(out)
    assert saved
    from minicore.checkpoint import read_state_dict
    for ckpt in saved:
        assert all(torch.isfinite(t).all() for t in read_state_dict(ckpt).values()), ckpt
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]  # strict JSON, no NaN
    bad = [r["step"] for r in records if r["event"] == "diverged"]
    assert len(bad) == 1 and all(r["step"] < bad[0] for r in records if r["event"] == "checkpoint")


def test_truncated_training_state_falls_back_or_names_the_file(cola_run):
    argv, out = cola_run
    assert [c.name for c in checkpoints(out)] == ["checkpoint", "checkpoint-2"]
    state = out / "checkpoint" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    m = train_cola.main(argv + ["--resume", "--max-steps", "4"])
    assert m["steps"] == 4
    log = (out / "train.log").read_text()
    assert f"{state} is unreadable" in log and "resuming from the previous checkpoint" in log
    assert "resuming from " + str(out / "checkpoint-2") + " at step 2" in log

    state.write_bytes(state.read_bytes()[:1000])  # now without an older one to fall back to
    for old in checkpoints(out)[1:]:
        shutil.rmtree(old)
    with pytest.raises(UserError, match=f"cannot resume: {state} is unreadable"):
        train_cola.main(argv + ["--resume"])


def test_a_failing_disk_names_the_folder(tmp_path, monkeypatch):
    def full_disk(*args, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="PytorchStreamWriter failed writing file") as error:
        train(tmp_path, Tiny)
    assert error.value.filename == str(tmp_path / "checkpoint.tmp")
    assert not (tmp_path / "checkpoint.tmp").exists() and not checkpoints(tmp_path)
