#!/usr/bin/env bash
# The GPU job prepared for the next lent GPU, for what session 3 left open in #6 and #7:
#     python ../shared/tools/device_bundle.py .bundle          # fp16 MiniLM weights + the data
#     OUT=<folder> bash results/gpu_next.sh                      # (SMOKE=1: a few steps, for a CPU dry run)
#   device call: carry [".bundle/minilm", ".bundle/paraphrase", ".bundle/squad/train-v2.0.json.gz"], and tar $OUT
#   into one file at the end (at most 8 files come back).
# 1. on the quiet GPU: bench.py bart_beam (measures session 3's two-stage candidates and 8-byte-word reorder,
#    predicted ~3.1x), the profile of one call, then the CUDA tests (the graph path with those changes);
# 2. paraphrase: 3,000 denoising steps at batch 128 (8x session 3's denoising data; a larger batch keeps the GPU
#    busy), then the blog's 2 epochs; from its denoised checkpoint, side by side, 4 epochs on both directions.
set -u
export PYTHONPATH=. HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:?set OUT}
M=.bundle/minilm D=/tmp/gpu_data R=/tmp/gpu_runs
PY=$(command -v python || command -v python3)
DEADLINE=${DEADLINE:-530}
mkdir -p $D/squad $R "$OUT/bench"
cp -r .bundle/paraphrase $D/
gunzip -c .bundle/squad/train-v2.0.json.gz > $D/squad/train-v2.0.json
if [ "${SMOKE:-0}" = 1 ]; then
  S="--max-steps 3" P="--max-eval 20" DN=3 DB=4 BENCH="--quick --repeats 2 --warmup 1"
else
  S="" P="" DN=3000 DB=128 BENCH="--repeats 7"
fi
(nvidia-smi || true; $PY -c "import torch, transformers; print(torch.__version__, transformers.__version__)") \
  > "$OUT/machine.txt" 2>&1
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( DEADLINE - $(elapsed) )); }
run() {  # run NAME SECONDS command...: time-limited, console and artifacts (not the checkpoint) kept in $OUT/NAME
  local name=$1 secs=$2; shift 2
  mkdir -p "$OUT/$name"
  echo "$*" > "$OUT/$name/command.txt"
  timeout "$secs" "$@" --output-dir "$R/$name" > "$OUT/$name/console.txt" 2>&1
  echo "exit $? after $(elapsed) s" >> "$OUT/$name/console.txt"
  for f in train.log log.jsonl metrics.json samples.md generations.jsonl; do
    [ -f "$R/$name/$f" ] && cp "$R/$name/$f" "$OUT/$name/"
  done
}
para="$PY train_paraphrase.py --data-dir $D/paraphrase --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 \
  --eval-batch-size 64 --log-every 50 $S $P"

# 1. bench.py, the profile and the CUDA tests, on the quiet GPU
timeout 70 $PY bench.py $BENCH --workloads bart_beam --json "$OUT/bench/bart_beam.json" > "$OUT/bench/bart_beam.txt" 2>&1
echo "exit $? after $(elapsed) s" >> "$OUT/bench/bart_beam.txt"
timeout 50 $PY results/bench/profile_beam.py > "$OUT/bench/profile_beam.txt" 2>&1
timeout 60 $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider > "$OUT/tests_cuda.txt" 2>&1
echo "phase 1 done: $(elapsed) s" >> "$OUT/machine.txt"

# 2. paraphrase: larger-batch denoising, then the blog's 2 epochs; 4 epochs on both directions beside it
run paraphrase_denoise_b128 $(left) $para --model $M --epochs 2 --denoise-steps $DN --denoise-batch-size $DB \
  --denoise-text $D/squad/train-v2.0.json &
first=$!
ck=$R/paraphrase_denoise_b128/denoise/checkpoint  # written (atomically) when the denoising stage ends
while [ ! -f $ck/model.safetensors ] && [ "$(left)" -gt 0 ] && kill -0 $first 2> /dev/null; do sleep 2; done
[ -f $ck/model.safetensors ] && run paraphrase_denoised_b128_4ep_both $(left) $para --model $ck --epochs 4 --both-directions &
wait
echo "all done: $(elapsed) s" >> "$OUT/machine.txt"
