"""SQuAD 1.1 / 2.0 for span extraction: read, sample, featurize into windows, collate, decode.

Follows BERT's run_squad.py (Devlin et al. 2019, section 4.2-4.3) and Hugging Face's
run_squad.py / run_qa.py: the input is "[CLS] question [SEP] context window [SEP]"; a context
longer than fits is cut into overlapping windows; each window is trained to point at the answer
span, or at [CLS] (position 0) when the answer is not fully inside it or there is none (SQuAD 2.0).
Metrics live in data/squad_metrics.py.
"""
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


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

def _get(obj, key: str, kind: type, where: str, path):
    if not isinstance(obj, dict) or key not in obj:
        raise ValueError(f"{path}: {where} has no field {key!r} (official SQuAD JSON format expected)")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{path}: {where}.{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def read_squad_file(path: str | Path) -> list[SquadExample]:
    """Read an official SQuAD 1.1 or 2.0 JSON file (train-v2.0.json, dev-v1.1.json, ...)."""
    path = Path(path)
    try:
        root = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    examples = []
    for i, article in enumerate(_get(root, "data", list, "the top level", path)):
        for j, para in enumerate(_get(article, "paragraphs", list, f"data[{i}]", path)):
            where = f"data[{i}].paragraphs[{j}]"
            context = _get(para, "context", str, where, path)
            for k, qa in enumerate(_get(para, "qas", list, where, path)):
                w = f"{where}.qas[{k}]"
                answers = _get(qa, "answers", list, w, path)
                texts = [_get(a, "text", str, f"{w}.answers[{n}]", path) for n, a in enumerate(answers)]
                starts = [_get(a, "answer_start", int, f"{w}.answers[{n}]", path) for n, a in enumerate(answers)]
                impossible = qa.get("is_impossible", False)
                if impossible is not bool(impossible) or impossible == bool(answers):
                    raise ValueError(f"{path}: {w}: is_impossible is {impossible!r} but there are "
                                     f"{len(answers)} answers (expected a bool, true exactly when there are none)")
                for n, (t, s) in enumerate(zip(texts, starts)):
                    if context[s:s + len(t)] != t:
                        raise ValueError(f"{path}: {w}.answers[{n}]: text {t!r} is not at answer_start {s} "
                                         f"of the context")
                examples.append(SquadExample(_get(qa, "id", str, w, path), _get(qa, "question", str, w, path),
                                             context, texts, starts, impossible))
    return examples


def load_squad_hub(version: str, split: str) -> list[SquadExample]:
    """SQuAD from the Hugging Face Hub: version "1.1" (rajpurkar/squad) or "2.0" (rajpurkar/squad_v2),
    split "train" or "validation"."""
    names = {"1.1": "rajpurkar/squad", "2.0": "rajpurkar/squad_v2"}
    if version not in names:
        raise ValueError(f"SQuAD version must be '1.1' or '2.0', got {version!r}")
    import datasets  # only here: the GPU machine may lack it

    rows = datasets.load_dataset(names[version], split=split)
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
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        raise ValueError("featurize: the tokenizer must have truncation and padding off "
                         "(use minibert.checkpoint.load_tokenizer)")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ValueError("featurize: the tokenizer has no [CLS] / [SEP] token (a BERT WordPiece tokenizer is expected)")
    contexts = list(dict.fromkeys(e.context for e in examples))
    encoded = {c: (np.array(enc.ids, dtype=np.int64), np.array(enc.offsets, dtype=np.int64).reshape(-1, 2))
               for c, enc in zip(contexts, tokenizer.encode_batch(contexts, add_special_tokens=False))}
    questions = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
    features = []
    for index, (ex, q) in enumerate(zip(examples, questions)):
        q_ids = q.ids[:max_query_length]
        window = max_seq_length - len(q_ids) - 3  # [CLS], [SEP], [SEP]
        if window <= 0:
            raise ValueError(f"max_seq_length {max_seq_length} leaves no room for the context after "
                             f"a {len(q_ids)}-token question (max_query_length {max_query_length})")
        ids, offsets = encoded[ex.context]
        answer = None
        if not ex.is_impossible:
            s = ex.answer_starts[0]
            answer = _answer_tokens(offsets, s, s + len(ex.answer_texts[0]))
        head = np.array([cls_id, *q_ids, sep_id], dtype=np.int64)
        for w0 in window_starts(len(ids), window, doc_stride):
            w1 = min(w0 + window, len(ids))
            n = w1 - w0
            start = end = 0
            if answer is not None and w0 <= answer[0] and answer[1] < w1:
                start, end = answer[0] - w0 + len(head), answer[1] - w0 + len(head)
            features.append(SquadFeature(
                input_ids=np.concatenate([head, ids[w0:w1], [sep_id]]),
                token_type_ids=np.repeat(np.array([0, 1]), [len(head), n + 1]),
                offsets=np.concatenate([np.full((len(head), 2), -1), offsets[w0:w1], [[-1, -1]]]),
                example_index=index, start_position=start, end_position=end))
    return features


def collate(features: list[SquadFeature], pad_id: int = 0) -> dict:
    """Pad to the longest feature of the batch; attention_mask is None when nothing is padded."""
    lengths = torch.tensor([len(f.input_ids) for f in features])
    B, L = len(features), int(lengths.max())
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((B, L), dtype=torch.long)
    for i, f in enumerate(features):
        input_ids[i, :len(f.input_ids)] = torch.from_numpy(f.input_ids)
        token_type_ids[i, :len(f.token_type_ids)] = torch.from_numpy(f.token_type_ids)
    mask = None if bool((lengths == L).all()) else (torch.arange(L) < lengths[:, None]).long()  # [B, L]
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": mask,
            "start_positions": torch.tensor([f.start_position for f in features]),
            "end_positions": torch.tensor([f.end_position for f in features])}


# ----------------------------------------------------------------------------- decoding

def postprocess(examples: list[SquadExample], features: list[SquadFeature], start_logits, end_logits,
                version_2: bool = True, n_best_size: int = 20, max_answer_length: int = 30,
                null_threshold: float = 0.0) -> tuple[dict[str, str], dict[str, float]]:
    """Best answer span per example over all its windows -> (predictions, null_odds).

    start_logits / end_logits: one 1-D array per feature (at least as long as the feature; padding
    is ignored). Candidates: the n_best_size highest start and end logits among context tokens
    (run_qa.py takes them over all tokens, then drops non-context ones, which can leave none),
    start <= end, at most max_answer_length tokens; score = start_logit + end_logit. The null score
    of an example is the lowest start_logit[0] + end_logit[0] over its windows. SQuAD 2.0 answers ""
    when null score > best span score + null_threshold. null_odds[id] = null score - best span
    score (+inf when no span is valid) is what the official evaluate-v2.0.py reads as --na-prob-file.
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
    predictions, null_odds = {}, {}
    for i, ex in enumerate(examples):
        if i not in null:
            raise ValueError(f"postprocess: example {ex.id!r} (index {i}) has no feature")
        score, c0, c1 = best.get(i, (-np.inf, 0, 0))
        null_odds[ex.id] = float(null[i] - score)
        answer = ex.context[c0:c1]
        if version_2 and null[i] > score + null_threshold:
            answer = ""
        predictions[ex.id] = answer
    return predictions, null_odds
