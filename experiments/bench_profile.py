"""Where the time of one call of a bench.py workload goes (ours, or transformers'): a torch.profiler table.

    python -m experiments.bench_profile bart_beam          # CUDA (bf16, bench's CUDA shapes), else CPU (its CPU shapes)
    python -m experiments.bench_profile bert_qa_train --hf --quick

Prints the call's wall time and, on CUDA, the summed GPU kernel time (close to the wall time: the call is
GPU-bound; well below: the host is), then the top operators by GPU time (CUDA) and by CPU time, grouped
by input shapes with --shapes.
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import bench


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=list(bench.WORKLOADS))
    p.add_argument("--hf", action="store_true", help="profile transformers' call instead of ours")
    p.add_argument("--quick", action="store_true", help="tiny shapes")
    p.add_argument("--shapes", action="store_true", help="group operators by their input shapes")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--rows", type=int, default=20, help="operators listed per table")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    import transformers
    transformers.logging.set_verbosity_error()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    env = bench.Env(device, dtype="bf16" if cuda else "fp32", compile=False, cuda_graph=cuda,
                    sizes=bench.SIZES["quick" if args.quick else device.type])
    torch.manual_seed(0)
    case = bench.WORKLOADS[args.workload](env)
    fn = case.hf if args.hf else case.ours
    for _ in range(2):
        fn()
    wall, _ = bench.timed(fn, device)
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] * cuda)]
    with profile(activities=activities, record_shapes=args.shapes) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages(group_by_input_shape=args.shapes)
    gpu_ms = sum(e.self_device_time_total for e in events) / 1e3 if cuda else None
    print(f"{'HF' if args.hf else 'ours'}, {case.workload}, {case.shape}: one call {wall * 1e3:.1f} ms wall"
          + (f", {gpu_ms:.1f} ms of GPU kernels (profiled call)" if cuda else ""))
    if cuda:
        print(events.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
