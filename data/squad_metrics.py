"""The official SQuAD metrics, ported from evaluate-v2.0.py (Rajpurkar et al. 2018).

Exact match and token F1 after the official normalization, maximum over the gold answers; an
unanswerable question's only gold answer is "". On SQuAD 1.1 data these equal the v1.1 script's
numbers except for gold answers that normalize to "" (e.g. "the"), which v2.0 drops.
"""
import collections
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, remove punctuation, remove articles a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def compute_f1(gold: str, pred: str) -> float:
    """Token-level F1; when either side is empty (no answer), 1 if both are, else 0."""
    gold_toks, pred_toks = get_tokens(gold), get_tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def get_raw_scores(gold_answers: dict[str, list[str]], predictions: dict[str, str]):
    """Per-question EM and F1, each the max over the gold answers that normalize to non-empty."""
    exact, f1 = {}, {}
    for qid, answers in gold_answers.items():
        if qid not in predictions:
            raise ValueError(f"predictions: no prediction for question id {qid!r}")
        golds = [a for a in answers if normalize_answer(a)] or [""]
        exact[qid] = max(compute_exact(a, predictions[qid]) for a in golds)
        f1[qid] = max(compute_f1(a, predictions[qid]) for a in golds)
    return exact, f1


def _mean(exact: dict, f1: dict, qids: list[str]) -> dict:
    return {"exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
            "f1": 100.0 * sum(f1[q] for q in qids) / len(qids), "total": len(qids)}


def find_best_thresh(predictions: dict[str, str], scores: dict[str, float], na_probs: dict[str, float],
                     qid_to_has_ans: dict[str, bool]) -> tuple[float, float]:
    """Best score over no-answer thresholds (evaluate-v2.0.py): start from answering nothing, then
    answer the questions in increasing na_prob order; keep the best running total."""
    cur_score = best_score = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if predictions[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score, best_thresh = cur_score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def squad_evaluate(gold_answers: dict[str, list[str]], predictions: dict[str, str],
                   null_odds: dict[str, float] | None = None) -> dict:
    """Official metrics for `predictions` (id -> text, "" = no answer) against `gold_answers` (id ->
    texts, [] = unanswerable): exact, f1, total, HasAns_* and NoAns_* breakdowns; with null_odds
    also best_exact / best_f1 and their thresholds. The main numbers are those of the predictions
    as given (the official script with --na-prob-thresh equal to the threshold used to make them)."""
    if not gold_answers:
        raise ValueError("squad_evaluate: no gold answers")
    exact, f1 = get_raw_scores(gold_answers, predictions)
    out = _mean(exact, f1, list(gold_answers))
    has_ans = {q: bool(a) for q, a in gold_answers.items()}
    for name, want in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, h in has_ans.items() if h is want]
        if qids:
            out.update({f"{name}_{k}": v for k, v in _mean(exact, f1, qids).items()})
    if null_odds is not None:
        missing = set(gold_answers) - set(null_odds)
        if missing:
            raise ValueError(f"null_odds: no value for question id {sorted(missing)[0]!r} ({len(missing)} missing)")
        odds = {q: null_odds[q] for q in gold_answers}
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(predictions, exact, odds, has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(predictions, f1, odds, has_ans)
    return out
