"""predict.py: one JSON line out per input, in input order, with the input's fields kept; the predictions
are those of the evaluation path (answer / classify / paraphrase) and, for classification, transformers';
every mistake is one error line before anything is written."""
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_squad import tiny_squad

from data.squad import read_squad_file
from data.tokens import encode
from minibart import BartForConditionalGeneration
from minibart.config import GENERATION_DEFAULTS
from minibert import BertForQuestionAnswering, BertForSequenceClassification, load_tokenizer
from minicore.checkpoint import copy_tokenizer_files
from minitasks.classification import classify
from minitasks.paraphrasing import EVAL_GENERATION, paraphrase
from minitasks.question_answering import answer
from minitrain.cli import run
from predict import DEFAULT_GENERATION, main

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"0": "negative", "1": "neutral", "2": "positive"}
SENTENCES = ["The cat sat on the mat.", "Colorless green ideas sleep furiously.", "the the the",
             "A much longer sentence, with a comma, some numbers like 1,000 and a question?", "Yes."]


def saved(model, folder: Path, tokenizer_from: Path) -> Path:
    """`folder` holding the model and the tokenizer files of `tokenizer_from`, as a training script writes it."""
    model.save_pretrained(folder)
    copy_tokenizer_files(tokenizer_from, folder)
    return folder


@pytest.fixture(scope="module")
def cls_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    """A 3-label classifier with named labels whose head tells SENTENCES[i] as label i, i < 3: a random
    encoder's pooled states differ little from sentence to sentence, so the head reads their differences."""
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    tok = load_tokenizer(tiny_bert_dir)
    with torch.no_grad():
        pooled = torch.cat([model.bert.pool(model.bert(torch.tensor([ids]))) for ids in encode(tok, SENTENCES, 64)])
        centered = pooled[:3] - pooled.mean(0)  # [3, H]
        model.classifier.weight.copy_(centered / centered.norm(dim=1).square()[:, None])  # logit i = 1 on sentence i
        model.classifier.bias.copy_(-model.classifier.weight @ pooled.mean(0))
    model.config.extra["id2label"] = LABELS
    return saved(model, tmp_path_factory.mktemp("cls"), tiny_bert_dir)


@pytest.fixture(scope="module")
def qa_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    torch.manual_seed(2)
    model = BertForQuestionAnswering.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0, 1.0)
    return saved(model, tmp_path_factory.mktemp("qa"), tiny_bert_dir)


@pytest.fixture(scope="module")
def bart_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    return saved(BartForConditionalGeneration.from_bert(tiny_bert_dir), tmp_path_factory.mktemp("bart"), tiny_bert_dir)


def predict(argv: list[str], capsys, monkeypatch=None, stdin: str | None = None) -> list[dict]:
    """Run predict.py's main in-process (stdin from `stdin`) and parse what it printed."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    capsys.readouterr()
    main(argv)
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def fails(argv: list[str], capsys, monkeypatch=None, stdin: str | None = None) -> str:
    """The one error line of a failed predict.py run (exit status 1), which printed nothing on stdout."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run(main, argv)
    out, err = capsys.readouterr()
    assert e.value.code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# ----------------------------------------------------------------------------- cola

def test_cola_equals_transformers_from_a_file(tmp_path, cls_dir, capsys):
    from transformers import AutoTokenizer
    from transformers import BertForSequenceClassification as HFClassifier

    rows = [{"id": i, "sentence": s, "label": "gold"} for i, s in enumerate(SENTENCES)]
    (tmp_path / "in.jsonl").write_text(jsonl(rows))
    main(["cola", "--model", str(cls_dir), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out"),
          "--batch-size", "2"])
    assert "note: the input field 'label' is replaced by the prediction's" in capsys.readouterr().err
    out = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert [(o["id"], o["sentence"]) for o in out] == [(r["id"], r["sentence"]) for r in rows]

    hf, hf_tok = HFClassifier.from_pretrained(cls_dir).eval(), AutoTokenizer.from_pretrained(cls_dir)
    with torch.no_grad():
        want = torch.cat([hf(**hf_tok(s, return_tensors="pt")).logits.softmax(-1) for s in SENTENCES])
    got = torch.tensor([list(o["probabilities"].values()) for o in out])
    assert all(list(o["probabilities"]) == list(LABELS.values()) for o in out)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert [o["label"] for o in out] == [LABELS[str(i)] for i in want.argmax(-1).tolist()]
    assert [o["label"] for o in out[:3]] == list(LABELS.values())  # as the head was built: labels are told apart


def test_cola_from_stdin_as_text(tmp_path, cls_dir, capsys, monkeypatch):
    text = "\n".join([SENTENCES[0], "", "  ", *SENTENCES[1:]]) + "\n"  # blank lines are no inputs
    out = predict(["classify", "--model", str(cls_dir)], capsys, monkeypatch, stdin=text)
    assert [o["sentence"] for o in out] == SENTENCES and set(out[0]) == {"sentence", "label", "probabilities"}
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES))  # a .txt file is text; the same predictions
    assert predict(["cola", "--model", str(cls_dir), "--input", str(tmp_path / "in.txt")], capsys) == out
    jsonl_in = jsonl([{"sentence": s} for s in SENTENCES])  # stdin starting with "{" is JSONL
    assert predict(["cola", "--model", str(cls_dir)], capsys, monkeypatch, stdin=jsonl_in) == out


@pytest.mark.parametrize("name, content", [
    ("in.json", json.dumps([{"sentence": s, "id": i} for i, s in enumerate(SENTENCES)])),  # one line
    ("in.json", json.dumps([{"sentence": s, "id": i} for i, s in enumerate(SENTENCES)], indent=2)),  # pretty
    ("in.csv", "id,sentence\n" + "".join(f'{i},"{s}"\n' for i, s in enumerate(SENTENCES))),
    ("in.tsv", "id\tsentence\n" + "".join(f"{i}\t{s}\n" for i, s in enumerate(SENTENCES))),
    ("in.jsonl", jsonl([{"sentence": s, "id": i} for i, s in enumerate(SENTENCES)])[:-1]),  # no final newline
])
def test_every_format_the_training_scripts_read_gives_one_prediction_per_row(tmp_path, cls_dir, capsys, name,
                                                                               content):
    """A JSON array (on one line or pretty-printed), CSV, TSV and JSONL: one prediction per object or row, in
    order, with the row's fields kept (a table's as text), the same predictions as from plain text."""
    (tmp_path / name).write_text(content)
    out = predict(["cola", "--model", str(cls_dir), "--input", str(tmp_path / name)], capsys)
    assert [(str(o["id"]), o["sentence"]) for o in out] == [(str(i), s) for i, s in enumerate(SENTENCES)]
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES))
    text = predict(["cola", "--model", str(cls_dir), "--input", str(tmp_path / "in.txt")], capsys)
    assert [o["probabilities"] for o in out] == [o["probabilities"] for o in text]


def test_column_flags_name_the_text_as_in_training(tmp_path, cls_dir, bart_dir, capsys, monkeypatch):
    """--text-column (cola) and --source-column (paraphrase) name the input's text column, as in train_cola.py and
    train_paraphrase.py; a text line becomes that field; --format reads stdin as a table."""
    table = "topic,text\n" + "".join(f'x,"{s}"\n' for s in SENTENCES)
    out = predict(["cola", "--model", str(cls_dir), "--format", "csv", "--text-column", "text"], capsys, monkeypatch,
                  stdin=table)
    assert [(o["topic"], o["text"]) for o in out] == [("x", s) for s in SENTENCES] and "sentence" not in out[0]
    err = fails(["cola", "--model", str(cls_dir), "--format", "csv"], capsys, monkeypatch, stdin=table)
    assert "missing column 'sentence' (<stdin>, line 1): the columns there are 'topic', 'text'" in err
    out = predict(["paraphrase", "--model", str(bart_dir), "--source-column", "question", "--max-target-length", "4"],
                  capsys, monkeypatch, stdin="What is it?\n")
    assert list(out[0]) == ["question", "paraphrases"]


def test_stdin_is_read_by_what_it_starts_with(tmp_path, cls_dir, capsys, monkeypatch):
    """stdin: "[" a JSON array, "{" JSONL (a pretty-printed object: JSON), else text; text that starts with "{" and
    is not JSON is an error that says to pass --format text, which reads it."""
    argv = ["cola", "--model", str(cls_dir)]
    array = predict(argv, capsys, monkeypatch, stdin=json.dumps([{"sentence": s} for s in SENTENCES], indent=1))
    assert [o["sentence"] for o in array] == SENTENCES
    braces = "{braces} open this line\nand not this one\n"
    err = fails(argv, capsys, monkeypatch, stdin=braces)
    assert "not valid JSON (Expecting property name enclosed in double quotes) (<stdin>, line 1): it starts with " \
           "'{', so it was read as JSON: pass --format text" in err
    text = predict([*argv, "--format", "text"], capsys, monkeypatch, stdin=braces)
    assert [o["sentence"] for o in text] == ["{braces} open this line", "and not this one"]
    err = fails(argv, capsys, monkeypatch, stdin="[citation needed] here\n")
    assert "(<stdin>, line 1): it starts with '[', so it was read as JSON: pass --format text" in err


@pytest.mark.parametrize("name, content, message", [
    ("in.json", jsonl([{"sentence": s} for s in SENTENCES]), "not valid JSON (Extra data) ({path}, line 2)"),
    ("in.json", json.dumps({"sentence": "one"}), "expected a JSON array of objects, got dict ({path})"),
    ("in.json", '[{"sentence": "fine"},\n "not an object"]', "expected a JSON object, got str ({path}, line 2)"),
    ("in.json", '[\n{"sentence": "fine"},\n\n{"text": "no sentence"}]', "missing column 'sentence' ({path}, line 4)"),
    ("in.csv", "sentence,sentence\na,b\n", "the header names the column 'sentence' 2 times ({path}, line 1)"),
])
def test_an_input_it_cannot_read_is_named(tmp_path, cls_dir, capsys, name, content, message):
    """A .json file that is not one array of objects, and a CSV header naming a column twice: the file and line."""
    path = tmp_path / name
    path.write_text(content)
    assert message.format(path=path) in fails(["cola", "--model", str(cls_dir), "--input", str(path)], capsys)


def test_probabilities_keep_the_checkpoints_label_order(tmp_path, cls_dir, capsys):
    """"probabilities" lists the labels in label id order (id2label), not alphabetically, each with its id's
    probability: a checkpoint whose labels are not in alphabetical order."""
    folder = tmp_path / "zyx"
    shutil.copytree(cls_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    names = {"0": "zebra", "1": "apple", "2": "mango"}
    (folder / "config.json").write_text(json.dumps({**config, "id2label": names,
                                                    "label2id": {v: int(k) for k, v in names.items()}}))
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES))
    out = predict(["cola", "--model", str(folder), "--input", str(tmp_path / "in.txt")], capsys)
    model, tok = BertForSequenceClassification.from_pretrained(folder), load_tokenizer(folder)
    want = classify(model, tok, SENTENCES, max_seq_length=512, batch_size=8)  # [N, 3], in label id order
    assert all(list(o["probabilities"]) == ["zebra", "apple", "mango"] for o in out)
    torch.testing.assert_close(torch.tensor([list(o["probabilities"].values()) for o in out]), want)
    assert [o["label"] for o in out[:3]] == ["zebra", "apple", "mango"]  # sentence i is label i (the cls_dir head)


def test_a_bert_folder_without_model_type_is_read_as_training_reads_it(tmp_path, cls_dir, capsys):
    """config.json without model_type: a BERT task takes it as BERT, as BertConfig (and so training) does."""
    folder = tmp_path / "no_type"
    shutil.copytree(cls_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "model_type"}))
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES))
    argv = ["cola", "--input", str(tmp_path / "in.txt"), "--model"]
    assert predict([*argv, str(folder)], capsys) == predict([*argv, str(cls_dir)], capsys)


def test_cola_max_seq_length_cuts_and_counts(tmp_path, cls_dir, capsys):
    """--max-seq-length cuts the sentences longer than it, and a note counts them: one of exactly that many tokens
    is not cut (SENTENCES[0] is 9 tokens with [CLS] and [SEP])."""
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES))
    argv = ["cola", "--model", str(cls_dir), "--input", str(tmp_path / "in.txt")]
    assert len(predict([*argv, "--max-seq-length", "6"], capsys)) == len(SENTENCES)
    main([*argv, "--max-seq-length", "6"])
    assert "note: 3 of 5 inputs are longer than --max-seq-length 6 tokens and were cut to it" in capsys.readouterr().err
    main([*argv, "--max-seq-length", "9"])
    assert "note: 1 of 5 inputs are longer than --max-seq-length 9 tokens" in capsys.readouterr().err  # SENTENCES[3]
    assert ("argument --max-seq-length: expected at most 512 (the model's max_position_embeddings), got 513"
            in fails([*argv, "--max-seq-length", "513"], capsys))


# ----------------------------------------------------------------------------- squad

def squad_inputs(tmp_path) -> tuple[list[dict], list]:
    """Questions with their contexts (one context longer than a 96-token window), as JSONL rows and as
    the SquadExamples the evaluation reads from the official file."""
    (tmp_path / "dev.json").write_text(json.dumps(tiny_squad(3, 1)))
    examples = read_squad_file(tmp_path / "dev.json")
    return [{"id": e.id, "question": e.question, "context": e.context} for e in examples], examples


@pytest.mark.parametrize("version", ["2.0", "1.1"])
def test_squad_answers_are_the_evaluation_path_spans(tmp_path, qa_dir, capsys, version):
    rows, examples = squad_inputs(tmp_path)
    (tmp_path / "q.jsonl").write_text(jsonl(rows))
    window = ["--max-seq-length", "96", "--doc-stride", "48"]
    out = predict(["squad", "--model", str(qa_dir), "--input", str(tmp_path / "q.jsonl"), "--version", version,
                   *window], capsys)
    assert [{k: o[k] for k in rows[0]} for o in out] == rows
    for o in out:
        assert o["context"][o["start"]:o["end"]] == o["answer"] and (o["answer"] or o["start"] == o["end"] == 0)
    want = answer(BertForQuestionAnswering.from_pretrained(qa_dir), load_tokenizer(qa_dir), examples, batch_size=7,
                  version_2=version == "2.0", null_threshold=0.0, max_seq_length=96, doc_stride=48)
    assert [(o["answer"], o["start"], o["end"]) for o in out] == [(w.text, w.start, w.end) for w in want]
    assert [o["score"] for o in out] == pytest.approx([w.score for w in want], abs=1e-4)
    if version == "1.1":
        assert all(o["answer"] for o in out)
    assert len(rows[0]["context"].split()) > 96  # the first context needs several windows


def test_squad_from_stdin_and_the_null_threshold(tmp_path, qa_dir, capsys, monkeypatch):
    rows, _ = squad_inputs(tmp_path)
    argv = ["squad", "--model", str(qa_dir), "--max-seq-length", "96", "--doc-stride", "48"]
    out = predict(argv, capsys, monkeypatch, stdin=jsonl(rows))
    assert [o["question"] for o in out] == [r["question"] for r in rows]
    never = predict([*argv, "--null-threshold=-1e9"], capsys, monkeypatch, stdin=jsonl(rows))
    always = predict([*argv, "--null-threshold", "1e9"], capsys, monkeypatch, stdin=jsonl(rows))
    assert all(o["answer"] == "" for o in never) and all(o["answer"] for o in always)


def test_squad_reads_the_official_json(tmp_path, qa_dir, capsys, monkeypatch):
    """The official SQuAD JSON (dev-v2.0.json) as input, from a file or (pretty-printed) stdin: one answer per
    question, in order, as from JSONL."""
    rows, _ = squad_inputs(tmp_path)
    (tmp_path / "q.jsonl").write_text(jsonl(rows))
    argv = ["squad", "--model", str(qa_dir), "--max-seq-length", "96", "--doc-stride", "48"]
    official = predict([*argv, "--input", str(tmp_path / "dev.json")], capsys)
    assert official == predict([*argv, "--input", str(tmp_path / "q.jsonl")], capsys) and len(official) == len(rows)
    pretty = json.dumps(json.loads((tmp_path / "dev.json").read_text()), indent=2)
    assert predict(argv, capsys, monkeypatch, stdin=pretty) == official


def test_squad_notes_questions_cut_to_max_query_length(tmp_path, qa_dir, capsys):
    """A question longer than --max-query-length tokens is cut to it, and a note counts it; one of exactly that
    many tokens is not cut."""
    context = "the river runs past the green house and the old stone bridge"
    rows = [{"question": " ".join(["apple"] * n), "context": context} for n in (6, 7, 2)]  # one token per word
    (tmp_path / "q.jsonl").write_text(jsonl(rows))
    argv = ["squad", "--model", str(qa_dir), "--input", str(tmp_path / "q.jsonl"), "--max-query-length", "6"]
    assert len(predict(argv, capsys)) == 3
    main(argv)
    assert "note: 1 of 3 questions are longer than --max-query-length 6 tokens and were cut to it" in \
        capsys.readouterr().err
    main([*argv[:-1], "7"])
    assert "note" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- paraphrase

def test_paraphrase_from_a_file_is_the_library_paraphrase(tmp_path, bart_dir, capsys):
    """The generation flags go to the library's paraphrase as generate()'s arguments (--max-target-length as
    max_length)."""
    (tmp_path / "in.jsonl").write_text(jsonl([{"source": s, "n": i} for i, s in enumerate(SENTENCES)]))
    argv = ["paraphrase", "--model", str(bart_dir), "--input", str(tmp_path / "in.jsonl"), "--max-target-length", "8"]
    beams = predict([*argv, "--num-beams", "3", "--num-return-sequences", "3"], capsys)
    assert [(o["source"], o["n"]) for o in beams] == [(s, i) for i, s in enumerate(SENTENCES)]
    assert all(len(o["paraphrases"]) == 3 and all(isinstance(p, str) for p in o["paraphrases"]) for o in beams)
    model, tok = BartForConditionalGeneration.from_pretrained(bart_dir), load_tokenizer(bart_dir)
    want = paraphrase(model, tok, SENTENCES, max_seq_length=512, batch_size=4, num_beams=3, num_return_sequences=3,
                      no_repeat_ngram_size=3, max_length=8)  # the flags not given: train_paraphrase.py's
    assert [o["paraphrases"] for o in beams] == want
    greedy = [o["paraphrases"] for o in predict([*argv, "--num-beams", "1", "--no-repeat-ngram-size", "0"], capsys)]
    assert all(len(p) == 1 for p in greedy) and any(len(set(p[0].split())) < len(p[0].split()) for p in greedy)
    no_repeat = [o["paraphrases"][0] for o in predict([*argv, "--no-repeat-ngram-size", "1"], capsys)]
    assert all(len(set(p.split())) == len(p.split()) for p in no_repeat)  # no token twice, so no word twice
    shorter = [o["paraphrases"][0] for o in predict([*argv[:-1], "4"], capsys)]  # the start token and 3 more
    assert all(len(p.split()) <= 3 for p in shorter) and any(len(p[0].split()) > 3 for p in greedy)


def test_paraphrase_without_generation_settings_decodes_as_training_evaluates(tmp_path, bart_dir, capsys):
    """A checkpoint that sets no generation setting (as a BERT warm start saves it) is decoded with
    train_paraphrase.py's evaluation settings, EVAL_GENERATION (its best beam), not transformers' greedy 20
    tokens; one that sets any is decoded with its own, the rest transformers'."""
    assert DEFAULT_GENERATION == {**EVAL_GENERATION, "num_return_sequences": 1}
    assert not set(json.loads((bart_dir / "generation_config.json").read_text())) & set(GENERATION_DEFAULTS)
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES))
    model, tok = BartForConditionalGeneration.from_pretrained(bart_dir), load_tokenizer(bart_dir)
    out = predict(["paraphrase", "--model", str(bart_dir), "--input", str(tmp_path / "in.txt")], capsys)
    want = paraphrase(model, tok, SENTENCES, max_seq_length=512, batch_size=4, **DEFAULT_GENERATION)
    assert [o["paraphrases"] for o in out] == want
    assert want != paraphrase(model, tok, SENTENCES, max_seq_length=512, batch_size=4)  # not transformers' greedy
    model.config.max_length = 6  # a setting of its own: the others stay transformers'
    out = predict(["paraphrase", "--model", str(saved(model, tmp_path / "own", bart_dir)), "--input",
                   str(tmp_path / "in.txt")], capsys)
    assert [o["paraphrases"] for o in out] == paraphrase(model, tok, SENTENCES, max_seq_length=512, batch_size=4)


def test_paraphrase_from_stdin_defaults_to_the_generation_config(tmp_path, bart_dir, capsys, monkeypatch):
    folder = tmp_path / "bart"
    model = BartForConditionalGeneration.from_pretrained(bart_dir)
    model.config.num_beams, model.config.num_return_sequences, model.config.max_length = 2, 2, 6
    saved(model, folder, bart_dir)
    out = predict(["paraphrase", "--model", str(folder)], capsys, monkeypatch, stdin="\n".join(SENTENCES))
    assert [o["source"] for o in out] == SENTENCES and all(len(o["paraphrases"]) == 2 for o in out)
    sampled = ["paraphrase", "--model", str(folder), "--do-sample", "--num-beams", "1", "--num-return-sequences", "4"]
    first = predict(sampled, capsys, monkeypatch, stdin="\n".join(SENTENCES))
    assert all(len(o["paraphrases"]) == 4 for o in first)
    assert predict(sampled, capsys, monkeypatch, stdin="\n".join(SENTENCES)) == first  # --seed: reproducible


def test_a_subprocess_reads_stdin_and_writes_stdout(bart_dir):
    done = subprocess.run([sys.executable, str(ROOT / "predict.py"), "paraphrase", "--model", str(bart_dir),
                           "--max-target-length", "5"], input="Hello there.\nGood bye.\n", capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["source"] for o in out] == ["Hello there.", "Good bye."] and all(len(o["paraphrases"]) == 1 for o in out)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("lines, message", [
    ('{"sentence": "fine"}\n{"sentence": "broken"\n', "not valid JSON (Expecting ',' delimiter, character 22) "
                                                       "(<stdin>, line 2)"),
    ('{"sentence": "fine"}\n\n{"text": "no sentence"}\n', "missing column 'sentence' (<stdin>, line 3)"),
    ('{"sentence": "fine"}\n{"sentence": 5}\n', "expected a non-empty string (<stdin>, line 2, column 'sentence', 5)"),
    ('{"sentence": "fine"}\n["a list"]\n', "expected a JSON object, got list (<stdin>, line 2)"),
])
def test_malformed_input_names_the_line_and_writes_nothing(tmp_path, cls_dir, capsys, monkeypatch, lines, message):
    out = tmp_path / "out.jsonl"
    out.write_text("kept\n")
    err = fails(["cola", "--model", str(cls_dir), "--format", "jsonl", "--output", str(out)], capsys, monkeypatch,
                stdin=lines)
    assert message in err
    assert out.read_text() == "kept\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_malformed_squad_line_names_the_file(tmp_path, qa_dir, capsys):
    (tmp_path / "q.jsonl").write_text('{"question": "who?", "context": "me."}\n{"question": "why?"}\n')
    err = fails(["squad", "--model", str(qa_dir), "--input", str(tmp_path / "q.jsonl"),
                 "--output", str(tmp_path / "a.jsonl")], capsys)
    assert f"missing column 'context' ({tmp_path / 'q.jsonl'}, line 2)" in err and not (tmp_path / "a.jsonl").exists()
    err = fails(["squad", "--model", str(qa_dir), "--input", str(tmp_path / "none.jsonl")], capsys)
    assert f"No such file or directory (--input, '{tmp_path / 'none.jsonl'}')" in err


@pytest.mark.parametrize("task, model, message", [
    ("cola", "bart", "not a BERT sentence-classification checkpoint (its model_type is 'bart') (--model"),
    ("cola", "qa", "not a BERT sentence-classification checkpoint: it has no classifier.weight (--model"),
    ("squad", "bert", "not a BERT question-answering checkpoint: it has no qa_outputs.weight (--model"),
    ("paraphrase", "cls", "fine-tunes a BART warm-started from this BERT"),
    ("paraphrase", "missing", "is not a checkpoint folder"),
])
def test_a_checkpoint_of_the_wrong_kind_names_model(tmp_path, capsys, monkeypatch, task, model, message,
                                                    cls_dir, qa_dir, bart_dir, tiny_bert_dir):
    folders = {"bart": bart_dir, "qa": qa_dir, "bert": tiny_bert_dir, "cls": cls_dir, "missing": tmp_path / "none"}
    err = fails([task, "--model", str(folders[model]), "--output", str(tmp_path / "out")], capsys, monkeypatch,
                stdin='{"sentence": "a", "source": "a", "question": "a", "context": "a"}\n')
    assert message in err and not (tmp_path / "out").exists()


def test_a_run_folder_points_at_its_checkpoint(tmp_path, cls_dir, capsys, monkeypatch):
    """--model naming a training run's folder instead of its checkpoint/: the error names the checkpoint."""
    shutil.copytree(cls_dir, tmp_path / "run" / "checkpoint")
    err = fails(["cola", "--model", str(tmp_path / "run")], capsys, monkeypatch, stdin="Yes.\n")
    assert err == (f"error: a run's folder, not a checkpoint (--model, '{tmp_path / 'run'}'): did you mean "
                   f"{tmp_path / 'run' / 'checkpoint'}?\n")


def test_a_pytorch_model_bin_checkpoint_is_read_too(tmp_path, cls_dir, capsys, monkeypatch):
    folder = tmp_path / "bin"
    shutil.copytree(cls_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert predict(["cola", "--model", str(folder)], capsys, monkeypatch, stdin="Yes.\n")[0]["label"] in LABELS.values()
    err = fails(["squad", "--model", str(folder)], capsys, monkeypatch, stdin="")
    assert "it has no qa_outputs.weight (--model" in err


@pytest.mark.parametrize("flags, message", [
    (["--top-p", "1.5"], "argument --top-p: expected a number in (0, 1], got 1.5"),
    (["--num-beams", "2", "--num-return-sequences", "3"],
     "argument --num-return-sequences: expected at most --num-beams (2), got 3"),
    (["--num-beams", "1", "--num-return-sequences", "2"],
     "argument --num-return-sequences: expected 1, or --num-beams > 1 or --do-sample, got 2"),
    (["--num-return-sequences", "5"], "argument --num-return-sequences: expected at most --num-beams (4), got 5"),
    (["--max-target-length", "600"],
     "argument --max-target-length: expected at most 513: the decoder has 512 positions, got 600"),
    (["--temperature", "0"], "argument --temperature: expected a finite number > 0, got 0"),
])
def test_a_bad_generation_flag_is_named_before_anything_runs(tmp_path, bart_dir, capsys, flags, message):
    missing = tmp_path / "never-read.txt"  # flags are checked before the input is read
    err = fails(["paraphrase", "--model", str(bart_dir), "--input", str(missing), *flags], capsys)
    assert message in err


def test_a_value_from_the_generation_config_says_so(tmp_path, bart_dir, capsys):
    folder = tmp_path / "bart"
    model = BartForConditionalGeneration.from_pretrained(bart_dir)
    model.config.num_beams, model.config.num_return_sequences = 4, 4
    saved(model, folder, bart_dir)
    err = fails(["paraphrase", "--model", str(folder), "--num-beams", "2"], capsys)
    assert ("argument --num-return-sequences: expected at most --num-beams (2), got 4 from the generation config of "
            f"{folder}; pass --num-return-sequences") in err


def test_empty_input_gives_empty_output(tmp_path, cls_dir, bart_dir, qa_dir, capsys, monkeypatch):
    for task, folder in (("cola", cls_dir), ("paraphrase", bart_dir), ("squad", qa_dir)):
        (tmp_path / "in.jsonl").write_text("\n")
        main([task, "--model", str(folder), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o")])
        assert (tmp_path / "o").read_text() == ""
    assert predict(["cola", "--model", str(cls_dir)], capsys, monkeypatch, stdin="") == []


def test_output_may_not_be_the_input(tmp_path, cls_dir, capsys):
    """--output naming the input file (also through a link) is refused before anything runs: the input keeps
    every byte."""
    path = tmp_path / "in.jsonl"
    path.write_text(jsonl([{"sentence": s, "label": "gold"} for s in SENTENCES]))
    before = path.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(path)
    for output in (path, tmp_path / "link.jsonl", tmp_path / "." / "in.jsonl"):
        err = fails(["cola", "--model", str(cls_dir), "--input", str(path), "--output", str(output)], capsys)
        assert f"the input file itself (--output, '{output}')" in err and path.read_bytes() == before


def test_output_that_is_not_a_regular_file_is_written_to(tmp_path, cls_dir, capsys):
    """--output a pipe or a link (as /dev/stdout is) is written to and stays what it was; a regular file is
    replaced whole."""
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES))
    argv = ["cola", "--model", str(cls_dir), "--input", str(tmp_path / "in.txt"), "--output"]
    want = predict(argv[:-1], capsys)
    target, link = tmp_path / "target.jsonl", tmp_path / "link.jsonl"
    target.write_text("old\n")
    link.symlink_to(target)
    main([*argv, str(link)])
    assert link.is_symlink() and [json.loads(x) for x in target.read_text().splitlines()] == want
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    main([*argv, str(fifo)])
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and [json.loads(x) for x in got[0].splitlines()] == want


def test_the_task_comes_first(tmp_path, cls_dir, capsys):
    """Leaving out the task says which tasks there are, not argparse's "invalid choice" for the next word."""
    for argv in (["--model", str(cls_dir)], [str(cls_dir)], []):
        with pytest.raises(SystemExit) as e:
            run(main, argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: the task comes first: predict.py {squad,cola,paraphrase}")
        assert "invalid choice" not in err and (not argv or repr(argv[0]) in err)


def test_null_threshold_must_be_a_number(qa_dir, capsys):
    """--null-threshold nan or inf is refused, as train_squad.py refuses it (nan would answer every question)."""
    for value in ("nan", "inf"):
        with pytest.raises(SystemExit) as e:
            run(main, ["squad", "--model", str(qa_dir), "--null-threshold", value])
        assert e.value.code == 2 and f"argument --null-threshold: expected a finite number, got '{value}'" in \
            capsys.readouterr().err


@pytest.mark.parametrize("weights,atol", [("bf16", 0.02), ("int8", 0.05)])
def test_reduced_precision_weights_stay_close_to_fp32(tmp_path, tiny_bert_dir, bart_dir, capsys, weights, atol):
    """--weights bf16 / int8: the probabilities within the weights' rounding of fp32's (bf16 keeps 8 bits of
    mantissa, int8 one scale per output row), and paraphrases are still produced for every source. (A head of
    ordinary scale: cls_dir's is built to amplify the pooled states' small differences, and their rounding too.)"""
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)
    folder = saved(model, tmp_path / "cls", tiny_bert_dir)
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
    argv = ["cola", "--model", str(folder), "--input", str(tmp_path / "in.txt"), "--device", "cpu"]
    want = torch.tensor([list(o["probabilities"].values()) for o in predict(argv, capsys)])
    got = torch.tensor([list(o["probabilities"].values()) for o in predict([*argv, "--weights", weights], capsys)])
    assert 0 < (got - want).abs().max() < atol  # changed (reduced weights did run), but only by their rounding
    para = predict(["paraphrase", "--model", str(bart_dir), "--input", str(tmp_path / "in.txt"), "--weights",
                    weights, "--max-target-length", "6", "--num-beams", "2"], capsys)
    assert len(para) == len(SENTENCES) and all(len(o["paraphrases"]) == 1 for o in para)


def test_int8_weights_need_the_cpu_and_a_tokenizer_must_fit_the_model(tmp_path, cls_dir, capsys, monkeypatch):
    """int8 dynamic quantization runs on the CPU alone; a tokenizer larger than the model's vocabulary would fail
    at its first extra token: both refused before anything is read or written."""
    if torch.cuda.is_available():
        err = fails(["cola", "--model", str(cls_dir), "--weights", "int8", "--device", "cuda"], capsys, monkeypatch,
                    stdin="Yes.\n")
        assert "int8 weights run on the CPU only (--weights, 'int8')" in err
    small = tmp_path / "small"
    shutil.copytree(cls_dir, small)
    config = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    err = fails(["cola", "--model", str(small), "--output", str(tmp_path / "out")], capsys, monkeypatch,
                stdin="Yes.\n")
    assert "the tokenizer has 30522 tokens, more than the model's vocabulary (vocab_size 100)" in err
    assert not (tmp_path / "out").exists()
