"""Where the time of bench.py's bart_beam call goes (ours): a torch.profiler table of one call.

    python results/bench/profile_beam.py            # CUDA (bf16, the issue's shape), else CPU (--quick shape)

Prints the call's wall time, the summed GPU kernel time (if it is close to the wall time the call is
GPU-bound, else the host is), and the top operators by GPU and by CPU time.
"""
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench  # noqa: E402

cuda = torch.cuda.is_available()
device = torch.device("cuda" if cuda else "cpu")
env = bench.Env(device, dtype="bf16" if cuda else "fp32", compile=False, cuda_graph=cuda,
                sizes=bench.SIZES["cuda" if cuda else "quick"])
case = bench.bart_beam(env)
for _ in range(3):
    case.ours()


def sync():
    if cuda:
        torch.cuda.synchronize()


sync()
t = time.perf_counter()
case.ours()
sync()
wall = time.perf_counter() - t
with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] * cuda)]) as prof:
    case.ours()
    sync()
events = prof.key_averages()
gpu_us = sum(e.self_device_time_total for e in events) if cuda else 0.0
print(f"{case.shape}: one call {wall * 1e3:.1f} ms wall, {gpu_us / 1e3:.1f} ms of GPU kernels (profiled call)")
if cuda:
    print(events.table(sort_by="self_device_time_total", row_limit=20, max_name_column_width=60))
print(events.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60))
