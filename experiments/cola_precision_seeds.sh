#!/usr/bin/env bash
# CoLA, the tutorial's protocol, MiniLM, on CPU: seeds 42-44, each with bf16 autocast and with fp32, one run at a time
# on one thread (the effect of bf16 on quality, and its speed). Then the mean and spread of each precision's MCC.
#     DATA=../shared/data/cola/raw OUT=out/cola-precision bash experiments/cola_precision_seeds.sh
# Note: --seed also seeds the 90/10 train/validation split, so the seeds differ in their split too.
set -euo pipefail
DATA=${DATA:-../shared/data/cola/raw} OUT=${OUT:-out/cola-precision}
export OMP_NUM_THREADS=1
for seed in 42 43 44; do
  for precision in bf16 fp32; do
    /usr/bin/time -v -o "$OUT/$precision-seed$seed.time.txt" python train_cola.py --model minilm --data-dir "$DATA" \
      --device cpu --precision "$precision" --seed "$seed" --output-dir "$OUT/$precision-seed$seed"
  done
done
for precision in bf16 fp32; do
  python -m experiments.seeds_summary "$OUT"/$precision-seed* --metrics mcc_out_of_domain,mcc_in_domain \
    --output "$OUT/summary-$precision"
done
