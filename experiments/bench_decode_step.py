"""CPU decoding speed of ours against transformers, per step, beside the step's bare matrix products.

    python -m experiments.bench_decode_step                       # the grid: 1, 4, 8 sources x 1, 4 beams
    python -m experiments.bench_decode_step --grid 4x4 --weights fp32,bf16,int8 --repeats 5
    python -m experiments.bench_decode_step --grid 4x4 --profile  # where one call of ours spends its time

Model: the BART warm-started from MiniLM-L6 (6+6 layers, 384 wide, 30,522 words), and transformers' BART holding
the same weights (saved, then loaded with its from_pretrained), both in eval mode on one CPU thread. Each call
decodes `--new` tokens for B random sources of `--source` tokens with K beams (greedy at K = 1; min_length =
max_length forces every token). Times are CPU time (time.process_time) of one thread: the median of `--repeats`
calls after a warm-up, ours and transformers' alternating. Per row: sequences/s of each, the ratio, ms per decoder
step (the call's time, less one encoder pass, over the steps) and the bare matrix products of one step halfway
through the output (experiments.bench_growth.step_matmuls, the growth sweep's: what a step must read and multiply).
"--weights" adds rows of ours with its weights for inference (minicore.quantize.inference_weights: packed fp32
or bf16, or int8), against transformers in fp32; "same" says whether ours returned transformers' tokens.
"""
import argparse
import statistics
import tempfile
import time
from functools import partial

import torch
from torch.profiler import profile

from experiments.bench_growth import cpu_seconds as matmul_seconds
from experiments.bench_growth import step_matmuls
from minibart import BartForConditionalGeneration
from minicore.quantize import inference_weights


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def twins():
    """(ours, transformers') with the MiniLM-warm-started weights, eval mode."""
    import transformers
    transformers.logging.set_verbosity_error()
    ours = BartForConditionalGeneration.from_bert("minilm")
    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder)
        hf = transformers.BartForConditionalGeneration.from_pretrained(folder, attn_implementation="sdpa")
    return ours, hf.eval()


def alternating(ours, hf, repeats: int) -> tuple[float, float]:
    """Median CPU seconds of each callable over `repeats` calls, the order alternating."""
    times = {ours: [], hf: []}
    for r in range(repeats):
        for fn in ((ours, hf) if r % 2 == 0 else (hf, ours)):
            times[fn].append(cpu_seconds(fn))
    return statistics.median(times[ours]), statistics.median(times[hf])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="1x1,1x4,4x1,4x4,8x1,8x4", help="sources x beams, comma-separated")
    p.add_argument("--weights", default="model", help="ours as it is (model), or inference_weights' fp32, bf16, int8 "
                   "(comma-separated)")
    p.add_argument("--source", type=int, default=32, help="source length in tokens")
    p.add_argument("--new", type=int, default=32, help="new tokens per sequence")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="a torch.profiler table of one call of ours per row")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ours_fp32, hf = twins()
    print(f"torch {torch.__version__}, 1 thread, CPU time; {args.source}-token sources, {args.new} new tokens")
    print(f"{'rows':>6} {'weights':>7} {'ours seq/s':>10} {'HF seq/s':>9} {'ratio':>6} {'ours ms/step':>12} "
          f"{'HF ms/step':>10} {'matmuls ms':>10}  same")
    for cell in args.grid.split(","):
        B, K = map(int, cell.split("x"))
        src = torch.randint(5, hf.config.vocab_size, (B, args.source), generator=torch.Generator().manual_seed(0))
        kw = {"num_beams": K, "max_length": args.new + 1, "min_length": args.new + 1, "early_stopping": True,
              "no_repeat_ngram_size": 0, "length_penalty": 1.0, "do_sample": False}
        run_hf = partial(hf.generate, src, attention_mask=torch.ones_like(src), **kw)
        with torch.inference_mode():
            want = run_hf()
            encoder = statistics.median(cpu_seconds(partial(hf.model.encoder, src)) for _ in range(3))
        matmuls = matmul_seconds(step_matmuls(ours_fp32.config, B, K, args.source, 1 + args.new // 2), args.repeats)
        for weights in args.weights.split(","):
            ours = ours_fp32 if weights == "model" else inference_weights(ours_fp32, weights)
            run_ours = partial(ours.generate, src, **kw)
            with torch.inference_mode():
                got = run_ours()
                t_ours, t_hf = alternating(run_ours, run_hf, args.repeats)
            same = got.shape == want.shape and bool((got == want).all())
            ms_ours, ms_hf = ((t - encoder) / args.new * 1e3 for t in (t_ours, t_hf))
            print(f"{B:>2}x{K:<3} {weights:>7} {B / t_ours:>10.2f} {B / t_hf:>9.2f} {t_hf / t_ours:>6.2f} "
                  f"{ms_ours:>12.2f} {ms_hf:>10.2f} {matmuls * 1e3:>10.2f}  {same}", flush=True)
            if args.profile:
                with torch.inference_mode(), profile() as prof:
                    run_ours()
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

if __name__ == "__main__":
    main()
