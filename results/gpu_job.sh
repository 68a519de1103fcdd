#!/usr/bin/env bash
# The whole GPU job behind the README's GPU numbers, run once on a lent GPU machine from the repo root:
#     python ../shared/tools/device_bundle.py .bundle          # fp16 MiniLM weights + the data, ~58 MiB
#     OUT=<folder> bash results/gpu_job.sh                       # (SMOKE=1: a few steps, for a CPU dry run)
# 1. in parallel: the CUDA tests, SQuAD 2.0 (20%, 1 epoch) at lr 3e-5 and 1e-4, CoLA at lr 1e-4, paraphrase
# with and without the denoising stage; 2. on the then quiet GPU, CoLA's protocol with dynamic padding and
# then --pad-to-max (back to back, so their epoch times compare); 3. bench.py, one workload at a time.
# Every run writes its log, metrics and samples under $OUT/<run>/ (checkpoints stay in /tmp).
set -u
export PYTHONPATH=. HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:?set OUT}
M=.bundle/minilm D=/tmp/gpu_data R=/tmp/gpu_runs
PY=$(command -v python || command -v python3)
TIME=""; [ -x /usr/bin/time ] && TIME="/usr/bin/time -v"
mkdir -p $D/squad $R "$OUT"
cp -r .bundle/cola .bundle/paraphrase $D/
for f in train-v2.0.json dev-v2.0.json; do gunzip -c .bundle/squad/$f.gz > $D/squad/$f; done
if [ "${SMOKE:-0}" = 1 ]; then
  S="--max-steps 3" Q="--max-eval-examples 40" P="--max-eval 20" DN=3 BENCH="--quick"
else
  S="" Q="" P="" DN=3000 BENCH=""
fi
(nvidia-smi || true; $PY -c "import torch, transformers; print(torch.__version__, transformers.__version__)") \
  > "$OUT/machine.txt" 2>&1

keep() {  # copy a run's artifacts (not its checkpoint) into $OUT
  mkdir -p "$OUT/$1"
  for f in train.log log.jsonl metrics.json samples.md predictions.json null_odds.json \
           predictions_out_of_domain.tsv generations.jsonl; do
    [ -f "$R/$1/$f" ] && cp "$R/$1/$f" "$OUT/$1/"
  done
}
run() {  # run NAME SECONDS command...: time-limited, console saved, artifacts kept
  local name=$1 secs=$2; shift 2
  mkdir -p "$OUT/$name"
  echo "$*" > "$OUT/$name/command.txt"
  $TIME timeout "$secs" "$@" --output-dir "$R/$name" > "$OUT/$name/console.txt" 2>&1
  echo "exit $?" >> "$OUT/$name/console.txt"
  keep "$name"
}

t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
timeout 60 $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider > "$OUT/tests_cuda.txt" 2>&1 &

# the long runs, side by side on the GPU
run squad_lr3e-5 330 $PY train_squad.py --model $M --data-dir $D/squad --log-every 50 $S $Q &
run squad_lr1e-4 330 $PY train_squad.py --model $M --data-dir $D/squad --lr 1e-4 --log-every 50 $S $Q &
run cola_lr1e-4 120 $PY train_cola.py --model $M --data-dir $D/cola/raw --lr 1e-4 $S &
para="$PY train_paraphrase.py --model $M --data-dir $D/paraphrase --epochs 2 --batch-size 16 --lr 1e-4 \
  --warmup-ratio 0.06 --eval-batch-size 64 --log-every 50 $S $P"
run paraphrase_denoise 330 $para --denoise-steps $DN --denoise-text $D/squad/train-v2.0.json &
run paraphrase_finetune_only 330 $para &
wait
echo "parallel runs done: $(elapsed) s" >> "$OUT/machine.txt"

# on a quiet GPU: the CoLA protocol with dynamic padding, then fixed padding (their epoch times compare)
run cola_tutorial 90 $PY train_cola.py --model $M --data-dir $D/cola/raw $S
run cola_tutorial_pad_to_max 90 $PY train_cola.py --model $M --data-dir $D/cola/raw --pad-to-max $S
echo "cola pair done: $(elapsed) s" >> "$OUT/machine.txt"

# bench.py, one workload at a time, while time is left
mkdir -p "$OUT/bench"
for w in bert_qa_train bart_beam bart_train cola_train bert_infer; do
  [ "$(elapsed)" -lt 500 ] || { echo "skipped $w: out of time" >> "$OUT/bench/skipped.txt"; continue; }
  timeout 75 $PY bench.py $BENCH --workloads $w --json "$OUT/bench/$w.json" > "$OUT/bench/$w.txt" 2>&1
done
echo "all done: $(elapsed) s" >> "$OUT/machine.txt"
