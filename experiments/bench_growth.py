"""How time and peak memory grow with the shape, ours beside transformers', on CPU.

Each axis is varied from a base point while the others stay there; every point is one of bench.py's workloads at
that shape (same weights, same inputs, interleaved repeats, CPU time of one thread, peak tensor memory):

    train     BERT QA training step (bench.bert_qa_train)        seq_len, batch              base: 8 x 128
    infer     BERT classification inference (bench.bert_infer)   seq_len, batch              base: 8 x 128
    generate  BART beam search (bench.bart_beam), 32-token sources  batch, beams, new_tokens  base: 4 x 4 beams, 32 new

MiniLM-L6 weights (bench.SIZES["minilm"]), fp32. For generation the table also gives the milliseconds per decoder
step ((call - encoder) / new tokens, with ours' encoder timed alone on the same sources and subtracted from both
models' calls) beside the bare matrix products of one step: the decoder's and the LM head's GEMMs and the attention
products, on tensors of the step's shapes (the self-attention at the mean cache length): about what a step would
cost with nothing left but the arithmetic and the weight reads.

Writes growth.md (the tables and the command), growth.json and growth.png (ours vs HF per axis) into --out.

    python -m experiments.bench_growth --out results/bench/cpu-growth        # MiniLM-L6, every axis: ~15 min
    python -m experiments.bench_growth --out /tmp/growth --quick             # tiny random models: seconds
    python -m experiments.bench_growth --out /tmp/growth --seq-len 64,256 --batch 1,16 --beams 1,4 --new-tokens 16
"""
import argparse
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

import bench
from minicore.files import atomic_write, write_json

AXES = {"train": ("seq_len", "batch"), "infer": ("seq_len", "batch"), "generate": ("batch", "beams", "new_tokens")}
WORKLOAD = {"train": "bert_qa_train", "infer": "bert_infer", "generate": "bart_beam"}
TITLES = {"train": "BERT QA training step", "infer": "BERT classification inference, padded batches",
          "generate": "BART beam search"}


@dataclass
class Plan:
    sizes: bench.Sizes
    base: dict    # axis -> value at the base point, per workload kind
    values: dict  # axis -> values swept
    source_len: int


FULL = Plan(bench.SIZES["minilm"], {"train": dict(seq_len=128, batch=8), "infer": dict(seq_len=128, batch=8),
                                    "generate": dict(batch=4, beams=4, new_tokens=32)},
            dict(seq_len=[64, 128, 256, 512], batch=[1, 4, 16, 64], beams=[1, 2, 4, 8], new_tokens=[16, 32, 64, 128]),
            source_len=32)
QUICK = Plan(bench.SIZES["quick"], {"train": dict(seq_len=32, batch=2), "infer": dict(seq_len=32, batch=2),
                                    "generate": dict(batch=2, beams=2, new_tokens=8)},
             dict(seq_len=[16, 32], batch=[1, 2], beams=[1, 2], new_tokens=[4, 8]), source_len=8)


def point_sizes(plan: Plan, kind: str, shape: dict) -> bench.Sizes:
    """bench's sizes with this workload's shape set to the point's."""
    if kind == "train":
        return replace(plan.sizes, qa=(shape["batch"], shape["seq_len"]))
    if kind == "infer":
        return replace(plan.sizes, infer=(shape["batch"], shape["seq_len"]))
    return replace(plan.sizes, beam=(shape["batch"], shape["beams"], plan.source_len, shape["new_tokens"]))


def cpu_seconds(fn, repeats: int) -> float:
    """Median process CPU time of `repeats` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        c = time.process_time()
        fn()
        times.append(time.process_time() - c)
    return statistics.median(times)


def step_matmuls(config, sources: int, beams: int, source_len: int, past: int):
    """A callable doing the matrix products of one decoder step of `sources` x `beams` rows, and nothing else: per
    layer the self-attention's QKV and output projections, the cross-attention's query and output projections (its
    K/V are projected once per call, not per step), the FFN's two, and the attention products (self over `past`
    cached positions; cross over the source, shared by a source's beams); then the LM head. Each layer has its own
    weights, so they are read from memory as in a real step."""
    D, F_, H, V = config.d_model, config.decoder_ffn_dim, config.decoder_attention_heads, config.vocab_size
    N, Dh = sources * beams, D // H
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)
    layers = [[rand(3 * D, D), rand(D, D), rand(D, D), rand(D, D), rand(F_, D), rand(D, F_)]
              for _ in range(config.decoder_layers)]
    head = rand(V, D)
    x, h = rand(N, D), rand(N, F_)                                        # a step's rows: [N, D], [N, F]
    q_self, k_self, p_self = rand(N, H, 1, Dh), rand(N, H, past, Dh), rand(N, H, 1, past)
    q_cross, k_cross = rand(sources, H, beams, Dh), rand(sources, H, source_len, Dh)
    p_cross = rand(sources, H, beams, source_len)

    def step():
        for qkv, self_out, q, cross_out, up, down in layers:
            F.linear(x, qkv), q_self @ k_self.transpose(-1, -2), p_self @ k_self, F.linear(x, self_out)
            F.linear(x, q), q_cross @ k_cross.transpose(-1, -2), p_cross @ k_cross, F.linear(x, cross_out)
            F.linear(x, up), F.linear(h, down)
        F.linear(x, head)
    return step


def generation_steps(ours, call_ms: dict, plan: Plan, shape: dict, repeats: int) -> dict:
    """ms per decoder step of each model ((call - encoder) / new tokens; call_ms: who -> ms per call) and of the
    bare matrix products."""
    src = bench.random_ids(torch.Generator().manual_seed(0), (shape["batch"], plan.source_len), ours.config.vocab_size)
    with torch.inference_mode():
        encoder = cpu_seconds(lambda: ours.encode(src), repeats)
        matmuls = cpu_seconds(step_matmuls(ours.config, shape["batch"], shape["beams"], plan.source_len,
                                           1 + shape["new_tokens"] // 2), repeats)
    return dict(encoder_ms=encoder * 1e3, matmul_step_ms=matmuls * 1e3,
                **{f"{who}_step_ms": (case_ms - encoder * 1e3) / shape["new_tokens"]
                   for who, case_ms in call_ms.items()})


def measure_point(plan: Plan, kind: str, axis: str, value: int, repeats: int, warmup: int) -> dict:
    shape = {**plan.base[kind], axis: value}
    env = bench.Env(torch.device("cpu"), "fp32", compile=False, cuda_graph=False, sizes=point_sizes(plan, kind, shape))
    torch.manual_seed(0)
    case = bench.WORKLOADS[WORKLOAD[kind]](env)
    r = bench.measure(case, env, repeats, warmup)
    row = dict(kind=kind, axis=axis, value=value, shape=r["shape"], check=r["check"],
               ours_ms=statistics.median(r["ours_cpu_s"]) * 1e3, hf_ms=statistics.median(r["hf_cpu_s"]) * 1e3,
               ours_mib=r["ours_mem_mib"], hf_mib=r["hf_mem_mib"], ours_ckpt_mib=r["ours_ckpt_mem_mib"],
               hf_ckpt_mib=r["hf_ckpt_mem_mib"])
    if kind == "generate":
        call_ms = {"ours": row["ours_ms"], "hf": row["hf_ms"]}
        row.update(generation_steps(case.models[0], call_ms, plan, shape, repeats))
    print(f"  {kind} {axis}={value}: ours {row['ours_ms']:.0f} ms, HF {row['hf_ms']:.0f} ms, "
          f"{row['ours_mib']:.1f} / {row['hf_mib']:.1f} MiB", file=sys.stderr, flush=True)
    return row


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def num(x, digits=1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(rows: list[dict], plan: Plan) -> str:
    """One table per workload kind, its axes in order, each row one point."""
    out = []
    for kind in AXES:
        part = [r for r in rows if r["kind"] == kind]
        if not part:
            continue
        base = ", ".join(f"{k} {v}" for k, v in plan.base[kind].items())
        out += [f"### {kind} ({TITLES[kind]}; base point: {base})", ""]
        head = ["axis", "value", "shape", "ours ms", "HF ms", "HF/ours", "ours MiB", "HF MiB"]
        if kind == "train":
            head += ["ours ckpt MiB", "HF ckpt MiB"]
        if kind == "generate":
            head += ["ours ms/step", "HF ms/step", "matmuls ms/step", "ours / matmuls", "encoder ms"]
        head += ["check"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in part:
            cells = [r["axis"], str(r["value"]), r["shape"], num(r["ours_ms"]), num(r["hf_ms"]),
                     f"{r['hf_ms'] / r['ours_ms']:.2f}x", num(r["ours_mib"]), num(r["hf_mib"])]
            if kind == "train":
                cells += [num(r["ours_ckpt_mib"]), num(r["hf_ckpt_mib"])]
            if kind == "generate":
                cells += [num(r["ours_step_ms"], 2), num(r["hf_step_ms"], 2), num(r["matmul_step_ms"], 2),
                          f"{r['ours_step_ms'] / r['matmul_step_ms']:.2f}x", num(r["encoder_ms"])]
            out.append("| " + " | ".join([*cells, r["check"]]) + " |")
        out.append("")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    """One row of panels per (workload, axis): time (ms per call; per decoder step for generation, with the bare
    matrix products) and peak tensor memory, ours vs HF, both on log scales."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter
    series = list(dict.fromkeys((r["kind"], r["axis"]) for r in rows))
    fig, axes = plt.subplots(len(series), 2, figsize=(10, 3 * len(series)), squeeze=False)
    for (kind, axis), (t_ax, m_ax) in zip(series, axes):
        part = [r for r in rows if (r["kind"], r["axis"]) == (kind, axis)]
        x = [r["value"] for r in part]
        step = kind == "generate"
        for who, label, style in (("ours", "ours", "o-"), ("hf", "transformers", "s--")):
            t_ax.plot(x, [r[f"{who}_step_ms" if step else f"{who}_ms"] for r in part], style, label=label)
            m_ax.plot(x, [r[f"{who}_mib"] for r in part], style, label=label)
        if step:
            t_ax.plot(x, [r["matmul_step_ms"] for r in part], "k:", label="bare matmuls")
        t_ax.set(title=f"{kind}: time vs {axis}", xlabel=axis, ylabel="ms per step" if step else "ms per call")
        m_ax.set(title=f"{kind}: peak tensor memory vs {axis}", xlabel=axis, ylabel="MiB")
        for ax in (t_ax, m_ax):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(x, [str(v) for v in x])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for growth.md, growth.json and growth.png")
    p.add_argument("--quick", action="store_true", help="tiny random models and two values per axis (seconds)")
    p.add_argument("--kinds", default=",".join(AXES), help=f"comma-separated, from {', '.join(AXES)} "
                                                           "(default: all)")
    for axis in ("seq_len", "batch", "beams", "new_tokens"):
        p.add_argument(f"--{axis.replace('_', '-')}", type=ints, help=f"values of {axis} (default: "
                       f"{','.join(map(str, FULL.values[axis]))}; with --quick "
                       f"{','.join(map(str, QUICK.values[axis]))})")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per model and point (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if unknown := [k for k in kinds if k not in AXES]:
        p.error(f"--kinds: unknown {', '.join(unknown)}; expected some of {', '.join(AXES)}")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1, --warmup >= 0")

    torch.set_num_threads(args.threads)
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    plan = QUICK if args.quick else FULL
    plan = replace(plan, values={a: getattr(args, a) or v for a, v in plan.values.items()})
    command = shlex.join(["python", "-m", "experiments.bench_growth", *(sys.argv[1:] if argv is None else argv)])
    started = time.time()
    rows = [measure_point(plan, kind, axis, value, args.repeats, args.warmup)
            for kind in kinds for axis in AXES[kind] for value in plan.values[axis]]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = (f"{bench.device_name(torch.device('cpu'))}; fp32; torch {torch.__version__}, transformers "
             f"{transformers.__version__}; {platform.python_version()}; median CPU time of {args.repeats} calls after "
             f"{args.warmup} warm-up, ours and HF interleaved; MiB = peak of the tensors allocated during one call "
             f"(ckpt: with gradient checkpointing, n/a where the model has none); {time.time() - started:.0f} s")
    text = f"# Growth of time and memory with the shape\n\n`{command}`\n\n{setup}\n\n{markdown(rows, plan)}"
    atomic_write(out / "growth.md", lambda tmp: Path(tmp).write_text(text))
    write_json(out / "growth.json", dict(command=command, setup=setup, rows=rows))
    plot(rows, out / "growth.png")
    print(text)
    return rows


if __name__ == "__main__":
    main()
