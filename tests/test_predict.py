"""predict.py: one JSON line out per input, in input order, with the input's fields kept; the predictions
are those of the evaluation path (answer / classify / paraphrase) and, for classification, transformers';
every mistake is one error line before anything is written."""
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_squad import tiny_squad

from data.squad import read_squad_file
from data.tokens import encode
from minibart import BartForConditionalGeneration
from minibert import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    load_tokenizer,
)
from minicore.checkpoint import copy_tokenizer_files
from minitasks.paraphrasing import paraphrase
from minitasks.question_answering import answer
from minitrain.cli import run
from predict import main

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


def test_cola_max_length_cuts_and_counts(tmp_path, cls_dir, capsys):
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES))
    argv = ["cola", "--model", str(cls_dir), "--input", str(tmp_path / "in.txt")]
    assert len(predict([*argv, "--max-length", "6"], capsys)) == len(SENTENCES)
    main([*argv, "--max-length", "6"])
    assert "note: 3 of 5 inputs are longer than --max-length 6 tokens and were cut to it" in capsys.readouterr().err
    assert "(--max-length, 513): use at most 512" in fails([*argv, "--max-length", "513"], capsys)


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


# ----------------------------------------------------------------------------- paraphrase

def test_paraphrase_from_a_file_is_the_library_paraphrase(tmp_path, bart_dir, capsys):
    (tmp_path / "in.jsonl").write_text(jsonl([{"source": s, "n": i} for i, s in enumerate(SENTENCES)]))
    argv = ["paraphrase", "--model", str(bart_dir), "--input", str(tmp_path / "in.jsonl"), "--max-length", "8"]
    beams = predict([*argv, "--num-beams", "3", "--num-return-sequences", "3"], capsys)
    assert [(o["source"], o["n"]) for o in beams] == [(s, i) for i, s in enumerate(SENTENCES)]
    assert all(len(o["paraphrases"]) == 3 and all(isinstance(p, str) for p in o["paraphrases"]) for o in beams)
    model, tok = BartForConditionalGeneration.from_pretrained(bart_dir), load_tokenizer(bart_dir)
    want = paraphrase(model, tok, SENTENCES, max_seq_length=512, batch_size=4, num_beams=3, num_return_sequences=3,
                      max_length=8)
    assert [o["paraphrases"] for o in beams] == want
    greedy = [o["paraphrases"] for o in predict(argv, capsys)]
    assert all(len(p) == 1 for p in greedy) and any(len(set(p[0].split())) < len(p[0].split()) for p in greedy)
    no_repeat = [o["paraphrases"][0] for o in predict([*argv, "--no-repeat-ngram-size", "1"], capsys)]
    assert all(len(set(p.split())) == len(p.split()) for p in no_repeat)  # no token twice, so no word twice
    shorter = [o["paraphrases"][0] for o in predict([*argv[:-1], "4"], capsys)]  # the start token and 3 more
    assert all(len(p.split()) <= 3 for p in shorter) and any(len(p[0].split()) > 3 for p in greedy)


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
                           "--max-length", "5"], input="Hello there.\nGood bye.\n", capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
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
     "argument --num-return-sequences: expected at most num_beams (2), got 3"),
    (["--num-return-sequences", "2"], "argument --num-return-sequences: expected 1, or num_beams > 1 or do_sample"),
    (["--max-length", "600"], "argument --max-length: expected at most 513: the decoder has 512 positions, got 600"),
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
    assert "argument --num-return-sequences: expected at most num_beams (2), got 4 from the generation config" in err


def test_empty_input_gives_empty_output(tmp_path, cls_dir, bart_dir, qa_dir, capsys, monkeypatch):
    for task, folder in (("cola", cls_dir), ("paraphrase", bart_dir), ("squad", qa_dir)):
        (tmp_path / "in.jsonl").write_text("\n")
        main([task, "--model", str(folder), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o")])
        assert (tmp_path / "o").read_text() == ""
    assert predict(["cola", "--model", str(cls_dir)], capsys, monkeypatch, stdin="") == []
