"""What DistributedDataParallel's wrapping costs a training step on one device: ms per step of a bench.py
training workload with each model called plainly and through DDP in a one-process group (nccl on CUDA,
gloo on CPU), the four steps interleaved in one process. With one process the gradient all-reduce has
nothing to average, so the difference is DDP's own work: its forward hooks, the gradient buckets and
the all-reduce launches (what `torchrun --nproc_per_node 1` adds to a run).

    python -m experiments.bench_ddp                                   # bert_qa_train, CUDA (bf16) else CPU
    python -m experiments.bench_ddp --workloads bert_qa_train,bart_train --repeats 20 --json path/to/ddp.json
    python -m experiments.bench_ddp --quick --device cpu              # tiny shapes: a smoke test
"""
import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.distributed as dist

import bench
from minicore.files import atomic_write

TRAINING = ("bert_qa_train", "cola_train", "bart_train")


def one_process_group(device: torch.device) -> None:
    """A process group of this process alone, as torchrun --nproc_per_node 1 makes (no rendezvous needed)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                            world_size=1)


def measure(cases: dict[str, bench.Case], device: torch.device, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each case's ours and hf, the cases' calls interleaved and their order rotated
    each repeat."""
    calls = {f"{name}/{who}": getattr(case, who) for name, case in cases.items() for who in ("ours", "hf")}
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {key: [] for key in calls}
    keys = list(calls)
    for r in range(repeats):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            times[key].append(bench.timed(calls[key], device)[0])
    return times


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--workloads", default="bert_qa_train", help=f"comma-separated, from {','.join(TRAINING)}")
    p.add_argument("--repeats", type=int, default=10, help="timed steps of each variant; the median is reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each variant first")
    p.add_argument("--quick", action="store_true", help="tiny shapes")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if unknown := [w for w in names if w not in TRAINING]:
        p.error(f"--workloads: unknown {', '.join(unknown)}; expected some of {', '.join(TRAINING)}")
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    one_process_group(device)
    backend = dist.get_backend()
    dtype = "bf16" if device.type == "cuda" else "fp32"
    sizes = bench.SIZES["quick" if args.quick else device.type]
    rows = []
    try:
        for name in names:
            cases = {}
            for ddp in (False, True):
                torch.manual_seed(0)
                env = bench.Env(device, dtype, compile=False, cuda_graph=False, sizes=sizes, ddp=ddp)
                cases["ddp" if ddp else "plain"] = bench.WORKLOADS[name](env)
            times = measure(cases, device, args.repeats, args.warmup)
            for who, label in (("ours", "ours"), ("hf", "HF")):
                plain, ddp = (1e3 * statistics.median(times[f"{v}/{who}"]) for v in ("plain", "ddp"))
                rows.append(dict(workload=name, shape=cases["plain"].shape, model=label, backend=backend,
                                 plain_ms=plain, ddp_ms=ddp,
                                 ratio=ddp / plain, plain_s=times[f"plain/{who}"], ddp_s=times[f"ddp/{who}"]))
    finally:
        dist.destroy_process_group()

    print(f"# DistributedDataParallel in a {backend} process group of 1 on {bench.device_name(device)}; {dtype}; "
          f"median of {args.repeats} steps after {args.warmup} warm-up, the four variants interleaved")
    head = f"{'workload':<14} {'model':<5} {'plain ms/step':>13} {'DDP ms/step':>11} {'DDP/plain':>9}  shape"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['workload']:<14} {r['model']:<5} {r['plain_ms']:>13.2f} {r['ddp_ms']:>11.2f} {r['ratio']:>8.3f}x  "
              f"{r['shape']}")
    if args.json:
        atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=2) + "\n"))
    return rows


if __name__ == "__main__":
    main()
