"""Paraphrase pairs: MSRP, PAWS and Quora readers (local official files or the Hub) and the user's
own pairs, clean-up, dedupe, the filtering of the training pairs (copies, test and validation sentences,
near-copies, a seeded held-out split), unlabeled text for denoising, seq2seq collate, and the paraphrase
metrics (sacreBLEU, iBLEU, copy rate, length ratio).

Follows T. Rajapakse, "BART for Paraphrasing with Simple Transformers" (2020): positive pairs of
MSRP (Quality == 1), PAWS (label == 1) and Quora Question Pairs (is_duplicate == 1), with the
tokenization spaces of the PTB-style files removed.
"""
import csv
import random
import re
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import sacrebleu

from data.files import read_json, read_table, string_field, where
from data.hub import load_hub_dataset
from data.tokens import pad_batch
from minicore.errors import UserError


class Pair(NamedTuple):
    source: str
    target: str


# ----------------------------------------------------------------------------- clean-up

# Rules chosen from what the files contain: PAWS-QQP is PTB-tokenized (" ?" 26k times, " ," 7k,
# " 's"/" 'm" 3k, "( x )" 1.6k, "`` x ''" quotes 1.4k, " n't" 1k, " :", " %", " !", "$ 5", " ;"),
# MSRP is mostly raw text with a few " ." (". . ." ellipses) and " ,". BERT's WordPiece decoder
# writes contractions as "don ' t".
_RULES = [
    (re.compile(r"``|''"), '"'),                                        # PTB quotes -> "
    (re.compile(r" +([.,?!;:%)\]}])(?!\w)"), r"\1"),                    # "word ." -> "word."
    (re.compile(r"([(\[{$]) +"), r"\1"),                                # "( word" -> "(word"
    (re.compile(r" +(n't|'s|'m|'re|'ve|'ll|'d)\b", re.IGNORECASE), r"\1"),  # "do n't" -> "don't"
    (re.compile(r"(\w) ' (t|s|m|re|ve|ll|d)\b", re.IGNORECASE), r"\1'\2"),  # WordPiece "don ' t"
    # BERT's WordPiece splits at every punctuation mark and decodes with spaces around it:
    (re.compile(r"(\w) - (?=\w)"), r"\1-"),                              # "year - old" -> "year-old"
    (re.compile(r"- -"), "--"),                                          # "- -" -> "--" (a dash)
    (re.compile(r"(\d), (?=\d{3}\b)"), r"\1,"),                             # "1, 000" -> "1,000"
    (re.compile(r"(\d)([.:]) (?=\d)"), r"\1\2"),                          # "1. 5", "10: 30" -> "1.5", "10:30"
    (re.compile(r"\b(\w)\. (?=\w\.)"), r"\1."),                          # "u. s." -> "u.s."
    (re.compile(r"\b([od]) ' (?=\w)", re.IGNORECASE), r"\1'"),           # "o ' connor" -> "o'connor"
    (re.compile(r'(?<!\S)" ([^"]*?) "(?!\w)'), r'"\1"'),                # '" a b "' -> '"a b"'
    (re.compile(r"(?<!\S)'([^' ][^']*?) '(?!\w)"), r"'\1'"),            # "'a b '" -> "'a b'"
    (re.compile(r"\s+"), " "),
]


def clean_spaces(text: str) -> str:
    """Remove the spaces a PTB-style tokenizer put around punctuation and contractions, and those
    BERT's WordPiece decoder puts around every punctuation mark ("u. s.", "year - old", "1, 000")."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text.strip()


def normalize(text: str) -> str:
    """Comparison form for the copy rate, dedupe and the leakage guard: lowercased, without any
    whitespace, so that a copy is a copy however a tokenizer spaced its punctuation."""
    return re.sub(r"\s+", "", text).lower()


def dedupe(pairs: Iterable[Pair], drop_copies: bool = True) -> list[Pair]:
    """Keep the first of pairs equal after `normalize`; with drop_copies also drop pairs whose two
    sides normalize to the same text (they would only teach the model to copy)."""
    seen, out = set(), []
    for p in pairs:
        key = (normalize(p.source), normalize(p.target))
        if key in seen or (drop_copies and key[0] == key[1]):
            continue
        seen.add(key)
        out.append(p)
    return out


def drop_near_copies(pairs: Iterable[Pair], max_bleu: float) -> list[Pair]:
    """Keep the pairs whose target scores below `max_bleu` sentence BLEU (lowercased) against its source:
    the others differ by a word or by word order and mostly teach a model to copy."""
    return [p for p in pairs
            if sacrebleu.sentence_bleu(p.target, [p.source], lowercase=True).score < max_bleu]


# ----------------------------------------------------------------------------- local readers

def _read_positive(path, a: str, b: str, label: str, quoting: int, clean: bool) -> list[Pair]:
    """The (a, b) pairs of a tab-separated file whose `label` column is 1; errors name the file, line and column."""
    out = []
    for row in read_table(path, [a, b, label], kind="tsv", quoting=quoting):
        value = row.values[label].strip()
        if value not in ("0", "1"):
            raise UserError("expected 0 or 1", where(path, row.line, label), value,
                            "give the official file, as published")
        if value == "1":
            s, t = row.values[a], row.values[b]
            out.append(Pair(clean_spaces(s), clean_spaces(t)) if clean else Pair(s, t))
    return out


def read_msrp(path, clean: bool = True) -> list[Pair]:
    """msr_paraphrase_{train,test}.txt: UTF-8 BOM, header `Quality #1 ID #2 ID #1 String #2 String`,
    tab-separated, no quoting (quotes are text); pairs with Quality == 1."""
    return _read_positive(path, "#1 String", "#2 String", "Quality", csv.QUOTE_NONE, clean)


def read_paws(path, clean: bool = True) -> list[Pair]:
    """PAWS-Wiki / PAWS-QQP {train,dev,test}.tsv: header `id sentence1 sentence2 label`, no
    quoting; pairs with label == 1."""
    return _read_positive(path, "sentence1", "sentence2", "label", csv.QUOTE_NONE, clean)


def read_quora(path, clean: bool = True) -> list[Pair]:
    """quora_duplicate_questions.tsv: header `id qid1 qid2 question1 question2 is_duplicate`;
    fields with tabs, newlines or quotes are CSV-quoted; pairs with is_duplicate == 1."""
    return _read_positive(path, "question1", "question2", "is_duplicate", csv.QUOTE_MINIMAL, clean)


def load_local(data_dir, split: str) -> list[Pair]:
    """Every known file of `split` under data_dir: msrp/msr_paraphrase_{train,test}.txt, any
    folder holding PAWS {train,dev,test}.tsv (paws_wiki/, paws_qqp/, ...), and
    quora_duplicate_questions.tsv (all train). Raises if none is found."""
    data_dir = Path(data_dir)
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split: expected 'train', 'dev' or 'test', got {split!r}")
    pairs, found = [], []
    msrp = data_dir / "msrp" / f"msr_paraphrase_{split}.txt"
    if msrp.is_file():
        found.append(msrp)
        pairs += read_msrp(msrp)
    for paws in sorted(data_dir.glob(f"*/{split}.tsv")):
        found.append(paws)
        pairs += read_paws(paws)
    if split == "train":
        for quora in sorted(data_dir.glob("**/quora_duplicate_questions.tsv")):
            found.append(quora)
            pairs += read_quora(quora)
    if not found:
        raise UserError(f"no {split} file found", str(data_dir),
                        fix=f"expected msrp/msr_paraphrase_{split}.txt, <paws folder>/{split}.tsv or "
                            "quora_duplicate_questions.tsv")
    return pairs


def read_pairs(path, source_column: str, target_column: str) -> list[Pair]:
    """The user's own (source, target) pairs, as written, from a CSV, TSV or JSONL file (data/files.py)."""
    rows = read_table(path, [source_column, target_column])
    if not rows:
        raise UserError("no rows", str(path), fix="give the file at least one pair")
    return [Pair(string_field(path, r, source_column), string_field(path, r, target_column)) for r in rows]


# ----------------------------------------------------------------------------- the Hub

HUB = {  # name -> (dataset id, config, split names, row -> (source, target, is_positive))
    "paws": ("google-research-datasets/paws", "labeled_final",
             {"train": "train", "dev": "validation", "test": "test"},
             lambda r: (r["sentence1"], r["sentence2"], r["label"] == 1)),
    # no "test": GLUE hides MRPC's test labels (all -1, so no pair would be positive); see NO_SPLIT
    "mrpc": ("nyu-mll/glue", "mrpc", {"train": "train", "dev": "validation"},
             lambda r: (r["sentence1"], r["sentence2"], r["label"] == 1)),
    # the 404,290 Quora Question Pairs (label 1 = duplicate) in a parquet copy; the Hub id "quora" is a
    # loading script, which datasets 4 and later refuse to run
    "quora": ("sentence-transformers/quora-duplicates", "pair-class", {"train": "train"},
              lambda r: (r["sentence1"], r["sentence2"], r["label"] == 1)),
}
NO_SPLIT = {("mrpc", "test"): "GLUE hides MRPC's test labels (they are all -1): use 'dev' (GLUE's validation "
                              "split), or --data-dir with msrp/msr_paraphrase_test.txt (MSRP's labeled test set)"}
LOCAL_FILES = ("pass --data-dir with msrp/msr_paraphrase_{train,test}.txt (the Microsoft Research Paraphrase "
               "Corpus) and/or paws_qqp/ or paws_wiki/ {train,dev,test}.tsv (https://github.com/"
               "google-research-datasets/paws)")


def load_hub(name: str, split: str, clean: bool = True) -> list[Pair]:
    """Positive pairs of a Hub dataset: 'paws' (labeled_final), 'mrpc' (GLUE) or 'quora'
    (sentence-transformers/quora-duplicates)."""
    if name not in HUB:
        raise ValueError(f"dataset: expected one of {sorted(HUB)}, got {name!r}")
    repo, config, splits, row_fn = HUB[name]
    if split not in splits:
        raise ValueError(f"{name} has no {split!r} split (has {sorted(splits)})"
                         + (f": {NO_SPLIT[name, split]}" if (name, split) in NO_SPLIT else ""))
    out = []
    for row in load_hub_dataset(LOCAL_FILES, repo, config, split=splits[split]):
        s, t, positive = row_fn(row)
        if positive:
            out.append(Pair(clean_spaces(s), clean_spaces(t)) if clean else Pair(s, t))
    return out


# ----------------------------------------------------------------------------- the training pairs

def split_heldout(pairs: list[Pair], n_heldout: int, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Seeded (train, heldout) split; heldout has n_heldout pairs, order otherwise kept."""
    if not 0 <= n_heldout <= len(pairs):
        raise ValueError(f"n_heldout: expected 0..{len(pairs)}, got {n_heldout}")
    held = set(random.Random(seed).sample(range(len(pairs)), n_heldout))
    return ([p for i, p in enumerate(pairs) if i not in held],
            [p for i, p in enumerate(pairs) if i in held])


def without_sentences(pairs: list[Pair], held: list[Pair]) -> list[Pair]:
    """The pairs that share no sentence (after `normalize`) with the held-out pairs: none is trained on."""
    seen = {normalize(s) for p in held for s in p}
    return [p for p in pairs if normalize(p.source) not in seen and normalize(p.target) not in seen]


def default_validation_size(n_pairs: int, share: float = 0.05, most: int = 200) -> int:
    """How many pairs to hold out for validation when not told: 5% of the pairs, at most 200."""
    return min(most, int(share * n_pairs))


def training_pairs(raw: list[Pair], test: list[Pair], validation: list[Pair] | int | None, seed: int,
                   max_pair_bleu: float | None = None, both_directions: bool = False) -> tuple[list, list, str]:
    """The training and validation pairs -> (train, validation, how the training pairs were filtered, in words).

    The read pairs are deduplicated and cleared of copies, of every sentence of the test pairs and (with
    `max_pair_bleu`) of near-copies; `validation` is the validation pairs, or how many of those training pairs
    to hold out (seeded; None: `default_validation_size`); then no training pair shares a sentence with a validation
    pair; `both_directions` adds (target, source)."""
    steps = [(len(raw), "pairs read")]
    train = without_sentences(dedupe(raw), test)
    steps.append((len(train), "after dropping duplicates, copies and test sentences"))
    if max_pair_bleu is not None:
        train = drop_near_copies(train, max_pair_bleu)
        steps.append((len(train), f"after dropping near-copies (--max-pair-bleu {max_pair_bleu})"))
    if validation is None:
        validation = default_validation_size(len(train))
    if isinstance(validation, int):
        if train and validation >= len(train):
            raise UserError("--validation-pairs leaves no training pairs", "--validation-pairs", validation,
                            f"there are {len(train)} training pairs: hold out fewer")
        train, validation = split_heldout(train, min(validation, len(train)), seed)
    if validation:
        train = without_sentences(train, validation)
        steps.append((len(train), "after removing the validation pairs and their sentences"))
    if both_directions:
        train = dedupe(train + [Pair(p.target, p.source) for p in train])
        steps.append((len(train), "in both directions"))
    return train, validation, ", ".join(f"{n} {what}" for n, what in steps)


# ----------------------------------------------------------------------------- unlabeled text

def read_squad_contexts(path) -> list[str]:
    """The paragraph contexts of an official SQuAD JSON file (v1.1 or v2.0)."""
    doc = read_json(path)
    try:
        contexts = [p["context"] for article in doc["data"] for p in article["paragraphs"]]
    except (KeyError, TypeError) as e:
        raise UserError(f"not SQuAD JSON: no data[].paragraphs[].context ({e!r})", str(path),
                        fix="give official SQuAD JSON files (train-v2.0.json, ...)") from None
    if not all(isinstance(c, str) for c in contexts):
        raise UserError("not SQuAD JSON: a context is not a string", str(path),
                        fix="give official SQuAD JSON files (train-v2.0.json, ...)")
    return contexts


def unlabeled_text(pairs: Iterable[Pair], squad_paths: Iterable = ()) -> Iterator[str]:
    """Unique English text for denoising pre-training: both sides of every pair, then the SQuAD
    contexts of each file in squad_paths."""
    seen = set()
    for text in (s for p in pairs for s in p):
        if text not in seen:
            seen.add(text)
            yield text
    for path in squad_paths:
        for text in read_squad_contexts(path):
            if text not in seen:
                seen.add(text)
                yield text


# ----------------------------------------------------------------------------- featurize, collate

def to_labels(ids: list[int], decoder_start_token_id: int) -> list[int]:
    """Decoder targets for tokenized text: without a leading decoder start token, since the model
    shifts labels right behind it (a BERT warm start starts from [CLS]; BART from </s>, so its
    labels keep <s>)."""
    return ids[1:] if ids and ids[0] == decoder_start_token_id else ids


def collate(sources: list[list[int]], labels: list[list[int]], pad_id: int) -> dict:
    """Dynamic padding: input_ids [B, S] (pad_id), attention_mask [B, S] (None when nothing is padded)
    and labels [B, T] (-100, which the loss ignores)."""
    input_ids, mask = pad_batch(sources, pad_id)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": pad_batch(labels, -100)[0]}


# ----------------------------------------------------------------------------- metrics

def bleu(outputs: list[str], references: list[str], lowercase: bool = False) -> float:
    """sacreBLEU corpus BLEU (13a tokenization) of outputs against one reference each."""
    if len(outputs) != len(references):
        raise ValueError(f"outputs and references: expected equal lengths, got "
                         f"{len(outputs)} and {len(references)}")
    return sacrebleu.corpus_bleu(outputs, [references], lowercase=lowercase).score


def paraphrase_metrics(sources: list[str], references: list[str], outputs: list[str],
                       lowercase: bool = False, alpha: float = 0.8) -> dict:
    """BLEU against the reference and against the source, iBLEU (Sun & Zhou 2012:
    alpha * BLEU(out, ref) - (1 - alpha) * BLEU(out, src)), the copy rate (output equals source
    after `normalize`) and the mean length ratio len(output) / len(source) in words."""
    if not len(sources) == len(references) == len(outputs) > 0:
        raise ValueError(f"sources, references, outputs: expected equal non-zero lengths, got "
                         f"{len(sources)}, {len(references)}, {len(outputs)}")
    b_ref = bleu(outputs, references, lowercase)
    b_src = bleu(outputs, sources, lowercase)
    copies = sum(normalize(o) == normalize(s) for o, s in zip(outputs, sources))
    ratios = [len(o.split()) / max(1, len(s.split())) for o, s in zip(outputs, sources)]
    return {"bleu": b_ref, "self_bleu": b_src, "ibleu": alpha * b_ref - (1 - alpha) * b_src,
            "copy_rate": copies / len(outputs), "length_ratio": sum(ratios) / len(ratios),
            "n": len(outputs)}


def first_non_copy(source: str, candidates: list[str]) -> str:
    """The best-ranked candidate that is not a copy of the source (after `normalize`), else the best."""
    return next((c for c in candidates if normalize(c) != normalize(source)), candidates[0])


def rescore(path, field: str = "paraphrase", lowercase: bool = False) -> dict:
    """The metrics of a train_paraphrase.py generations.jsonl ({"source", "reference", field} per
    line) and of its copy baseline, with today's `clean_spaces` applied to every text first."""
    columns = ["source", "reference", field]
    texts = []
    for row in read_table(path, columns, kind="jsonl"):
        for k in columns:
            if not isinstance(row.values[k], str):
                raise UserError("expected a string", where(path, row.line, k), row.values[k],
                                "give a generations.jsonl written by train_paraphrase.py")
        texts.append([clean_spaces(row.values[k]) for k in columns])
    if not texts:
        raise UserError("no generations", str(path), fix="give a generations.jsonl written by train_paraphrase.py")
    src, ref, out = map(list, zip(*texts))
    return {"generations": str(path), "field": field, "bleu_lowercase": lowercase,
            "eval": paraphrase_metrics(src, ref, out, lowercase),
            "copy_baseline": paraphrase_metrics(src, ref, src, lowercase)}
