#!/usr/bin/env bash
# Session 4's GPU job, in two device calls, for what session 3 left open in #6 and #7. It ran once, as below (its
# outputs: results/bench/gpu_h100_session4/ and results/paraphrase/gpu_h100_*b128*/, each with a RUN.md):
#     python ../shared/tools/device_bundle.py .bundle          # fp16 MiniLM weights + the data
#     python -c "import gzip, json; d = json.load(gzip.open('.bundle/squad/train-v2.0.json.gz')); \
#       [p.update(qas=[]) for a in d['data'] for p in a['paragraphs']]; \
#       json.dump(d, gzip.open('.bundle/squad/train-v2.0-contexts.json.gz', 'wt'))"   # contexts only: fits 64 MiB
#     PHASE=bench OUT=<folder> bash results/gpu_session4.sh        # then PHASE=paraphrase (SMOKE=1: a CPU dry run)
#   device call: carry [".bundle/minilm", ".bundle/paraphrase", ".bundle/squad/train-v2.0-contexts.json.gz"], and tar $OUT
#   into one file at the end (at most 8 files come back).
# bench: on the quiet GPU, bench.py bart_beam (session 3's two-stage candidates and 8-byte-word reorder, and this
#    session's padded LM head: rows 15-17 of NOTES.md), what each of them gave and other decode-step variants
#    (beam_variants.py), the profile of one call, then the CUDA tests;
# paraphrase: (BENCH_ALL=1: first bench.py on every workload) 3,000 denoising steps at batch 128 (8x session 3's
#    denoising data; a larger batch keeps the GPU busy), then the blog's 2 epochs; from its denoised checkpoint, side
#    by side, 4 epochs on both directions.
set -u
export PYTHONPATH=. HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:?set OUT}
M=.bundle/minilm D=/tmp/gpu_data R=/tmp/gpu_runs
PY=$(command -v python || command -v python3)
DEADLINE=${DEADLINE:-530}
mkdir -p "$OUT/bench"
if [ "${SMOKE:-0}" = 1 ]; then
  S="--max-steps 3" P="--max-eval 20" DN=3 DB=4 BENCH="--quick --repeats 2 --warmup 1" VARIANTS="--repeats 2"
else
  S="" P="" DN=3000 DB=128 BENCH="--repeats 7" VARIANTS=""
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

bench() {  # bench NAME SECONDS bench.py-arguments...
  local name=$1 secs=$2; shift 2
  timeout "$secs" $PY bench.py $BENCH "$@" --json "$OUT/bench/$name.json" > "$OUT/bench/$name.txt" 2>&1
  echo "exit $? after $(elapsed) s" >> "$OUT/bench/$name.txt"
}

if [ "${PHASE:?set PHASE to bench or paraphrase}" = bench ]; then
  bench bart_beam 70 --workloads bart_beam
  timeout 60 $PY results/bench/beam_variants.py $VARIANTS > "$OUT/bench/beam_variants.txt" 2>&1
  timeout 50 $PY results/bench/profile_beam.py > "$OUT/bench/profile_beam.txt" 2>&1
  timeout 60 $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider > "$OUT/tests_cuda.txt" 2>&1
  echo "bench done: $(elapsed) s" >> "$OUT/machine.txt"
  exit
fi

[ "${BENCH_ALL:-0}" = 1 ] && bench all 120
mkdir -p $D/squad $R
cp -r .bundle/paraphrase $D/
gunzip -c .bundle/squad/train-v2.0-contexts.json.gz > $D/squad/train-v2.0-contexts.json  # questions dropped
# paraphrase: larger-batch denoising, then the blog's 2 epochs; 4 epochs on both directions beside it
run paraphrase_denoise_b128 $(left) $para --model $M --epochs 2 --denoise-steps $DN --denoise-batch-size $DB \
  --denoise-text $D/squad/train-v2.0-contexts.json &
first=$!
ck=$R/paraphrase_denoise_b128/denoise/checkpoint  # written (atomically) when the denoising stage ends
while [ ! -f $ck/model.safetensors ] && [ "$(left)" -gt 0 ] && kill -0 $first 2> /dev/null; do sleep 2; done
[ -f $ck/model.safetensors ] && run paraphrase_denoised_b128_4ep_both $(left) $para --model $ck --epochs 4 --both-directions &
wait
echo "all done: $(elapsed) s" >> "$OUT/machine.txt"
