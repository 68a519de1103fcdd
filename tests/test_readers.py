"""Readers of the user's files: the table reader (CSV, TSV, JSONL), classification rows, paraphrase pairs,
SQuAD as JSONL and the checks of SQuAD answers, and the Hub loaders' one-line errors. Every error names the
file and the line (or the question), and says what is wrong with which value."""
import json
import re
import unicodedata

import pytest

import data.hub
from data.classification import MIN_LONE_LABELS, LabeledText, label_names, read_labeled
from data.cola import load_hub as load_cola_hub
from data.files import read_json, read_table, read_text
from data.paraphrase import Pair, read_pairs, read_squad_contexts
from data.paraphrase import load_hub as load_paraphrase_hub
from data.squad import SquadExample, featurize, load_squad_hub, read_squad_file
from minicore.errors import UserError
from minicore.tokenizer import load_tokenizer


def write(path, content):
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the table reader

def test_csv_quoting_bom_blank_lines_and_extra_columns(tmp_path):
    path = write(tmp_path / "t.csv", '\ufefftext,label,note\n"a, b",x,1\n\n"say ""hi""\nthen go",y,2\nplain,z,3\n')
    rows = read_table(path, ["text", "label"])
    assert [r.values["text"] for r in rows] == ["a, b", 'say "hi"\nthen go', "plain"]
    assert [r.line for r in rows] == [2, 4, 6]  # where each row starts; the quoted newline spans lines 4-5
    assert rows[0].values == {"text": "a, b", "label": "x", "note": "1"}


def test_tsv_and_jsonl(tmp_path):
    tsv = read_table(write(tmp_path / "t.tsv", "label\ttext\n1\tIt's \"fine\", really.\n"), ["text", "label"])
    assert tsv[0].values == {"label": "1", "text": 'It\'s "fine", really.'}  # a quote inside a field is text
    jsonl = write(tmp_path / "t.jsonl", '{"text": "a\u2028b", "label": 2}\n\n{"text": "c", "label": "x", "more": []}\n')
    rows = read_table(jsonl, ["text", "label"])
    assert [(r.line, r.values["text"], r.values["label"]) for r in rows] == [(1, "a\u2028b", 2), (3, "c", "x")]


@pytest.mark.parametrize("name, content, message", [
    ("t.txt", "a,b\n", r"unknown table format \(.*t\.txt, '\.txt'\): .*\.csv, \.tsv, \.jsonl"),
    ("t.csv", "sentence,label\nx,1\n",
     r"missing column 'text' \(.*t\.csv, line 1\): the columns there are 'sentence', 'label'"),
    ("t.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 0}\n',
     r"missing column 'text' \(.*t\.jsonl, line 2\): the columns there are 'txt', 'label'"),
    ("t.csv", "text,label\na,1\nb,1,extra\n", r"expected 2 CSV fields \(as the header\), got 3 \(.*t\.csv, line 3\)"),
    ("t.tsv", 'text\tlabel\n"Go home," she said.\t1\n', r"malformed TSV .*\(.*t\.tsv, line 2\)"),
    ("t.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', r"not valid JSON .*\(.*t\.jsonl, line 2\)"),
    ("t.jsonl", '["a", 1]\n', r"expected a JSON object, got list \(.*t\.jsonl, line 1\)"),
    ("t.csv", "", r"no header row \(.*t\.csv\)"),
    ("t.csv", b"text,label\nok,1\ncaf\xe9,1\n",
     r"not UTF-8 text \(.*t\.csv, line 3, b'\\xe9'\): save the file as UTF-8"),
])
def test_table_errors_name_file_and_line(tmp_path, name, content, message):
    with pytest.raises(UserError, match=message):
        read_table(write(tmp_path / name, content), ["text", "label"])


@pytest.mark.parametrize("content", [
    '[{"text": "a", "label": 1}, {"text": "b", "label": "x"}]',  # one line, no final newline
    '[\n  {\n    "text": "a",\n    "label": 1\n  },\n  {"text": "b", "label": "x"}\n]\n',  # pretty-printed
])
def test_json_array_rows_name_the_line_each_object_starts_on(tmp_path, content):
    """A .json file is one JSON array of objects, on one line or many: a row per object, never per line."""
    rows = read_table(write(tmp_path / "t.json", content), ["text", "label"])
    assert [r.values for r in rows] == [{"text": "a", "label": 1}, {"text": "b", "label": "x"}]
    assert [r.line for r in rows] == ([1, 1] if "\n" not in content.strip() else [2, 6])


@pytest.mark.parametrize("content, message", [
    ('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', r"not valid JSON \(Extra data\) \(.*t\.json, line 2\)"),
    ('{"text": "a", "label": 1}', r"expected a JSON array of objects, got dict \(.*t\.json\)"),
    ('[\n {"text": "a", "label": 1},\n ["b", 0]\n]', r"expected a JSON object, got list \(.*t\.json, line 3\)"),
    ('[\n {"text": "a", "label": 1},\n\n {"txt": "b"}]', r"missing columns? 'text'.* \(.*t\.json, line 4\)"),
    ('[{"text": "a", "label": 1},]', r"not valid JSON .*\(.*t\.json, line 1\)"),
])
def test_json_array_errors_name_the_line(tmp_path, content, message):
    with pytest.raises(UserError, match=message):
        read_table(write(tmp_path / "t.json", content), ["text", "label"])


@pytest.mark.parametrize("name, header", [("t.csv", "sentence,label,label"), ("t.tsv", "label\tsentence\tlabel")])
def test_a_header_naming_a_column_twice_is_refused(tmp_path, name, header):
    """A header naming a column twice would keep only the last of the two fields: refused, naming the column."""
    sep = "," if name.endswith("csv") else "\t"
    path = write(tmp_path / name, f"{header}\n" + sep.join(["a", "b", "c"]) + "\n")
    with pytest.raises(UserError, match=r"the header names the column 'label' 2 times \(.*t\.[ct]sv, line 1\): "
                                        r"give each column its own name"):
        read_table(path, ["sentence"])


def test_read_text_and_json(tmp_path):
    assert read_text(write(tmp_path / "a.txt", "\ufeffhé\n")) == "hé\n"
    with pytest.raises(UserError, match=r"not valid JSON .*\(.*a\.json, line 3\)"):
        read_json(write(tmp_path / "a.json", '{\n "a": 1,\n}\n'))


# ----------------------------------------------------------------------------- classification rows

def test_read_labeled_strings_integers_and_label_order(tmp_path):
    csv_rows = read_labeled(write(tmp_path / "train.csv", "text,label\nGood.,pos\nBad.,neg\nSo so.,neutral\n"),
                            "text", "label")
    assert csv_rows[0] == LabeledText("Good.", "pos") and label_names(csv_rows) == ["neg", "neutral", "pos"]
    jsonl = write(tmp_path / "train.jsonl", "".join(json.dumps({"s": f"s{i}", "y": y}) + "\n"
                                                    for i, y in enumerate([10, 2, 0, 2])))
    rows = read_labeled(jsonl, "s", "y")
    assert [r.label for r in rows] == ["10", "2", "0", "2"]
    assert label_names(rows) == ["0", "2", "10"]  # integers sort as numbers, not as strings
    assert label_names([LabeledText("a", "1"), LabeledText("b", "x")]) == ["1", "x"]


@pytest.mark.parametrize("content, message", [
    ("text,label\nfine,pos\nodd,maybe\n", r"unknown label \(.*dev\.csv, line 3, column 'label', 'maybe'\): "
                                          r"the training file's labels are neg, pos"),
    ("text,label\n,pos\n", r"expected a non-empty string \(.*dev\.csv, line 2, column 'text', ''\)"),
    ("text,label\nfine,\n", r"a label must be a non-empty string or an integer \(.*dev\.csv, line 2, column 'label'"),
    ("text,label\n", r"no rows \(.*dev\.csv\)"),
])
def test_read_labeled_errors(tmp_path, content, message):
    with pytest.raises(UserError, match=message):
        read_labeled(write(tmp_path / "dev.csv", content), "text", "label", labels=["neg", "pos"])


def test_labels_are_read_without_surrounding_whitespace(tmp_path):
    """"1" and "1 " are one label, in the training file and in the validation file read against its labels."""
    train = read_labeled(write(tmp_path / "train.csv", "text,label\na,1\nb,1 \nc, 0\nd,0\n"), "text", "label")
    assert [r.label for r in train] == ["1", "1", "0", "0"] and label_names(train) == ["0", "1"]
    dev = read_labeled(write(tmp_path / "dev.jsonl", '{"text": "e", "label": " 1\\t"}\n'), "text", "label", ["0", "1"])
    assert dev == [LabeledText("e", "1")]


@pytest.mark.parametrize("labels, message", [
    (["Sports", "politics", "sports"], r"the labels 'Sports' and 'sports' differ only in how they are written"),
    (["very good", "bad", "very  good"], r"the labels 'very good' and 'very  good' differ only in how"),
    (["1", "0", "01"], r"the labels '1' and '01' differ only in how they are written"),
    ([f"Sentence number {i} here." for i in range(40)],
     r"40 of the 40 rows have a label no other row has: the labels look like texts"),
    (["a", "a", "b", "b", "c", "d", "e", "f", "g"], r"5 of the 9 rows have a label no other row has"),
])
def test_a_label_set_that_looks_accidental_is_refused(tmp_path, labels, message):
    """The training file's labels: two written two ways (case, spaces, "01" and "1"), or about one per row (the
    columns swapped): an error naming the file and the columns."""
    path = write(tmp_path / "train.jsonl", "".join(json.dumps({"text": f"t{i}", "y": y}) + "\n"
                                                   for i, y in enumerate(labels)))
    with pytest.raises(UserError, match=message + r".*\(.*train\.jsonl, column 'y'\)"):
        read_labeled(path, "text", "y")
    if "look like texts" in message:
        with pytest.raises(UserError, match=r"label column \('y', --label-column\).*text column \('text', "
                                            r"--text-column\)"):
            read_labeled(path, "text", "y")


@pytest.mark.parametrize("labels", [
    ["a", "a", "b", "b", "c", "d", "e", "f", "g", "g"],  # 5 lone labels in 10 rows: half, not more
    ["a", "b", "c", "d", "a"],  # 3 lone labels of 5 rows: fewer than MIN_LONE_LABELS
])
def test_rare_labels_are_not_taken_for_swapped_columns(tmp_path, labels):
    path = write(tmp_path / "train.jsonl", "".join(json.dumps({"text": f"t{i}", "y": y}) + "\n"
                                                   for i, y in enumerate(labels)))
    assert [r.label for r in read_labeled(path, "text", "y")] == labels
    assert MIN_LONE_LABELS == 5


def test_read_labeled_rejects_non_text_json_values(tmp_path):
    path = write(tmp_path / "dev.jsonl", '{"text": "a", "label": true}\n')
    with pytest.raises(UserError, match=r"\(.*dev\.jsonl, line 1, column 'label', True\)"):
        read_labeled(path, "text", "label")
    write(path, '{"text": 3, "label": 1}\n')
    with pytest.raises(UserError, match=r"expected a non-empty string \(.*dev\.jsonl, line 1, column 'text', 3\)"):
        read_labeled(path, "text", "label")


# ----------------------------------------------------------------------------- paraphrase pairs

@pytest.mark.parametrize("name, content", [
    ("p.csv", 'src,tgt\n"Hello, world.",Hi world.\nA b.,C d.\n'),
    ("p.tsv", "tgt\tsrc\nHi world.\tHello, world.\nC d.\tA b.\n"),
    ("p.jsonl", '{"src": "Hello, world.", "tgt": "Hi world."}\n{"src": "A b.", "tgt": "C d."}\n'),
])
def test_read_pairs_every_format(tmp_path, name, content):
    assert read_pairs(write(tmp_path / name, content), "src", "tgt") == [Pair("Hello, world.", "Hi world."),
                                                                          Pair("A b.", "C d.")]


def test_read_pairs_errors(tmp_path):
    with pytest.raises(UserError, match=r"missing columns 'source', 'target' \(.*p\.csv, line 1\): the columns there "
                                        r"are 'a', 'b'"):
        read_pairs(write(tmp_path / "p.csv", "a,b\nx,y\n"), "source", "target")
    with pytest.raises(UserError, match=r"\(.*p\.csv, line 3, column 'b', ''\)"):
        read_pairs(write(tmp_path / "p.csv", "a,b\nx,y\nz,\n"), "a", "b")


# ----------------------------------------------------------------------------- SQuAD

CONTEXT = "Paris is the capital of France."


def squad_rows():
    return [{"id": "a", "title": "t", "context": CONTEXT, "question": "Capital?",
             "answers": {"text": ["Paris", "Paris"], "answer_start": [0, 0]}},
            {"id": "b", "title": "t", "context": CONTEXT, "question": "Of what?",
             "answers": {"text": ["France"], "answer_start": [24]}},
            {"id": "c", "title": "t", "context": CONTEXT, "question": "Mars?",
             "answers": {"text": [], "answer_start": []}}]


def as_jsonl(path, rows):
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def as_official(path, rows):
    qas = [{"id": r["id"], "question": r["question"], "is_impossible": not r["answers"]["text"],
            "answers": [{"text": t, "answer_start": s} for t, s in zip(*r["answers"].values())]} for r in rows]
    return write(path, json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": CONTEXT, "qas": qas}]}]}))


def test_squad_jsonl_reads_as_the_official_json(tmp_path):
    jsonl = read_squad_file(as_jsonl(tmp_path / "dev.jsonl", squad_rows()))
    assert jsonl == read_squad_file(as_official(tmp_path / "dev.json", squad_rows()))
    assert jsonl[0] == SquadExample("a", "Capital?", CONTEXT, ["Paris", "Paris"], [0, 0], False)
    assert jsonl[2].is_impossible and jsonl[2].answer_texts == []


@pytest.mark.parametrize("answers, message", [
    ({"text": ["Paris"], "answer_start": [-31]}, r"answers\[0\]: answer_start -31 puts the 5-character text 'Paris' "
                                                r"outside the 31-character context"),
    ({"text": ["France."], "answer_start": [30]}, r"answers\[0\]: answer_start 30 puts the 7-character text"),
    ({"text": [""], "answer_start": [0]}, r"answers\[0\]: empty answer text"),
    ({"text": ["Paris"], "answer_start": [1]}, r"answers\[0\]: text 'Paris' is not at answer_start 1"),
])
def test_squad_answers_are_checked_as_spans(tmp_path, answers, message):
    rows = squad_rows()
    rows[1]["answers"] = answers
    with pytest.raises(UserError, match=message + r".*\(.*dev\.jsonl, line 2, question 'b'\)"):
        read_squad_file(as_jsonl(tmp_path / "dev.jsonl", rows))
    with pytest.raises(UserError, match=r"qas\[1\]\." + message + r".*\(.*dev\.json, question 'b'\)"):
        read_squad_file(as_official(tmp_path / "dev.json", rows))


def test_squad_duplicate_ids_and_malformed_lines(tmp_path):
    rows = squad_rows()
    rows[2]["id"] = "a"
    with pytest.raises(UserError, match=r"duplicate question id \(.*dev\.jsonl, line 1 and line 3, 'a'\)"):
        read_squad_file(as_jsonl(tmp_path / "dev.jsonl", rows))
    with pytest.raises(UserError, match=r"duplicate question id \(.*dev\.json, data\[0\]\.paragraphs\[0\]\.qas\[0\] "
                                        r"and data\[0\]\.paragraphs\[0\]\.qas\[2\], 'a'\)"):
        read_squad_file(as_official(tmp_path / "dev.json", rows))
    rows = squad_rows()
    rows[1]["answers"] = {"text": ["France"]}
    with pytest.raises(UserError, match=r"malformed answers \(.*dev\.jsonl, line 2, column 'answers'"):
        read_squad_file(as_jsonl(tmp_path / "dev.jsonl", rows))
    del rows[1]["answers"]
    with pytest.raises(UserError, match=r"missing column 'answers' \(.*dev\.jsonl, line 2\)"):
        read_squad_file(as_jsonl(tmp_path / "dev.jsonl", rows))


def test_an_empty_question_is_refused_in_both_layouts(tmp_path):
    """A question without text: the JSONL reader and the official JSON reader both refuse it, naming it."""
    rows = squad_rows()
    rows[1]["question"] = "  "
    with pytest.raises(UserError, match=r"expected a non-empty string \(.*dev\.jsonl, line 2, column 'question'"):
        read_squad_file(as_jsonl(tmp_path / "dev.jsonl", rows))
    with pytest.raises(UserError, match=r"qas\[1\]: empty question \(.*dev\.json, question 'b'\)"):
        read_squad_file(as_official(tmp_path / "dev.json", rows))


@pytest.mark.parametrize("context_form, answer_form", [("NFC", "NFD"), ("NFD", "NFC")])
def test_an_answer_in_another_unicode_form_than_its_context_is_its_span(tmp_path, context_form, answer_form):
    """An answer written "é" as e + a combining accent (NFD) against a context with the one character (NFC), or
    the other way round: read as the context writes it, so that it is context[start:start + len(text)]."""
    context = unicodedata.normalize(context_form, "Le café de Zoé est ouvert.")
    answer = unicodedata.normalize(answer_form, "café de Zoé")
    assert answer not in context
    start = context.index(unicodedata.normalize(context_form, answer))
    rows = [{"id": "a", "title": "t", "context": context, "question": "Où?",
             "answers": {"text": [answer], "answer_start": [start]}}]
    (ex,) = read_squad_file(as_jsonl(tmp_path / "dev.jsonl", rows))
    assert ex.answer_texts == [context[start:start + len(ex.answer_texts[0])]]
    assert unicodedata.normalize("NFC", ex.answer_texts[0]) == unicodedata.normalize("NFC", answer)


@pytest.mark.parametrize("kwargs, name, value", [
    ({"doc_stride": 0}, "doc_stride", 0), ({"doc_stride": -5}, "doc_stride", -5),
    ({"max_seq_length": 0}, "max_seq_length", 0), ({"max_query_length": 0}, "max_query_length", 0),
    ({"doc_stride": 2.5}, "doc_stride", 2.5),
])
def test_featurize_checks_its_lengths(kwargs, name, value):
    ex = SquadExample("q", "Capital?", CONTEXT, [], [], True)
    with pytest.raises(UserError, match=rf"{name} must be a positive integer \({name}, {value}\)"):
        featurize([ex], load_tokenizer("minilm"), **kwargs)


@pytest.mark.parametrize("read, name, content, message", [
    (read_squad_file, "empty.jsonl", "\n", r"no questions \(.*empty\.jsonl\)"),
    (read_squad_file, "dev.csv", "id,context\n", r"unknown SQuAD file format \(.*dev\.csv, '\.csv'\)"),
    (read_squad_file, "bad.json", b'{"data":\n "\xff"}', r"not UTF-8 text \(.*bad\.json, line 2"),
    (read_squad_contexts, "ctx.json", "{oops", r"not valid JSON .*\(.*ctx\.json, line 1\)"),  # --denoise-text
    (read_squad_contexts, "ctx.json", '{"data": [{"title": "no paragraphs"}]}', r"not SQuAD JSON.*\(.*ctx\.json\)"),
    (read_squad_contexts, "ctx.json", b'{"data": "\xff"}', r"not UTF-8 text \(.*ctx\.json, line 1"),
])
def test_squad_file_errors_name_the_file(tmp_path, read, name, content, message):
    with pytest.raises(UserError, match=message):
        read(write(tmp_path / name, content))


# ----------------------------------------------------------------------------- the Hub

@pytest.fixture
def no_network(monkeypatch):
    """The Hub cannot be reached and the environment does not ask for the offline cache."""
    datasets = pytest.importorskip("datasets")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(data.hub, "hub_reachable", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset called"))


@pytest.mark.parametrize("load, names", [
    (load_cola_hub, ["nyu-mll/glue cola", "--data-dir", "in_domain_train.tsv", "https://nyu-mll.github.io/CoLA/"]),
    (lambda: load_squad_hub("2.0", "train"), ["rajpurkar/squad_v2", "--data-dir", "train-v2.0.json",
                                              "https://rajpurkar.github.io/SQuAD-explorer/"]),
    (lambda: load_paraphrase_hub("quora", "train"), ["sentence-transformers/quora-duplicates", "--data-dir",
                                                     "msr_paraphrase", "google-research-datasets/paws"]),
])
def test_unreachable_hub_says_what_to_pass(no_network, load, names):
    with pytest.raises(UserError) as e:
        load()
    message = str(e.value)
    assert message.startswith("cannot reach the Hugging Face Hub") and "\n" not in message
    assert all(n in message for n in names), message


def test_offline_without_cache_is_one_line(monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(data.hub, "hub_reachable", lambda: pytest.fail("offline: no network check"))

    def refuse(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(UserError, match=r"cannot load nyu-mll/glue cola from the Hugging Face Hub .*--data-dir"):
        load_cola_hub()


def test_hub_reachable_fails_fast_without_a_server(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    assert data.hub.hub_reachable(timeout=1.0) is False


def test_quora_comes_from_a_parquet_copy(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []
    rows = [{"sentence1": "How do I learn Python ?", "sentence2": "What is the best way to learn Python?", "label": 1},
            {"sentence1": "Is it red?", "sentence2": "Is it blue?", "label": 0}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or rows)
    pairs = load_paraphrase_hub("quora", "train")
    assert pairs == [Pair("How do I learn Python?", "What is the best way to learn Python?")]
    assert calls == [(("sentence-transformers/quora-duplicates", "pair-class"), {"split": "train"})]


@pytest.fixture
def hub_answers(monkeypatch):
    """The Hub answers (the environment asks for nothing offline); `load_dataset` is the test's to replace."""
    datasets = pytest.importorskip("datasets")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(data.hub, "hub_reachable", lambda: True)
    return datasets


def raises(error: Exception):
    def load_dataset(*args, **kwargs):
        raise error
    return load_dataset


HUB_LOADERS = [  # (a loader, the data set it names)
    (load_cola_hub, "nyu-mll/glue cola"),
    (lambda: load_squad_hub("2.0", "train"), "rajpurkar/squad_v2"),
    (lambda: load_paraphrase_hub("paws", "train"), "google-research-datasets/paws labeled_final"),
]


@pytest.mark.parametrize("load, name", HUB_LOADERS)
@pytest.mark.parametrize("error, message", [
    (lambda d: d.exceptions.DatasetNotFoundError("Dataset doesn't exist on the Hub"),
     r"{name} is not on the Hugging Face Hub \(renamed or removed\) \(https://huggingface\.co\): pass --data-dir"),
    (lambda d: RuntimeError("Dataset scripts are no longer supported, but found glue.py"),
     r"{name} on the Hugging Face Hub is a loading script, which datasets .* no longer runs: pass --data-dir"),
])
def test_a_renamed_or_scripted_hub_dataset_is_one_line(hub_answers, monkeypatch, load, name, error, message):
    """datasets' errors for a data set that is not on the Hub, or that is still a loading script: one line naming
    it and saying what to pass instead, as for an unreachable Hub."""
    monkeypatch.setattr(hub_answers, "load_dataset", raises(error(hub_answers)))
    with pytest.raises(UserError, match=message.format(name=re.escape(name))) as e:
        load()
    assert "\n" not in str(e.value)


def test_another_runtime_error_of_the_hub_is_not_hidden(hub_answers, monkeypatch):
    monkeypatch.setattr(hub_answers, "load_dataset", raises(RuntimeError("something else broke")))
    with pytest.raises(RuntimeError, match="something else broke"):
        load_cola_hub()


def test_mrpc_test_split_is_refused_saying_why(hub_answers, monkeypatch):
    """GLUE's MRPC test split has no labels (all -1, so no positive pair): refused with the reason, instead of an
    empty set of pairs; its validation split is the 'dev' one."""
    calls = []
    rows = [{"sentence1": "A b.", "sentence2": "B a.", "label": 1}, {"sentence1": "C.", "sentence2": "D.", "label": 0}]
    monkeypatch.setattr(hub_answers, "load_dataset", lambda *a, **k: calls.append((a, k)) or rows)
    with pytest.raises(ValueError, match=r"mrpc has no 'test' split .*: GLUE hides MRPC's test labels \(they are all "
                                         r"-1\): use 'dev'.*msr_paraphrase_test\.txt"):
        load_paraphrase_hub("mrpc", "test")
    assert calls == [] and load_paraphrase_hub("mrpc", "dev") == [Pair("A b.", "B a.")]
    assert calls == [(("nyu-mll/glue", "mrpc"), {"split": "validation"})]
