#!/usr/bin/env bash
# The GPU job prepared for the next lent GPU (session 2 had none), for what is still open in #6 and #7:
#     python ../shared/tools/device_bundle.py .bundle          # fp16 MiniLM weights + the data, ~58 MiB
#     OUT=<folder> bash results/gpu_next.sh                      # (SMOKE=1: a few steps, for a CPU dry run)
# 1. in parallel: the CUDA tests (the CUDA-graph decode step among them) and the paraphrase run of
#    gpu_job.sh again (3,000 denoising steps, 2 epochs), now scored on the best beam and the best non-copy beam;
# 2. on the quiet GPU: bench.py, bart_beam first (the CUDA-graph step), then BERT QA eager and --compile, then the rest;
# 3. in parallel: step 1's model scored with encoder_no_repeat_ngram_size 5 (no 5 consecutive source tokens in the
#    output; --eval-only), and from step 1's denoised checkpoint 4 epochs (then scored the same way) and 4 epochs on
#    both directions of the pairs.
# Each phase stops itself in time (timeout) so that the whole job stays under 560 s.
set -u
export PYTHONPATH=. HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:?set OUT}
M=.bundle/minilm D=/tmp/gpu_data R=/tmp/gpu_runs
PY=$(command -v python || command -v python3)
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

# 1. the CUDA tests beside the paraphrase run that phase 3 starts from
timeout 90 $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider > "$OUT/tests_cuda.txt" 2>&1 &
run paraphrase_denoise 220 $para --model $M --epochs 2 --denoise-steps $DN --denoise-text $D/squad/train-v2.0.json
wait
echo "phase 1 done: $(elapsed) s" >> "$OUT/machine.txt"

# 2. bench.py on the quiet GPU, most wanted first
bench bart_beam 60 --workloads bart_beam
bench bert_qa_train_compiled 120 --workloads bert_qa_train --compile
bench bert_qa_train 50 --workloads bert_qa_train
for w in bart_train cola_train bert_infer; do
  [ "$(elapsed)" -lt 330 ] && bench $w 50 --workloads $w
done
echo "phase 2 done: $(elapsed) s" >> "$OUT/machine.txt"

# 3. the 2-epoch model scored with encoder_no_repeat_ngram_size 5; longer fine-tuning from the denoised checkpoint
#    (BART layout, MiniLM vocabulary), side by side; the 4-epoch model scored with encoder_no_repeat_ngram_size 5 too
left=$(( 560 - $(elapsed) ))
ck=$R/paraphrase_denoise/denoise/checkpoint
if [ -f $ck/model.safetensors ] && [ $left -gt 60 ]; then
  run paraphrase_denoise_enr5 $left $para --model $R/paraphrase_denoise/checkpoint --eval-only \
    --encoder-no-repeat-ngram-size 5 &
  (run paraphrase_denoised_4ep $left $para --model $ck --epochs 4
   run paraphrase_denoised_4ep_enr5 $(( 560 - $(elapsed) )) $para --model $R/paraphrase_denoised_4ep/checkpoint \
     --eval-only --encoder-no-repeat-ngram-size 5) &
  run paraphrase_denoised_4ep_both $left $para --model $ck --epochs 4 --both-directions &
  wait
fi
echo "all done: $(elapsed) s" >> "$OUT/machine.txt"
