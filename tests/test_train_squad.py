"""train_squad.py end to end on tiny data: the smoke run, validation during training with --keep-best,
JSONL files, the held-out validation split, and start-up errors that write nothing."""
import json
import re
import shutil
from types import SimpleNamespace

import pytest
from test_squad import squad_json, tiny_squad

import train_squad
from data.squad import read_squad_file, sample_questions
from minibert import BertForQuestionAnswering
from minicore.errors import UserError
from minicore.tokenizer import load_tokenizer
from minitasks.question_answering import answer
from minitrain.cli import run


def write_squad(folder, train_paragraphs=6):
    """train-v2.0.json (24 questions, one paragraph needing several windows) and dev-v2.0.json (12)."""
    folder.mkdir(exist_ok=True)
    (folder / "train-v2.0.json").write_text(json.dumps(tiny_squad(train_paragraphs, 0)))
    (folder / "dev-v2.0.json").write_text(json.dumps(tiny_squad(3, 1)))
    return folder


def flattened(squad: dict) -> str:
    """Official SQuAD JSON as JSONL in the flattened Hugging Face layout."""
    rows = [{"id": qa["id"], "title": article["title"], "context": para["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for article in squad["data"] for para in article["paragraphs"] for qa in para["qas"]]
    return "".join(json.dumps(r) + "\n" for r in rows)


def tiny_run(model, out, *extra):
    return ["--model", str(model), "--output-dir", str(out), "--batch-size", "4", "--device", "cpu", *extra]


def test_train_squad_smoke(tmp_path, tiny_bert_dir):
    data = write_squad(tmp_path / "squad")
    out = tmp_path / "out"
    metrics = train_squad.main(tiny_run(tiny_bert_dir, out, "--data-dir", str(data), "--max-steps", "2",
                                        "--train-fraction", "0.5", "--log-every", "1", "--max-eval-examples", "10",
                                        "--validation-questions", "0"))
    log = (out / "train.log").read_text()
    for line in ("***** Running training *****", "  Num examples = ", "  Num Epochs = 1",
                 "  Instantaneous batch size per device = 4 (1 process(es), cpu)", "  Total optimization steps = ",
                 "  Validation = none (--validation-questions 0)", "step 2/2 | epoch 1 | loss ", "features/s",
                 "saved checkpoint ", "***** Running evaluation *****", "  Model = model after the last step (2)",
                 "  best_f1 = "):
        assert line in log, line
    assert "GPU" not in log and "cut to it" not in log
    assert sum(x.startswith("step ") for x in log.splitlines()) == 2  # one line per logged step
    assert [json.loads(x)["event"] for x in (out / "log.jsonl").read_text().splitlines()].count("step") == 2
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["steps"] == 2 and saved["data"]["train_questions"] == 12 and saved["data"]["dev_questions"] == 10
    assert saved["data"]["train_features"] > 12  # the long paragraph has several windows
    for k in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1"):
        assert 0 <= saved[k] <= 100, k
    assert saved == json.loads(json.dumps(metrics)) and saved["features_per_s"] > 0
    assert "seeded sample" in saved["eval_set"] and saved["validations"] == [] and saved["best_validation"] is None
    assert "protocol" not in saved and saved["n_best_size"] == 20 and saved["max_answer_length"] == 30
    assert {"max_seq_length": 384, "doc_stride": 128, "max_query_length": 64, "null_threshold": 0.0,
            "train_fraction": 0.5}.items() <= saved["settings"].items()
    preds = json.loads((out / "predictions.json").read_text())
    odds = json.loads((out / "null_odds.json").read_text())
    assert len(preds) == len(odds) == 10 and all(isinstance(v, str) for v in preds.values())
    samples = (out / "samples.md").read_text()
    assert samples.count("\n## ") == 5 and "(unanswerable)" in samples and "- gold: (no answer)" in samples
    ckpt = out / "checkpoint"
    assert (ckpt / "config.json").exists() and (ckpt / "model.safetensors").exists()
    assert (ckpt / "tokenizer.json").exists() or (ckpt / "vocab.txt").exists()
    model = BertForQuestionAnswering.from_pretrained(ckpt)
    assert model.config.hidden_size == 32
    dev = [e for e in read_squad_file(data / "dev-v2.0.json") if e.id in preds]  # the evaluated sample
    answers = answer(model, load_tokenizer(ckpt), dev, batch_size=3, version_2=True, null_threshold=0.0)
    assert {e.id: a.text for e, a in zip(dev, answers)} == preds  # the library picks what the evaluation picked


def test_keep_best_evaluates_the_best_validation_step(tmp_path, tiny_bert_dir):
    data = write_squad(tmp_path / "squad", train_paragraphs=10)
    out = tmp_path / "out"
    m = train_squad.main(tiny_run(tiny_bert_dir, out, "--data-dir", str(data), "--validation-questions", "12",
                                  "--train-fraction", "1", "--epochs", "2", "--eval-every", "3", "--keep-best",
                                  "--lr", "3e-3", "--max-seq-length", "96", "--doc-stride", "48",
                                  "--null-threshold", "1000"))  # always a span: F1 varies from step to step
    steps_per_epoch = -(-m["data"]["train_features"] // 4)
    assert m["data"]["validation_questions"] == 12 and m["data"]["train_questions"] == 28
    evals = m["validations"]
    # every 3 steps, but not 1 step before an epoch's end (less than half an interval: the epoch end's evaluation
    # takes its place), and at each epoch end
    every_3 = (s for s in range(3, 2 * steps_per_epoch, 3) if -s % steps_per_epoch >= 1.5)
    assert [v["step"] for v in evals] == sorted({*every_3, steps_per_epoch, 2 * steps_per_epoch})
    best = m["best_validation"]
    assert best["metric"] == "val_f1" and best["val_f1"] == max(v["val_f1"] for v in evals)
    assert best["step"] == next(v["step"] for v in evals if v["val_f1"] == best["val_f1"])  # the first of the best
    assert m["evaluated_model"].startswith(f"best checkpoint ({out / 'best'}: step {best['step']}, val_f1 ")
    assert f"  Model = {m['evaluated_model']}" in (out / "train.log").read_text()
    assert best["step"] < m["steps"]  # precondition: the best model is not the last one
    # the dev metrics are those of the best checkpoint: the same answers and null odds
    dev = read_squad_file(data / "dev-v2.0.json")
    model = BertForQuestionAnswering.from_pretrained(out / "best")
    answers = answer(model, load_tokenizer(out / "best"), dev, batch_size=8, version_2=True, null_threshold=1000,
                     max_seq_length=96, doc_stride=48)
    assert {e.id: a.text for e, a in zip(dev, answers)} == json.loads((out / "predictions.json").read_text())
    odds = json.loads((out / "null_odds.json").read_text())
    assert [a.null_odds for a in answers] == pytest.approx([odds[e.id] for e in dev], abs=1e-4)
    last = answer(BertForQuestionAnswering.from_pretrained(out / "checkpoint"), load_tokenizer(out / "checkpoint"),
                  dev, batch_size=8, version_2=True, null_threshold=1000, max_seq_length=96, doc_stride=48)
    assert [a.null_odds for a in last] != pytest.approx([odds[e.id] for e in dev], abs=1e-4)


def test_resume_at_max_steps_evaluates_an_interrupted_runs_checkpoint(tmp_path, tiny_bert_dir):
    """A run stopped in its first epoch (only its mid-epoch checkpoint left) is evaluated by --resume with a
    --max-steps it has reached: nothing is trained, the dev metrics are the checkpoint's (experiments/gpu_job.sh
    does this when its time runs out)."""
    data = write_squad(tmp_path / "squad")
    out = tmp_path / "out"
    argv = tiny_run(tiny_bert_dir, out, "--data-dir", str(data), "--train-fraction", "1", "--save-every", "1",
                    "--save-total-limit", "2", "--validation-questions", "0", "--max-eval-examples", "6")
    train_squad.main(argv + ["--max-steps", "2"])
    shutil.rmtree(out / "checkpoint")  # what an interruption after step 1 leaves: checkpoint-1, no epoch record
    m = train_squad.main(argv + ["--resume", "--max-steps", "1"])
    assert m["steps"] == 1 and m["epochs"] == [] and m["evaluated_model"] == "model after the last step (1)"
    log = (out / "train.log").read_text()
    assert f"resuming from {out / 'checkpoint-1'} at step 1" in log and " global_step = 1, 0.0 features/s" in log
    dev = sample_questions(read_squad_file(data / "dev-v2.0.json"), 6 / 12, 42)
    answers = answer(BertForQuestionAnswering.from_pretrained(out / "checkpoint-1"), load_tokenizer(tiny_bert_dir),
                     dev, batch_size=8, version_2=True, null_threshold=0.0, max_seq_length=384, doc_stride=128)
    assert {e.id: a.text for e, a in zip(dev, answers)} == json.loads((out / "predictions.json").read_text())


def test_jsonl_files_train_as_the_official_json(tmp_path, tiny_bert_dir):
    data = write_squad(tmp_path / "squad")
    for name in ("train", "dev"):
        (data / f"{name}.jsonl").write_text(flattened(json.loads((data / f"{name}-v2.0.json").read_text())))
    runs = {}
    for ext in ("jsonl", "json"):
        files = [data / f"{name}{'-v2.0' if ext == 'json' else ''}.{ext}" for name in ("train", "dev")]
        runs[ext] = train_squad.main(tiny_run(tiny_bert_dir, tmp_path / ext, "--train-file", str(files[0]),
                                              "--dev-file", str(files[1]), "--validation-questions", "4",
                                              "--train-fraction", "0.5", "--max-steps", "3", "--log-every", "1",
                                              "--max-query-length", "6"))
    jsonl, official = runs["jsonl"], runs["json"]
    assert jsonl["data"]["train"].endswith("train.jsonl") and jsonl["data"]["dev"].endswith("dev.jsonl")
    assert jsonl["data"]["questions_cut"]["dev"] == 3  # "what is the colour of the moon?": 8 tokens
    log = (tmp_path / "jsonl" / "train.log").read_text()
    assert "questions longer than --max-query-length 6 tokens, cut to it: " in log
    for key in ("train_questions", "train_features", "validation_questions", "dev_questions", "dev_features",
                "questions_cut"):
        assert jsonl["data"][key] == official["data"][key], key
    assert jsonl["epochs"][0]["train_loss"] == official["epochs"][0]["train_loss"]
    assert jsonl["validations"][0]["val_f1"] == official["validations"][0]["val_f1"]
    assert (jsonl["exact"], jsonl["f1"]) == (official["exact"], official["f1"])
    assert (tmp_path / "jsonl" / "predictions.json").read_text() == (tmp_path / "json" / "predictions.json").read_text()


def test_validation_questions_are_held_out_of_training(tmp_path):
    questions = read_squad_file(write_squad(tmp_path, train_paragraphs=10) / "train-v2.0.json")  # 40 questions
    args = SimpleNamespace(validation_questions=7, train_fraction=0.5, seed=3)
    train, val = train_squad.split_training(questions, args)
    assert len(val) == 7 and len(train) == round(0.5 * 33)
    assert not {e.id for e in train} & {e.id for e in val}
    order = {e.id: i for i, e in enumerate(questions)}
    for split in (train, val):
        assert [order[e.id] for e in split] == sorted(order[e.id] for e in split)  # in the file's order
    assert train_squad.split_training(questions, args) == (train, val)  # seeded
    assert train_squad.split_training(questions, SimpleNamespace(**{**vars(args), "seed": 4}))[1] != val
    # without validation, --train-fraction alone picks the training questions
    args.validation_questions = 0
    assert train_squad.split_training(questions, args) == (sample_questions(questions, 0.5, 3), [])


def test_data_files(tmp_path):
    (tmp_path / "train-v2.0.json").write_text(json.dumps(squad_json("v2.0")))
    args = train_squad.parse_args(["--data-dir", str(tmp_path)])
    examples, source = train_squad.load_split(args, "train")
    assert len(examples) == 4 and source.endswith("train-v2.0.json")
    with pytest.raises(UserError, match=r"no dev-v2.0.json for SQuAD 2.0 \(--data-dir, .*\): .* pass --dev-file"):
        train_squad.load_split(args, "dev")
    args = train_squad.parse_args(["--version", "1.1", "--train-file", str(tmp_path / "train-v2.0.json")])
    with pytest.raises(UserError, match=r"--version 1.1, but 1 questions have no answer .*'imp'\): pass --version 2.0"):
        train_squad.load_split(args, "train")


def bad_start(tmp_path):
    """Data for the start-up errors: a SQuAD 2.0 folder and files of every kind."""
    data = write_squad(tmp_path / "squad")
    (data / "empty.jsonl").write_text("")
    (data / "no-questions.json").write_text(json.dumps({"version": "v2.0", "data": []}))
    (data / "train-v1.1.json").write_text(json.dumps(tiny_squad(2, 0)))  # 2.0 data under a 1.1 name
    (data / "dev-v1.1.json").write_text(json.dumps(squad_json("1.1")))
    return data


@pytest.mark.parametrize("argv, status, culprit", [
    (["--train-file", "{data}/empty.jsonl"], 1, r"no questions \(.*empty\.jsonl\)"),
    (["--dev-file", "{data}/no-questions.json"], 1, r"no questions \(.*no-questions\.json\)"),
    (["--train-file", "{data}/missing.json"], 1, r"no such file \(--train-file, '.*missing\.json'\)"),
    (["--data-dir", "{data}/nowhere"], 1, r"no train-v2\.0\.json for SQuAD 2\.0 \(--data-dir, '.*nowhere'\)"),
    (["--version", "1.1"], 1, r"--version 1\.1, but 2 questions have no answer \(SQuAD 2\.0 data\), the first "
                             r"\(.*train-v1\.1\.json, 'p0x'\): pass --version 2\.0"),
    (["--max-seq-length", "1024"], 1,
     r"argument --max-seq-length: expected at most 512 \(the model's max_position_embeddings\), got 1024"),
    (["--validation-questions", "24"], 1, r"24 questions, none left to train on \(--validation-questions, 24\)"),
    (["--train-fraction", "0.01"], 1, r"keeps none of the 20 training questions \(--train-fraction, 0\.01\): "
                                      r"pass at least 0\.05"),
    (["--doc-stride", "0"], 2, r"argument --doc-stride: expected a value >= 1, got '0'"),
    (["--max-query-length", "-1"], 2, r"argument --max-query-length: expected a value >= 1"),
    (["--max-seq-length", "67"], 2, r"argument --max-seq-length: expected more than --max-query-length \+ 3 = 67"),
    (["--train-fraction", "1.5"], 2, r"argument --train-fraction: expected a value > 0 and <= 1, got '1\.5'"),
    (["--null-threshold", "nan"], 2, r"argument --null-threshold: expected a finite number, got 'nan'"),
    (["--validation-questions", "0", "--keep-best"], 2, r"argument --keep-best: needs validation questions"),
    (["--validation-questions", "0", "--eval-every", "5"], 2, r"argument --eval-every: needs validation questions"),
])
def test_start_up_errors_write_nothing(tmp_path, tiny_bert_dir, capsys, argv, status, culprit):
    data = bad_start(tmp_path)
    out = tmp_path / "out"
    argv = tiny_run(tiny_bert_dir, out, "--data-dir", str(data), "--validation-questions", "4",
                    *(a.format(data=data) for a in argv))  # the case's flags come last: they win
    with pytest.raises(SystemExit) as e:
        run(train_squad.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == status and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "Traceback" not in err
    assert re.search(culprit, err), err
    assert not out.exists()
