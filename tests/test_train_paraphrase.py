"""End to end: train_paraphrase.py on tiny MSRP / PAWS files and a tiny random BERT warm start."""
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

import train_paraphrase
from data.paraphrase import Pair, rescore
from minicore.errors import UserError
from minitrain.cli import run

MSRP_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
SENTENCES = ["The cat sat on the mat .", "A dog ran in the park today .", "He said \"yes\" to the offer .",
             "Shares rose 5 % on Monday .", "The court rejected the appeal .", "She did n't like the film ."]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    (d / "msrp").mkdir(parents=True)
    (d / "paws_qqp").mkdir()
    rows = [f"1\t{i}\t{i + 100}\t{s}\t{SENTENCES[(i + 1) % 6]}\n" for i, s in enumerate(SENTENCES)]
    (d / "msrp" / "msr_paraphrase_train.txt").write_text(MSRP_HEADER + "".join(rows) + "0\t9\t9\tNo .\tYes .\n")
    held = [f"1\t{i}\t{i + 100}\tHeld-out sentence number {i} .\tSentence {i} , held out .\n" for i in range(4)]
    (d / "msrp" / "msr_paraphrase_test.txt").write_text(MSRP_HEADER + "".join(held))
    (d / "paws_qqp" / "train.tsv").write_text("id\tsentence1\tsentence2\tlabel\n"
                                              "1\tWhy is the sky blue ?\tWhat makes the sky blue ?\t1\n"
                                              "2\tIs it true ?\tIs it false ?\t0\n")
    squad = {"data": [{"title": "t", "paragraphs": [{"context": "A short passage. It has two sentences.", "qas": []}]}]}
    (d / "squad.json").write_text(json.dumps(squad))
    return d


def test_smoke_denoise_then_finetune(tmp_path, data_dir, tiny_bert_dir):
    out = tmp_path / "out"
    argv = ["--model", str(tiny_bert_dir), "--data-dir", str(data_dir), "--output-dir", str(out),
            "--denoise-steps", "2", "--denoise-text", str(data_dir / "squad.json"), "--batch-size", "2",
            "--denoise-batch-size", "3",
            "--max-target-length", "8", "--max-seq-length", "16", "--both-directions", "--log-every", "1",
            "--device", "cpu",
            "--encoder-no-repeat-ngram-size", "2"]
    metrics = train_paraphrase.main(argv + ["--max-steps", "2", "--max-eval", "3"])
    for name in ("metrics.json", "generations.jsonl", "samples.md", "log.jsonl", "train.log",
                 "checkpoint/config.json", "checkpoint/model.safetensors", "checkpoint/generation_config.json",
                 "checkpoint/vocab.txt", "denoise/checkpoint/model.safetensors"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["sizes"] == {"train_pairs": 14, "validation_pairs": 0, "eval_pairs": 3, "cut_sentences": 0}
    assert saved == json.loads(json.dumps(metrics)) and saved["validations"] == [] and saved["best_validation"] is None
    assert saved["steps"] == 2 and saved["denoise"]["steps"] == 2 and saved["settings"]["denoise_batch_size"] == 3
    assert saved["evaluated_model"] == "model after the last step (2)" and "protocol" not in saved
    assert "2 steps x batch 3" in (out / "train.log").read_text()
    assert saved["copy_baseline"]["copy_rate"] == 1.0 and saved["copy_baseline"]["self_bleu"] == pytest.approx(100)
    for key in ("bleu", "self_bleu", "ibleu", "copy_rate", "length_ratio"):
        assert key in saved["eval"] and key in saved["eval_no_copy"] and key in saved["eval_sampled"]
    assert saved["eval_no_copy"]["copy_rate"] <= saved["eval"]["copy_rate"]
    lines = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and set(lines[0]) == {"source", "reference", "paraphrase", "paraphrase_no_copy",
                                            "paraphrase_sampled"}
    # recomputable from the file: metrics.json keeps 4 decimals, so the value recomputed from the same texts is at
    # most half a last digit (5e-5) from it, whatever it is (a copy rate of 1/3 is 0.3333 there)
    rescored = rescore(out / "generations.jsonl", lowercase=saved["bleu_lowercase"])
    assert rescored["eval"]["copy_rate"] == pytest.approx(saved["eval"]["copy_rate"], abs=1e-4)
    assert rescored["copy_baseline"]["bleu"] == pytest.approx(saved["copy_baseline"]["bleu"], abs=1e-4)
    sampled = rescore(out / "generations.jsonl", "paraphrase_sampled", lowercase=saved["bleu_lowercase"])
    assert sampled["eval"]["bleu"] == pytest.approx(saved["eval_sampled"]["bleu"], abs=1e-4)
    events = [json.loads(x)["event"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert events.index("stage") < events.index("step") and "eval" in events and events.count("stage") == 2
    samples = (out / "samples.md").read_text()
    assert samples.count("## Sample") == 3 and samples.count("  3. ") == 6
    gen = json.loads((out / "checkpoint" / "generation_config.json").read_text())  # the model's, not the flags
    assert not {"num_beams", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "max_length"} & set(gen)

    # --eval-only on the saved checkpoint reproduces the run's evaluation, with no training
    evaluated = train_paraphrase.main(
        ["--model", str(out / "checkpoint"), "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "eval"),
         "--max-target-length", "8", "--max-seq-length", "16", "--device", "cpu", "--encoder-no-repeat-ngram-size", "2",
         "--max-eval", "3", "--eval-only"])
    assert evaluated["steps"] == 0 and evaluated["epochs"] == [] and evaluated["settings"]["eval_only"]
    assert evaluated["evaluated_model"].endswith("as given (--eval-only)") and evaluated["sizes"]["train_pairs"] == 0
    for key in ("eval", "eval_no_copy", "eval_sampled", "copy_baseline"):
        assert evaluated[key] == saved[key], key
    assert (tmp_path / "eval" / "generations.jsonl").read_text() == (out / "generations.jsonl").read_text()

    # --resume continues the fine-tuning from its checkpoint and skips the finished denoising stage
    again = train_paraphrase.main(argv + ["--max-steps", "3", "--max-eval", "1", "--resume"])
    assert again["steps"] == 3 and again["denoise"] is None and again["sizes"]["eval_pairs"] == 1
    events = [json.loads(x)["event"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert "resume" in events and events.count("stage") == 3


PAIRS = [("The cat sat on the mat.", "A cat was sitting on the mat."),
         ("He bought a new car.", "He purchased a new automobile."),
         ("It is raining today.", "Today it rains."),
         ("She reads every night.", "Every night she reads."),
         ("The meeting was cancelled.", "They called off the meeting."),
         ("Prices rose sharply.", "Prices went up fast."),
         ("The team won the game.", "The game was won by the team."),
         ("I will call you later.", "I'll phone you afterwards."),
         ("The shop opens at nine.", "The store opens at 9."),
         ("They moved to Paris.", "They relocated to Paris.")]


def write_pairs(path, pairs, source="source", target="target"):
    """Pairs as CSV (with a quoted comma) or JSONL, by the file's extension."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({source: s, target: t, "id": i}) + "\n" for i, (s, t) in enumerate(pairs)))
    else:
        path.write_text(f"id,{source},{target}\n" + "".join(f'{i},"{s}","{t}"\n' for i, (s, t) in enumerate(pairs)))
    return path


def run_args(tiny_bert_dir, out, *extra):
    return ["--model", str(tiny_bert_dir), "--output-dir", str(out), "--device", "cpu", "--batch-size", "2",
            "--max-target-length", "6", "--max-seq-length", "16", "--num-beams", "2", "--num-return-sequences", "2",
            "--log-every", "1", *extra]


def test_own_csv_pairs_with_validation_and_keep_best(tmp_path, tiny_bert_dir):
    """CSV pairs: validation pairs held out of the training pairs, the loss evaluated during training, the final
    metrics on --test-file from the best checkpoint."""
    train = write_pairs(tmp_path / "train.csv", PAIRS + [("Copy me.", "copy  me.")])  # a copy: dropped
    test = write_pairs(tmp_path / "test.csv", [("The dog barked loudly.", "The dog was barking, loudly."),
                                               ("We ate dinner early.", "We had an early dinner.")])
    out = tmp_path / "out"
    m = train_paraphrase.main(run_args(tiny_bert_dir, out, "--train-file", str(train), "--test-file", str(test),
                                       "--validation-pairs", "2", "--eval-every", "2", "--keep-best", "--lr", "1e-3",
                                       "--max-steps", "5"))
    assert m["sizes"] == {"train_pairs": 8, "validation_pairs": 2, "eval_pairs": 2, "cut_sentences": 0}
    assert [v["step"] for v in m["validations"]] == [2, 4, 5]  # every 2 steps and where training stops
    best = m["best_validation"]
    assert best["metric"] == "val_loss" and best["val_loss"] == min(v["val_loss"] for v in m["validations"])
    assert m["evaluated_model"].startswith(f"best checkpoint ({out / 'best'}: step {best['step']}, val_loss ")
    assert m["data"] == f"train: {train}; validation: 2 training pairs held out (seed 42); test: {test}"
    log = (out / "train.log").read_text()
    assert ("11 pairs read, 10 after dropping duplicates, copies and test sentences, 8 after removing the validation "
            "pairs and their sentences; 2 validation pairs, 2 test pairs") in log
    assert "test metrics of the best checkpoint" in log and "| validation val_loss" in log
    lines = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [x["source"] for x in lines] == ["The dog barked loudly.", "We ate dinner early."]
    assert (out / "best" / "model.safetensors").is_file()


def test_own_jsonl_pairs_with_a_validation_file_and_ibleu(tmp_path, tiny_bert_dir):
    """JSONL pairs in columns of the user's naming; --validation-metric ibleu follows the best beam's iBLEU."""
    cols = ("text", "paraphrase")
    train = write_pairs(tmp_path / "train.jsonl", PAIRS[:8], *cols)
    validation = write_pairs(tmp_path / "validation.jsonl", PAIRS[8:] + [(PAIRS[0][1], "A cat sat on a mat.")], *cols)
    test = write_pairs(tmp_path / "test.jsonl", [("The dog barked loudly.", "The dog was barking.")], *cols)
    out = tmp_path / "out"
    m = train_paraphrase.main(run_args(tiny_bert_dir, out, "--train-file", str(train), "--validation-file",
                                       str(validation), "--test-file", str(test), "--source-column", "text",
                                       "--target-column", "paraphrase", "--validation-metric", "ibleu",
                                       "--max-steps", "2", "--max-seq-length", "8"))
    # the first training pair shares a sentence with a validation pair: left out
    assert m["sizes"]["train_pairs"] == 7 and m["sizes"]["validation_pairs"] == 3 and m["sizes"]["cut_sentences"] > 0
    (v,) = m["validations"]
    assert {"val_loss", "val_bleu", "val_self_bleu", "val_ibleu"} <= set(v)
    assert m["best_validation"]["metric"] == "val_ibleu"
    assert "cut to --max-seq-length 8 tokens" in (out / "train.log").read_text()


def test_resume_within_the_denoising_stage_equals_an_uninterrupted_run(tmp_path, data_dir, tiny_bert_dir,
                                                                      monkeypatch):
    """Interrupted after 2 of 4 denoising steps, --resume finishes the denoising, then fine-tunes: the final model
    and metrics are those of a run without the interruption."""
    def argv(out):
        return run_args(tiny_bert_dir, out, "--data-dir", str(data_dir), "--denoise-steps", "4", "--epochs", "1",
                        "--max-eval", "2")
    whole = train_paraphrase.main(argv(tmp_path / "whole"))
    fit = train_paraphrase.fit

    def interrupted_fit(model, cfg, *args, **kwargs):
        fit(model, dataclasses.replace(cfg, max_steps=2), *args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(train_paraphrase, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        train_paraphrase.main(argv(tmp_path / "cut"))
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "checkpoint").exists()
    resumed = train_paraphrase.main(argv(tmp_path / "cut") + ["--resume"])
    assert resumed["denoise"]["steps"] == 4 and resumed["eval"] == whole["eval"]
    weights = [load_file(tmp_path / run / "checkpoint" / "model.safetensors") for run in ("whole", "cut")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_validation_pairs_share_no_sentence_with_training_pairs(data_dir):
    args = train_paraphrase.parse_args(["--data-dir", str(data_dir), "--validation-pairs", "2", "--both-directions"])
    pairs = train_paraphrase.load_pairs(args)
    held = {s for p in pairs.validation + pairs.test for s in p}
    assert len(pairs.validation) == 2 and pairs.train and not held & {s for p in pairs.train for s in p}
    assert set(pairs.train) == {q for p in pairs.train for q in (p, (p.target, p.source))}  # both directions


def test_no_test_sentence_is_trained_on_and_max_eval_only_samples_the_evaluated_pairs(tmp_path):
    test = PAIRS[:2]
    train = write_pairs(tmp_path / "train.csv", PAIRS[2:] + [(test[0][0], "x y z."), ("u v w.", test[1][1].upper())])
    base = ["--train-file", str(train), "--test-file", str(write_pairs(tmp_path / "test.csv", test)),
            "--validation-pairs", "0"]
    pairs = train_paraphrase.load_pairs(train_paraphrase.parse_args(base))
    few = train_paraphrase.load_pairs(train_paraphrase.parse_args(base + ["--max-eval", "1"]))
    assert pairs.train == few.train == [Pair(*p) for p in PAIRS[2:]]
    assert pairs.test == [Pair(*p) for p in test] and len(few.test) == 1 and few.test[0] in pairs.test


def test_max_pair_bleu_drops_near_copies_from_training_only(data_dir):
    base = ["--data-dir", str(data_dir)]
    plain = train_paraphrase.load_pairs(train_paraphrase.parse_args(base))
    kept = train_paraphrase.load_pairs(train_paraphrase.parse_args(base + ["--max-pair-bleu", "20"]))
    assert kept.test == plain.test and 0 < len(kept.train) < len(plain.train) and set(kept.train) <= set(plain.train)


def no_positives(data_dir, split):
    path = data_dir / "msrp" / f"msr_paraphrase_{split}.txt"
    path.write_text(path.read_text().replace("\n1\t", "\n0\t"))
    if split == "train":
        (data_dir / "paws_qqp" / "train.tsv").unlink()


def text_file(tmp_path, text):
    (tmp_path / "file.json").write_text(text)
    return str(tmp_path / "file.json")


@pytest.mark.parametrize("setup,argv,message", [
    (lambda d, t: no_positives(d, "train"), [], r"^no training pairs left \(0 pairs read, 0 after dropping"),
    (lambda d, t: no_positives(d, "test"), [], r"^no positive test pairs \(the test files of .*: give test data"),
    (None, ["--eval-only"], r"^--eval-only evaluates a trained BART, and this is a BERT checkpoint \(--model, "),
    (None, ["--denoise-steps", "1", "--denoise-text", "missing.json"],
     r"^no such file \(--denoise-text, 'missing.json'\)"),
    (lambda d, t: None, ["--denoise-steps", "1", "--denoise-text", "{}"], r"^not SQuAD JSON: no data"),
    (None, ["--max-seq-length", "600"], r"^argument --max-seq-length: expected at most 512 \(the model's "
                                        r"max_position_embeddings\), got 600$"),
    (None, ["--max-target-length", "1024"], r"^argument --max-target-length: expected at most 513: the decoder has "
                                            r"512 positions, got 1024$"),
    (None, ["--validation-pairs", "7"], r"^--validation-pairs leaves no training pairs \(--validation-pairs, 7\)"),
    (None, ["--keep-best"], r"^--keep-best needs validation pairs, and none are held out \(--validation-pairs, 0\)"),
    (None, ["--train-file", "missing.csv"], r"^no such file \(--train-file, 'missing.csv'\)"),
    (lambda d, t: (t / "pairs.csv").write_text("source,paraphrase\na,b\n"), ["--train-file", "pairs.csv"],
     r"^missing column 'target' \(.*pairs.csv, line 1\)"),
])
def test_start_up_errors_write_nothing(tmp_path, data_dir, tiny_bert_dir, monkeypatch, setup, argv, message):
    """Each user error stops the run before its output folder exists."""
    monkeypatch.chdir(tmp_path)
    if setup:
        setup(data_dir, tmp_path)
    argv = [text_file(tmp_path, x) if x == "{}" else x for x in argv]
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        train_paraphrase.main(["--model", str(tiny_bert_dir), "--data-dir", str(data_dir), "--output-dir", str(out),
                               "--device", "cpu", *argv])
    assert not out.exists()


def test_a_user_error_is_one_line(tmp_path, data_dir, tiny_bert_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(train_paraphrase.main, ["--model", str(tiny_bert_dir), "--data-dir", str(data_dir), "--output-dir",
                                    str(tmp_path / "out"), "--device", "cpu", "--eval-only"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1
    assert err.startswith("error: --eval-only evaluates a trained BART, and this is a BERT checkpoint (--model, ")


@pytest.mark.parametrize("argv,message", [
    (["--num-return-sequences", "5", "--num-beams", "4"],
     "--num-return-sequences: expected at most num_beams (4), got 5"),
    (["--max-eval", "0"], "--max-eval: expected a value >= 1, got 0"),
    (["--denoise-steps", "-1"], "--denoise-steps: expected a value >= 0"),
    (["--max-seq-length", "2"], "--max-seq-length: expected a value >= 3"),
    (["--validation-pairs", "-1"], "--validation-pairs: expected a value >= 0, got -1"),
    (["--encoder-no-repeat-ngram-size", "-1"], "--encoder-no-repeat-ngram-size: expected an integer >= 0, got -1"),
    (["--top-p", "1.5"], "--top-p: expected a number in (0, 1], got 1.5"),
    (["--num-beams", "0"], "--num-beams: expected an integer > 0, got 0"),
    (["--max-target-length", "1"], "--max-target-length: expected an integer >= 2"),
    (["--no-repeat-ngram-size", "-2"], "--no-repeat-ngram-size: expected an integer >= 0, got -2"),
    (["--eval-only", "--denoise-steps", "5"], "--eval-only: trains nothing, so --denoise-steps does not apply"),
    (["--eval-only", "--train-file", "a.csv", "--keep-best"],
     "--eval-only: trains nothing, so --train-file, --keep-best do not apply"),
    (["--data-dir", "d", "--train-file", "a.csv", "--test-file", "b.csv"],
     "--data-dir: not used, since --test-file and --train-file give all the pairs"),
    (["--validation-metric", "bleu"], "--validation-metric: invalid choice: 'bleu'"),
    (["--max-pair-bleu", "0"], "--max-pair-bleu: expected a value in (0, 100], got 0.0"),
    (["--denoise-batch-size", "0"], "--denoise-batch-size: expected a value >= 1, got 0"),
])
def test_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit):
        train_paraphrase.parse_args(argv)
    assert message in capsys.readouterr().err


def test_generation_defaults_are_the_ones_predict_decodes_with():
    """train_paraphrase.py's generation flags default to minitasks.paraphrasing.EVAL_GENERATION, the one place
    predict.py also reads for a checkpoint without generation settings."""
    import argparse

    from minitasks.paraphrasing import EVAL_GENERATION
    seen = {}
    real_parse = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        seen.update(vars(real_parse(self, [], namespace)))
        raise SystemExit(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(SystemExit):
            train_paraphrase.main([])
    flags = {"max_length": "max_target_length"}
    assert {k: seen[flags.get(k, k)] for k in EVAL_GENERATION} == EVAL_GENERATION
