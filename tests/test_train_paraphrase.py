"""End to end: train_paraphrase.py on tiny MSRP / PAWS files and a tiny random BERT warm start."""
import json

import pytest

import train_paraphrase
from data.paraphrase import rescore
from minibert.cli import UserError

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
            "--max-length", "8", "--max-seq-length", "16", "--both-directions", "--log-every", "1", "--device", "cpu",
            "--encoder-no-repeat-ngram-size", "2"]
    metrics = train_paraphrase.main(argv + ["--max-steps", "2", "--max-eval", "3"])
    for name in ("metrics.json", "generations.jsonl", "samples.md", "log.jsonl", "train.log",
                 "checkpoint/config.json", "checkpoint/model.safetensors", "checkpoint/generation_config.json",
                 "checkpoint/vocab.txt", "denoise/checkpoint/model.safetensors"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["sizes"] == {"train_pairs": 14, "eval_pairs": 3} and saved == json.loads(json.dumps(metrics))
    assert saved["steps"] == 2 and saved["denoise"]["steps"] == 2 and saved["protocol"]["denoise_batch_size"] == 3
    assert "2 steps x batch 3" in (out / "train.log").read_text()
    assert saved["copy_baseline"]["copy_rate"] == 1.0 and saved["copy_baseline"]["self_bleu"] == pytest.approx(100)
    for key in ("bleu", "self_bleu", "ibleu", "copy_rate", "length_ratio"):
        assert key in saved["eval"] and key in saved["eval_no_copy"] and key in saved["eval_sampled"]
    assert saved["eval_no_copy"]["copy_rate"] <= saved["eval"]["copy_rate"]
    lines = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and set(lines[0]) == {"source", "reference", "paraphrase", "paraphrase_no_copy",
                                            "paraphrase_sampled"}
    rescored = rescore(out / "generations.jsonl", lowercase=saved["bleu_lowercase"])  # recomputable from the file
    assert rescored["eval"]["copy_rate"] == pytest.approx(saved["eval"]["copy_rate"])
    assert rescored["copy_baseline"]["bleu"] == pytest.approx(saved["copy_baseline"]["bleu"])
    sampled = rescore(out / "generations.jsonl", "paraphrase_sampled", lowercase=saved["bleu_lowercase"])
    assert sampled["eval"]["bleu"] == pytest.approx(saved["eval_sampled"]["bleu"])
    events = [json.loads(x)["event"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert events.index("stage") < events.index("step") and "eval" in events and events.count("stage") == 2
    samples = (out / "samples.md").read_text()
    assert samples.count("## Sample") == 3 and samples.count("  3. ") == 6
    gen = json.loads((out / "checkpoint" / "generation_config.json").read_text())  # the model's, not the flags
    assert not {"num_beams", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "max_length"} & set(gen)

    # --eval-only on the saved checkpoint reproduces the run's evaluation, with no training
    evaluated = train_paraphrase.main(
        ["--model", str(out / "checkpoint"), "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "eval"),
         "--max-length", "8", "--max-seq-length", "16", "--device", "cpu", "--encoder-no-repeat-ngram-size", "2",
         "--max-eval", "3", "--eval-only"])
    assert evaluated["steps"] == 0 and evaluated["epochs"] == [] and evaluated["protocol"]["eval_only"]
    for key in ("eval", "eval_no_copy", "eval_sampled", "copy_baseline"):
        assert evaluated[key] == saved[key], key
    assert (tmp_path / "eval" / "generations.jsonl").read_text() == (out / "generations.jsonl").read_text()

    # --resume continues the fine-tuning from its checkpoint and skips the finished denoising stage
    again = train_paraphrase.main(argv + ["--max-steps", "3", "--max-eval", "1", "--resume"])
    assert again["steps"] == 3 and again["denoise"] is None and again["sizes"]["eval_pairs"] == 1
    events = [json.loads(x)["event"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert "resume" in events and events.count("stage") == 3


def test_max_length_beyond_the_model_positions_fails_before_training(tmp_path, data_dir, tiny_bert_dir):
    """--max-length is checked against the model's positions (512 for the tiny BERT warm start) before any training."""
    out = tmp_path / "out"
    argv = ["--model", str(tiny_bert_dir), "--data-dir", str(data_dir), "--output-dir", str(out), "--device", "cpu",
            "--max-steps", "1", "--max-length", "1024"]
    with pytest.raises(UserError, match=r"^argument --max-length: expected at most 513: the decoder has 512 "
                                        r"positions, got 1024$"):
        train_paraphrase.main(argv)
    assert not (out / "checkpoint").exists()


def test_max_pair_bleu_drops_near_copies_from_training_only(data_dir):
    base = ["--data-dir", str(data_dir)]
    train, held, _ = train_paraphrase.load_pairs(train_paraphrase.parse_args(base))
    kept, held_too, _ = train_paraphrase.load_pairs(train_paraphrase.parse_args(base + ["--max-pair-bleu", "20"]))
    assert held_too == held and 0 < len(kept) < len(train) and set(kept) <= set(train)


@pytest.mark.parametrize("argv,message", [
    (["--num-return-sequences", "5", "--num-beams", "4"],
     "--num-return-sequences: expected at most num_beams (4), got 5"),
    (["--max-eval", "0"], "--max-eval: expected a value >= 1, got 0"),
    (["--denoise-steps", "-1"], "--denoise-steps: expected a value >= 0"),
    (["--max-seq-length", "2"], "--max-seq-length: expected a value >= 3"),
    (["--encoder-no-repeat-ngram-size", "-1"], "--encoder-no-repeat-ngram-size: expected an integer >= 0, got -1"),
    (["--top-p", "1.5"], "--top-p: expected a number in (0, 1], got 1.5"),
    (["--num-beams", "0"], "--num-beams: expected an integer > 0, got 0"),
    (["--max-length", "1"], "--max-length: expected an integer >= 2"),
    (["--no-repeat-ngram-size", "-2"], "--no-repeat-ngram-size: expected an integer >= 0, got -2"),
    (["--eval-only", "--denoise-steps", "5"], "--eval-only: trains nothing"),
    (["--max-pair-bleu", "0"], "--max-pair-bleu: expected a value in (0, 100], got 0.0"),
    (["--denoise-batch-size", "0"], "--denoise-batch-size: expected a value >= 1, got 0"),
])
def test_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit):
        train_paraphrase.parse_args(argv)
    assert message in capsys.readouterr().err

