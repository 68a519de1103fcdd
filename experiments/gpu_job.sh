#!/usr/bin/env bash
# The quality and DDP rows that need a GPU, in priority order, fitted to a time budget:
#   PART=1  tests       the CUDA tests (tests/test_cuda.py, test_lm_head_loss.py, test_fused.py, test_distributed.py)
#           cola_seeds  CoLA, the tutorial protocol (train_cola.py's defaults), MiniLM, seeds 42..46 side by side on the
#                       GPU, then experiments/seeds_summary.py: mean and std of the out-of-domain and in-domain MCC
#           nccl        torchrun --standalone --nproc_per_node 1 train_cola.py --max-steps 50: the DDP path under nccl
#                       (metrics.json records world_size and backend)
#           ddp_bench   experiments/bench_ddp.py: BERT-base QA training (32 x 384), ms/step with and without DDP
#   PART=2  squad_full  SQuAD 2.0, the full training set, 2 epochs, MiniLM, lr 1e-4, batch 16 (~16,500 steps); a
#                       checkpoint every 500 steps; when its time runs out, the latest checkpoint is evaluated on the
#                       whole dev set (train_squad.py --resume --max-steps 1: nothing left to train, so it evaluates);
#                       run again on the still-warm machine, it resumes the same run
#   then, while the budget lasts: gpu_bench   experiments/gpu_bench.sh (bench.py's workloads, ~9 minutes on an H100)
# PART=all (the default) runs both parts in one call. Each step runs under its own `timeout`, so a hang costs only
# its share; a step that does not fit in what is left of BUDGET seconds is skipped and says so.
#
# Outputs: each step writes command.txt, console.txt and exit.txt under $WORK/results/<step>/, beside the files of its
# training run (cola_seeds/seed42/..., nccl/; squad_full/run/, whose train/ and eval/ steps share it);
# after every step they are packed (checkpoints left out) into $OUT/results.tar.gz, with $OUT/summary.txt beside it
# (a GPU machine hands back at most 8 files from $OUT, so the step folders travel as one archive).
#
# On a GPU machine, from the repository root, with the weights and data unpacked into .bundle/ (the SQuAD training
# file xz-compressed keeps the copied tree small):
#     python ../shared/tools/device_bundle.py .bundle --parts weights,squad2,cola \
#         && gunzip .bundle/squad/train-v2.0.json.gz && xz -9 .bundle/squad/train-v2.0.json    # ~54 MB
#     PART=1 BUDGET=270 bash experiments/gpu_job.sh                    # tests, CoLA seeds, nccl, DDP bench
#     PART=2 BUDGET=<seconds left> bash experiments/gpu_job.sh         # full SQuAD, then bench.py (WORK persists)
# or both at once: BUDGET=540 bash experiments/gpu_job.sh.
# Estimates for one H200: tests ~60 s, cola_seeds ~60 s, nccl ~30 s, ddp_bench ~40 s (PART=1 ~3.5 minutes);
# squad_full ~9 minutes of training (16,500 steps at the 31 steps/s of the 20%-epoch run, which shared the GPU with
# four other jobs) plus ~40 s of featurizing and ~60 s of evaluation. A BUDGET shorter than that gives a truncated
# run (the schedule of 2 epochs, evaluated where it stopped); running PART=2 again resumes it.
#
# Where the results go (the files of results.tar.gz, each run folder with a RUN.md: command, commit, hardware, date,
# wall time):
#     results/cola/h200-tutorial-5-seeds/    cola_seeds/: seed42..seed46/ and summary.md, summary.json
#     results/squad/h200-full-2ep/           squad_full/ (incomplete: say at which step it was evaluated)
#     results/bench/h200-<date>-<commit>/    tests/, nccl/, ddp_bench/, gpu_bench/bench/, machine.txt
#
# A dry run on CPU (tiny slices of the real data, 2 seeds, --max-steps 2, --device cpu, gloo instead of nccl):
#     python ../shared/tools/device_bundle.py /tmp/bundle --parts weights,squad2,cola
#     OUT=/tmp/gpu_job_out WORK=/tmp/gpu_job_work BUNDLE=/tmp/bundle QUICK=1 BUDGET=900 bash experiments/gpu_job.sh
set -uo pipefail
: "${OUT:?set OUT to the folder for results.tar.gz and summary.txt}"
PART=${PART:-all} BUDGET=${BUDGET:-540} BUNDLE=${BUNDLE:-.bundle} WORK=${WORK:-/tmp/gpu_job}
case $PART in 1|2|all) ;; *) echo "PART must be 1, 2 or all, not $PART" >&2; exit 2 ;; esac
[ -f "$BUNDLE/minilm/model.safetensors" ] || { echo "no MiniLM weights in BUNDLE=$BUNDLE (see above)" >&2; exit 2; }
export PYTHONPATH=. HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY=$(command -v python || command -v python3)
RES=$WORK/results DATA=$WORK/data M=$BUNDLE/minilm
PACK=15  # seconds kept back for the last packing
T0=$(date +%s)
if [ -n "${QUICK:-}" ]; then
  DEVICE=(--device cpu) SEEDS="42 43" STEPS=(--max-steps 2) NCCL_STEPS=2
  SQUAD=(--save-every 1 --max-eval-examples 20 --validation-questions 10) SQUAD_EVAL=60
  DDP_BENCH=(--quick --device cpu --threads 1 --repeats 2 --warmup 1)
else
  DEVICE=() SEEDS="42 43 44 45 46" STEPS=() NCCL_STEPS=50
  SQUAD=(--save-every 500) SQUAD_EVAL=120  # the evaluation's share: featurizing, loading, the dev set
  DDP_BENCH=(--repeats 20)
fi
mkdir -p "$OUT" "$RES" "$DATA"

left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
note() { echo "$*" | tee -a "$RES/summary.txt"; }
pack() {
  cp "$RES/summary.txt" "$OUT/summary.txt"
  tar -czf "$OUT/results.tar.gz.tmp" --exclude='checkpoint*' --exclude='best' --exclude='best.*' \
      --exclude='run.lock' --exclude='tensorboard' -C "$RES" . && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
}
# fits NAME NEED LIMIT: sets LIMIT to min(LIMIT, the seconds left); fails (the step is skipped) under NEED
fits() {
  local avail=$(( $(left) - PACK ))
  if (( avail < $2 )); then note "$1: skipped ($avail s left, it needs $2 s)"; return 1; fi
  LIMIT=$(( $3 < avail ? $3 : avail ))
}
# run_in FOLDER SECONDS COMMAND...: the command under `timeout` in $RES/FOLDER (command.txt, console.txt,
# exit.txt); its exit status noted with its time
run_in() {
  local name=$1 d=$RES/$1 limit=$2 t=$(date +%s) rc; shift 2
  mkdir -p "$d"
  echo "$*" > "$d/command.txt"
  timeout -k 10 "$limit" "$@" > "$d/console.txt" 2>&1
  rc=$?
  echo $rc > "$d/exit.txt"
  note "$name: exit $rc$( ((rc == 124)) && echo ' (out of time)') after $(( $(date +%s) - t )) s (limit $limit s)"
  return $rc
}

note "# gpu_job.sh PART=$PART BUDGET=$BUDGET${QUICK:+ QUICK=1}, started $(date -u +%FT%TZ)"
{ nvidia-smi || true; $PY -c "import torch, transformers; print('torch', torch.__version__, '| transformers',
  transformers.__version__, '| cuda', torch.version.cuda)"; git rev-parse HEAD 2>/dev/null || echo "commit: no git here"
  nproc; } > "$RES/machine.txt" 2>&1

# the data, from the bundle (QUICK: slices of it)
if [ ! -f "$DATA/ready" ]; then
  mkdir -p "$DATA/cola" "$DATA/squad"
  $PY - "$BUNDLE" "$DATA" "${QUICK:-}" <<'EOF'
import gzip, json, lzma, shutil, sys
from pathlib import Path
bundle, data, quick = Path(sys.argv[1]), Path(sys.argv[2]), bool(sys.argv[3])
for name in ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv"):
    lines = (bundle / "cola/raw" / name).read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "cola" / name).write_text("".join(lines[:64] if quick else lines), encoding="utf-8")
for name in ("train-v2.0.json", "dev-v2.0.json"):
    packed = next((p for p in (bundle / "squad" / (name + ext) for ext in (".xz", ".gz")) if p.exists()), None)
    if packed is None:
        continue  # PART=1 needs no SQuAD
    with (lzma.open if packed.suffix == ".xz" else gzip.open)(packed, "rb") as f:
        squad = json.load(f)
    if quick:  # a few paragraphs of the first articles
        squad["data"] = [dict(a, paragraphs=a["paragraphs"][:3]) for a in squad["data"][:2]]
    (data / "squad" / name).write_text(json.dumps(squad), encoding="utf-8")
EOF
  touch "$DATA/ready"
fi

if [ "$PART" != 2 ]; then
  if fits tests 30 150; then
    run_in tests "$LIMIT" $PY -m pytest tests/test_cuda.py tests/test_lm_head_loss.py tests/test_fused.py \
      tests/test_distributed.py -rs -p no:cacheprovider  # (pyproject's -q: one line per file, the skip reasons)
  fi
  pack
  if fits cola_seeds 60 240; then  # side by side: the GPU is far from full with MiniLM at batch 32
    for s in $SEEDS; do
      run_in "cola_seeds/seed$s" "$LIMIT" $PY train_cola.py --model "$M" --data-dir "$DATA/cola" --seed "$s" \
        --output-dir "$RES/cola_seeds/seed$s" --overwrite "${STEPS[@]}" "${DEVICE[@]}" &
    done
    wait
    runs=(); for s in $SEEDS; do runs+=("$RES/cola_seeds/seed$s"); done
    $PY -m experiments.seeds_summary "${runs[@]}" --output "$RES/cola_seeds/summary" 2>&1 | tee -a "$RES/summary.txt"
  fi
  pack
  if fits nccl 30 120; then
    run_in nccl "$LIMIT" $PY -m torch.distributed.run --standalone --nproc_per_node 1 train_cola.py --model "$M" \
      --data-dir "$DATA/cola" --max-steps "$NCCL_STEPS" --output-dir "$RES/nccl" --overwrite "${DEVICE[@]}"
    $PY -c "import json, sys; m = json.load(open(sys.argv[1])); print('nccl: world_size', m['world_size'],
      '| backend', m['backend'], '| device', m['device'], '| steps', m['steps'])" "$RES/nccl/metrics.json" 2>&1 \
      | tee -a "$RES/summary.txt"
  fi
  pack
  if fits ddp_bench 45 180; then
    run_in ddp_bench "$LIMIT" $PY -m experiments.bench_ddp "${DDP_BENCH[@]}" --json "$RES/ddp_bench/ddp.json"
    grep -v "Writing model shards" "$RES/ddp_bench/console.txt" | tee -a "$RES/summary.txt"
  fi
  pack
fi

if [ "$PART" != 1 ] && fits squad_full $(( SQUAD_EVAL + 60 )) 100000; then
  squad=($PY train_squad.py --model "$M" --data-dir "$DATA/squad" --train-fraction 1 --epochs 2 --lr 1e-4
         --batch-size 16 --log-every 100 "${SQUAD[@]}" "${DEVICE[@]}" --output-dir "$RES/squad_full/run")
  resume=(); compgen -G "$RES/squad_full/run/checkpoint*" > /dev/null && resume=(--resume)  # a warm machine's run
  limit=$(( LIMIT - SQUAD_EVAL ))
  [ -n "${QUICK:-}" ] && limit=45  # short enough to end in the middle of the run: the evaluation below is checked
  if ! run_in squad_full/train "$limit" "${squad[@]}" "${resume[@]}" \
      && compgen -G "$RES/squad_full/run/checkpoint*" > /dev/null && fits squad_full/eval 30 "$SQUAD_EVAL"; then
    run_in squad_full/eval "$LIMIT" "${squad[@]}" --resume --max-steps 1
  fi
  $PY -c "import json, sys; m = json.load(open(sys.argv[1])); print('squad_full: step', m['steps'], '| exact',
    round(m['exact'], 2), '| f1', round(m['f1'], 2), '|', m['evaluated_model'])" "$RES/squad_full/run/metrics.json" \
    2>&1 | tee -a "$RES/summary.txt"
  pack
fi

if fits gpu_bench 120 100000; then
  run_in gpu_bench "$LIMIT" env OUT="$RES/gpu_bench" bash experiments/gpu_bench.sh
fi
note "# done after $(( $(date +%s) - T0 )) s of $BUDGET"
pack
