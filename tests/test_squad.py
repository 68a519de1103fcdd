"""SQuAD data: reading, sampling, windowed features, collate and span decoding (train_squad.py: test_train_squad.py)."""
import json
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from data.squad import (SquadExample, collate, featurize, load_squad_hub, read_squad_file, sample_questions,
                        select_answers, window_starts)
from data.squad_metrics import squad_evaluate
from minicore.tokenizer import load_tokenizer

WORDS = ("apple river house green table music water stone light paper chair bread cloud horse "
         "metal glass night ocean plant sugar tiger voice watch world dream earth field heart "
         "money party").split()  # 30 words, each a single WordPiece token


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


def example(qid="q", question="what is it?", context=" ".join(WORDS), answer=None, start=None):
    if answer is None:
        return SquadExample(qid, question, context, [], [], True)
    start = context.index(answer) if start is None else start
    return SquadExample(qid, question, context, [answer], [start], False)


# ----------------------------------------------------------------------------- reading

def squad_json(version="v2.0", n_questions=3):
    context = "Paris is the capital of France. It has 2,100,000 people."
    qas = [{"id": f"q{i}", "question": f"What is the capital of France {i}?",
            "answers": [{"text": "Paris", "answer_start": 0}], "is_impossible": False} for i in range(n_questions)]
    qas.append({"id": "imp", "question": "What is the capital of Mars?", "answers": [],
                "plausible_answers": [{"text": "Paris", "answer_start": 0}], "is_impossible": True})
    if version == "1.1":
        qas = [{k: v for k, v in q.items() if k not in ("is_impossible", "plausible_answers")} for q in qas[:-1]]
    return {"version": version, "data": [{"title": "France", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_read_official_formats(tmp_path):
    (tmp_path / "v2.json").write_text(json.dumps(squad_json("v2.0")))
    (tmp_path / "v1.json").write_text(json.dumps(squad_json("1.1")))
    v2 = read_squad_file(tmp_path / "v2.json")
    assert [e.id for e in v2] == ["q0", "q1", "q2", "imp"]
    assert v2[0].answer_texts == ["Paris"] and v2[0].answer_starts == [0] and not v2[0].is_impossible
    assert v2[-1].is_impossible and v2[-1].answer_texts == [] and v2[-1].question == "What is the capital of Mars?"
    v1 = read_squad_file(tmp_path / "v1.json")
    assert len(v1) == 3 and not any(e.is_impossible for e in v1)


def _break(d, fn):
    fn(d)
    return d


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("data"), r"the top level has no field 'data'"),
    (lambda d: d["data"][0].pop("paragraphs"), r"data\[0\] has no field 'paragraphs'"),
    (lambda d: d["data"][0]["paragraphs"][0].update(context=3), r"data\[0\]\.paragraphs\[0\]\.context must be str"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][1].pop("question"), r"qas\[1\] has no field 'question'"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="0"),
     r"qas\[0\]\.answers\[0\]\.answer_start must be int"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=5),
     r"qas\[0\]\.answers\[0\]: text 'Paris' is not at answer_start 5"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][3].update(is_impossible=False),
     r"qas\[3\]: is_impossible is False but there are 0 answers"),
])
def test_reader_errors_name_file_and_field(tmp_path, mutate, message):
    path = tmp_path / "bad-v2.0.json"
    path.write_text(json.dumps(_break(squad_json(), mutate)))
    with pytest.raises(ValueError, match=message) as e:
        read_squad_file(path)
    assert "bad-v2.0.json" in str(e.value)


def test_reader_rejects_non_json(tmp_path):
    path = tmp_path / "train-v2.0.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"not valid JSON .*train-v2\.0\.json, line 1"):
        read_squad_file(path)


def test_hub_rows_become_examples(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [{"id": "a", "title": "t", "context": "Paris is big.", "question": "Where?",
             "answers": {"text": ["Paris", "Paris"], "answer_start": [0, 0]}},
            {"id": "b", "title": "t", "context": "Paris is big.", "question": "Why?",
             "answers": {"text": [], "answer_start": []}}]
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: calls.append((name, split)) or rows)
    a, b = load_squad_hub("2.0", "validation")
    assert calls == [("rajpurkar/squad_v2", "validation")]
    assert a == SquadExample("a", "Where?", "Paris is big.", ["Paris", "Paris"], [0, 0], False)
    assert b.is_impossible and b.answer_texts == []
    load_squad_hub("1.1", "train")
    assert calls[-1] == ("rajpurkar/squad", "train")


def test_hub_rejects_unknown_version():
    with pytest.raises(ValueError, match="version must be '1.1' or '2.0', got '3.0'"):
        load_squad_hub("3.0", "train")


def test_sample_questions_is_seeded_and_ordered():
    items = list(range(1000))
    a, b = sample_questions(items, 0.2, seed=42), sample_questions(items, 0.2, seed=42)
    assert a == b and len(a) == 200 and a == sorted(a)
    assert sample_questions(items, 0.2, seed=43) != a
    assert sample_questions(items, 1.0, seed=0) == items
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got"):
            sample_questions(items, bad, seed=0)


# ----------------------------------------------------------------------------- features

def test_window_starts():
    assert window_starts(5, 10, 4) == [0]
    assert window_starts(30, 10, 4) == [0, 4, 8, 12, 16, 20]
    assert window_starts(25, 10, 20) == [0, 10, 20]  # never a gap: the step is at most the window


def test_answer_crossing_window_boundaries(tok):
    ctx_ids = tok.encode(" ".join(WORDS), add_special_tokens=False).ids
    assert len(ctx_ids) == 30  # precondition: one token per word
    q_ids = tok.encode("what is it?", add_special_tokens=False).ids
    assert len(q_ids) == 4
    ex = example(answer="paper chair bread")  # context tokens 9, 10, 11
    # 17 = [CLS] + 4 question tokens + [SEP] + 10 context tokens + [SEP]; windows start at 0, 4, ..., 20
    feats = featurize([ex], tok, max_seq_length=17, doc_stride=4, max_query_length=64)
    assert [(f.start_position, f.end_position) for f in feats] == [(0, 0), (11, 13), (7, 9), (0, 0), (0, 0), (0, 0)]
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    for w0, f in zip(range(0, 21, 4), feats):
        assert f.input_ids.tolist() == [cls, *q_ids, sep, *ctx_ids[w0:w0 + 10], sep]
        assert f.token_type_ids.tolist() == [0] * 6 + [1] * 11
        assert (f.offsets[:6] == -1).all() and (f.offsets[-1] == -1).all() and (f.offsets[6:-1] >= 0).all()
        assert f.example_index == 0
        if f.start_position:
            a, b = f.offsets[f.start_position, 0], f.offsets[f.end_position, 1]
            assert ex.context[a:b] == "paper chair bread"
    # the first window holds "paper" but not "chair bread": [CLS], not a truncated span
    assert "paper" in tok.decode(feats[0].input_ids.tolist()) and feats[0].start_position == 0


def test_impossible_and_query_truncation(tok):
    feats = featurize([example(question="why " * 100)], tok, max_seq_length=40, doc_stride=8, max_query_length=6)
    assert all(f.start_position == f.end_position == 0 for f in feats)
    assert all(len(f.input_ids) <= 40 and int((f.token_type_ids == 0).sum()) == 8 for f in feats)
    with pytest.raises(ValueError, match="max_seq_length 7 leaves no room"):
        featurize([example()], tok, max_seq_length=7, max_query_length=64)


@pytest.mark.parametrize("context, answer", [
    ("The café opened in   1990, near (Paris).", "1990"),
    ("The café opened in   1990, near (Paris).", "café opened"),
    ("The café opened in   1990, near (Paris).", "(Paris)."),
    ("Tschüß!\tNaïve   résumé, Zürich's  über-cool ÉCOLE.", "Zürich's  über-cool"),
    ("Il a dit « bonjour » à 10h30 — 20 % de plus.", "« bonjour »"),
])
def test_offsets_round_trip(tok, context, answer):
    """The text between the gold start token's start and end token's end is exactly the answer."""
    ex = example(context=context, answer=answer)
    (f,) = featurize([ex], tok)
    assert f.start_position > 0
    assert context[f.offsets[f.start_position, 0]:f.offsets[f.end_position, 1]] == answer


def test_real_dev_round_trip(tok, shared_data):
    """On the official dev set: nearly every gold span survives featurize -> offsets, and logits that
    point at the gold positions decode back to EM ~100 through postprocess and the metrics."""
    examples = read_squad_file(shared_data / "squad" / "dev-v2.0.json")
    t0 = time.perf_counter()
    feats = featurize(examples, tok)
    assert time.perf_counter() - t0 < 30
    spans = [(examples[f.example_index], f) for f in feats if f.start_position]
    same = sum(e.context[f.offsets[f.start_position, 0]:f.offsets[f.end_position, 1]] == e.answer_texts[0]
               for e, f in spans)
    answerable = sum(not e.is_impossible for e in examples)
    assert len({f.example_index for _, f in spans}) > 0.99 * answerable  # nearly every answer is found
    assert same > 0.99 * len(spans)  # the rest are answers that end inside a word ("7" of "1817")
    starts, ends = [np.zeros(len(f.input_ids)) for f in feats], [np.zeros(len(f.input_ids)) for f in feats]
    for f, s, e in zip(feats, starts, ends):
        s[f.start_position] = e[f.end_position] = 10.0
    preds, odds = postprocess(examples, feats, starts, ends)
    scores = squad_evaluate({e.id: e.answer_texts for e in examples}, preds, odds)
    assert scores["NoAns_exact"] == 100.0 and scores["HasAns_exact"] > 99.5 and scores["total"] == len(examples)


def test_collate_pads_dynamically(tok):
    exs = [example("a", answer="apple"), example("b", context="short text here", answer="text")]
    feats = featurize(exs, tok)
    batch = collate(feats, pad_id=0)
    L = len(feats[0].input_ids)
    assert batch["input_ids"].shape == (2, L) and batch["token_type_ids"].shape == (2, L)
    n = len(feats[1].input_ids)
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (L - n)
    assert (batch["input_ids"][1, n:] == 0).all() and (batch["token_type_ids"][1, n:] == 0).all()
    assert batch["start_positions"].tolist() == [f.start_position for f in feats]
    same = collate([feats[0], feats[0]])
    assert same["attention_mask"] is None and same["input_ids"].dtype == torch.long


# ----------------------------------------------------------------------------- decoding

def postprocess(examples, *args, **kwargs):
    """select_answers as the files of the official evaluate-v2.0.py: (predictions, null_odds) by question id."""
    answers = select_answers(examples, *args, **kwargs)
    return {e.id: a.text for e, a in zip(examples, answers)}, {e.id: a.null_odds for e, a in zip(examples, answers)}


def test_postprocess_picks_best_span_across_windows_and_null(tok):
    ex = example(answer="paper chair bread")
    feats = featurize([ex], tok, max_seq_length=17, doc_stride=4)
    starts, ends = [np.zeros(17) for _ in feats], [np.zeros(17) for _ in feats]
    starts[2][7], ends[2][9] = 5.0, 5.0  # window 2: "paper chair bread", score 10
    starts[1][6], ends[1][6] = 4.0, 4.0  # window 1 (context tokens 4-13): "table", score 8
    starts[0][2], ends[0][3] = 50.0, 50.0  # question tokens: never an answer
    preds, odds = postprocess([ex], feats, starts, ends)
    assert preds == {"q": "paper chair bread"} and odds["q"] == pytest.approx(0.0 - 10.0)
    for s in starts:  # null score = min over windows of start[0] + end[0] = 11 > 10
        s[0] = 11.0
    preds, odds = postprocess([ex], feats, starts, ends)
    assert preds == {"q": ""} and odds["q"] == pytest.approx(1.0)
    preds, _ = postprocess([ex], feats, starts, ends, null_threshold=2.0)
    assert preds == {"q": "paper chair bread"}
    preds, _ = postprocess([ex], feats, starts, ends, version_2=False)
    assert preds == {"q": "paper chair bread"}
    preds, _ = postprocess([ex], feats, starts, ends, version_2=False, max_answer_length=2)
    assert preds == {"q": "table"}  # the 3-token span is too long


def brute_force_best(ex, feats, starts, ends, max_answer_length):
    best = (-np.inf, "")
    for f, s, e in zip(feats, starts, ends):
        ctx = [i for i in range(len(f.input_ids)) if f.offsets[i, 0] >= 0]
        for i in ctx:
            for j in ctx:
                if i <= j < i + max_answer_length and s[i] + e[j] > best[0]:
                    best = (s[i] + e[j], ex.context[f.offsets[i, 0]:f.offsets[j, 1]])
    return best


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 6), st.booleans())
def test_postprocess_spans_are_valid_context_spans(tok, seed, n_best, max_len, version_2):
    ex = example(answer="paper chair bread")
    feats = featurize([ex], tok, max_seq_length=17, doc_stride=4)
    rng = np.random.default_rng(seed)
    starts = [rng.normal(size=20) * 3 for _ in feats]  # longer than the features: the tail is padding
    ends = [rng.normal(size=20) * 3 for _ in feats]
    preds, odds = postprocess([ex], feats, starts, ends, version_2=version_2, n_best_size=n_best,
                              max_answer_length=max_len)
    text = preds["q"]
    valid = {ex.context[f.offsets[i, 0]:f.offsets[j, 1]] for f in feats for i in range(6, 16)
             for j in range(i, min(i + max_len, 16))}
    assert text == "" or text in valid
    null = min(s[0] + e[0] for s, e in zip(starts, ends))
    score, best_text = brute_force_best(ex, feats, starts, ends, max_len)
    if n_best >= 10:  # the candidate pool is every context token: exactly the exhaustive best
        assert odds["q"] == pytest.approx(null - score)
        assert text == ("" if version_2 and null > score else best_text)
    else:
        assert odds["q"] >= null - score - 1e-9  # a smaller pool can only miss better spans


# ----------------------------------------------------------------------------- end to end

def tiny_squad(n_paragraphs: int, seed: int) -> dict:
    """SQuAD 2.0-format data: each paragraph has answerable and unanswerable questions; one paragraph
    is long enough (> 384 tokens) to need several windows."""
    rng = np.random.default_rng(seed)
    articles = []
    for p in range(n_paragraphs):
        words = [str(w) for w in rng.choice(WORDS, size=500 if p == 0 else 40)]
        context = " ".join(words)
        qas = []
        for q in range(3):
            i = int(rng.integers(0, len(words) - 3))
            answer = " ".join(words[i:i + 3])
            start = len(" ".join(words[:i])) + (i > 0)
            qas.append({"id": f"p{p}q{q}", "question": f"which words follow {words[i - 1] if i else 'the start'}?",
                        "answers": [{"text": answer, "answer_start": start}], "is_impossible": False})
        qas.append({"id": f"p{p}x", "question": "what is the colour of the moon?", "answers": [],
                    "plausible_answers": [], "is_impossible": True})
        articles.append({"title": f"t{p}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "v2.0", "data": articles}
