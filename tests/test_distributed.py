"""Data parallel training: two processes (gloo on CPU) against one, and train_cola.py under torchrun.

The two processes are forked once for the module (a fork inherits the imported torch, so it starts in
well under a second) and run a list of jobs; the tests then compare their output folders with runs of
a single process. Comparisons of parameters use `Dense` (dense inputs, no dropout, no embedding rows):
every gradient is a generic nonzero number, so the float rounding that a different summation order
brings stays at ~1e-7 under AdamW instead of being blown up into full-size steps where a gradient is
exactly zero in one run and float noise in the other.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import HAS_MATPLOTLIB
from fit_helpers import Dense, Tiny, step_losses, train

JOBS = [  # (folder, model, keyword arguments of train)
    ("dense", "Dense", dict(data="sequences", log_every=1)),  # 22 examples: batches of 8, 8, 6
    ("dense_accum", "Dense", dict(data="sequences", log_every=1, grad_accum_steps=2)),
    ("dense_short", "Dense", dict(data="sequences", n=17, log_every=1, grad_accum_steps=2)),  # a last batch of 1
    ("tiny", "Tiny", dict(log_every=1)),  # dropout: each rank's own masks
    ("tiny_cut", "Tiny", dict(log_every=1, max_steps=4)),
    ("tiny_half", "Tiny", dict(log_every=1, max_steps=4)),  # to be resumed by one process
    ("tiny_cut", "Tiny", dict(log_every=1, resume=True)),
    ("best", "Tiny", dict(eval_every=1, keep_best=True, early_stopping_patience=2, metric="score")),
]
SCORES = [0.1, 0.4, 0.3, 0.2, 0.9]  # the toy evaluation's metric at steps 1, 2, ...: patience 2 stops at step 4
WRITES = ("open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "tempfile.mkstemp", "os.truncate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from minitrain.distributed import init_distributed
    init_distributed(torch.device("cpu"))
    runs, writes = Path(root) / "runs", []

    def audit(event, args):  # every write under runs/ by this rank
        if event in WRITES and args and str(args[0]).startswith(str(runs)):
            mode = args[1] if event == "open" else None
            if event != "open" or (isinstance(mode, str) and set(mode) & set("wax+")) or \
                    (mode is None and len(args) > 2 and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                writes.append([event, str(args[0])])
    sys.addaudithook(audit)
    for folder, model, kw in JOBS:
        evaluate = None
        if folder == "best":
            calls = iter(SCORES)
            evaluate = lambda m: {"score": next(calls)}  # noqa: E731
        train(runs / folder, {"Dense": Dense, "Tiny": Tiny}[model], evaluate=evaluate, **kw)
    (Path(root) / f"writes{rank}.json").write_text(json.dumps(writes))


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    """Run JOBS in 2 processes -> the folder holding runs/<job>."""
    root = tmp_path_factory.mktemp("ddp")
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo once, before the fork
    mp.start_processes(_worker, args=(2, _free_port(), str(root)), nprocs=2, start_method="fork")
    return root


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("job,kw", [("dense", {}), ("dense_accum", {}), ("dense_short", {"n": 17})])
def test_two_processes_equal_one(ddp, tmp_path, job, kw):
    """2 processes at global batch 8 (each rank 4 examples; with accumulation 2 micro-batches of 2; with a last
    batch of 1, one rank runs a stand-in of weight 0) = 1 process at batch 8: per-step losses and parameters."""
    single, _ = train(tmp_path, Dense, data="sequences", log_every=1, **kw)
    assert step_losses(ddp / "runs" / job) == pytest.approx(step_losses(tmp_path), rel=1e-5)
    assert _max_diff(Dense.from_pretrained(ddp / "runs" / job / "checkpoint"), single) < 1e-6
    assert len(step_losses(tmp_path)) == 6


def test_two_process_resume_equals_an_uninterrupted_run(ddp):
    """Cut at step 4, resumed: bit for bit the uninterrupted 2-process run, dropout included (every rank's
    random state is saved and restored)."""
    assert _max_diff(Tiny.from_pretrained(ddp / "runs" / "tiny_cut" / "checkpoint"),
                     Tiny.from_pretrained(ddp / "runs" / "tiny" / "checkpoint")) == 0.0
    assert step_losses(ddp / "runs" / "tiny_cut") == step_losses(ddp / "runs" / "tiny")
    state = json.loads((ddp / "runs" / "tiny_cut" / "checkpoint" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 6
    rng = torch.load(ddp / "runs" / "tiny_cut" / "checkpoint" / "training_state.pt", weights_only=False)["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])


def test_only_rank_0_writes(ddp):
    assert json.loads((ddp / "writes1.json").read_text()) == []
    assert {"open", "os.rename", "os.mkdir"} <= {e for e, _ in json.loads((ddp / "writes0.json").read_text())}
    for job in ("dense", "tiny", "best"):
        records = [json.loads(x) for x in (ddp / "runs" / job / "log.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in records if r["event"] == "step"]
        assert steps == sorted(set(steps))  # each step logged once, not once per rank


def test_evaluation_and_early_stopping_agree_across_ranks(ddp):
    """Rank 0 evaluates and sends the metrics: both ranks stop at the same step (else they would hang)."""
    state = json.loads((ddp / "runs" / "best" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["best"]["step"] == 2 and [e["score"] for e in state["evals"]] == SCORES[:4]
    assert json.loads((ddp / "runs" / "best" / "best" / "evaluation.json").read_text())["step"] == 2


def test_resume_with_another_world_size_says_so(ddp, tmp_path):
    shutil.copytree(ddp / "runs" / "tiny_half", tmp_path / "run")
    _, result = train(tmp_path / "run", Tiny, log_every=1, resume=True)
    assert result["step"] == 6
    assert "written by 2 processes, this run has 1: the batch order, weights and optimizer state carry over" in \
        (tmp_path / "run" / "train.log").read_text()


def test_torchrun_train_cola(tmp_path, tiny_bert_dir):
    """The script runs unchanged under torchrun: 2 processes on the CPU, one log, one checkpoint, world_size 2."""
    from test_cola import write_cola
    data, out = write_cola(tmp_path / "cola"), tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(root / "train_cola.py"), "--model", str(tiny_bert_dir), "--data-dir", str(data),
           "--output-dir", str(out),
           "--device", "cpu", "--batch-size", "8", "--max-steps", "3", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    assert step_losses(out) and len(step_losses(out)) == 3
    assert (out / "checkpoint" / "model.safetensors").exists() and (out / "curves.png").exists() == HAS_MATPLOTLIB
    assert proc.stderr.count("freshly initialized") == 1  # the classifier's warning, from rank 0 alone
