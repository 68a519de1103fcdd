#!/usr/bin/env bash
# Session 3's GPU job (one call, lent H100/H200), for what is still open in #6 and #7:
#     python ../shared/tools/device_bundle.py .bundle          # fp16 MiniLM weights + the data
#     OUT=<folder> bash results/gpu_session3.sh                  # (SMOKE=1: a few steps, for a CPU dry run)
# 1. bench.py on the quiet GPU: bart_beam with the CUDA-graph decode step and without it (--eager-decode),
#    BERT QA training with --compile, the four other workloads eager, then BART training compiled.
# 2. the CUDA tests, beside the paraphrase run of session 1 (3,000 denoising steps, then the blog's 2 epochs), now
#    scored on the best beam and the best non-copy beam; as soon as its denoised checkpoint exists, two more
#    fine-tunings start from it: 4 epochs on both directions of the pairs, and 2 epochs without near-copy pairs
#    (--max-pair-bleu 80).
# Every step has its own time limit, so that the whole job ends within DEADLINE seconds.
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
  S="--max-steps 3" P="--max-eval 20" DN=3 BENCH="--quick --repeats 2 --warmup 1"
else
  S="" P="" DN=3000 BENCH=""
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
bench() {  # bench NAME SECONDS args...
  local name=$1 secs=$2; shift 2
  timeout "$secs" $PY bench.py $BENCH "$@" --json "$OUT/bench/$name.json" > "$OUT/bench/$name.txt" 2>&1
  echo "exit $? after $(elapsed) s" >> "$OUT/bench/$name.txt"
}
para="$PY train_paraphrase.py --data-dir $D/paraphrase --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 \
  --eval-batch-size 64 --log-every 50 $S $P"

# 1. bench.py on the quiet GPU, most wanted first
bench bart_beam 60 --workloads bart_beam
bench bart_beam_eager_decode 45 --workloads bart_beam --eager-decode
bench bert_qa_train_compiled 150 --workloads bert_qa_train --compile
bench eager 100 --workloads bert_qa_train,cola_train,bart_train,bert_infer
[ "$(elapsed)" -lt 290 ] && bench bart_train_compiled $(( 330 - $(elapsed) )) --workloads bart_train --compile
echo "phase 1 (bench) done: $(elapsed) s" >> "$OUT/machine.txt"

# 2. the CUDA tests and the paraphrase runs, side by side
timeout 150 $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider > "$OUT/tests_cuda.txt" 2>&1 &
run paraphrase_denoise $(left) $para --model $M --epochs 2 --denoise-steps $DN --denoise-text $D/squad/train-v2.0.json &
first=$!
ck=$R/paraphrase_denoise/denoise/checkpoint  # written (atomically) when the denoising stage ends
while [ ! -f $ck/model.safetensors ] && [ "$(left)" -gt 0 ] && kill -0 $first 2> /dev/null; do sleep 2; done
if [ -f $ck/model.safetensors ]; then
  run paraphrase_denoised_4ep_both $(left) $para --model $ck --epochs 4 --both-directions &
  run paraphrase_denoised_bleu80 $(left) $para --model $ck --epochs 2 --max-pair-bleu 80 &
fi
wait
echo "all done: $(elapsed) s" >> "$OUT/machine.txt"
