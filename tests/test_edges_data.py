"""Data at its edges: every reader on a file whose last line has no final newline (or ends lines with CRLF), the
cut count at exactly the token limit, and label names that are not in alphabetical order, from training to
predict.py's probabilities."""
import csv
import io
import json

import pytest
import torch

import predict
import train_cola
import train_paraphrase
import train_squad
from data.classification import read_labeled
from data.cola import read_tsv
from data.paraphrase import read_msrp, read_pairs
from data.squad import read_squad_file
from data.tokens import count_cut, encode
from minibart import BartForConditionalGeneration
from minibert import BertForSequenceClassification, load_tokenizer
from minicore.checkpoint import copy_tokenizer_files
from minitrain.cli import run

QUOTED, LAST = 'He said "hi", then left.', "The cat sat on the mat."


def squad_line(qid: str, question: str, context: str, answer: str) -> str:
    """A question in the flattened JSONL layout, answered by `answer`, found in `context`."""
    return json.dumps({"id": qid, "title": "t", "context": context, "question": question,
                       "answers": {"text": [answer], "answer_start": [context.index(answer)]}})


CSV_QUOTED = '"He said ""hi"", then left."'  # QUOTED as a quoted CSV (or TSV) field


def labeled(path):
    return read_labeled(path, "sentence", "label")


# name: (file name, its lines, reader -> comparable rows, the rows the lines hold)
READERS = {
    "csv": ("own.csv", ["id,sentence,label", f"0,{CSV_QUOTED},yes", f"1,{LAST},no"], labeled,
            [(QUOTED, "yes"), (LAST, "no")]),
    "tsv": ("own.tsv", ["id\tsentence\tlabel", f"0\t{CSV_QUOTED}\tyes", f"1\t{LAST}\tno"], labeled,
            [(QUOTED, "yes"), (LAST, "no")]),
    "jsonl": ("own.jsonl", [json.dumps({"sentence": QUOTED, "label": 2}), json.dumps({"sentence": LAST, "label": 10})],
              labeled, [(QUOTED, "2"), (LAST, "10")]),
    "cola": ("in_domain_train.tsv", [f"gj04\t1\t\t{QUOTED}", f"cj99\t0\t*\t{LAST}"],
             lambda p: [(e.source, e.label, e.sentence) for e in read_tsv(p)],
             [("gj04", 1, QUOTED), ("cj99", 0, LAST)]),
    "msrp": ("msr_paraphrase_train.txt", ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                                          f"1\t1\t2\t{QUOTED}\tHe left.", f"1\t3\t4\tA cat sat.\t{LAST}"],
             read_msrp, [(QUOTED, "He left."), ("A cat sat.", LAST)]),
    "pairs": ("pairs.csv", ["source,target", f"{CSV_QUOTED},He left.", f"A cat sat.,{LAST}"],
              lambda p: read_pairs(p, "source", "target"), [(QUOTED, "He left."), ("A cat sat.", LAST)]),
    "squad": ("dev.jsonl", [squad_line("q1", "Who left?", QUOTED, "He"), squad_line("q2", "Where?", LAST, "the mat")],
              lambda p: [(e.id, e.question, e.context, e.answer_texts) for e in read_squad_file(p)],
              [("q1", "Who left?", QUOTED, ["He"]), ("q2", "Where?", LAST, ["the mat"])]),
}
ENDS = {"lf": ("\n", True), "lf, none at the end": ("\n", False), "crlf": ("\r\n", True),
        "crlf, none at the end": ("\r\n", False)}


def joined(lines: list[str], end: str, final: bool) -> str:
    return end.join(lines) + (end if final else "")


@pytest.mark.parametrize("ends", ENDS)
@pytest.mark.parametrize("reader", READERS)
def test_a_reader_reads_the_last_line_whole(tmp_path, reader, ends):
    """Every row, the last one's last field to its last character, whatever the line ends and whether the last
    line has one."""
    name, lines, read, want = READERS[reader]
    path = tmp_path / name
    path.write_bytes(joined(lines, *ENDS[ends]).encode())
    assert [tuple(row) for row in read(path)] == want


@pytest.mark.parametrize("reader", READERS)
def test_an_empty_last_line_is_no_row(tmp_path, reader):
    """A file that ends with an empty line (an editor's extra newline) holds the rows before it, in every reader."""
    name, lines, read, want = READERS[reader]
    path = tmp_path / name
    path.write_bytes(joined(lines + [""], "\n", True).encode())
    assert [tuple(row) for row in read(path)] == want


# --------------------------------------------------------------------------------------------- predict.py

def classifier(tiny_bert_dir, folder, names: list[str], bias: list[float]):
    """A classifier of `names` (label id order) whose logits are `bias` for every sentence (a zero weight)."""
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=len(names))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias))
    model.config.extra["id2label"] = {str(i): name for i, name in enumerate(names)}
    model.save_pretrained(folder)
    copy_tokenizer_files(tiny_bert_dir, folder)
    return folder


def predicted(argv: list[str], capsys) -> list[dict]:
    capsys.readouterr()
    predict.main(argv)
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("ends", ENDS)
def test_predict_reads_the_last_line_whole(tiny_bert_dir, tmp_path, capsys, ends):
    """predict.py's text and JSONL input: every line an input, the last one whole, with or without a final
    newline, LF or CRLF."""
    model = classifier(tiny_bert_dir, tmp_path / "cls", ["a", "b"], [0.0, 0.0])
    sentences = [QUOTED, "  Indented, with a trailing space. ", LAST]
    (tmp_path / "in.txt").write_bytes(joined(sentences, *ENDS[ends]).encode())
    (tmp_path / "in.jsonl").write_bytes(joined([json.dumps({"sentence": s}) for s in sentences], *ENDS[ends]).encode())
    for name in ("in.txt", "in.jsonl"):
        out = predicted(["cola", "--model", str(model), "--input", str(tmp_path / name)], capsys)
        assert [o["sentence"] for o in out] == sentences, name


@pytest.mark.parametrize("names,bias", [
    (["yes", "no"], [2.0, 0.0]), (["yes", "no"], [0.0, 2.0]), (["2", "10"], [0.0, 2.0]),
    (["zebra", "apple", "mango"], [0.5, -1.0, 2.0])])
def test_predict_names_each_probability_by_its_label_id(tiny_bert_dir, tmp_path, capsys, names, bias):
    """Label names that are not in alphabetical order (as a user's, or integers in numeric order): predict.py's
    probabilities come in label id order, each under its own name, and the label is the most probable one's."""
    model = classifier(tiny_bert_dir, tmp_path / "cls", names, bias)
    (tmp_path / "in.txt").write_text(f"{QUOTED}\n{LAST}\n")
    want = dict(zip(names, torch.tensor(bias).softmax(-1).tolist()))
    for o in predicted(["cola", "--model", str(model), "--input", str(tmp_path / "in.txt")], capsys):
        assert list(o["probabilities"]) == names
        assert o["probabilities"] == pytest.approx(want, rel=1e-6)  # float32 softmax of the same logits
        assert o["label"] == names[max(range(len(bias)), key=bias.__getitem__)]


def test_integer_labels_keep_numeric_order_from_training_to_predict(tiny_bert_dir, tmp_path, capsys):
    """Labels 2 and 10 (numeric order, not alphabetical): the checkpoint names id 0 '2' and id 1 '10', and
    predict.py on the test sentences predicts what train_cola.py's predictions_test.tsv says, its probabilities
    in that order."""
    words = "the cat dog sat ran on a mat big small".split()
    rows = [(" ".join(words[i % 7:i % 7 + 3]) + f" {label}.", label) for i, label in enumerate([2, 10] * 10)]
    for name, part in (("train", rows[:16]), ("test", rows[16:])):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows([("sentence", "label"), *part])
    out = tmp_path / "out"
    train_cola.main(["--model", str(tiny_bert_dir), "--train-file", str(tmp_path / "train.csv"), "--test-file",
                     str(tmp_path / "test.csv"), "--output-dir", str(out), "--batch-size", "4", "--device", "cpu",
                     "--lr", "1e-3", "--max-steps", "3"])
    assert json.loads((out / "checkpoint" / "config.json").read_text())["id2label"] == {"0": "2", "1": "10"}
    table = list(csv.reader(io.StringIO((out / "predictions_test.tsv").read_text()), dialect="excel-tab"))
    assert [r[1] for r in table[1:]] == ["2", "10", "2", "10"]  # gold, by name
    (tmp_path / "in.txt").write_text("".join(text + "\n" for text, _ in rows[16:]))
    got = predicted(["cola", "--model", str(out / "checkpoint"), "--input", str(tmp_path / "in.txt")], capsys)
    assert [o["label"] for o in got] == [r[2] for r in table[1:]]
    assert all(list(o["probabilities"]) == ["2", "10"] for o in got)


# --------------------------------------------------------------------------------------------- cuts

L = 8  # the token limit of the cut tests, special tokens included


@pytest.fixture(scope="module")
def tok(tiny_bert_dir):
    return load_tokenizer(tiny_bert_dir)


def sentence(tok, n_tokens: int, first: int = 0) -> str:
    """A sentence of distinct one-token words that encodes to n_tokens tokens, [CLS] and [SEP] included."""
    words = "cat dog sun sky red big old new hot cold tree lake bird fish road".split()
    text = " ".join(words[(first + i) % len(words)] for i in range(n_tokens - 2))
    assert len(tok.encode(text).ids) == n_tokens
    return text


def test_a_text_of_exactly_the_limit_is_not_cut(tok):
    """A text of max_length tokens is kept whole and not counted as cut; one more token is cut (to max_length,
    keeping [SEP]) and counted."""
    exact, over = sentence(tok, L), sentence(tok, L + 1)
    assert count_cut(tok, [exact], L) == 0 and count_cut(tok, [over], L) == 1
    assert count_cut(tok, [exact, over, exact, over], L) == 2
    assert encode(tok, [exact], L) == [tok.encode(exact).ids]
    kept = encode(tok, [over], L)[0]
    assert len(kept) == L and kept[-1] == tok.token_to_id("[SEP]")


@pytest.fixture(scope="module")
def bart_dir(tiny_bert_dir, tmp_path_factory):
    """A BART warm-started from the tiny BERT (512 positions), with its tokenizer files."""
    folder = tmp_path_factory.mktemp("bart")
    BartForConditionalGeneration.from_bert(tiny_bert_dir).save_pretrained(folder)
    copy_tokenizer_files(tiny_bert_dir, folder)
    return folder


def test_predict_notes_only_the_texts_past_the_limit(bart_dir, tok, tmp_path, capsys):
    """predict.py paraphrase --max-seq-length L: sources of exactly L tokens get no note; one past it is counted."""
    argv = ["paraphrase", "--model", str(bart_dir), "--input", str(tmp_path / "in.txt"), "--max-seq-length", str(L)]
    (tmp_path / "in.txt").write_text(f"{sentence(tok, L)}\n{sentence(tok, L, 3)}\n")
    predict.main(argv)
    assert "note:" not in capsys.readouterr().err
    (tmp_path / "in.txt").write_text(f"{sentence(tok, L)}\n{sentence(tok, L + 1)}\n")
    predict.main(argv)
    err = capsys.readouterr().err
    assert "note:" in err and "1 of 2" in err and f"--max-seq-length {L}" in err


def test_predict_takes_sources_as_long_as_the_model_s_positions(bart_dir, tmp_path, capsys):
    """predict.py paraphrase --max-seq-length: the model's 512 positions are accepted, 513 refused naming the flag."""
    (tmp_path / "in.txt").write_text("The cat sat on the mat.\n")
    argv = ["paraphrase", "--model", str(bart_dir), "--input", str(tmp_path / "in.txt"), "--max-seq-length"]
    assert len(predicted([*argv, "512"], capsys)[0]["paraphrases"]) == 1
    with pytest.raises(SystemExit) as e:
        run(predict.main, [*argv, "513"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "--max-seq-length" in err and "513" in err and "512" in err


def test_train_paraphrase_counts_only_the_sentences_past_the_limit(tiny_bert_dir, tok, tmp_path):
    """train_paraphrase.py --max-seq-length L: of training sentences of L - 1, L and L + 1 tokens, only the one of
    L + 1 is counted as cut."""
    pairs = [(sentence(tok, L, i), sentence(tok, L - 1, i + 7)) for i in range(4)]
    pairs[-1] = (pairs[-1][0], sentence(tok, L + 1, 9))
    for name, part in (("train", pairs), ("test", [(sentence(tok, 5, 2), sentence(tok, 5, 11))])):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows([("source", "target"), *part])
    m = train_paraphrase.main(["--model", str(tiny_bert_dir), "--train-file", str(tmp_path / "train.csv"),
                               "--test-file", str(tmp_path / "test.csv"), "--validation-pairs", "0",
                               "--output-dir", str(tmp_path / "out"), "--device", "cpu", "--batch-size", "2",
                               "--max-steps", "1", "--max-seq-length", str(L), "--num-beams", "2",
                               "--num-return-sequences", "2"])
    assert m["sizes"]["train_pairs"] == 4 and m["sizes"]["cut_sentences"] == 1


def test_train_squad_counts_only_the_questions_past_the_limit(tiny_bert_dir, tok, tmp_path):
    """train_squad.py --max-query-length 4: of questions of 3, 4 and 5 tokens, only the one of 5 is counted as cut."""
    context = "The cat sat on the mat near the old tree by the lake."
    questions = [sentence(tok, n + 2, i) for i, n in enumerate((4, 3, 4, 5))]  # + [CLS] and [SEP]
    lines = [squad_line(f"q{i}", q, context, "the mat") for i, q in enumerate(questions)]
    (tmp_path / "squad.jsonl").write_text("".join(line + "\n" for line in lines))
    m = train_squad.main(["--model", str(tiny_bert_dir), "--train-file", str(tmp_path / "squad.jsonl"), "--dev-file",
                          str(tmp_path / "squad.jsonl"), "--output-dir", str(tmp_path / "out"), "--device", "cpu",
                          "--batch-size", "4", "--max-steps", "1", "--validation-questions", "0",
                          "--train-fraction", "1", "--max-query-length", "4"])
    assert m["data"]["questions_cut"] == {"train": 1, "validation": 0, "dev": 1}
