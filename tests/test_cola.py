"""CoLA: reader, split, tokenization, collate, Matthews correlation, and a smoke run of train_cola.py."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from data.classification import matthews_corrcoef
from data.cola import Example, collate, load_hub, load_raw, read_tsv, train_val_split
from data.tokens import encode
from minibert import BertForSequenceClassification, load_tokenizer
from minicore.errors import UserError
from minitasks.classification import classify

QUOTED = 'He said "I will go" and left.'
LEADING_QUOTE = '"Go home," she said.'
WORDS = "the cat dog sat ran on a mat big small quickly John Mary saw".split()


def write_cola(folder, n_train=40, n_dev=10, n_ood=12, seed=0):
    """Tiny CoLA files in the official format: source, label, mark ("*" when unacceptable), sentence."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("in_domain_train.tsv", n_train), ("in_domain_dev.tsv", n_dev), ("out_of_domain_dev.tsv", n_ood)):
        rows = []
        for i in range(n):
            label = int(rng.integers(2))
            sentence = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 12)))).capitalize() + "."
            sentence = {0: QUOTED, 1: LEADING_QUOTE}.get(i, sentence)
            rows.append(f"src{i % 3}\t{label}\t{'' if label else '*'}\t{sentence}")
        (folder / name).write_text("\n".join(rows) + ("\n" if name != "out_of_domain_dev.tsv" else ""))
    return folder


# --------------------------------------------------------------------------------------------- reading

def test_read_tsv_keeps_quotes_and_fields(tmp_path):
    write_cola(tmp_path)
    exs = read_tsv(tmp_path / "in_domain_train.tsv")
    assert len(exs) == 40 and all(isinstance(e, Example) for e in exs)
    assert exs[0].sentence == QUOTED and exs[1].sentence == LEADING_QUOTE  # QUOTE_NONE keeps them
    assert exs[2].source == "src2" and {e.label for e in exs} == {0, 1}
    splits = load_raw(tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"train": 40, "in_domain_dev": 10, "out_of_domain_dev": 12}


@pytest.mark.parametrize("content,msg", [
    ("a\t1\t\tFine.\nb\t1\tToo few.\n", r"expected 4 tab-separated fields .* got 3 \(.*bad\.tsv, line 2\)"),
    ("a\t1\t\tFine.\nb\t1\t\tOne\ttoo many.\n", r"expected 4 tab-separated fields .* got 5 \(.*bad\.tsv, line 2\)"),
    ("a\t2\t\tBad label.\n", r"label must be 0 or 1 \(.*bad\.tsv, line 1, '2'\)"),
    ("a\t1\t\t \n", r"empty sentence \(.*bad\.tsv, line 1\)"),
    ("", r"no rows \(.*bad\.tsv\)"),
    ("a\t1\t\tFine.\nb\t1\t\tCaf\xe9.\n".encode("latin-1"), r"not UTF-8 text \(.*bad\.tsv, line 2, b'\\xe9'\)"),
])
def test_read_tsv_errors(tmp_path, content, msg):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(UserError, match=msg):
        read_tsv(path)


def test_missing_file(tmp_path):
    write_cola(tmp_path)
    (tmp_path / "in_domain_dev.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="CoLA file not found: .*in_domain_dev.tsv"):
        load_raw(tmp_path)


def test_load_hub_splits_glue_validation(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = lambda n, off: [{"sentence": f"s{off + i}", "label": i % 2, "idx": i} for i in range(n)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a: {"train": rows(5, 0), "validation": rows(1043, 100)})
    splits = load_hub()
    assert [len(splits[k]) for k in ("train", "in_domain_dev", "out_of_domain_dev")] == [5, 527, 516]
    assert splits["out_of_domain_dev"][0].sentence == "s627"
    monkeypatch.setattr(datasets, "load_dataset", lambda *a: {"train": rows(5, 0), "validation": rows(10, 0)})
    with pytest.raises(ValueError, match="10 rows, expected 1043"):
        load_hub()


def test_real_files(shared_data):
    splits = load_raw(shared_data / "cola" / "raw")
    assert [len(splits[k]) for k in ("train", "in_domain_dev", "out_of_domain_dev")] == [8551, 527, 516]
    assert sum(e.label for e in splits["out_of_domain_dev"]) == 354
    train, val = train_val_split(splits["train"])
    assert (len(train), len(val)) == (7695, 856)


# --------------------------------------------------------------------------------------------- split

def test_split_sizes_and_seeding():
    items = list(range(103))
    train, val = train_val_split(items, 0.1, seed=42)
    assert (len(train), len(val)) == (92, 11) and sorted(train + val) == items
    assert train_val_split(items, 0.1, seed=42) == (train, val)
    assert train_val_split(items, 0.1, seed=7)[1] != val
    ref = torch.utils.data.random_split(items, [92, 11], generator=torch.Generator().manual_seed(42))
    assert [items[i] for i in ref[1].indices] == val  # the tutorial's random_split, seeded


# --------------------------------------------------------------------------------------------- features

def test_encode_and_collate(tiny_bert_dir):
    tok = load_tokenizer(tiny_bert_dir)
    cls, sep, pad = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"), tok.token_to_id("[PAD]")
    ids = encode(tok, ["The cat sat.", "word " * 100, QUOTED], max_length=16)
    assert [len(x) for x in ids] == [6, 16, len(ids[2])] and all(x[0] == cls and x[-1] == sep for x in ids)
    assert tok.encode("word " * 100).ids[:15] == ids[1][:15]  # the caller's tokenizer is not truncated
    assert len(tok.encode("word " * 100).ids) == 102
    b = collate(ids, [1, 0, 1], pad)
    assert b["input_ids"].shape == (3, 16) and b["labels"].tolist() == [1, 0, 1]
    assert b["attention_mask"][0].tolist() == [1] * 6 + [0] * 10
    assert (b["input_ids"][0, 6:] == pad).all()
    assert collate([ids[0], ids[0]], [1, 1], pad)["attention_mask"] is None  # nothing padded
    fixed = collate([ids[0], ids[0]], [1, 1], pad, pad_to=64)
    assert fixed["input_ids"].shape == (2, 64) and fixed["attention_mask"].sum().item() == 12
    with pytest.raises(ValueError, match="16 tokens does not fit pad_to=8"):
        collate(ids, [1, 0, 1], pad, pad_to=8)


# --------------------------------------------------------------------------------------------- MCC

def test_mcc_hand_computed():
    gold = [1, 1, 1, 0, 0, 0, 1]
    assert matthews_corrcoef(gold, gold) == 1.0
    assert matthews_corrcoef(gold, [1 - g for g in gold]) == -1.0
    assert matthews_corrcoef(gold, [1] * 7) == 0.0 and matthews_corrcoef(gold, [0] * 7) == 0.0
    assert matthews_corrcoef([1] * 4, [1, 0, 1, 0]) == 0.0  # constant gold
    # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert matthews_corrcoef([1, 1, 1, 0, 0], [1, 0, 1, 0, 1]) == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="3 gold labels but 2 predictions"):
        matthews_corrcoef([1, 0, 1], [1, 0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=60))
def test_mcc_is_pearson_correlation(pairs):
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    mcc = matthews_corrcoef(gold, pred)
    assert -1.0 <= mcc <= 1.0 and mcc == pytest.approx(matthews_corrcoef(pred, gold))
    if len(set(gold)) == 2 and len(set(pred)) == 2:
        assert mcc == pytest.approx(np.corrcoef(gold, pred)[0, 1])
    else:
        assert mcc == 0.0


# --------------------------------------------------------------------------------------------- end to end

def test_train_cola_smoke_and_resume(tmp_path, tiny_bert_dir):
    import train_cola

    data, out = write_cola(tmp_path / "cola"), tmp_path / "out"
    common = ["--model", str(tiny_bert_dir), "--data-dir", str(data), "--output-dir", str(out),
              "--batch-size", "8", "--epochs", "2", "--device", "cpu", "--log-every", "2", "--lr", "1e-3"]
    m = train_cola.main(common + ["--max-steps", "3"])
    assert m["steps"] == 3 and m["sizes"] == {"train": 36, "validation": 4, "out_of_domain": 12, "in_domain": 10}
    assert -1 <= m["mcc_out_of_domain"] <= 1 and m["test"]["out_of_domain"]["n"] == 12
    assert m["task"] == "cola" and m["labels"] == ["unacceptable", "acceptable"]
    assert m["test"]["in_domain"].keys() == {"mcc", "accuracy", "loss", "n"}  # no macro-F1 for two labels
    assert m["epochs"][0]["partial"]
    assert {"train_loss", "val_loss", "val_accuracy", "val_mcc", "epoch_time_s"} <= m["epochs"][0].keys()
    assert not m["settings"]["pad_to_max"] and "train_cola" in m["command"] and m["seconds_per_step"] > 0
    assert "protocol" not in m and m["evaluated_model"] == "model after the last step (3)"
    assert json.loads((out / "metrics.json").read_text())["mcc_in_domain"] == m["mcc_in_domain"]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"step", "epoch", "checkpoint", "test"} <= {r["event"] for r in records}
    assert "| epoch | training loss | valid. loss |" in (out / "train.log").read_text()
    rows = (out / "predictions_out_of_domain.tsv").read_text().splitlines()
    assert rows[0] == "index\tlabel\tprediction" and len(rows) == 13
    assert len((out / "predictions_in_domain.tsv").read_text().splitlines()) == 11
    names = ["unacceptable", "acceptable"]  # CoLA's labels 0 and 1
    gold = [names.index(r.split("\t")[1]) for r in rows[1:]]
    assert gold == [e.label for e in read_tsv(data / "out_of_domain_dev.tsv")]
    pred = [names.index(r.split("\t")[2]) for r in rows[1:]]  # the MCC can be recomputed from the file
    assert matthews_corrcoef(gold, pred) == pytest.approx(m["mcc_out_of_domain"], abs=1e-6)
    samples = (out / "samples.md").read_text()
    assert samples.count("\n| ") == 6 and "probability" in samples and "| acceptable |" in samples  # header + 5 rows
    ckpt = out / "checkpoint"
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_state.pt"} <= {
        p.name for p in ckpt.iterdir()}
    model = BertForSequenceClassification.from_pretrained(ckpt)
    assert model.config.extra["id2label"] == {"0": "unacceptable", "1": "acceptable"}
    sentences = [e.sentence for e in read_tsv(data / "out_of_domain_dev.tsv")]
    probs = classify(model, load_tokenizer(ckpt), sentences, max_seq_length=64, batch_size=5)
    assert probs.argmax(-1).tolist() == pred  # the library predicts what the evaluation predicted

    m2 = train_cola.main(common + ["--resume", "--pad-to-max"])  # 5 steps per epoch, 2 epochs
    assert m2["steps"] == 10 and [h["epoch"] for h in m2["epochs"]] == [1, 2]
    assert not any(h["partial"] for h in m2["epochs"]) and m2["settings"]["pad_to_max"]
    assert any(r["event"] == "resume" for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()))


def test_train_cola_bad_args(capsys):
    import train_cola

    with pytest.raises(SystemExit):
        train_cola.parse_args(["--max-seq-length", "2"])
    assert "--max-seq-length: expected at least 3" in capsys.readouterr().err
