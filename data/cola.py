"""CoLA (Warstadt et al. 2019, "Neural Network Acceptability Judgments"): read, split, tokenize,
collate, and score with the Matthews correlation coefficient.

Sources: the official raw files of cola_public 1.1 (`in_domain_train.tsv`, `in_domain_dev.tsv`,
`out_of_domain_dev.tsv`: tab-separated, no header, columns source / label / original mark /
sentence, read with csv.QUOTE_NONE so quotes stay part of the sentence) or GLUE's copy on the Hub
(`nyu-mll/glue`, config `cola`), whose 1,043-row validation split is the 527 in-domain dev rows
followed by the 516 out-of-domain ones (GLUE ships CoLA 1.0, which differs from 1.1 in a few
sentences).
"""
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch

FILES = {"train": "in_domain_train.tsv", "in_domain_dev": "in_domain_dev.tsv",
         "out_of_domain_dev": "out_of_domain_dev.tsv"}
N_IN_DOMAIN_DEV = 527


@dataclass
class Example:
    sentence: str
    label: int  # 1 = acceptable, 0 = unacceptable
    source: str = ""  # the publication the sentence comes from, e.g. "gj04" (raw files only)


def read_tsv(path: str | Path) -> list[Example]:
    """One official CoLA file -> examples; a malformed row is a ValueError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoLA file not found: {path}")
    examples = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if len(row) != 4:
                raise ValueError(f"{where}: expected 4 tab-separated fields (source, label, mark, sentence), "
                                 f"got {len(row)}")
            source, label, _, sentence = row
            if label not in ("0", "1"):
                raise ValueError(f"{where}: label must be 0 or 1, got {label!r}")
            if not sentence.strip():
                raise ValueError(f"{where}: empty sentence")
            examples.append(Example(sentence, int(label), source))
    if not examples:
        raise ValueError(f"{path}: no rows")
    return examples


def load_raw(data_dir: str | Path) -> dict[str, list[Example]]:
    """{"train", "in_domain_dev", "out_of_domain_dev"} from a folder holding the three raw files."""
    return {split: read_tsv(Path(data_dir) / name) for split, name in FILES.items()}


def load_hub() -> dict[str, list[Example]]:
    """The same three splits from GLUE's CoLA on the Hugging Face Hub."""
    from datasets import load_dataset

    ds = load_dataset("nyu-mll/glue", "cola")
    val = [Example(r["sentence"], r["label"]) for r in ds["validation"]]
    if len(val) != 1043:
        raise ValueError(f"nyu-mll/glue cola validation has {len(val)} rows, expected 1043 (527 + 516)")
    return {"train": [Example(r["sentence"], r["label"]) for r in ds["train"]],
            "in_domain_dev": val[:N_IN_DOMAIN_DEV], "out_of_domain_dev": val[N_IN_DOMAIN_DEV:]}


def train_val_split(examples: list, val_fraction: float = 0.1, seed: int = 42) -> tuple[list, list]:
    """The tutorial's 90/10 split of in_domain_train: torch.utils.data.random_split with sizes
    int(0.9 n) and the rest, made reproducible with a generator seeded by `seed`."""
    n_train = int((1 - val_fraction) * len(examples))
    perm = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    return [examples[i] for i in perm[:n_train]], [examples[i] for i in perm[n_train:]]


def encode(tokenizer, sentences: list[str], max_length: int = 64) -> list[list[int]]:
    """[CLS] sentence [SEP] token ids, truncated to max_length with [SEP] kept last."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's tokenizer keeps no truncation
    tok.enable_truncation(max_length)
    return [e.ids for e in tok.encode_batch(sentences)]


def collate(ids: list[list[int]], labels: list[int], pad_id: int, pad_to: int | None = None) -> dict:
    """Pad to the longest sequence of the batch (or to `pad_to`, the tutorial's fixed 64).
    -> input_ids [B, L], attention_mask [B, L] (None when nothing is padded), labels [B]."""
    lengths = [len(x) for x in ids]
    width = pad_to or max(lengths)
    if max(lengths) > width:
        raise ValueError(f"collate: a sequence of {max(lengths)} tokens does not fit pad_to={width}")
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, :len(x)] = torch.tensor(x)
    mask = None
    if min(lengths) < width:
        mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": input_ids, "attention_mask": mask, "labels": torch.tensor(labels, dtype=torch.long)}


def matthews_corrcoef(gold: list[int], pred: list[int]) -> float:
    """Matthews (1975) correlation of binary labels:
    (TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN)), defined as 0 when a factor of
    the denominator is 0 (a constant prediction or a constant gold), as scikit-learn does."""
    if len(gold) != len(pred):
        raise ValueError(f"matthews_corrcoef: {len(gold)} gold labels but {len(pred)} predictions")
    if not set(gold) | set(pred) <= {0, 1}:
        raise ValueError(f"matthews_corrcoef: labels must be 0 or 1, got {sorted(set(gold) | set(pred))}")
    tp = sum(g == 1 and p == 1 for g, p in zip(gold, pred))
    tn = sum(g == 0 and p == 0 for g, p in zip(gold, pred))
    fp = sum(g == 0 and p == 1 for g, p in zip(gold, pred))
    fn = sum(g == 1 and p == 0 for g, p in zip(gold, pred))
    denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return (tp * tn - fp * fn) / math.sqrt(denom) if denom else 0.0
