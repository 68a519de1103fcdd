"""The shared training loop: options, schedule, optimizer groups, batching, logs, checkpoints, resume."""
import argparse
import json
import math
import pathlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from minibert import BertConfig, BertForSequenceClassification
from minibert.checkpoint import read_state_dict, write_checkpoint
from minibert.training import (RunLog, TrainConfig, add_training_args, autocast, batch_indices, fit,
                               last_checkpoint, linear_schedule, param_groups, pick_device, set_seed,
                               write_json, write_text)


class Tiny(nn.Module):
    """The smallest model the loop accepts: forward, save_pretrained, from_pretrained."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 2)

    def forward(self, x):  # x [B, L] -> [B, 2]
        return self.head(self.drop(self.norm(self.emb(x).mean(1))))

    def save_pretrained(self, folder):
        write_checkpoint(Path(folder), {"model_type": "tiny"}, self.state_dict())

    @classmethod
    def from_pretrained(cls, folder):
        model = cls()
        model.load_state_dict(read_state_dict(Path(folder)))
        return model


def make_data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 20, (n, 5), generator=g), torch.randint(0, 2, (n,), generator=g)


def run(tmp, model_fn, epochs=2, max_steps=None, resume=False, batch_size=8, callback=None, seed=0, **kw):
    x, y = make_data()
    set_seed(seed)
    model = model_fn()
    cfg = TrainConfig(output_dir=str(tmp), epochs=epochs, lr=1e-2, weight_decay=0.01, warmup_ratio=0.2,
                      max_steps=max_steps, resume=resume, log_every=2, seed=seed, **kw)

    def batches(epoch):
        return ((x[i], y[i]) for i in batch_indices(len(x), batch_size, seed, epoch))

    def loss_fn(m, batch):
        return F.cross_entropy(m(batch[0]), batch[1]), len(batch[1])

    result = fit(model, cfg, batches, loss_fn, steps_per_epoch=math.ceil(len(x) / batch_size),
                 on_epoch_end=callback)
    return model, result


def tiny_bert():
    return BertForSequenceClassification(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=24,
                                                    max_position_embeddings=16))


# --------------------------------------------------------------------------------------------- options

def test_add_training_args_defaults_and_errors(capsys):
    p = add_training_args(argparse.ArgumentParser(), lr=2e-5, epochs=4)
    args = p.parse_args(["--output-dir", "o", "--max-steps", "3"])
    assert (args.lr, args.epochs, args.max_steps, args.device, args.resume) == (2e-5, 4, 3, "auto", False)
    cfg = TrainConfig.from_args(args)
    assert cfg.output_dir == "o" and cfg.lr == 2e-5
    for bad, msg in ((["--lr", "-1"], "argument --lr: expected a value > 0"),
                     (["--warmup-ratio", "1.5"], "argument --warmup-ratio: expected a value >= 0 and < 1"),
                     (["--batch-size", "two"], "argument --batch-size: expected int, got 'two'")):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
        assert msg in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown defaults.*'learning_rate'"):
        add_training_args(argparse.ArgumentParser(), learning_rate=1.0)


def test_device_and_autocast():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device: expected auto, cpu"):
        pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    with autocast(torch.device("cpu")):  # a no-op on CPU: matmuls stay fp32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


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


# --------------------------------------------------------------------------------------------- files

def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"mcc": 0.5})
    assert json.loads(path.read_text()) == {"mcc": 0.5}

    def broken(self, text, **kw):
        open(self, "w").write(text[:3])
        raise OSError("disk full")
    monkeypatch.setattr(pathlib.Path, "write_text", broken)
    with pytest.raises(OSError, match="disk full"):
        write_text(path, "new contents")
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"mcc": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_run_log(tmp_path):
    log = RunLog(tmp_path)
    log.event("step", step=1, loss=0.5)
    log.print("hello")
    log.close()
    log = RunLog(tmp_path, resume=True)
    log.event("step", step=2, loss=0.4)
    log.close()
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2] and recs[0]["event"] == "step"
    assert (tmp_path / "train.log").read_text() == "hello\n"


# --------------------------------------------------------------------------------------------- the loop

def test_fit_logs_checkpoints_and_stops(tmp_path):
    seen = []

    def callback(epoch):
        seen.append(epoch)
        return {"val_loss": 1.25}
    model, res = run(tmp_path, Tiny, epochs=3, max_steps=5, callback=callback)
    assert res["step"] == 5 and seen == [0, 1]  # epoch 0 full (3 steps), epoch 1 stopped after 2
    assert [h["partial"] for h in res["history"]] == [False, True]
    assert res["history"][0]["val_loss"] == 1.25 and res["history"][0]["train_loss"] > 0
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["event"] == "step"]
    assert [r["step"] for r in steps] == [2, 4, 5]
    assert all({"step", "epoch", "loss", "lr", "examples_per_s", "elapsed"} <= r.keys() for r in steps)
    assert [r["epoch"] for r in recs if r["event"] == "epoch"] == [1, 2]
    ckpt = last_checkpoint(tmp_path)
    assert ckpt == tmp_path / "checkpoint" and res["checkpoint"] == str(ckpt)
    assert {"config.json", "model.safetensors", "training_state.pt"} <= {p.name for p in ckpt.iterdir()}
    assert not (tmp_path / "checkpoint.tmp").exists() and not (tmp_path / "checkpoint.old").exists()
    assert "Saving model checkpoint to" in (tmp_path / "train.log").read_text()
    reloaded = Tiny.from_pretrained(ckpt)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")  # a crash in the middle of the swap
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint.old"


@pytest.mark.parametrize("model_fn", [Tiny, tiny_bert], ids=["tiny", "bert"])
@pytest.mark.parametrize("stop", [2, 3, 4])  # mid-epoch, at an epoch boundary, mid-epoch again
def test_resume_gives_the_same_parameters(tmp_path, model_fn, stop):
    straight, res_a = run(tmp_path / "a", model_fn, epochs=2)
    run(tmp_path / "b", model_fn, epochs=2, max_steps=stop)
    resumed, res_b = run(tmp_path / "b", model_fn, epochs=2, resume=True, seed=0)
    assert res_a["step"] == res_b["step"] == 6
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [h["train_loss"] for h in res_a["history"]] == pytest.approx([h["train_loss"] for h in res_b["history"]])
    assert [h["epoch"] for h in res_b["history"]] == [1, 2]


def test_resume_with_different_seed_differs(tmp_path):
    """Guards the resume test: the parameters do depend on the data order / dropout."""
    a, _ = run(tmp_path / "a", Tiny, seed=0)
    b, _ = run(tmp_path / "b", Tiny, seed=1)
    assert not torch.equal(a.head.weight, b.head.weight)


def test_evaluation_callback_does_not_change_training(tmp_path):
    plain, _ = run(tmp_path / "a", Tiny)
    noisy, _ = run(tmp_path / "b", Tiny, callback=lambda e: {"noise": float(torch.rand(1))})
    assert torch.equal(plain.head.weight, noisy.head.weight)


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint in"):
        run(tmp_path, Tiny, resume=True)
    run(tmp_path, Tiny, max_steps=1)
    with pytest.raises(ValueError, match="--resume: .* 3 steps per epoch .* this run has 2 .* --batch-size"):
        run(tmp_path, Tiny, resume=True, batch_size=12)


@pytest.mark.parametrize("steps_per_epoch,msg", [(4, r"batches\(0\) gave 3 batches, steps_per_epoch=4"),
                                                 (2, r"batches\(0\) gave more than steps_per_epoch=2")])
def test_wrong_steps_per_epoch(tmp_path, steps_per_epoch, msg):
    x, y = make_data()
    cfg = TrainConfig(output_dir=str(tmp_path), epochs=2)
    with pytest.raises(ValueError, match=msg):
        fit(Tiny(), cfg, lambda e: [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)],
            lambda m, b: (F.cross_entropy(m(b[0]), b[1]), len(b[1])), steps_per_epoch=steps_per_epoch)
