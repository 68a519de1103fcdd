"""train_cola.py on the user's own data: CSV, TSV and JSONL files with any number of labels, the label names
in the saved config, --keep-best, and every mistake in the data refused before anything is written."""
import csv
import json
import random
import shutil

import pytest
import torch
import torch.nn.functional as F
from test_cola import WORDS, write_cola

import train_cola
from data.cola import load_raw
from minibert import BertForSequenceClassification, load_tokenizer
from minicore.checkpoint import copy_tokenizer_files
from minicore.errors import UserError
from minitasks.classification import classify
from minitrain.cli import run

TOPICS = ["sports", "politics", "weather"]


def rows(n: int, labels=TOPICS, seed: int = 0) -> list[tuple[str, object]]:
    """n (sentence, label) pairs; a sentence names its label, so there is something to learn."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choices(WORDS, k=rng.randint(2, 9)) + [str(label)]
        rng.shuffle(words)
        out.append((" ".join(words).capitalize() + ".", label))
    out[0] = ('He said "hello, world" twice.', out[0][1])  # quotes and a comma: CSV quoting round-trips
    return out


def write(path, pairs, text="sentence", label="label"):
    """pairs -> a CSV, TSV or JSONL file (by the extension) with a header naming the two columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({text: t, label: y, "id": i}) + "\n" for i, (t, y) in enumerate(pairs)))
    else:
        with open(path, "w", newline="") as f:
            w = csv.writer(f, dialect="excel" if path.suffix == ".csv" else "excel-tab")
            w.writerow(["id", text, label])
            w.writerows([i, t, y] for i, (t, y) in enumerate(pairs))
    return path


def common(model, out, *extra) -> list[str]:
    return ["--model", str(model), "--output-dir", str(out), "--batch-size", "8", "--device", "cpu", "--lr", "1e-3",
            "--log-every", "2", *map(str, extra)]


def test_three_labels_from_csv_with_keep_best(tmp_path, tiny_bert_dir):
    """Labels and num_labels from the training file, named in every saved config (as transformers reads them);
    MCC, accuracy and macro-F1 on validation and test; the test metrics are those of the best checkpoint."""
    transformers = pytest.importorskip("transformers")
    data, out = tmp_path / "data", tmp_path / "out"
    files = [write(data / f"{name}.csv", rows(n, seed=s)) for name, n, s in (("train", 30, 0), ("dev", 9, 1),
                                                                               ("test", 12, 2))]
    m = train_cola.main(common(tiny_bert_dir, out, "--train-file", files[0], "--validation-file", files[1],
                               "--test-file", files[2], "--epochs", "2", "--eval-every", "1", "--keep-best"))
    assert m["task"] == "classification" and m["labels"] == ["politics", "sports", "weather"]  # alphabetical
    assert m["sizes"] == {"train": 30, "validation": 9, "test": 12} and m["steps"] == 8
    assert m["data"] == {"train": str(files[0]), "validation": str(files[1]), "test": str(files[2])}
    assert {"val_mcc", "val_accuracy", "val_macro_f1", "val_loss"} <= m["validations"][0].keys()
    assert m["test"]["test"].keys() == {"mcc", "accuracy", "macro_f1", "loss", "n"} and m["test"]["test"]["n"] == 12
    assert m["mcc_test"] == m["test"]["test"]["mcc"] and "protocol" not in m and m["settings"]["keep_best"]

    names = {"0": "politics", "1": "sports", "2": "weather"}
    for folder in (out / "checkpoint", out / "best"):
        config = json.loads((folder / "config.json").read_text())
        assert config["id2label"] == names and config["label2id"] == {v: int(k) for k, v in names.items()}
        hf = transformers.BertForSequenceClassification.from_pretrained(folder)
        assert hf.config.num_labels == 3 and hf.config.id2label == {int(k): v for k, v in names.items()}

    best = m["best_validation"]
    assert best["val_mcc"] == max(v["val_mcc"] for v in m["validations"])
    assert m["evaluated_model"].startswith(f"best checkpoint ({out / 'best'}: step {best['step']}, val_mcc ")
    log = (out / "train.log").read_text()
    assert f"test metrics of the {m['evaluated_model']}" in log and "macro-F1" in log
    table = [r.split("\t") for r in (out / "predictions_test.tsv").read_text().splitlines()]
    assert table[0] == ["index", "label", "prediction"] and len(table) == 13
    assert [r[1] for r in table[1:]] == [y for _, y in rows(12, seed=2)]  # gold, by name, in file order
    test_texts, gold = [t for t, _ in rows(12, seed=2)], [sorted(TOPICS).index(y) for _, y in rows(12, seed=2)]

    def test_loss(folder) -> tuple[float, list[str]]:
        probs = classify(BertForSequenceClassification.from_pretrained(folder), load_tokenizer(folder), test_texts,
                         max_seq_length=64, batch_size=4)
        return F.nll_loss(probs.log(), torch.tensor(gold)).item(), [names[str(p)] for p in probs.argmax(-1).tolist()]
    loss, predicted = test_loss(out / "best")
    assert loss == pytest.approx(m["test"]["test"]["loss"], abs=2e-6) and [r[2] for r in table[1:]] == predicted
    if best["step"] != m["steps"]:  # then the last checkpoint's test loss is another
        assert test_loss(out / "checkpoint")[0] != pytest.approx(loss, abs=1e-5)
    samples = (out / "samples.md").read_text()
    picked = [r.split(" | ") for r in samples.splitlines() if r.startswith("| ") and not r.startswith("| row")]
    assert len(picked) == 5 and "the best checkpoint" in samples
    assert all(r[2] in TOPICS and r[3] in TOPICS for r in picked)  # gold and predicted labels by name


def test_jsonl_integer_labels_split_off_validation_without_test(tmp_path, tiny_bert_dir):
    """Other column names, JSON integer labels (numeric order: 2 < 10), the seeded 90/10 split of the training file
    for validation, and without --test-file no test metrics, said in the log and metrics.json."""
    out = tmp_path / "out"
    train = write(tmp_path / "train.jsonl", rows(20, labels=[10, 2, 7]), text="text", label="y")
    m = train_cola.main(common(tiny_bert_dir, out, "--train-file", train, "--text-column", "text",
                               "--label-column", "y", "--max-steps", "3"))
    assert m["labels"] == ["2", "7", "10"] and m["sizes"] == {"train": 18, "validation": 2}
    assert m["test"] == {} and m["data"]["test"] == "none (no --test-file)" and not any(k.startswith("mcc_") for k in m)
    assert m["data"]["validation"] == f"{train}: 10% (seeded split, --seed 42)"
    log = (out / "train.log").read_text()
    assert "test: none (no --test-file), so no test metrics" in log and "no test metrics: no --test-file" in log
    assert "Samples of the validation set" in (out / "samples.md").read_text()
    assert not list(out.glob("predictions_*"))
    config = json.loads((out / "checkpoint" / "config.json").read_text())
    assert config["id2label"] == {"0": "2", "1": "7", "2": "10"}


def test_tsv_two_labels_and_cut_sentences(tmp_path, tiny_bert_dir):
    """TSV files; two labels report no macro-F1; sentences longer than --max-seq-length are cut, and counted."""
    out = tmp_path / "out"
    pairs = rows(16, labels=["no", "yes"])
    pairs[3] = ("word " * 40, "yes")
    files = [write(tmp_path / f"{n}.tsv", p) for n, p in (("train", pairs), ("dev", pairs[:6]), ("test", pairs[6:]))]
    m = train_cola.main(common(tiny_bert_dir, out, "--train-file", files[0], "--validation-file", files[1],
                               "--test-file", files[2], "--max-steps", "2", "--max-seq-length", "16"))
    assert m["labels"] == ["no", "yes"] and m["test"]["test"].keys() == {"mcc", "accuracy", "loss", "n"}
    assert m["truncated"] == {"train": 1, "validation": 1, "test": 0}
    assert "train: 16 sentences from " + str(files[0]) + "; 1 cut to --max-seq-length 16 tokens" in \
        (out / "train.log").read_text()


def bad_model(tmp_path, tiny_bert_dir, kind: str):
    """A checkpoint folder whose tokenizer lacks [PAD], or a classifier of two labels."""
    folder = tmp_path / kind
    if kind == "no_pad":
        shutil.copytree(tiny_bert_dir, folder)
        (folder / "tokenizer.json").unlink()
        vocab = folder / "vocab.txt"
        vocab.write_text(vocab.read_text().replace("[PAD]\n", "[NOPAD]\n", 1))
    else:
        BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).save_pretrained(folder)
        copy_tokenizer_files(tiny_bert_dir, folder)
    return folder


@pytest.mark.parametrize("case,error", [
    ("unknown validation label", r"unknown label \(.*dev\.csv, line 3, column 'label', 'cooking'\): the training "
                                 r"file's labels are politics, sports, weather"),
    ("unknown test label", r"unknown label \(.*test\.csv, line 2, column 'label', 'cooking'\)"),
    ("missing column", r"missing column 'topic' \(.*train\.csv, line 1\): the columns there are 'id', 'sentence', "
                       r"'label'"),
    ("one label", r"a classifier needs at least two labels, the training file has one \(.*train\.csv, column "
                  r"'label', 'sports'\)"),
    ("no file", r"no such file \(--test-file, '.*nowhere\.csv'\)"),
    ("max length", r"argument --max-seq-length: expected at most 512 \(the model's max_position_embeddings\), got 600"),
    ("no pad", r"the tokenizer has no \[PAD\] token \(--model, '.*no_pad'\)"),
    ("two-label classifier", r"the model classifies 2 labels, the data have 3 \(--model, '.*classifier'\)"),
    ("one CoLA row", r"no training sentences left after the seeded 90/10 split .*in_domain_train\.tsv, '1 row'\): "
                     r"give it at least 2 rows$"),
])
def test_mistakes_are_refused_before_anything_is_written(tmp_path, tiny_bert_dir, case, error):
    data, out = tmp_path / "data", tmp_path / "out"
    train = write(data / "train.csv", rows(12))
    argv = common(tiny_bert_dir, out, "--train-file", train, "--validation-file", write(data / "dev.csv", rows(4)),
                  "--test-file", write(data / "test.csv", rows(3)))
    if case == "unknown validation label":
        write(data / "dev.csv", rows(1) + [("Who cooks?", "cooking")])
    elif case == "unknown test label":
        write(data / "test.csv", [("Who cooks?", "cooking")] + rows(2))
    elif case == "missing column":
        argv += ["--label-column", "topic"]
    elif case == "one label":
        write(data / "train.csv", rows(5, labels=["sports"]))
    elif case == "no file":
        argv += ["--test-file", str(data / "nowhere.csv")]
    elif case == "max length":
        argv += ["--max-seq-length", "600"]
    elif case == "no pad":
        argv[1] = str(bad_model(tmp_path, tiny_bert_dir, "no_pad"))
    elif case == "two-label classifier":
        argv[1] = str(bad_model(tmp_path, tiny_bert_dir, "classifier"))
    elif case == "one CoLA row":
        argv = common(tiny_bert_dir, out, "--data-dir", write_cola(data / "cola", n_train=1))
    with pytest.raises(UserError, match=error):
        train_cola.main(argv)
    assert not out.exists()


def test_an_error_is_one_line(tmp_path, tiny_bert_dir, capsys):
    """As a command: exit status 1 and one line on stderr, no traceback."""
    argv = common(tiny_bert_dir, tmp_path / "out", "--train-file", write(tmp_path / "train.csv", rows(1)))
    with pytest.raises(SystemExit) as exit_:
        run(train_cola.main, argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("error: a classifier needs at least two labels")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,message", [
    (["--data-dir", "x", "--train-file", "y.csv"], "argument --train-file: not allowed with argument --data-dir"),
    (["--validation-file", "y.csv"], "argument --validation-file: only with --train-file"),
    (["--data-dir", "x", "--test-file", "y.csv"], "argument --test-file: only with --train-file"),
])
def test_data_flags(capsys, argv, message):
    with pytest.raises(SystemExit):
        train_cola.parse_args(argv)
    assert message in capsys.readouterr().err



def test_cola_from_the_hub_trains_as_from_the_files(tmp_path, tiny_bert_dir, monkeypatch):
    """Without --data-dir the same three splits come from the Hub (here: a stand-in for load_hub) and train alike."""
    data = write_cola(tmp_path / "cola")
    monkeypatch.setattr(train_cola, "load_hub", lambda: load_raw(data))
    runs = {}
    for name, source in (("files", ["--data-dir", data]), ("hub", [])):
        runs[name] = train_cola.main(common(tiny_bert_dir, tmp_path / name, "--max-steps", "2", *source))
    files, hub = runs["files"], runs["hub"]
    assert hub["data"]["out_of_domain"] == "hub:nyu-mll/glue cola validation, rows 528-539"  # 527 + 12 rows
    assert hub["data"]["train"] == "hub:nyu-mll/glue cola train: 90% (seeded split, --seed 42)"
    assert hub["test"] == files["test"] and hub["validations"][0]["val_loss"] == files["validations"][0]["val_loss"]


def test_gradient_checkpointing_trains_as_without_it(tmp_path, tiny_bert_dir):
    """--gradient-checkpointing recomputes each layer in backward with the same dropout masks: the same losses,
    the same checkpoint, to float rounding; and the run records the setting."""
    train = write(tmp_path / "train.csv", rows(24))
    runs = [train_cola.main(common(tiny_bert_dir, tmp_path / name, "--train-file", train, "--max-steps", "3", *flag))
            for name, flag in (("plain", ()), ("checkpointed", ("--gradient-checkpointing",)))]
    assert not runs[0]["settings"]["gradient_checkpointing"] and runs[1]["settings"]["gradient_checkpointing"]
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()
               if json.loads(line)["event"] == "step"] for name in ("plain", "checkpointed")]
    assert len(losses[0]) >= 1 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    weights = [BertForSequenceClassification.from_pretrained(tmp_path / name / "checkpoint").state_dict()
               for name in ("plain", "checkpointed")]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])
