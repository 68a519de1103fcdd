#!/usr/bin/env bash
# bench.py's measurements on a CUDA machine, written under $OUT/bench (each .txt starts with its command):
#   machine.txt    nvidia-smi and versions
#   tests.txt      the CUDA tests of what bench.py times (parity with transformers, the LM-head loss, the fused ops)
#   all.*          every workload, eager (bf16 autocast, the CUDA shapes of bench.py's SIZES)
#   compiled.*     the two training workloads with ours torch.compile'd (HF eager)
#   memory_*.txt   what the peak of each training workload is made of, ours beside HF's (experiments/bench_memory.py)
#   profile_*.txt  where one call's GPU time goes (experiments/bench_profile.py)
# About 9 minutes on an H100 (all.* and compiled.* first matter most); each command has its own time limit, so one
# that hangs costs only its share.
#
#   OUT=path/to/out bash experiments/gpu_bench.sh            # on the GPU machine, from the repository root
#   OUT=/tmp/smoke QUICK=1 bash experiments/gpu_bench.sh     # tiny shapes on CPU, no compile: checks the script
set -uo pipefail
: "${OUT:?set OUT to the folder to write into}"
D="$OUT/bench"
mkdir -p "$D"
export HF_HUB_OFFLINE=1
if [ -n "${QUICK:-}" ]; then
  BENCH=(--quick --device cpu --threads 1 --repeats 2 --warmup 1); SHAPES=(--quick); LIMIT=1
else
  BENCH=(--repeats 5); SHAPES=(); LIMIT=3
fi

# run NAME SECONDS COMMAND...: the command and its output (HF's "Writing model shards" bars dropped) into NAME.txt
run() {
  local name=$1 limit=$2; shift 2
  { echo "# $*"; timeout "$limit" "$@" 2>&1 | grep -v "Writing model shards"; echo "# exit ${PIPESTATUS[0]}"; } \
    > "$D/$name.txt"
}

{ nvidia-smi; python -c "import torch, transformers; print('torch', torch.__version__, '| transformers',
  transformers.__version__, '| cuda', torch.version.cuda)"; git rev-parse HEAD; } > "$D/machine.txt" 2>&1
run tests $((LIMIT * 60)) python -m pytest tests/test_cuda.py tests/test_lm_head_loss.py tests/test_fused.py -q
run all $((LIMIT * 80)) python bench.py "${BENCH[@]}" --json "$D/all.json"
if [ -z "${QUICK:-}" ]; then  # compiling on CPU takes minutes
  run compiled 300 python bench.py "${BENCH[@]}" --workloads bert_qa_train,bart_train --compile \
    --json "$D/compiled.json"
fi
for w in bert_qa_train bart_train; do
  run "memory_$w" $((LIMIT * 30)) python -m experiments.bench_memory "$w" "${SHAPES[@]}"
done
run profile_bart_beam $((LIMIT * 30)) python -m experiments.bench_profile bart_beam "${SHAPES[@]}"
run profile_bert_qa_train $((LIMIT * 30)) python -m experiments.bench_profile bert_qa_train "${SHAPES[@]}"
grep -h "^# exit" "$D"/*.txt | sort | uniq -c
