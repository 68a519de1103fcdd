"""Why beam search in bf16 can return other tokens than HF's: exact ties among the candidates.

    python results/bench/bf16_ties.py        # CPU, bench.py's CPU bart_beam shape, bf16 autocast

Runs bench.py's bart_beam case under bf16 autocast on CPU and prints: bench's check against HF, whether
select_candidates in two stages and the one-stage top-k of HF's kind give the same tokens, and in how
many steps two of the top 2K + 1 candidate scores are exactly equal (a tie the top-k may break either way).
"""
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from beam_variants import candidates_one_stage, patched  # noqa: E402

generation = importlib.import_module("minibart.generation")
env = bench.Env(torch.device("cpu"), dtype="bf16", compile=False, cuda_graph=False, sizes=bench.SIZES["cpu"])
case = bench.bart_beam(env)
print(f"{case.shape}, CPU bf16 autocast: ours vs HF: {case.check}")
two_stage = case.ours()
with patched(generation, "select_candidates", candidates_one_stage):
    one_stage = case.ours()
print(f"two-stage vs one-stage candidates: {(two_stage != one_stage).float().mean().item():.0%} tokens differ")

ties, select = [], generation.select_candidates


def counting(log_probs, beam_scores, n, do_sample):
    B, K, V = log_probs.shape
    top = (log_probs + beam_scores[:, :, None]).view(B, K * V).topk(n + 1).values  # best first
    ties.append(bool((top[:, 1:] == top[:, :-1]).any()))
    return select(log_probs, beam_scores, n, do_sample)


with patched(generation, "select_candidates", counting):
    case.ours()
print(f"steps with two equal scores among the top 2K + 1 candidates: {sum(ties)} of {len(ties)}")
