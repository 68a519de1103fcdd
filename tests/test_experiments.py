"""experiments/: each script still runs against the library's API (a smoke run on a tiny model, fake run folders,
or a syntax check of a GPU job script)."""
import json
import os
import statistics
import subprocess
from pathlib import Path

import pytest
import torch

from experiments import random_cross_attention, seeds_summary
from minibart import BartForConditionalGeneration
from minibert import BertModel, load_tokenizer
from minicore.checkpoint import copy_tokenizer_files
from minicore.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_random_cross_attention(tiny_bert_dir, tmp_path):
    """The control checkpoint is from_bert's warm start with fresh cross-attention: N(0, init_std) weights, zero
    biases, unit LayerNorm; every other tensor is the warm start's, and the tokenizer files come along."""
    bert_dir = tmp_path / "bert"  # random LayerNorms too, so that copied and fresh ones differ
    bert = BertModel.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        for p in bert.parameters():
            p.add_(torch.randn_like(p))
    bert.save_pretrained(bert_dir)
    copy_tokenizer_files(tiny_bert_dir, bert_dir)

    out = random_cross_attention.main(["--bert", str(bert_dir), str(tmp_path / "control")])
    warm = BartForConditionalGeneration.from_bert(bert_dir).state_dict()
    control = BartForConditionalGeneration.from_pretrained(out)
    std = control.config.init_std
    fresh = 0
    for name, value in control.state_dict().items():
        if ".cross_attn_norm." in name:
            assert torch.equal(value, torch.ones_like(value) if name.endswith("weight") else torch.zeros_like(value))
        elif ".cross_attn." in name and name.endswith("bias"):
            assert torch.equal(value, torch.zeros_like(value))
        elif ".cross_attn." in name:
            assert abs(value.std().item() - std) < 0.2 * std and abs(value.mean().item()) < 0.2 * std
        else:
            assert torch.equal(value, warm[name]), name
            continue
        assert not torch.equal(value, warm[name]), name
        fresh += 1
    assert fresh == 8 * control.config.decoder_layers  # q, kv, out (weight and bias) and the LayerNorm's two
    assert load_tokenizer(out).get_vocab() == load_tokenizer(tiny_bert_dir).get_vocab()


def write_run(folder, seed, ood, ind):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"mcc_out_of_domain": ood, "mcc_in_domain": ind,
                                                     "train_time_s": 18.2, "settings": {"seed": seed}}))
    return folder


def test_seeds_summary_mean_and_sample_std(tmp_path, capsys):
    ood, ind = [0.21, 0.25, 0.30], [0.5, 0.4, 0.45]
    runs = [str(write_run(tmp_path / f"seed{s}", s, o, i)) for s, o, i in zip((42, 43, 44), ood, ind)]
    summary = seeds_summary.main([*runs, "--output", str(tmp_path / "summary")])
    assert summary["mcc_out_of_domain"]["mean"] == pytest.approx(statistics.mean(ood))
    assert summary["mcc_out_of_domain"]["std"] == pytest.approx(statistics.stdev(ood))  # n - 1: sample std
    assert summary["mcc_in_domain"]["min"] == 0.4 and summary["mcc_in_domain"]["n"] == 3
    out = capsys.readouterr().out
    assert "| seed43 | 43 | 0.2500 | 0.4000 | 18.2 |" in out
    assert f"mcc_out_of_domain: mean {statistics.mean(ood):.4f}, std {statistics.stdev(ood):.4f}" in out
    assert (tmp_path / "summary.md").read_text() == out
    assert json.loads((tmp_path / "summary.json").read_text())["runs"][2]["seed"] == 44


def test_seeds_summary_names_what_is_missing(tmp_path):
    run_dir = str(write_run(tmp_path / "seed42", 42, 0.2, 0.3))
    with pytest.raises(UserError, match="no metrics.json.*unfinished"):
        seeds_summary.main([run_dir, str(tmp_path / "unfinished")])
    with pytest.raises(UserError, match="no such number.*'mcc_test'"):
        seeds_summary.main([run_dir, "--metrics", "mcc_test"])


def test_gpu_job_script_parses_and_refuses_a_bad_part(tmp_path):
    script = str(ROOT / "experiments" / "gpu_job.sh")
    subprocess.run(["bash", "-n", script], check=True)
    done = subprocess.run(["bash", script], env={**os.environ, "OUT": str(tmp_path), "PART": "3"}, cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "PART must be 1, 2 or all" in done.stderr and not any(tmp_path.iterdir())
