"""Sentence classification with any number of labels: the user's files, the label set, `classify`
(probabilities from a model), and the metrics (Matthews correlation, accuracy, macro-F1).

Files are CSV, TSV, JSONL or JSON (data/files.py) with a text column and a label column. A label is
a string or an integer, kept by its name as written ("1", "acceptable") without surrounding whitespace
("1 " is "1"); the label set is that of the training file, sorted numerically when every label is an
integer and alphabetically otherwise, so label id i is the i-th name of that order (CoLA's "0", "1"
keep ids 0 and 1). A training file whose label set looks accidental is refused: two labels written
two ways ("Sports", "sports"), or about one label per row (the text and label columns swapped).
"""
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from data.files import read_table, string_field, where
from minicore.errors import UserError

_INTEGER = re.compile(r"-?\d+")
# A training file where more than half of the rows, and at least this many, have a label no other row has reads
# as its columns swapped (every text a label of its own); a few such rows may be a small file's rare labels.
MIN_LONE_LABELS = 5


class LabeledText(NamedTuple):
    text: str
    label: str  # the label's name: the file's string, or a JSON integer written in decimal


def read_labeled(path, text_column: str, label_column: str, labels: Sequence[str] | None = None) -> list[LabeledText]:
    """The (text, label) rows of a CSV, TSV, JSONL or JSON file, each label without surrounding whitespace.
    With `labels` (the training file's label set) a label outside it is an error naming the file, line and
    label; without (the training file) a label set that looks accidental is an error (`check_label_set`)."""
    rows = read_table(path, [text_column, label_column])
    if not rows:
        raise UserError("no rows", str(path), fix="give the file at least one row under its header")
    out = []
    for row in rows:
        label = row.values[label_column]
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        if not isinstance(label, str) or not label.strip():
            raise UserError("a label must be a non-empty string or an integer", where(path, row.line, label_column),
                            label, "write each label as a name or a whole number")
        label = label.strip()
        if labels is not None and label not in labels:
            raise UserError("unknown label", where(path, row.line, label_column), label,
                            f"the training file's labels are {', '.join(labels)}")
        out.append(LabeledText(string_field(path, row, text_column), label))
    if labels is None:
        check_label_set(out, path, text_column, label_column)
    return out


def check_label_set(rows: Sequence[LabeledText], path, text_column: str, label_column: str) -> None:
    """A UserError naming the columns when the training file's labels look accidental: two of them written
    two ways (case, inner spaces, Unicode form, "01" and "1"), or about one label per row (more than half of
    the rows, and at least MIN_LONE_LABELS, have a label no other row has), as when the columns are swapped."""
    at = f"{path}, column {label_column!r}"
    spelled = {}
    for name in dict.fromkeys(r.label for r in rows):
        first = spelled.setdefault(_spelling(name), name)
        if first != name:
            raise UserError(f"the labels {first!r} and {name!r} differ only in how they are written", at,
                            fix="write each label one way")
    lone = sum(n == 1 for n in Counter(r.label for r in rows).values())
    if lone >= MIN_LONE_LABELS and lone > len(rows) / 2:
        raise UserError(f"{lone} of the {len(rows)} rows have a label no other row has: the labels look like texts",
                        at, fix=f"check that the label column ({label_column!r}, --label-column) holds the labels "
                                f"and the text column ({text_column!r}, --text-column) the texts")


def _spelling(name: str) -> str:
    """What a label means, whatever its writing: an integer's value, else the text case-folded, in NFKC form,
    with single spaces."""
    if _INTEGER.fullmatch(name):
        return str(int(name))
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def label_names(examples: Sequence[LabeledText]) -> list[str]:
    """The label set in its documented order: numeric when every label is an integer, else alphabetical."""
    names = set(e.label for e in examples)
    integers = all(_INTEGER.fullmatch(n) for n in names)
    return sorted(names, key=int) if integers else sorted(names)


# ----------------------------------------------------------------------------- inference


# ----------------------------------------------------------------------------- metrics

def matthews_corrcoef(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Matthews correlation of labels, any number of them: Gorodkin's (2004) R_K as scikit-learn
    computes it from the confusion matrix C (t = row sums, p = column sums, n = sum, c = trace):
    (c n - t.p) / sqrt((n^2 - p.p)(n^2 - t.t)), defined as 0 when the denominator is 0 (a constant
    prediction or a constant gold). For 2 labels it is Matthews' (TP TN - FP FN) /
    sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))."""
    _check_lengths(gold, pred)
    t, p = Counter(gold), Counter(pred)
    n, c = len(gold), sum(g == q for g, q in zip(gold, pred))
    cov_tp = c * n - sum(t[k] * p[k] for k in t)
    cov_pp = n * n - sum(v * v for v in p.values())
    cov_tt = n * n - sum(v * v for v in t.values())
    return cov_tp / math.sqrt(cov_pp * cov_tt) if cov_pp * cov_tt else 0.0  # Python ints: exact, no overflow


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    _check_lengths(gold, pred)
    return sum(g == p for g, p in zip(gold, pred)) / len(gold)


def macro_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """The mean over the labels present in gold or pred of each label's F1 = 2 TP / (2 TP + FP + FN)
    (scikit-learn's f1_score(average="macro"))."""
    _check_lengths(gold, pred)
    f1 = []
    for k in set(gold) | set(pred):
        tp = sum(g == k and p == k for g, p in zip(gold, pred))
        wrong = sum((g == k) != (p == k) for g, p in zip(gold, pred))  # FP + FN
        f1.append(2 * tp / (2 * tp + wrong))
    return sum(f1) / len(f1)


def classification_metrics(gold: Sequence[int], pred: Sequence[int], num_labels: int) -> dict:
    """{"mcc", "accuracy"} and, for more than two labels, "macro_f1"."""
    out = {"mcc": matthews_corrcoef(gold, pred), "accuracy": accuracy(gold, pred)}
    if num_labels > 2:
        out["macro_f1"] = macro_f1(gold, pred)
    return out


def _check_lengths(gold: Sequence, pred: Sequence) -> None:
    if len(gold) != len(pred) or not gold:
        raise ValueError(f"metrics: {len(gold)} gold labels but {len(pred)} predictions (expected as many, "
                         "at least one)")
