"""bench.py smoke test: `--quick` runs every workload on CPU and reports a well-formed table and JSON.

Speed itself is never asserted here (that is bench.py's job, on a quiet machine); what is asserted is
that each workload ran both models, that they computed the same thing, and that the report is whole.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_reports_every_workload(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = ["--quick", "--device", "cpu", "--threads", "1", "--repeats", "2", "--warmup", "0", "--json", str(out)]
    proc = subprocess.run([sys.executable, "bench.py", *argv], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["workload"] for r in result["results"]] == list(bench.WORKLOADS)
    assert result["command"].startswith("python bench.py --quick") and result["dtype"] == "fp32"
    for r in result["results"]:
        assert r["ours"] > 0 and r["hf"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["hf"])
        assert len(r["ours_s"]) == len(r["hf_s"]) == len(r["ours_cpu_s"]) == 2 and r["cpu_time_ratio"] > 0
        assert r["shape"].startswith(("BERT tiny", "BART tiny"))
        for mem in (r["ours_mem_mib"], r["hf_mem_mib"]):
            assert mem is None or mem >= 0
        if r["workload"] == "bart_beam":
            assert r["check"] == "same tokens"
        else:  # fp32 eval outputs of the same weights on the same input
            assert r["check"].startswith("max diff ") and float(r["check"].split()[-1]) < 1e-4, r

    lines = proc.stdout.splitlines()
    assert lines[0] == "# " + result["command"]
    head = next(i for i, line in enumerate(lines) if line.startswith("workload"))
    assert lines[head].split() == ["workload", "shape", "unit", "ours", "HF", "ours/HF", "spread", "by", "CPU", "time",
                                   "ours", "MiB", "HF", "MiB", "check"]
    rows = lines[head + 2: head + 2 + len(bench.WORKLOADS)]
    assert [row.split()[0] for row in rows] == list(bench.WORKLOADS)
    assert all(f"{r['ratio']:.2f}x" in row for r, row in zip(result["results"], rows))


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "bert_qa_train,nope"], "unknown nope"),
    (["--repeats", "0"], "--repeats and --threads must be >= 1"),
    (["--dtype", "fp16"], "invalid choice: 'fp16'"),
])
def test_bad_arguments_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
