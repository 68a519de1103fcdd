"""The bench experiments run (tiny shapes, CPU), so they cannot rot: experiments/bench_*.py and gpu_bench.sh."""
import subprocess
from pathlib import Path

import pytest
import torch

from experiments import bench_beam_variants, bench_ddp, bench_memory, bench_profile

ROOT = Path(__file__).resolve().parents[1]


def test_bench_memory_reports_both_peaks(capsys):
    peaks = bench_memory.main(["bart_train", "--quick", "--top", "3"])
    out = capsys.readouterr().out
    assert peaks["ours"] > 0 and peaks["hf"] > 0 and f"ours/HF: {peaks['ours'] / peaks['hf']:.2f}" in out
    assert "_LMHeadLoss" in out  # our loss is where the LM head's memory is made


@pytest.mark.parametrize("argv", [["bart_beam", "--quick", "--rows", "3"], ["cola_train", "--quick", "--hf"]])
def test_bench_profile_prints_a_table(argv, capsys):
    bench_profile.main(argv)
    out = capsys.readouterr().out
    assert "one call" in out and "Self CPU" in out


def test_bench_beam_variants_keep_the_tokens(capsys):
    """On CPU each variant (an optimization undone, another attention path) must return the default's tokens."""
    bench_beam_variants.main(["--repeats", "1"])
    lines = [line for line in capsys.readouterr().out.splitlines() if "x HF" in line]
    assert len(lines) == 5 and all(line.endswith("same tokens") for line in lines)


def test_gpu_bench_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "experiments" / "gpu_bench.sh")], check=True)


def test_bench_ddp_times_both_models_with_and_without_ddp(capsys):
    rows = bench_ddp.main(["--quick", "--device", "cpu", "--threads", "1", "--repeats", "1", "--warmup", "0"])
    assert [(r["workload"], r["model"], r["backend"]) for r in rows] == [("bert_qa_train", "ours", "gloo"),
                                                                         ("bert_qa_train", "HF", "gloo")]
    assert all(r["plain_ms"] > 0 and r["ddp_ms"] > 0 for r in rows)
    assert "DDP ms/step" in capsys.readouterr().out
    assert not torch.distributed.is_initialized()  # the one-process group is gone again
