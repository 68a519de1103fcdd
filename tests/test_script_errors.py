"""The rough edges of a first run with the training scripts: each mistake ends in one clear line that names the
flag and what to do, before the output folder exists; and the logs say what the run does."""
import json
import shutil

import pytest
import torch
from conftest import TINY_BERT
from fit_helpers import train
from test_cola import write_cola
from test_train_classification import rows, write
from test_train_paraphrase import PAIRS, write_pairs
from test_train_squad import tiny_run, write_squad

import train_cola
import train_paraphrase
import train_squad
from minibert import BertConfig, BertModel
from minicore.checkpoint import copy_tokenizer_files
from minitrain.cli import run

MAINS = {"cola": train_cola.main, "squad": train_squad.main, "para": train_paraphrase.main}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert_dir):
    """Data for each script, a BERT whose tokenizer is larger than its vocabulary, and a finished run's folder
    (a checkpoint/ inside, no config.json)."""
    root = tmp_path_factory.mktemp("world")
    small = root / "small_vocab"
    torch.manual_seed(0)
    BertModel(BertConfig(**{**TINY_BERT, "vocab_size": 1000})).save_pretrained(small)
    copy_tokenizer_files("minilm", small)  # 30,522 tokens for 1,000 embedding rows
    run_folder = root / "run"
    shutil.copytree(tiny_bert_dir, run_folder / "checkpoint")
    (run_folder / "metrics.json").write_text("{}")
    cola = write_cola(root / "cola")
    partial_cola = root / "partial_cola"
    shutil.copytree(cola, partial_cola)
    (partial_cola / "out_of_domain_dev.tsv").unlink()
    train_csv = write(root / "train.csv", rows(12))
    return {"bert": str(tiny_bert_dir), "small_vocab": str(small), "run": str(run_folder), "cola": str(cola),
            "partial_cola": str(partial_cola), "train": str(train_csv), "squad": str(write_squad(root / "squad")),
            "pairs": str(write_pairs(root / "pairs.csv", PAIRS[2:])),
            "pairs_test": str(write_pairs(root / "pairs_test.csv", PAIRS[:2])), "root": str(root)}


BASE = {
    "cola": "--model {bert} --data-dir {cola} --batch-size 4 --max-steps 1",
    "rows": "--model {bert} --train-file {train} --batch-size 4 --max-steps 1",
    "squad": "--model {bert} --data-dir {squad} --batch-size 4 --max-steps 1 --validation-questions 2",
    "para": "--model {bert} --train-file {pairs} --test-file {pairs_test} --batch-size 2 --max-steps 1 "
            "--max-target-length 8 --max-seq-length 16",
}

CASES = [  # (script, flags, exit status, what the one error line must hold)
    # evaluating on the training sentences measures nothing learned
    ("rows", "--validation-file {train}", 2, ["--validation-file", "the training file itself"]),
    ("rows", "--test-file {root}/../{root_name}/train.csv", 2, ["--test-file", "the training file itself"]),
    # seeds outside [0, 2**32 - 1], numpy's seed range, are refused by the parser
    ("cola", "--seed -1", 2, ["--seed", "'-1'", "<= 4294967295"]),
    ("cola", "--seed 12345678901234567890", 2, ["--seed", "'12345678901234567890'"]),
    ("squad", "--seed 4294967296", 2, ["--seed", "'4294967296'"]),
    # a tokenizer with ids past the embedding table: refused at start-up, not an IndexError at step 1
    ("cola", "--model {small_vocab}", 1, ["the tokenizer has 30522 tokens", "vocab_size 1000", "--model"]),
    ("squad", "--model {small_vocab}", 1, ["the tokenizer has 30522 tokens", "vocab_size 1000", "--model"]),
    ("para", "--model {small_vocab}", 1, ["the tokenizer has 30522 tokens", "vocab_size 1000", "--model"]),
    # a run's folder given as the model
    ("cola", "--model {run}", 1, ["a run's folder, not a checkpoint", "--model", "did you mean", "run/checkpoint"]),
    ("para", "--model {run}", 1, ["did you mean", "run/checkpoint"]),
    # the columns, the CoLA folder: the flag that fixes it
    ("rows", "--label-column topic", 1, ["missing column 'topic'", "--text-column and --label-column"]),
    ("cola", "--data-dir {partial_cola}", 1, ["no out_of_domain_dev.tsv in the folder", "--data-dir",
                                              "partial_cola", "cola_public/raw"]),
    # one wording for a length past the model's positions
    ("cola", "--max-seq-length 600", 1, ["argument --max-seq-length: expected at most 512 (the model's "
                                         "max_position_embeddings), got 600"]),
    ("squad", "--max-seq-length 600", 1, ["argument --max-seq-length: expected at most 512 (the model's "
                                          "max_position_embeddings), got 600"]),
    ("para", "--max-seq-length 600", 1, ["argument --max-seq-length: expected at most 512 (the model's "
                                         "max_position_embeddings), got 600"]),
    ("para", "--max-target-length 1024", 1, ["argument --max-target-length: expected at most 513"]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}:{c[1]}")
def test_a_mistake_is_one_line_naming_the_flag_and_writes_nothing(world, tmp_path, capsys, case):
    """A first run's mistakes: one line "error: ..." naming the flag and the fix, no traceback, no folder."""
    script, flags, status, culprits = case
    out = tmp_path / "out"
    values = {**world, "root_name": world["root"].rsplit("/", 1)[1]}
    argv = [a.format(**values) for a in f"{BASE[script]} {flags} --output-dir {out} --device cpu".split()]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(MAINS["cola" if script == "rows" else script], argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert exit_.value.code == status and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert not [c for c in culprits if c not in lines[0]], lines[0]
    assert not out.exists()


def test_the_paraphrase_banner_says_when_max_steps_stops_it(world, tmp_path):
    """The fine-tuning banner names the schedule's steps and, when --max-steps cuts them, where it stops."""
    out = tmp_path / "out"
    argv = [a.format(**world) for a in BASE["para"].split()] + ["--output-dir", str(out), "--device", "cpu",
                                                                "--validation-pairs", "0", "--max-eval", "1"]
    train_paraphrase.main(argv)
    banner = next(x for x in (out / "train.log").read_text().splitlines() if x.startswith("fine-tuning"))
    assert "2 epochs x 4 steps, stopping after 1 (--max-steps) |" in banner, banner


def test_an_evaluation_just_before_the_epoch_end_is_left_to_the_epoch_end(tmp_path):
    """--eval-every 5 in an epoch of 6 steps: step 5's evaluation, one step before the epoch-end one, is not made
    (less than half an interval apart); --eval-every 2 keeps step 4's, two steps before the end."""
    _, res = train(tmp_path / "a", n=48, epochs=1, eval_every=5, evaluate=lambda m: {"score": 1.0})
    assert [e["step"] for e in res["evals"]] == [6]
    _, res = train(tmp_path / "b", n=48, epochs=1, eval_every=2, evaluate=lambda m: {"score": 1.0})
    assert [e["step"] for e in res["evals"]] == [2, 4, 6]


def test_the_squad_log_starts_with_its_first_line(world, tmp_path):
    """train.log's first line is the data line, not a blank one; the settings in metrics.json are the parsed
    flags, the resolved precision beside them."""
    out = tmp_path / "out"
    m = train_squad.main(tiny_run(world["bert"], out, "--data-dir", world["squad"], "--max-steps", "1",
                                  "--validation-questions", "2", "--max-eval-examples", "2"))
    assert (out / "train.log").read_text().startswith("SQuAD 2.0: ")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["settings"]["precision"] is None and saved["precision"] == m["precision"] == "fp32"
