"""The training options as the scripts use them: --keep-best, --max-steps on both paraphrase stages,
--grad-accum-steps, and what metrics.json records about the run."""
import json

import pytest
from conftest import HAS_MATPLOTLIB
from test_cola import write_cola
from test_train_paraphrase import data_dir  # noqa: F401  (a fixture)

import train_cola
import train_paraphrase
from minibert import BertForSequenceClassification


def test_cola_keep_best_reports_from_the_best_checkpoint(tmp_path, tiny_bert_dir):
    data, out = write_cola(tmp_path / "cola"), tmp_path / "out"
    m = train_cola.main(["--model", str(tiny_bert_dir), "--data-dir", str(data), "--output-dir", str(out),
                         "--batch-size", "8", "--epochs", "2", "--device", "cpu", "--lr", "1e-3", "--eval-every", "2",
                         "--keep-best", "--grad-accum-steps", "2"])
    best = m["best_validation"]
    assert [v["step"] for v in m["validations"]] == [2, 4, 5, 6, 8, 10]  # every 2 steps and at the epoch ends
    assert best["metric"] == "val_mcc" and best["val_mcc"] == max(v["val_mcc"] for v in m["validations"])
    assert m["evaluated_model"].startswith(f"best checkpoint ({out / 'best'}: step {best['step']}, val_mcc ")
    assert m["world_size"] == 1 and m["precision"] == "fp32" and m["settings"]["grad_accum_steps"] == 2
    assert {"config.json", "model.safetensors", "vocab.txt", "evaluation.json"} <= {
        p.name for p in (out / "best").iterdir()}
    assert BertForSequenceClassification.from_pretrained(out / "best").config.hidden_size == 32
    log = (out / "train.log").read_text()
    assert "test metrics of the best checkpoint" in log and (out / "curves.png").exists() == HAS_MATPLOTLIB


def test_max_steps_caps_both_paraphrase_stages(tmp_path, data_dir, tiny_bert_dir):  # noqa: F811
    out = tmp_path / "out"
    m = train_paraphrase.main(["--model", str(tiny_bert_dir), "--data-dir", str(data_dir), "--output-dir", str(out),
                               "--denoise-steps", "5", "--batch-size", "4", "--max-target-length", "8",
                               "--max-seq-length", "16", "--device", "cpu", "--max-steps", "2", "--max-eval", "2",
                               "--log-every", "1"])
    assert m["denoise"]["steps"] == 2 and m["steps"] == 2
    assert "5 steps x batch 4, stopping after 2 (--max-steps)" in (out / "train.log").read_text()
    state = json.loads((out / "denoise" / "checkpoint" / "trainer_state.json").read_text())
    assert state["settings"]["batch_size"] == 4 and state["settings"]["data"]  # the denoising data's fingerprint


@pytest.mark.parametrize("argv,message", [
    (["--early-stopping-patience", "0"], "--early-stopping-patience: expected a value >= 1"),
    (["--grad-accum-steps", "0"], "--grad-accum-steps: expected a value >= 1"),
    (["--save-total-limit", "0"], "--save-total-limit: expected a value >= 1"),
])
def test_paraphrase_training_options(capsys, argv, message):
    with pytest.raises(SystemExit):
        train_paraphrase.parse_args(argv)
    assert message in capsys.readouterr().err
