"""The official SQuAD EM/F1 (evaluate-v2.0.py) on hand-computed cases and its tricky normalizations."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.squad_metrics import compute_exact, compute_f1, find_best_thresh, normalize_answer, squad_evaluate


@pytest.mark.parametrize("text, expected", [
    ("The Cat", "cat"),
    ("an apple a day", "apple day"),  # articles removed
    ("theater atheist", "theater atheist"),  # only whole-word articles
    ("A.B.C.", "abc"),  # punctuation removed, not replaced by a space
    ("don't stop", "dont stop"),
    ("  lots\tof \n space  ", "lots of space"),
    ("the", ""),
    ("(the) 1,000-year  war!", "1000year war"),
    ("Éclair", "éclair"),  # accents kept, only lowercased
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_and_f1_hand_computed():
    assert compute_exact("The Eiffel Tower", "eiffel tower.") == 1
    assert compute_exact("Eiffel Tower", "the tower") == 0
    # gold tokens [cat, sat, on, mat], predicted [cat, on, mat]: P = 1, R = 3/4, F1 = 6/7
    assert compute_f1("the cat sat on the mat", "a cat on mat") == pytest.approx(6 / 7)
    # repeated tokens count with multiplicity: gold [a1, a1, b], pred [a1, b, b] -> 2 common
    assert compute_f1("a1 a1 b", "a1 b b") == pytest.approx(2 / 3)
    assert compute_f1("paris", "london") == 0.0
    assert compute_f1("", "") == 1.0 and compute_f1("", "x") == 0.0 and compute_f1("x", "") == 0.0
    assert compute_f1("the", "a") == 1.0  # both normalize to nothing


def test_evaluate_max_over_gold_and_breakdowns():
    gold = {"q1": ["Denver Broncos", "the Broncos"], "q2": ["1990", "in 1990"], "q3": [], "q4": [],
            "q5": ["the"]}
    preds = {"q1": "Broncos", "q2": "1990s", "q3": "", "q4": "Paris", "q5": ""}
    out = squad_evaluate(gold, preds)
    # q1: EM 1 against "the Broncos"; q2: EM 0, F1 0; q3: 1/1; q4: 0/0; q5: gold "the" normalizes to
    # "" and is dropped, so the only gold is "" and the empty prediction scores 1 (official behaviour)
    assert out["exact"] == pytest.approx(100 * 3 / 5) and out["f1"] == pytest.approx(100 * 3 / 5)
    assert out["total"] == 5
    assert out["HasAns_total"] == 3 and out["HasAns_exact"] == pytest.approx(100 * 2 / 3)
    assert out["NoAns_total"] == 2 and out["NoAns_exact"] == 50.0 and out["NoAns_f1"] == 50.0
    assert "best_f1" not in out
    partial = squad_evaluate({"q": ["big red barn"]}, {"q": "red barn door"})
    assert partial["exact"] == 0.0 and partial["f1"] == pytest.approx(100 * 2 / 3)
    assert "NoAns_total" not in partial


def test_evaluate_missing_prediction_is_an_error():
    with pytest.raises(ValueError, match="no prediction for question id 'b'"):
        squad_evaluate({"a": ["x"], "b": []}, {"a": "x"})
    with pytest.raises(ValueError, match="null_odds: no value for question id 'b'"):
        squad_evaluate({"a": ["x"], "b": []}, {"a": "x", "b": ""}, null_odds={"a": 0.0})


def test_best_thresh_hand_computed():
    gold = {"a": ["x"], "b": ["y"], "c": [], "d": []}
    preds = {"a": "x", "b": "z", "c": "", "d": "w"}
    odds = {"a": -2.0, "b": 1.0, "c": 3.0, "d": -1.0}
    # answering nothing scores 2 (c, d); in odds order: a (+1 -> 3, best, thresh -2), d (-1), b (+0), c (+0)
    out = squad_evaluate(gold, preds, odds)
    assert out["best_exact"] == 75.0 and out["best_exact_thresh"] == -2.0
    assert out["best_f1"] == 75.0 and out["best_f1_thresh"] == -2.0
    assert out["exact"] == 50.0  # main numbers are the predictions as given
    # nothing beats answering nothing: best stays at the no-answer count with threshold 0.0
    score, thresh = find_best_thresh({"a": "z", "c": ""}, {"a": 0, "c": 1}, {"a": 0.5, "c": 0.7},
                                     {"a": True, "c": False})
    assert (score, thresh) == (50.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0, 1), st.booleans()), min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_best_thresh_equals_best_threshold_by_brute_force(rows, rnd):
    """With distinct odds, the official running maximum equals trying every threshold t: answer the
    questions with odds <= t, predict no answer for the rest."""
    odds_values = rnd.sample(range(1000), len(rows))
    has, preds, scores, odds = {}, {}, {}, {}
    for i, ((has_ans, correct, f1, empty), o) in enumerate(zip(rows, odds_values)):
        q = f"q{i}"
        has[q], odds[q] = has_ans, float(o)
        preds[q] = "" if (not has_ans and empty) else "answer"
        scores[q] = (f1 if correct else 0.0) if has_ans else float(preds[q] == "")

    def total(t):
        return sum((scores[q] if has[q] else float(preds[q] == "")) if odds[q] <= t else float(not has[q])
                   for q in has)

    best, thresh = find_best_thresh(preds, scores, odds, has)
    brute = max(total(t) for t in [-1.0, *odds.values()])
    assert best == pytest.approx(100 * brute / len(rows))
    if brute > total(-1.0):  # answering something helps: the returned threshold achieves the best
        assert total(thresh) == pytest.approx(brute)
    else:
        assert thresh == 0.0
