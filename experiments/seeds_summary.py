"""Mean and spread of a metric over runs that differ only in --seed (e.g. CoLA's MCC, which moves by several
points from one seed to the next on a dataset this small).

    python -m experiments.seeds_summary path/to/cola_seed42 path/to/cola_seed43 ...
    python -m experiments.seeds_summary path/to/runs/* --metrics mcc_out_of_domain --output path/to/summary

Reads each run's metrics.json; prints a Markdown table (one row per run: its seed, each metric and the
training time) and the mean, sample standard deviation (n - 1), minimum and maximum of each metric; with
--output also writes them to OUTPUT.md and OUTPUT.json.
"""
import json
import statistics
import sys
from pathlib import Path

from minicore.errors import UserError
from minicore.files import write_json, write_text
from minitrain.cli import ArgumentParser, run


def read_run(folder: Path, metrics: list[str]) -> dict:
    path = folder / "metrics.json"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("no metrics.json (the run did not finish)", "run folder", str(folder),
                        "leave the folder out or finish its run") from None
    except json.JSONDecodeError as e:
        raise UserError(f"not JSON ({e.msg}, line {e.lineno})", "metrics file", str(path), "rerun the run") from None
    missing = [m for m in metrics if not isinstance(values.get(m), (int, float))]
    if missing:
        raise UserError("no such number in metrics.json", str(path), ", ".join(missing),
                        f"choose --metrics from {', '.join(k for k, v in values.items() if isinstance(v, float))}")
    return {"run": str(folder), "seed": values.get("settings", {}).get("seed"),
            "train_time_s": values.get("train_time_s"), **{m: values[m] for m in metrics}}


def summarize(rows: list[dict], metrics: list[str]) -> dict:
    """{metric: {"mean", "std" (n - 1; None for one run), "min", "max", "n"}}"""
    out = {}
    for m in metrics:
        xs = [r[m] for r in rows]
        out[m] = {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None,
                  "min": min(xs), "max": max(xs), "n": len(xs)}
    return out


def markdown(rows: list[dict], summary: dict, metrics: list[str]) -> str:
    lines = ["| run | seed | " + " | ".join(metrics) + " | train s |", "|---|---|" + "---|" * (len(metrics) + 1)]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | {r['seed']} | " + " | ".join(f"{r[m]:.4f}" for m in metrics)
                     + f" | {r['train_time_s']} |")
    lines.append("")
    for m in metrics:
        s = summary[m]
        std = "n/a" if s["std"] is None else f"{s['std']:.4f}"
        lines.append(f"{m}: mean {s['mean']:.4f}, std {std} (n - 1), min {s['min']:.4f}, max {s['max']:.4f}, "
                     f"{s['n']} runs")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+", type=Path, help="run folders, each with a metrics.json")
    p.add_argument("--metrics", default="mcc_out_of_domain,mcc_in_domain",
                   help="comma-separated top-level numbers of metrics.json")
    p.add_argument("--output", type=Path, help="also write OUTPUT.md and OUTPUT.json")
    args = p.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    rows = [read_run(folder, metrics) for folder in args.runs]
    summary = summarize(rows, metrics)
    text = markdown(rows, summary, metrics)
    sys.stdout.write(text)
    if args.output:
        write_text(args.output.with_suffix(".md"), text)
        write_json(args.output.with_suffix(".json"), {"runs": rows, "summary": summary})
    return summary


if __name__ == "__main__":
    run(main)
