"""bench.py's bart_beam call of ours under variants of the decode step, against HF, in one process.

    python -m experiments.bench_beam_variants      # CUDA (bf16, bench's CUDA shape), else CPU (bench's --quick shape)

Each variant changes one thing for the whole call (and is undone after): one of rows 15-17 of
results/bench/NOTES.md undone (what it gave), the decoder's self-attention on the math path, or SDPA
limited to some CUDA backends. Per variant: the median wall time of `--repeats` calls (after one
warm-up), the ratio to HF's median, and whether its tokens are those of the default.
"""
import argparse
import contextlib
import statistics

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import bench
import minibart.generation as generation
import minibart.model


@contextlib.contextmanager
def patched(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def reorder_elementwise(cache, index, in_place=True):
    """KVCache.reorder (in place) before row 16: gathers elements of the cache's own dtype."""
    for layer in cache.kv:
        layer.copy_(layer.index_select(1, index))


def candidates_one_stage(log_probs, beam_scores, n, do_sample):
    """select_candidates before row 15 (without sampling): one top-n over all K x V continuations."""
    B, K, V = log_probs.shape
    top, cand = (log_probs + beam_scores[:, :, None]).view(B, K * V).topk(n)
    return top, cand // V, cand % V


def decoder_self_attention(model, impl: str) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for layer in model.model.decoder.layers:
        stack.enter_context(patched(layer.attn, "impl", impl))
    return stack


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    env = bench.Env(torch.device("cuda" if cuda else "cpu"), dtype="bf16" if cuda else "fp32", compile=False,
                    cuda_graph=cuda, sizes=bench.SIZES["cuda" if cuda else "quick"])
    made = []  # the models bench.bart_beam builds
    pair = bench.bart_pair
    bench.bart_pair = lambda e: made.append(pair(e)) or made[-1]
    case = bench.bart_beam(env)
    ours = made[0][0]

    def time_calls(fn):
        out = fn()  # warm-up
        return statistics.median(bench.timed(fn, env.device)[0] for _ in range(args.repeats)), out

    variants = {
        "default": contextlib.nullcontext,
        "LM head unpadded (before row 17)": lambda: patched(minibart.model, "decoding_rows", lambda rows, device: rows),
        "reorder by elements (before row 16)": lambda: patched(minibart.model.KVCache, "reorder", reorder_elementwise),
        "candidates in one stage (before row 15)": lambda: patched(generation, "select_candidates",
                                                                   candidates_one_stage),
        "decoder self-attention: math path": lambda: decoder_self_attention(ours, "math"),
    }
    if cuda:
        variants |= {f"SDPA {b.name} only": (lambda b=b: sdpa_kernel([b, SDPBackend.MATH]))
                     for b in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION)}
        variants["SDPA flash + efficient (no cuDNN)"] = lambda: sdpa_kernel(
            [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    hf_s, _ = time_calls(case.hf)
    print(f"{case.shape} ({env.device.type}, {env.dtype}): HF {hf_s * 1e3:.1f} ms per call; "
          f"median of {args.repeats}")
    reference = None
    for name, variant in variants.items():
        with variant():
            s, out = time_calls(case.ours)
        reference = out if reference is None else reference
        same = out.shape == reference.shape and bool((out == reference).all())
        print(f"{name:40s} {s * 1e3:8.1f} ms  {hf_s / s:5.2f}x HF  {'same tokens' if same else 'TOKENS DIFFER'}")
    hf_s2, _ = time_calls(case.hf)
    print(f"HF again: {hf_s2 * 1e3:.1f} ms per call")


if __name__ == "__main__":
    main()
