"""What one call of a bench.py workload holds in memory at its peak, ours beside transformers'.

bench.py reports the peak alone: the largest sum of live tensor bytes allocated during one call on the
device (weights, optimizer state and inputs made before it are not counted). This says what it is made of:
the PyTorch profiler records every allocation and free of one call, and the tensors live at the peak are
grouped by the operator that made them, forward or backward, with their shapes.

    python -m experiments.bench_memory bert_qa_train             # CUDA (bench's CUDA shapes, bf16), else CPU
    python -m experiments.bench_memory bart_train --quick --top 5
"""
import argparse
from collections import defaultdict

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

import bench


def allocations(fn, device: torch.device) -> list[tuple[int, int, int, str]]:
    """Run fn once under the profiler -> [(time ns, bytes (+ allocated, - freed), address, maker)] on `device`, in
    time order. The maker names the operator the allocation happened in and its input shapes, prefixed with
    the autograd node when it happened in backward."""
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] * (device.type == "cuda"))]
    with profile(activities=activities, profile_memory=True, record_shapes=True) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = []

    def walk(nodes, backward):
        for e in nodes:
            node = e.name.split(": ", 1)[1] if e.name.startswith("autograd::engine::evaluate_function: ") else backward
            if e.typed[0] == _EventType.Allocation and e.typed[1].device.type == device.type:
                alloc = e.typed[1]
                maker = outermost_op(e)
                events.append((e.start_time_ns, alloc.alloc_size, alloc.ptr,
                               f"bwd {node}: {maker}" if node else f"fwd {maker}"))
            walk(e.children, node)
    walk(prof.profiler.kineto_results.experimental_event_tree(), None)
    return sorted(events)


def outermost_op(event) -> str:
    """The outermost operator above an allocation, below an autograd node (e.g. aten::linear, not its
    aten::addmm): what the model code called."""
    op, e = None, event.parent
    while e is not None and not e.name.startswith("autograd::engine"):
        if e.typed[0] == _EventType.TorchOp:
            op = e
        e = e.parent
    return "?" if op is None else f"{op.name} {shapes(op)}"


def shapes(op) -> str:
    if op.typed[0] != _EventType.TorchOp:
        return ""
    return str([list(i.sizes) for i in op.typed[1].inputs if isinstance(i, torch._C._profiler._TensorMetadata)])


def peak(events) -> tuple[int, dict[str, int]]:
    """-> (peak live bytes, live bytes per maker at that moment)."""
    live, total, best, at_best = {}, 0, 0, {}
    for _, size, ptr, maker in events:
        if size > 0:
            live[ptr] = size, maker
        elif ptr in live:  # frees of tensors made before the call are not ours to count
            del live[ptr]
        else:
            continue
        total += size
        if total > best:
            best, at_best = total, dict(live)
    by_maker = defaultdict(int)
    for size, maker in at_best.values():
        by_maker[maker] += size
    return best, dict(by_maker)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=list(bench.WORKLOADS))
    p.add_argument("--quick", action="store_true", help="tiny shapes")
    p.add_argument("--top", type=int, default=12, help="makers listed per model")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    import transformers
    transformers.logging.set_verbosity_error()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    env = bench.Env(device, "bf16" if cuda else "fp32", compile=False, cuda_graph=cuda,
                    sizes=bench.SIZES["quick" if args.quick else device.type])
    torch.manual_seed(0)
    case = bench.WORKLOADS[args.workload](env)
    result = {}
    for who in ("ours", "hf"):
        fn = getattr(case, who)
        fn()  # warm-up: optimizer state and lazily built buffers exist before the measured call
        best, by_maker = peak(allocations(fn, device))
        result[who] = best / 2**20
        print(f"{who}: peak {best / 2**20:.1f} MiB of tensors made during one call of {case.workload} ({case.shape})")
        for maker, size in sorted(by_maker.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {size / 2**20:8.1f} MiB  {maker}")
    print(f"ours/HF: {result['ours'] / result['hf']:.2f}")
    return result


if __name__ == "__main__":
    main()
