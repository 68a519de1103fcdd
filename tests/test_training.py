"""The shared training loop in one process: options, schedule, optimizer groups, batching, files, logs,
checkpoints, resume, accumulation, precision, evaluation, best checkpoint, early stopping, curves."""
import argparse
import json
import math
import pathlib

import pytest
import torch
from conftest import HAS_MATPLOTLIB, needs_matplotlib
from fit_helpers import Dense, Tiny, make_data, step_losses, token_loss, train
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from minibert import BertConfig, BertForSequenceClassification
from minicore.errors import UserError
from minicore.files import write_json, write_text
from minicore.runtime import autocast, pick_device
from minitrain.batching import batch_indices, micro_batches
from minitrain.optim import linear_schedule, param_groups
from minitrain.options import TrainConfig, add_training_args
from minitrain.runs import RunLog, prepare_run
from minitrain.saving import last_checkpoint
from minitrain.training import Task, fit


def tiny_bert():
    return BertForSequenceClassification(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=24,
                                                    max_position_embeddings=16))


def same_parameters(a: nn.Module, b: nn.Module, atol=0.0) -> bool:
    return all(torch.allclose(x, y, rtol=0, atol=atol) if atol else torch.equal(x, y)
               for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --------------------------------------------------------------------------------------------- options

def test_add_training_args_defaults_and_errors(capsys):
    p = add_training_args(argparse.ArgumentParser(), lr=2e-5, epochs=4)
    args = p.parse_args(["--output-dir", "o", "--max-steps", "3", "--no-save-optimizer-state"])
    assert (args.lr, args.epochs, args.max_steps, args.device, args.resume) == (2e-5, 4, 3, "auto", False)
    assert (args.precision, args.grad_accum_steps, args.save_total_limit) == (None, 1, 1)
    assert not args.save_optimizer_state
    assert not hasattr(args, "keep_best")  # the evaluation options only where the script evaluates
    cfg = TrainConfig.from_args(args)
    assert cfg.output_dir == "o" and cfg.lr == 2e-5 and not cfg.save_optimizer_state and cfg.eval_every == 0
    evaluating = add_training_args(argparse.ArgumentParser(), evaluation=True)
    cfg = TrainConfig.from_args(evaluating.parse_args(["--keep-best", "--eval-every", "5",
                                                       "--early-stopping-patience", "2"]))
    assert (cfg.keep_best, cfg.eval_every, cfg.early_stopping_patience) == (True, 5, 2)
    for bad, msg in ((["--lr", "-1"], "argument --lr: expected a value > 0"),
                     (["--warmup-ratio", "1.5"], "argument --warmup-ratio: expected a value >= 0 and < 1"),
                     (["--batch-size", "two"], "argument --batch-size: expected int, got 'two'"),
                     (["--grad-accum-steps", "0"], "argument --grad-accum-steps: expected a value >= 1"),
                     (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'")):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
        assert msg in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown defaults.*'learning_rate'"):
        add_training_args(argparse.ArgumentParser(), learning_rate=1.0)


def test_device_and_autocast():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu", local_rank=1).type == "cpu"
    with pytest.raises(UserError, match=r"unknown device \(--device, 'tpu9'\): expected auto, cpu"):
        pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            pick_device("cuda")
    with autocast(torch.device("cpu"), "fp32"):  # fp32: no autocast, matmuls stay fp32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_tf32_and_determinism_only_when_asked(tmp_path):
    from minicore.runtime import configure_torch
    train(tmp_path, max_steps=1)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.are_deterministic_algorithms_enabled()
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        configure_torch(tf32=True, deterministic=True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
        torch.use_deterministic_algorithms(False)


# --------------------------------------------------------------------------------------------- optimizer

@pytest.mark.parametrize("total,warmup", [(10, 0), (10, 3), (7, 7), (1, 0)])
def test_linear_schedule_values(total, warmup):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = linear_schedule(opt, total, warmup)
    got = []
    for _ in range(total + 2):
        got.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    want = [2.0 * (s / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
            for s in range(total + 2)]
    assert got == pytest.approx(want)
    assert got[total] == 0.0 and (warmup == 0 or got[0] == 0.0)


def test_linear_schedule_matches_transformers():
    transformers = pytest.importorskip("transformers")
    p = nn.Parameter(torch.zeros(1))
    a, b = torch.optim.SGD([p], lr=1.0), torch.optim.SGD([p], lr=1.0)
    ours, theirs = linear_schedule(a, 50, 6), transformers.get_linear_schedule_with_warmup(b, 6, 50)
    for _ in range(55):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr())
        a.step(), b.step(), ours.step(), theirs.step()


def test_param_groups_no_decay_on_bias_and_layernorm():
    model = Tiny()
    model.head2 = nn.Linear(2, 20, bias=False)
    model.head2.weight = model.emb.weight  # tied: must appear once
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["emb.weight", "head.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["head.bias", "norm.bias", "norm.weight"]
    bert = tiny_bert()
    decay, no_decay = param_groups(bert, 0.01)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(bert.parameters()))
    assert all(p.ndim == 1 for p in no_decay["params"]) and all(p.ndim == 2 for p in decay["params"])


# --------------------------------------------------------------------------------------------- batching

@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), bs=st.integers(1, 40), seed=st.integers(0, 5), epoch=st.integers(0, 3),
       bucket=st.booleans())
def test_batch_indices_cover_every_example_once(n, bs, seed, epoch, bucket):
    lengths = [(i * 7919) % 61 for i in range(n)] if bucket else None
    batches = batch_indices(n, bs, seed, epoch, lengths=lengths, chunk_batches=3)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert len(batches) == math.ceil(n / bs) and all(1 <= len(b) <= bs for b in batches)
    assert batches == batch_indices(n, bs, seed, epoch, lengths=lengths, chunk_batches=3)  # pure


def test_batch_indices_shuffle_and_bucketing():
    a, b = batch_indices(100, 10, 0, 0), batch_indices(100, 10, 0, 1)
    assert a != b and batch_indices(100, 10, 1, 0) != a
    assert batch_indices(10, 4, 0, 0, shuffle=False) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    lengths = [(i * 37) % 50 for i in range(400)]
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)
    assert padded(batch_indices(400, 16, 0, 0, lengths=lengths)) < 0.8 * padded(batch_indices(400, 16, 0, 0))
    with pytest.raises(ValueError, match="3 lengths for 4 examples"):
        batch_indices(4, 2, 0, 0, lengths=[1, 2, 3])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), world=st.integers(1, 4), accum=st.integers(1, 4))
def test_micro_batches_split_every_batch_exactly(n, world, accum):
    """The ranks' micro-batches partition the global batch, near-equally, the same for every world size."""
    batch = list(range(100, 100 + n))
    parts = {(r, k): p for r in range(world) for k, p in enumerate(micro_batches(batch, r, world, accum))}
    assert sorted(i for p in parts.values() for i in p) == batch
    assert max(map(len, parts.values())) - min(map(len, parts.values())) <= 1 + (n % world > 0)
    assert all(isinstance(i, int) for p in parts.values() for i in p)
    assert micro_batches(batch, 0, 1, 1) == [batch]


# --------------------------------------------------------------------------------------------- files

def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"mcc": 0.5, "nan": float("nan")})
    assert json.loads(path.read_text()) == {"mcc": 0.5, "nan": None}  # strict JSON: no NaN tokens

    def broken(self, text, **kw):
        open(self, "w").write(text[:3])
        raise OSError("disk full")
    monkeypatch.setattr(pathlib.Path, "write_text", broken)
    with pytest.raises(OSError, match="disk full") as error:
        write_text(path, "new contents")
    assert error.value.filename == str(path)  # the error names the file
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"mcc": 0.5, "nan": None}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_run_log_appends_strict_json(tmp_path):
    log = RunLog(tmp_path)
    log.event("step", step=1, loss=0.5)
    log.print("hello")
    log.close()
    log = RunLog(tmp_path)  # a second RunLog (a resumed run) appends
    log.event("step", step=2, loss=float("inf"))
    log.close()
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2] and recs[0]["event"] == "step" and recs[1]["loss"] is None
    assert (tmp_path / "train.log").read_text() == "hello\n"


# --------------------------------------------------------------------------------------------- the loop

def test_fit_logs_checkpoints_and_stops(tmp_path):
    seen = []

    def evaluate(model):
        seen.append(model.training)
        return {"val_loss": 1.25}
    model, res = train(tmp_path, epochs=3, max_steps=5, evaluate=evaluate)
    assert res["step"] == 5 and seen == [False, False]  # epoch 1 (3 steps), then the stop after 2 of epoch 2
    assert [h["partial"] for h in res["history"]] == [False, True]
    assert res["history"][0]["val_loss"] == 1.25 and res["history"][0]["train_loss"] > 0
    assert [e["step"] for e in res["evals"]] == [3, 5] and res["best"] is None and not res["stopped_early"]
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["event"] == "step"]
    assert [r["step"] for r in steps] == [2, 4, 5]
    assert all({"step", "epoch", "loss", "lr", "examples_per_s", "elapsed"} <= r.keys() for r in steps)
    assert [r["epoch"] for r in recs if r["event"] == "epoch"] == [1, 2]
    assert [r["step"] for r in recs if r["event"] == "validation"] == [3, 5]
    ckpt = last_checkpoint(tmp_path)
    assert ckpt == tmp_path / "checkpoint" and res["checkpoint"] == str(ckpt)
    assert {"config.json", "model.safetensors", "training_state.pt", "trainer_state.json"} <= {
        p.name for p in ckpt.iterdir()}
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint", "log.jsonl", "train.log"} | (
        {"curves.png"} if HAS_MATPLOTLIB else set())
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (5, 1, 2) and state["settings"]["lr"] == 1e-2
    assert [s for s, _ in state["losses"]] == [2, 4, 5]
    text = (tmp_path / "train.log").read_text()
    assert "saved checkpoint" in text and "step 4/5 | epoch 2 | loss " in text and "examples/s" in text
    assert same_parameters(Tiny.from_pretrained(ckpt), model)


@pytest.mark.parametrize("model_fn", [Tiny, tiny_bert], ids=["tiny", "bert"])
@pytest.mark.parametrize("stop", [2, 3, 4])  # mid-epoch, at an epoch boundary, mid-epoch again
def test_resume_gives_the_same_parameters(tmp_path, model_fn, stop):
    """Cut by --max-steps, then --resume: the parameters, losses and logged values of an uninterrupted run."""
    straight, res_a = train(tmp_path / "a", model_fn, log_every=1)
    train(tmp_path / "b", model_fn, max_steps=stop, log_every=1)
    resumed, res_b = train(tmp_path / "b", model_fn, resume=True, log_every=1)
    assert res_a["step"] == res_b["step"] == 6
    assert same_parameters(straight, resumed)
    assert [h["train_loss"] for h in res_a["history"]] == [h["train_loss"] for h in res_b["history"]]
    assert [h["epoch"] for h in res_b["history"]] == [1, 2]
    assert step_losses(tmp_path / "a") == step_losses(tmp_path / "b")  # the log holds each step once


def test_resume_with_different_seed_differs(tmp_path):
    """Guards the resume test: the parameters do depend on the data order / dropout."""
    a, _ = train(tmp_path / "a", seed=0)
    b, _ = train(tmp_path / "b", seed=1)
    assert not torch.equal(a.head.weight, b.head.weight)


def test_evaluation_does_not_change_training(tmp_path):
    plain, _ = train(tmp_path / "a")
    noisy, res = train(tmp_path / "b", eval_every=1, evaluate=lambda m: {"noise": float(torch.rand(1))})
    assert len(res["evals"]) == 6 and same_parameters(plain, noisy)


def test_resume_refuses_other_settings_and_missing_checkpoints(tmp_path):
    with pytest.raises(UserError, match="no checkpoint to resume"):
        train(tmp_path, resume=True)
    train(tmp_path, max_steps=1)
    with pytest.raises(UserError, match=r"--batch-size 8 in the checkpoint, 12 now; steps per epoch 3 in the "
                                        r"checkpoint, 2 now"):
        train(tmp_path, resume=True, batch_size=12)
    with pytest.raises(UserError, match=r"--lr 0.01 in the checkpoint, 0.02 now"):
        train(tmp_path, resume=True, lr=2e-2)
    with pytest.raises(UserError, match=r"the training data \(fingerprint\)"):
        train(tmp_path, resume=True, n=23)  # other examples, as many batches


def test_wrong_number_of_batches(tmp_path):
    x, y = make_data()
    cfg = TrainConfig(output_dir=str(tmp_path), epochs=2, device="cpu")
    with pytest.raises(ValueError, match=r"batches\(1\) gave 2 batches, batches\(0\) 3"):
        fit(Tiny(), cfg, Task(lambda e: [[0, 1], [2, 3], [4, 5]][:3 - e], lambda i: (x[i], y[i]),
                              lambda m, b: (torch.nn.functional.cross_entropy(m(b[0]), b[1]), len(b[1]))))
    with pytest.raises(UserError, match="no training data"):
        fit(Tiny(), cfg, Task(lambda e: [], lambda i: (x[i], y[i]), None))


# --------------------------------------------------------------------------------------------- accumulation

@pytest.mark.parametrize("accum", [2, 3, 8])
def test_accumulation_equals_the_whole_batch(tmp_path, accum):
    """K micro-batches of B/K (a token-mean loss over sequences of different lengths, a short last batch,
    empty micro-batches at K=8 for it) give the parameters of batch B at once. Dense model, no dropout:
    AdamW does not amplify the float rounding the different grouping brings, so 1e-6 is honest.

    The logged losses are float32 means summed in another order (per micro-batch): they differ by a few float32
    ulps (~1e-7 relative at a loss near 1, and the order differs between CPUs); 2e-6 allows that, and nothing a
    wrong weighting would give (a micro-batch counted twice moves the loss by ~1e-2)."""
    whole, res_a = train(tmp_path / "a", Dense, data="sequences", log_every=1)
    parts, res_b = train(tmp_path / "b", Dense, data="sequences", log_every=1, grad_accum_steps=accum)
    assert res_a["step"] == res_b["step"] == 6  # 22 examples: batches of 8, 8, 6
    assert same_parameters(whole, parts, atol=1e-6)
    assert step_losses(tmp_path / "a") == pytest.approx(step_losses(tmp_path / "b"), rel=0, abs=2e-6)


def test_accumulation_weights_each_micro_batch(tmp_path):
    """Guards the test above: with every micro-batch counted alike (weight 1), the result differs."""
    whole, _ = train(tmp_path / "a", Dense, data="sequences")
    unweighted, _ = train(tmp_path / "b", Dense, data="sequences", grad_accum_steps=2,
                          loss_fn=lambda m, b: (token_loss(m, b)[0], 1))
    assert not same_parameters(whole, unweighted, atol=1e-4)


def test_fp16_with_loss_scaling_trains(tmp_path):
    """fp16 autocast with GradScaler on CPU: the loss falls; steps skipped for inf gradients are not errors."""
    model, res = train(tmp_path, Dense, data="sequences", precision="fp16", epochs=4, lr=3e-2, log_every=1)
    losses = step_losses(tmp_path)
    assert res["step"] == 12 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3])
    state = torch.load(tmp_path / "checkpoint" / "training_state.pt", weights_only=False)
    assert state["scaler"]["scale"] == 65536.0  # scaling was on (and never met an inf here)
    assert all(p.dtype == torch.float32 for p in model.parameters())

    def huge_loss(m, batch):  # 1e3 x the loss overflows fp16 gradients at the initial scale of 65536
        loss, weight = token_loss(m, batch)
        return loss * 1e3, weight
    train(tmp_path / "huge", Dense, data="sequences", precision="fp16", loss_fn=huge_loss)
    state = torch.load(tmp_path / "huge" / "checkpoint" / "training_state.pt", weights_only=False)
    assert state["scaler"]["scale"] < 65536.0  # steps with inf gradients were skipped and the scale lowered


# --------------------------------------------------------------------------------------------- evaluation

def scripted(values: list[float]):
    """A toy evaluation whose metric at its n-th call is values[n]."""
    calls = iter(values)
    return lambda model: {"score": next(calls)}


def test_keep_best_keeps_the_best_step(tmp_path):
    scores = [0.5, 0.6, 0.9, 0.7]  # evaluations every 2 steps and at the epoch ends: steps 2, 3, 4, 6
    model, res = train(tmp_path / "run", eval_every=2, keep_best=True, evaluate=scripted(scores), metric="score")
    assert [e["step"] for e in res["evals"]] == [2, 3, 4, 6]
    assert (res["best"]["step"], res["best"]["score"], res["best"]["path"]) == (4, 0.9, str(tmp_path / "run" / "best"))
    at_4, _ = train(tmp_path / "ref", max_steps=4)
    assert same_parameters(Tiny.from_pretrained(tmp_path / "run" / "best"), at_4)  # the best step's weights
    assert same_parameters(model, at_4)  # fit ends with the best model loaded
    assert json.loads((tmp_path / "run" / "best" / "evaluation.json").read_text())["step"] == 4
    assert same_parameters(Tiny.from_pretrained(tmp_path / "run" / "checkpoint"), train(tmp_path / "c")[0])
    assert "(best)" in (tmp_path / "run" / "train.log").read_text()


def test_lower_is_better(tmp_path):
    _, res = train(tmp_path, eval_every=1, evaluate=lambda m, calls=iter([3.0, 1.0, 2.0, 0.5, 4.0, 9.0]): {
        "loss": next(calls)}, metric="loss", higher_is_better=False)
    assert res["best"]["step"] == 4 and res["best"]["path"] is None  # tracked, not saved without --keep-best


def test_early_stopping_stops_at_the_right_evaluation(tmp_path):
    scores = [0.1, 0.4, 0.3, 0.4, 0.9, 0.9]  # at steps 1 to 6
    _, res = train(tmp_path, eval_every=1, early_stopping_patience=2, evaluate=scripted(scores), metric="score")
    assert res["stopped_early"] and res["step"] == 4  # 3 and 4 did not beat step 2's 0.4
    assert [e["step"] for e in res["evals"]] == [1, 2, 3, 4] and res["best"]["step"] == 2
    assert res["history"][-1]["partial"] and "early stopping at step 4" in (tmp_path / "train.log").read_text()
    assert json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())["evals_since_best"] == 2


def test_keep_best_needs_an_evaluation(tmp_path):
    with pytest.raises(ValueError, match="need a Task with evaluate and metric"):
        train(tmp_path, keep_best=True)


# --------------------------------------------------------------------------------------------- disk and views

def test_save_total_limit_and_optimizer_state(tmp_path):
    train(tmp_path / "a", save_every=1, save_total_limit=3)
    kept = sorted(p.name for p in (tmp_path / "a").glob("checkpoint*"))
    assert kept == ["checkpoint", "checkpoint-4", "checkpoint-5"]
    train(tmp_path / "b", save_every=1)
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint*")) == ["checkpoint"]
    train(tmp_path / "c", save_optimizer_state=False, max_steps=2)
    assert not (tmp_path / "c" / "checkpoint" / "training_state.pt").exists()
    with pytest.raises(UserError, match="holds no optimizer state .*cannot be resumed"):
        train(tmp_path / "c", resume=True)


@needs_matplotlib
def test_tensorboard_and_curves(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    train(tmp_path / "a", report_to="tensorboard", evaluate=lambda m: {"acc": 0.5}, metric="acc")
    assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "a" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else
                        real_find_spec(name, *a))
    args = add_training_args(argparse.ArgumentParser()).parse_args(
        ["--output-dir", str(tmp_path / "c"), "--report-to", "tensorboard", "--device", "cpu"])
    with pytest.raises(UserError, match=r"TensorBoard is not installed \(--report-to, 'tensorboard'\): pip install"):
        prepare_run(args)
    assert not (tmp_path / "c").exists()
    monkeypatch.undo()

    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kw)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    train(tmp_path / "b")
    assert not (tmp_path / "b" / "curves.png").exists()
    assert "matplotlib is not installed: no curves.png" in (tmp_path / "b" / "train.log").read_text()


def test_the_logged_rate_counts_training_time_alone(tmp_path, monkeypatch):
    """On a clock that a training step moves by 1 and an evaluation by 1,000, every logged rate is a step's
    8 examples per unit: evaluations (during and at the end of epochs) and checkpoints are not training time."""
    from types import SimpleNamespace

    from fit_helpers import example_loss

    import minitrain.training
    clock = [0.0]
    monkeypatch.setattr(minitrain.training, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def loss_fn(model, batch):
        clock[0] += 1
        return example_loss(model, batch)

    def evaluate(model):
        clock[0] += 1000
        return {"score": 1.0}

    _, res = train(tmp_path, n=24, batch_size=8, epochs=3, log_every=2, eval_every=1, loss_fn=loss_fn,
                   evaluate=evaluate, metric="score")
    rates = [json.loads(line)["examples_per_s"] for line in (tmp_path / "log.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "step"]
    assert len(rates) == 5 and rates == [8.0] * 5  # steps 2, 4, 6, 8 (across epoch ends), 9
    assert [e["examples_per_s"] for e in res["history"]] == [8.0] * 3


def test_a_resumed_run_counts_the_time_before_the_interruption(tmp_path, monkeypatch):
    """On a clock that only a training step moves (by 1), a run cut at step 2 and resumed reports the training
    time and the per-epoch rates of an uninterrupted run: the elapsed time carries over with the checkpoint."""
    from types import SimpleNamespace

    from fit_helpers import example_loss

    import minitrain.training
    clock = [0.0]
    monkeypatch.setattr(minitrain.training, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def loss_fn(model, batch):
        clock[0] += 1
        return example_loss(model, batch)

    _, whole = train(tmp_path / "whole", n=24, batch_size=8, epochs=2, loss_fn=loss_fn)
    train(tmp_path / "cut", n=24, batch_size=8, epochs=2, loss_fn=loss_fn, max_steps=2)
    _, resumed = train(tmp_path / "cut", n=24, batch_size=8, epochs=2, loss_fn=loss_fn, resume=True)
    assert whole["train_time_s"] == resumed["train_time_s"] == 6.0
    assert [h["examples_per_s"] for h in resumed["history"]] == [h["examples_per_s"] for h in whole["history"]]
