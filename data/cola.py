"""CoLA (Warstadt et al. 2019, "Neural Network Acceptability Judgments"): read, split and collate.
Tokenizing, `classify` and the Matthews correlation live in data/tokens.py and data/classification.py.

Sources: the official raw files of cola_public 1.1 (`in_domain_train.tsv`, `in_domain_dev.tsv`,
`out_of_domain_dev.tsv`: tab-separated, no header, columns source / label / original mark /
sentence, read with csv.QUOTE_NONE so quotes stay part of the sentence) or GLUE's copy on the Hub
(`nyu-mll/glue`, config `cola`), whose 1,043-row validation split is the 527 in-domain dev rows
followed by the 516 out-of-domain ones (GLUE ships CoLA 1.0, which differs from 1.1 in a few
sentences).
"""
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from data.files import read_text, where
from data.hub import load_hub_dataset
from data.tokens import pad_batch
from minicore.errors import UserError

FILES = {"train": "in_domain_train.tsv", "in_domain_dev": "in_domain_dev.tsv",
         "out_of_domain_dev": "out_of_domain_dev.tsv"}
N_IN_DOMAIN_DEV = 527


@dataclass
class Example:
    sentence: str
    label: int  # 1 = acceptable, 0 = unacceptable
    source: str = ""  # the publication the sentence comes from, e.g. "gj04" (raw files only)


def read_tsv(path: str | Path) -> list[Example]:
    """One official CoLA file -> examples; a malformed row is a UserError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoLA file not found: {path}")
    examples = []
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    for row in reader:
        if not row:  # a blank line, e.g. an extra newline at the end, as the other readers skip it
            continue
        at = where(path, reader.line_num)
        if len(row) != 4:
            raise UserError(f"expected 4 tab-separated fields (source, label, mark, sentence), got {len(row)}", at,
                            fix="give the official raw CoLA files (cola_public/raw)")
        source, label, _, sentence = row
        if label not in ("0", "1"):
            raise UserError("a CoLA label must be 0 or 1", at, label, "give the official raw CoLA files")
        if not sentence.strip():
            raise UserError("empty sentence", at, fix="give every row a sentence")
        examples.append(Example(sentence, int(label), source))
    if not examples:
        raise UserError("no rows", str(path), fix="give the official raw CoLA files")
    return examples


def load_raw(data_dir: str | Path) -> dict[str, list[Example]]:
    """{"train", "in_domain_dev", "out_of_domain_dev"} from a folder holding the three raw files."""
    return {split: read_tsv(Path(data_dir) / name) for split, name in FILES.items()}


def load_hub() -> dict[str, list[Example]]:
    """The same three splits from GLUE's CoLA on the Hugging Face Hub."""
    ds = load_hub_dataset("pass --data-dir with the raw CoLA files (in_domain_train.tsv, in_domain_dev.tsv, "
                          "out_of_domain_dev.tsv: cola_public/raw of https://nyu-mll.github.io/CoLA/)",
                          "nyu-mll/glue", "cola")
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


def collate(ids: list[list[int]], labels: list[int], pad_id: int, pad_to: int | None = None) -> dict:
    """Pad to the longest sequence of the batch (or to `pad_to`, the tutorial's fixed 64).
    -> input_ids [B, L], attention_mask [B, L] (None when nothing is padded), labels [B]."""
    input_ids, mask = pad_batch(ids, pad_id, pad_to)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": torch.tensor(labels, dtype=torch.long)}
