"""The run settings at their edges, through the scripts' command lines and the files a run writes: each limit
accepted where it is reached and refused one past it, the steps evaluations and the warmup's peak fall on, the step
a divergence is reported at, the rate logged after --resume, the folder's lock, and which of two processes logs."""
import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_cola import write_cola
from test_train_squad import write_squad

import train_cola
import train_squad
from minibert import BertForSequenceClassification
from minicore.errors import UserError
from minitrain.cli import run

STEPS = 6  # an epoch of write_cola's data at batch 6: 40 rows, 36 after the 10% validation split


@pytest.fixture(scope="module")
def cola(tmp_path_factory) -> Path:
    return write_cola(tmp_path_factory.mktemp("cola"))


def cola_argv(model, data, out, *extra) -> list[str]:
    return ["--model", str(model), "--data-dir", str(data), "--output-dir", str(out), "--batch-size", "6",
            "--epochs", "1", "--device", "cpu", "--lr", "1e-3", "--log-every", "1", *map(str, extra)]


def records(out, event: str) -> list[dict]:
    """The `event` records of <out>/log.jsonl."""
    rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == event]


def refused(main, argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of a start that fails."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run(main, argv)
    return e.value.code, capsys.readouterr().err


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------- limits

def test_save_total_limit_keeps_that_many_checkpoints(tiny_bert_dir, cola, tmp_path, capsys):
    """--save-total-limit N keeps the N newest checkpoints, N = 1 included; 0 is refused."""
    for limit, kept in ((1, ["checkpoint"]), (2, ["checkpoint", "checkpoint-2"])):
        out = tmp_path / str(limit)
        train_cola.main(cola_argv(tiny_bert_dir, cola, out, "--save-every", 1, "--save-total-limit", limit,
                                  "--max-steps", 3))
        assert sorted(p.name for p in out.glob("checkpoint*")) == kept
        assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 3
    status, err = refused(train_cola.main, cola_argv(tiny_bert_dir, cola, tmp_path / "0", "--save-total-limit", 0),
                          capsys)
    assert status == 2 and "--save-total-limit" in err and not (tmp_path / "0").exists()


def test_one_example_per_micro_batch_is_enough(tiny_bert_dir, cola, tmp_path, capsys):
    """--grad-accum-steps may equal --batch-size (micro-batches of one example); one more is refused."""
    m = train_cola.main(cola_argv(tiny_bert_dir, cola, tmp_path / "a", "--grad-accum-steps", 6, "--max-steps", 2))
    assert m["steps"] == 2 and records(tmp_path / "a", "step")[-1]["step"] == 2
    status, err = refused(train_cola.main, cola_argv(tiny_bert_dir, cola, tmp_path / "b", "--grad-accum-steps", 7),
                          capsys)
    assert status == 1 and "(--batch-size, 6)" in err and "pass at least 7" in err and not (tmp_path / "b").exists()


def test_max_steps_equal_to_the_run_is_the_whole_run(tiny_bert_dir, cola, tmp_path):
    """--max-steps equal to the run's steps stops where the run ends: a whole epoch, not a partial one."""
    m = train_cola.main(cola_argv(tiny_bert_dir, cola, tmp_path, "--max-steps", STEPS))
    assert m["steps"] == STEPS and [e["partial"] for e in m["epochs"]] == [False]


@pytest.mark.parametrize("at,past,status", [(512, 513, 1), (68, 67, 2)], ids=["positions", "question"])
def test_windows_at_their_limits(tiny_bert_dir, tmp_path, capsys, at, past, status):
    """train_squad.py --max-seq-length: as long as the model's positions (512) and as short as --max-query-length
    (64) + 4 ([CLS], [SEP], [SEP], a context token) are accepted; one past either is refused."""
    data = write_squad(tmp_path / "squad", train_paragraphs=2)

    def argv(length):
        return ["--model", str(tiny_bert_dir), "--data-dir", str(data), "--output-dir", str(tmp_path / str(length)),
                "--batch-size", "4", "--device", "cpu", "--max-steps", "1", "--max-eval-examples", "2",
                "--validation-questions", "0", "--train-fraction", "1", "--max-seq-length", str(length)]
    m = train_squad.main(argv(at))
    assert m["steps"] == 1 and m["settings"]["max_seq_length"] == at
    code, err = refused(train_squad.main, argv(past), capsys)
    assert code == status and "--max-seq-length" in err and str(past) in err and not (tmp_path / str(past)).exists()


# --------------------------------------------------------------------------------------------- schedule

@pytest.mark.parametrize("flags,validations", [
    (["--eval-every", STEPS], [6, 12]),  # an epoch's steps: at each epoch's end, once
    (["--eval-every", 2 * STEPS], [6, 12]),  # the run's steps
    (["--eval-every", 4], [4, 6, 8, 12]),
    (["--eval-every", 5, "--max-steps", 8], [6, 8]),  # step 5 is within half an interval of the epoch's end (6),
    # whose evaluation stands for it; then where --max-steps stops, once
    (["--eval-every", 3, "--max-steps", 8], [3, 6, 8]),  # 3 is a full half-interval before 6: kept
])
def test_evaluations_fall_on_multiples_of_eval_every(tiny_bert_dir, cola, tmp_path, flags, validations):
    """Validation every --eval-every steps, at each epoch's end and where training stops, never twice at a step."""
    m = train_cola.main(cola_argv(tiny_bert_dir, cola, tmp_path, "--epochs", 2, *flags))
    assert [v["step"] for v in m["validations"]] == validations
    assert [r["step"] for r in records(tmp_path, "validation")] == validations


@pytest.mark.parametrize("ratio,warmup", [(0.5, 3), (0.2, 2), (0.05, 1), (0.0, 0)])
def test_warmup_peaks_at_the_rounded_up_step(tiny_bert_dir, cola, tmp_path, ratio, warmup):
    """--warmup-ratio r of T steps warms up over W = ceil(r T) steps (as transformers' get_warmup_steps): the lr
    logged at step k (the next step's) is peak k / W up to step W, which alone logs the peak, then falls linearly
    to 0 at step T. 0.5 x 6 = 3 exactly; 0.2 x 6 = 1.2 and 0.05 x 6 = 0.3 round up, not to the nearest."""
    T, peak = STEPS, 1e-3
    train_cola.main(cola_argv(tiny_bert_dir, cola, tmp_path, "--warmup-ratio", ratio))
    lrs = [r["lr"] for r in records(tmp_path, "step")]
    want = [peak * (k / warmup if k < warmup else (T - k) / (T - warmup)) for k in range(1, T + 1)]
    assert lrs == pytest.approx(want, rel=1e-12)  # the peak times a ratio of small integers: a rounding apart at most
    if warmup:
        assert [k for k, lr in enumerate(lrs, 1) if lr == pytest.approx(peak, rel=1e-12)] == [warmup]


# --------------------------------------------------------------------------------------------- divergence

def test_divergence_is_reported_at_its_first_non_finite_step(tiny_bert_dir, cola, tmp_path):
    """A run that diverges names the first step whose loss or gradient was not finite, whether the loop looks at
    every step (--log-every 1) or only at the epoch's end, and names the last checkpoint, written the step
    before. (--lr 1e20 after a warmup step at lr 0: the second step's update blows the weights up.)"""
    def diverge(out, *flags) -> tuple[int, str]:
        with pytest.raises(UserError, match=r"^training diverged at step \d+") as e:
            train_cola.main(cola_argv(tiny_bert_dir, cola, out, "--lr", "1e20", "--warmup-ratio", "0.2", *flags))
        return int(re.search(r"at step (\d+)", str(e.value))[1]), str(e.value)

    step, _ = diverge(tmp_path / "each", "--log-every", 1)
    logged = records(tmp_path / "each", "step")
    assert 1 < step < STEPS and [r["step"] for r in logged] == list(range(1, step))  # looked at every step
    assert all(math.isfinite(r["loss"]) for r in logged)
    assert [r["step"] for r in records(tmp_path / "each", "diverged")] == [step]

    seldom, _ = diverge(tmp_path / "seldom", "--log-every", 100)  # looked at the end, where every step since was bad
    assert seldom == step and [r["step"] for r in records(tmp_path / "seldom", "diverged")] == [step]

    saved, message = diverge(tmp_path / "saved", "--log-every", 100, "--save-every", 1)
    assert saved == step and [r["step"] for r in records(tmp_path / "saved", "checkpoint")] == list(range(1, step))
    assert f"the last one: {tmp_path / 'saved' / 'checkpoint'})" in message
    assert json.loads((tmp_path / "saved" / "checkpoint" / "trainer_state.json").read_text())["step"] == step - 1


# --------------------------------------------------------------------------------------------- rates

@pytest.fixture
def training_clock(monkeypatch):
    """time.perf_counter as a clock that only the classifier's training forwards move, by 1 each: a step of one
    micro-batch takes 1, evaluations, checkpoints and start-up take 0. -> the clock ([time]), to move by hand."""
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    def tick(module, args):
        if isinstance(module, BertForSequenceClassification) and module.training:
            clock[0] += 1
    handle = torch.nn.modules.module.register_module_forward_pre_hook(tick)
    yield clock
    handle.remove()


def test_the_rate_after_resume_counts_the_resumed_steps(tiny_bert_dir, cola, tmp_path, training_clock):
    """On that clock every logged rate is a batch of 6 examples per unit, before and after an interruption of 1,000
    units: a rate after --resume divides the examples trained since the resume by the time since, the epoch's rate
    the epoch's examples by its training time (both parts), and `elapsed` leaves the interruption out."""
    argv = cola_argv(tiny_bert_dir, cola, tmp_path, "--log-every", 2)
    train_cola.main(argv + ["--max-steps", "3"])
    training_clock[0] += 1000
    m = train_cola.main(argv + ["--resume"])
    steps = records(tmp_path, "step")
    assert [r["step"] for r in steps] == [2, 3, 4, 6]  # step 4: the first after the resume, alone in its window
    assert [r["examples_per_s"] for r in steps] == [6.0] * 4
    assert [r["elapsed"] for r in steps] == [2.0, 3.0, 4.0, 6.0]
    epochs = records(tmp_path, "epoch")
    assert [(e["step"], e["partial"]) for e in epochs] == [(3, True), (6, False)]
    assert [e["examples_per_s"] for e in epochs] == [6.0, 6.0] and epochs[-1]["epoch_time_s"] == 6.0
    assert m["train_time_s"] == 6.0 and m["seconds_per_step"] == 1.0


# --------------------------------------------------------------------------------------------- the lock

HOLD = ("import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write(f'{os.getpid()}\\n'); f.flush(); print('locked', flush=True); time.sleep(120)")


@contextlib.contextmanager
def lock_holder(folder: Path):
    """Another process holding <folder>/run.lock as a run does -> that process."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / "run.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def is_locked(path: Path) -> bool:
    """Whether a lock on `path` is held (by any process, this one included: a new open file is a new claimant)."""
    with open(path, encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@pytest.fixture(scope="module")
def finished(tiny_bert_dir, cola, tmp_path_factory) -> Path:
    """A run cut by --max-steps 3 of 6, so that --resume has steps left."""
    out = tmp_path_factory.mktemp("finished") / "out"
    train_cola.main(cola_argv(tiny_bert_dir, cola, out, "--max-steps", 3))
    return out


def test_the_lock_is_held_while_training_and_released_at_the_end(tiny_bert_dir, cola, tmp_path):
    """The run holds <output-dir>/run.lock at every training step, and neither holds nor leaves it once finished."""
    seen = []

    def probe(module, args):
        if isinstance(module, BertForSequenceClassification) and module.training:
            seen.append(is_locked(tmp_path / "run.lock"))
    handle = torch.nn.modules.module.register_module_forward_pre_hook(probe)
    try:
        train_cola.main(cola_argv(tiny_bert_dir, cola, tmp_path, "--max-steps", 3))
    finally:
        handle.remove()
    assert seen == [True] * 3 and not (tmp_path / "run.lock").exists()


@pytest.mark.parametrize("flag", ["--resume", "--overwrite", None])
def test_a_second_run_in_a_locked_folder_is_refused_and_changes_nothing(tiny_bert_dir, cola, finished, tmp_path,
                                                                       capsys, flag):
    """While another process trains in the folder (holds its lock), a start there, even one that would continue or
    replace the run, is one error line naming that process, and every file stays byte-identical. (None: a new
    folder, which the start must not fill with a log either.)"""
    out = tmp_path / "out"
    shutil.copytree(finished, out) if flag else out.mkdir()
    with lock_holder(out) as holder:
        before = snapshot(out)
        status, err = refused(train_cola.main, cola_argv(tiny_bert_dir, cola, out, *([flag] if flag else [])), capsys)
        assert status == 1 and "another run is training in this folder" in err and f"process {holder.pid}" in err
        assert snapshot(out) == before


@pytest.mark.parametrize("flag", ["--resume", None])
def test_a_lock_left_by_a_killed_run_does_not_block(tiny_bert_dir, cola, finished, tmp_path, flag):
    """A run killed with SIGKILL leaves run.lock behind, but the OS released its lock: --resume continues the run
    (and a new run starts in a folder holding only that file), and the lock file is gone when it ends."""
    out = tmp_path / "out"
    shutil.copytree(finished, out) if flag else out.mkdir()
    with lock_holder(out) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / "run.lock").read_text().strip() == str(holder.pid)  # left behind
    m = train_cola.main(cola_argv(tiny_bert_dir, cola, out, "--max-steps", 5, *([flag] if flag else [])))
    assert m["steps"] == 5 and not (out / "run.lock").exists()
    assert [r["step"] for r in records(out, "resume")] == ([3] if flag else [])


# --------------------------------------------------------------------------------------------- two processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, argv: list[str], folder: str) -> None:
    """One of two torchrun-like processes: train_cola.py's main, its stdout and stderr into rank<rank>.txt."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), TOKENIZERS_PARALLELISM="false")
    with open(Path(folder) / f"rank{rank}.txt", "w", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stdout = sys.stderr = f  # the test runner's capture replaced them
        train_cola.main(argv)


def test_of_two_processes_rank_0_alone_logs(tiny_bert_dir, cola, tmp_path):
    """Under two processes (gloo, as torchrun starts them) rank 0 prints every line of train.log and rank 1 prints
    nothing (no log line, no progress bar); log.jsonl holds each step once, and the run says it had 2 processes."""
    out = tmp_path / "out"
    argv = cola_argv(tiny_bert_dir, cola, out, "--max-steps", 2)
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo once, before the fork
    mp.start_processes(_rank, args=(_free_port(), argv, str(tmp_path)), nprocs=2, start_method="fork")
    log = [line for line in (out / "train.log").read_text().splitlines() if line.strip()]
    printed = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert "step 2/2" in "\n".join(log) and all(line in printed[0] for line in log)
    assert "train:" in printed[0]  # the progress bar
    assert not any(line in printed[1] for line in log) and "train:" not in printed[1]
    assert [r["step"] for r in records(out, "step")] == [1, 2]
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
