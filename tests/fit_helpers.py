"""Tiny models, data and a `train` helper for the tests of the training loop (imported by test_training.py,
test_run_faults.py and by the processes test_distributed.py spawns)."""
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minicore.checkpoint import read_state_dict, write_checkpoint
from minicore.runtime import set_seed
from minitrain.batching import batch_indices
from minitrain.options import TrainConfig
from minitrain.saving import fingerprint
from minitrain.training import Task, fit


class Tiny(nn.Module):
    """The smallest model the loop accepts: forward, save_pretrained, from_pretrained. Embedding + dropout."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(dropout)
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


class Dense(Tiny):
    """Per-token classifier on dense float inputs, without dropout or embeddings: every gradient is
    a generic nonzero number, so runs that differ only in float rounding stay close under AdamW
    (which turns float noise in an exactly-zero gradient into a full-size step)."""

    def __init__(self):
        nn.Module.__init__(self)
        self.up = nn.Linear(4, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):  # x [B, T, 4] -> [B, T, 3]
        return self.head(torch.tanh(self.up(x)))


def make_data(n=24, seed=0):
    """Token ids [n, 5] and labels [n] for Tiny."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 20, (n, 5), generator=g), torch.randint(0, 2, (n,), generator=g)


def make_sequences(n=22, seed=0):
    """For Dense: inputs [n, 7, 4], token labels [n, 7] (a learnable rule: the largest of the first three
    features), and lengths 1..7 (the rest is padding)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 7, 4, generator=g)
    return x, x[..., :3].argmax(-1), torch.randint(1, 8, (n,), generator=g)


def example_loss(m, batch):
    """Mean over the examples, weighted by their number."""
    return F.cross_entropy(m(batch[0]), batch[1]), len(batch[1])


def token_loss(m, batch):
    """Mean over the real tokens (as BART's loss), weighted by their number, a device tensor."""
    x, y = batch
    return F.cross_entropy(m(x).flatten(0, 1), y.flatten(), ignore_index=-100), (y != -100).sum()


def collate_sequences(data, idx):
    """Pad to the batch's longest sequence (as the scripts' dynamic padding); padded labels are -100."""
    x, y, lengths = data
    L = int(lengths[idx].max())
    labels = y[idx, :L].clone()
    labels[torch.arange(L)[None, :] >= lengths[idx][:, None]] = -100
    return x[idx, :L], labels


def train(out, model_fn=Tiny, *, data="tokens", n=None, epochs=2, batch_size=8, seed=0, loss_fn=None, evaluate=None,
          metric=None, higher_is_better=True, log_every=2, lr=1e-2, **cfg):
    """fit() on a tiny model and data -> (model, result)."""
    if data == "tokens":
        x, y = make_data(n or 24)
        collate, loss_fn = (lambda idx: (x[idx], y[idx])), loss_fn or example_loss
        size, data_hash = len(x), fingerprint(x.tolist(), y.tolist())
    else:
        seqs = make_sequences(n or 22)
        collate, loss_fn = (lambda idx: collate_sequences(seqs, idx)), loss_fn or token_loss
        size, data_hash = len(seqs[0]), fingerprint(seqs[1].tolist(), seqs[2].tolist())
    set_seed(seed)
    model = model_fn()
    config = TrainConfig(output_dir=str(out), epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.01,
                         warmup_ratio=0.2, log_every=log_every, seed=seed, device="cpu", **cfg)
    task = Task(lambda epoch: batch_indices(size, batch_size, seed, epoch), collate, loss_fn, evaluate=evaluate,
                metric=metric, higher_is_better=higher_is_better, fingerprint=data_hash)
    result = fit(model, config, task)
    return model, result


def step_losses(out) -> list[float]:
    """The loss of each "step" record in <out>/log.jsonl."""
    records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["event"] == "step"]
