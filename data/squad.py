"""SQuAD 1.1 / 2.0 for span extraction: read, sample, featurize into windows, collate, and answer
questions (the best span over the windows, or no answer).

Follows BERT's run_squad.py (Devlin et al. 2019, section 4.2-4.3) and Hugging Face's
run_squad.py / run_qa.py: the input is "[CLS] question [SEP] context window [SEP]"; a context
longer than fits is cut into overlapping windows; each window is trained to point at the answer
span, or at [CLS] (position 0) when the answer is not fully inside it or there is none (SQuAD 2.0).
Metrics live in data/squad_metrics.py.
"""
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.files import read_json, read_table, string_field, where
from data.hub import load_hub_dataset
from data.tokens import pad_batch
from minicore.errors import UserError


@dataclass
class SquadExample:
    id: str
    question: str
    context: str
    answer_texts: list[str]  # every gold answer (dev has several); [] when impossible
    answer_starts: list[int]  # character offsets into context
    is_impossible: bool


@dataclass
class SquadFeature:
    """One window of one example. L = number of tokens (no padding)."""
    input_ids: np.ndarray  # [L] int64: [CLS] question [SEP] context window [SEP]
    token_type_ids: np.ndarray  # [L] int64: 0 for [CLS] question [SEP], 1 after
    offsets: np.ndarray  # [L, 2] int64: (start, end) characters in the context; -1 for non-context tokens
    example_index: int
    start_position: int  # token index of the answer start, 0 ([CLS]) when not in this window
    end_position: int


# ----------------------------------------------------------------------------- reading

def read_squad_file(path: str | Path) -> list[SquadExample]:
    """SQuAD 1.1 or 2.0 by the file's extension: the official JSON (`.json`: train-v2.0.json,
    dev-v1.1.json, ...) or JSONL in the flattened Hugging Face layout (`.jsonl`: one question a line,
    {"id", "title", "context", "question", "answers": {"text": [...], "answer_start": [...]}}, no
    answers when it is unanswerable). Every question must have a text, every answer must be a non-empty
    span of its context at its answer_start (in the context's Unicode normal form, NFC or NFD, whichever
    the answer was written in), and question ids must be unique. Errors name the file and the question."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return _checked(_read_jsonl(path), path)
    if path.suffix.lower() == ".json":
        return read_squad_json(read_json(path), path)
    raise UserError("unknown SQuAD file format", str(path), path.suffix,
                    "give the official JSON (.json) or the flattened JSONL layout (.jsonl)")


def read_squad_json(root, path) -> list[SquadExample]:
    """The questions of official SQuAD JSON already parsed (`root`, read from `path`), checked as
    `read_squad_file` checks them."""
    return _checked(_read_official(root, path), path)


def _checked(located: list[tuple[SquadExample, str]], path) -> list[SquadExample]:
    """The examples, once there is at least one and their ids are unique."""
    if not located:
        raise UserError("no questions", str(path), fix="give a SQuAD file with at least one question")
    first = {}
    for ex, at in located:
        if ex.id in first:
            raise UserError("duplicate question id", f"{path}, {first[ex.id]} and {at}", ex.id,
                            "give each question its own id")
        first[ex.id] = at
    return [ex for ex, _ in located]


def _read_official(root, path) -> list[tuple[SquadExample, str]]:
    """-> (example, where it is) for each question of official SQuAD JSON (`root`, read from `path`)."""
    located = []
    for i, article in enumerate(_get(root, "data", list, "the top level", path)):
        for j, para in enumerate(_get(article, "paragraphs", list, f"data[{i}]", path)):
            loc = f"data[{i}].paragraphs[{j}]"
            context = _get(para, "context", str, loc, path)
            for k, qa in enumerate(_get(para, "qas", list, loc, path)):
                loc_q = f"{loc}.qas[{k}]"
                qid = _get(qa, "id", str, loc_q, path)
                answers = _get(qa, "answers", list, loc_q, path)
                texts = [_get(a, "text", str, f"{loc_q}.answers[{n}]", path) for n, a in enumerate(answers)]
                starts = [_get(a, "answer_start", int, f"{loc_q}.answers[{n}]", path) for n, a in enumerate(answers)]
                impossible = qa.get("is_impossible", False)
                if impossible is not bool(impossible) or impossible == bool(answers):
                    raise UserError(f"{loc_q}: is_impossible is {impossible!r} but there are {len(answers)} answers",
                                    str(path), fix="is_impossible is a bool, true exactly when there are no answers")
                question = _get(qa, "question", str, loc_q, path)
                if not question.strip():
                    raise UserError(f"{loc_q}: empty question", f"{path}, question {qid!r}",
                                    fix="give every question its text")
                texts = _check_spans(context, texts, starts, f"{loc_q}.", f"{path}, question {qid!r}")
                located.append((SquadExample(qid, question, context, texts, starts, impossible), loc_q))
    return located


def _get(obj, key: str, kind: type, loc: str, path):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{loc} has no field {key!r}", str(path), fix="give the official SQuAD JSON layout")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{loc}.{key} must be {kind.__name__}, got {type(value).__name__}", str(path),
                        fix="give the official SQuAD JSON layout")
    return value


def _read_jsonl(path: Path) -> list[tuple[SquadExample, str]]:
    """-> (example, where it is) for each line of a flattened SQuAD JSONL file."""
    located = []
    for row in read_table(path, ["id", "context", "question", "answers"], kind="jsonl"):
        qid, context, question = (string_field(path, row, c) for c in ("id", "context", "question"))
        answers = row.values["answers"]
        texts = answers.get("text") if isinstance(answers, dict) else None
        starts = answers.get("answer_start") if isinstance(answers, dict) else None
        if not (isinstance(texts, list) and isinstance(starts, list) and len(texts) == len(starts)
                and all(isinstance(t, str) for t in texts)
                and all(isinstance(s, int) and not isinstance(s, bool) for s in starts)):
            raise UserError("malformed answers", where(path, row.line, "answers"), answers,
                            'write {"text": [strings], "answer_start": [integers]}, as many of each '
                            '(both empty for an unanswerable question)')
        texts = _check_spans(context, texts, starts, "", f"{where(path, row.line)}, question {qid!r}")
        located.append((SquadExample(qid, question, context, texts, starts, not texts), f"line {row.line}"))
    return located


def _check_spans(context: str, texts: list[str], starts: list[int], loc: str, at: str) -> list[str]:
    """Each answer is a non-empty text found in the context at its answer_start -> the texts as the context
    writes them: an answer in another Unicode normal form than its context (an accent as one character, NFC,
    or as a letter and a combining mark, NFD) is taken in the context's form, so that it stays its span."""
    spans = []
    for n, (t, s) in enumerate(zip(texts, starts)):
        if not t:
            raise UserError(f"{loc}answers[{n}]: empty answer text", at,
                            fix="give the answer's text, or no answers for an unanswerable question")
        forms = (t, unicodedata.normalize("NFC", t), unicodedata.normalize("NFD", t))
        span = next((f for f in forms if 0 <= s <= len(context) - len(f) and context[s:s + len(f)] == f), None)
        if span is None and not 0 <= s <= len(context) - len(t):
            raise UserError(f"{loc}answers[{n}]: answer_start {s} puts the {len(t)}-character text {t!r} outside "
                            f"the {len(context)}-character context", at, fix="answer_start is a character offset")
        if span is None:
            raise UserError(f"{loc}answers[{n}]: text {t!r} is not at answer_start {s} of the context", at,
                            fix="answer_start is the character offset of the text in the context")
        spans.append(span)
    return spans


def load_squad_hub(version: str, split: str) -> list[SquadExample]:
    """SQuAD from the Hugging Face Hub: version "1.1" (rajpurkar/squad) or "2.0" (rajpurkar/squad_v2),
    split "train" or "validation"."""
    names = {"1.1": "rajpurkar/squad", "2.0": "rajpurkar/squad_v2"}
    if version not in names:
        raise ValueError(f"SQuAD version must be '1.1' or '2.0', got {version!r}")
    files = "train-v2.0.json and dev-v2.0.json" if version == "2.0" else "train-v1.1.json and dev-v1.1.json"
    rows = load_hub_dataset(f"pass --data-dir with {files} (from https://rajpurkar.github.io/SQuAD-explorer/)",
                            names[version], split=split)
    return [SquadExample(r["id"], r["question"], r["context"], list(r["answers"]["text"]),
                         list(r["answers"]["answer_start"]), not r["answers"]["text"]) for r in rows]


def sample_questions(examples: list, fraction: float, seed: int) -> list:
    """A seeded random `fraction` of the questions, kept in their original order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"sample_questions: fraction must be in (0, 1], got {fraction}")
    k = round(fraction * len(examples))
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), k))]


# ----------------------------------------------------------------------------- features

def window_starts(n_tokens: int, window: int, doc_stride: int) -> list[int]:
    """First context token of each window: windows of `window` tokens, each starting `doc_stride`
    tokens after the previous one (BERT's run_squad.py; run_qa.py's `stride` is the overlap
    instead), the last one reaching the end."""
    starts = [0]
    while starts[-1] + window < n_tokens:
        starts.append(starts[-1] + min(window, doc_stride))
    return starts


def _answer_tokens(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last context token overlapping characters [start_char, end_char), or None."""
    first = int(np.searchsorted(offsets[:, 1], start_char, side="right"))  # first token ending after start
    last = int(np.searchsorted(offsets[:, 0], end_char, side="left")) - 1  # last token starting before end
    return (first, last) if first <= last else None


def featurize(examples: list[SquadExample], tokenizer, max_seq_length: int = 384, doc_stride: int = 128,
              max_query_length: int = 64) -> list[SquadFeature]:
    """Tokenize (batched, each distinct context once) and cut into windows; the positions point at
    the first gold answer, or at [CLS] when it is not fully inside the window."""
    for name, value in (("max_seq_length", max_seq_length), ("doc_stride", doc_stride),
                        ("max_query_length", max_query_length)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer", name, value,
                            "the defaults are max_seq_length 384, doc_stride 128, max_query_length 64")
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        raise ValueError("featurize: the tokenizer must have truncation and padding off "
                         "(use minicore.tokenizer.load_tokenizer)")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise UserError("the tokenizer has no [CLS] or [SEP] token", "tokenizer",
                        fix="SQuAD needs a BERT checkpoint's WordPiece tokenizer")
    contexts = list(dict.fromkeys(e.context for e in examples))
    encoded = {c: (np.array(enc.ids, dtype=np.int64), np.array(enc.offsets, dtype=np.int64).reshape(-1, 2))
               for c, enc in zip(contexts, tokenizer.encode_batch(contexts, add_special_tokens=False))}
    questions = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
    features = []
    for index, (ex, q) in enumerate(zip(examples, questions)):
        q_ids = q.ids[:max_query_length]
        window = max_seq_length - len(q_ids) - 3  # [CLS], [SEP], [SEP]
        if window <= 0:
            raise UserError(f"max_seq_length {max_seq_length} leaves no room for the context after "
                            f"a {len(q_ids)}-token question", "max_seq_length", max_seq_length,
                            f"make it larger than max_query_length + 3 ({max_query_length + 3})")
        ids, offsets = encoded[ex.context]
        gold = None
        if not ex.is_impossible:
            s = ex.answer_starts[0]
            gold = _answer_tokens(offsets, s, s + len(ex.answer_texts[0]))
        head = np.array([cls_id, *q_ids, sep_id], dtype=np.int64)
        for w0 in window_starts(len(ids), window, doc_stride):
            w1 = min(w0 + window, len(ids))
            n = w1 - w0
            start = end = 0
            if gold is not None and w0 <= gold[0] and gold[1] < w1:
                start, end = gold[0] - w0 + len(head), gold[1] - w0 + len(head)
            features.append(SquadFeature(
                input_ids=np.concatenate([head, ids[w0:w1], [sep_id]]),
                token_type_ids=np.repeat(np.array([0, 1]), [len(head), n + 1]),
                offsets=np.concatenate([np.full((len(head), 2), -1), offsets[w0:w1], [[-1, -1]]]),
                example_index=index, start_position=start, end_position=end))
    return features


def collate(features: list[SquadFeature], pad_id: int = 0) -> dict:
    """Pad to the longest feature of the batch; attention_mask is None when nothing is padded."""
    input_ids, mask = pad_batch([f.input_ids for f in features], pad_id)
    return {"input_ids": input_ids, "token_type_ids": pad_batch([f.token_type_ids for f in features], 0)[0],
            "attention_mask": mask, "start_positions": torch.tensor([f.start_position for f in features]),
            "end_positions": torch.tensor([f.end_position for f in features])}


# ----------------------------------------------------------------------------- answering


@dataclass
class Answer:
    """The answer to one question; context[start:end] == text."""
    text: str  # "" for no answer
    score: float  # start + end logit of the span; the null score when text is ""
    start: int  # character offsets of the span in the context; 0, 0 for no answer
    end: int
    null_odds: float  # null score - best span score: what the official evaluate-v2.0.py reads as --na-prob-file


def select_answers(examples: list[SquadExample], features: list[SquadFeature], start_logits, end_logits, *,
                   version_2: bool = True, n_best_size: int = 20, max_answer_length: int = 30,
                   null_threshold: float = 0.0) -> list[Answer]:
    """The best answer span of each example over all its windows.

    start_logits / end_logits: one 1-D array per feature (at least as long as the feature; padding
    is ignored). Candidates: the n_best_size highest start and end logits among context tokens
    (run_qa.py takes them over all tokens, then drops non-context ones, which can leave none),
    start <= end, at most max_answer_length tokens; score = start_logit + end_logit. The null score
    of an example is the lowest start_logit[0] + end_logit[0] over its windows. SQuAD 2.0 answers ""
    when null score > best span score + null_threshold; so does any version when no span is valid.
    null_odds = null score - best span score (+inf when no span is valid).
    """
    best = {}  # example index -> (score, start char, end char)
    null = {}  # example index -> min null score
    for f, s_all, e_all in zip(features, start_logits, end_logits):
        n = len(f.input_ids)
        s_log = np.asarray(s_all, dtype=np.float64)[:n]
        e_log = np.asarray(e_all, dtype=np.float64)[:n]
        i = f.example_index
        null[i] = min(null.get(i, np.inf), s_log[0] + e_log[0])
        ctx = np.flatnonzero(f.offsets[:, 0] >= 0)
        if not len(ctx):
            continue
        k = min(n_best_size, len(ctx))
        starts = ctx[np.argsort(-s_log[ctx], kind="stable")[:k]]  # [k]
        ends = ctx[np.argsort(-e_log[ctx], kind="stable")[:k]]  # [k]
        length = ends[None, :] - starts[:, None] + 1  # [k, k]
        score = np.where((length >= 1) & (length <= max_answer_length),
                         s_log[starts][:, None] + e_log[ends][None, :], -np.inf)
        a, b = np.unravel_index(np.argmax(score), score.shape)
        if np.isfinite(score[a, b]) and score[a, b] > best.get(i, (-np.inf,))[0]:
            best[i] = (score[a, b], int(f.offsets[starts[a], 0]), int(f.offsets[ends[b], 1]))
    answers = []
    for i, ex in enumerate(examples):
        if i not in null:
            raise ValueError(f"select_answers: example {ex.id!r} (index {i}) has no feature")
        score, c0, c1 = best.get(i, (-np.inf, 0, 0))
        odds = float(null[i] - score)
        if (version_2 and null[i] > score + null_threshold) or not np.isfinite(score):
            answers.append(Answer("", float(null[i]), 0, 0, odds))
        else:
            answers.append(Answer(ex.context[c0:c1], float(score), c0, c1, odds))
    return answers
