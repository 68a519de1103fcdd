#!/usr/bin/env bash
# The README's three small CPU recipes, each under /usr/bin/time -v (its report beside the run as time.txt), from the
# repository root:
#     PRECISION=auto OUT=out bash experiments/cpu_recipes.sh        # the README's commands (bf16 where the CPU has it)
#     PRECISION=fp32 OUT=out/fp32 bash experiments/cpu_recipes.sh   # the same in fp32
# DATA: the folder holding cola/raw, squad and paraphrase (default ../shared/data); TASKS: a subset, e.g. "cola squad".
set -euo pipefail
DATA=${DATA:-../shared/data} OUT=${OUT:-out} PRECISION=${PRECISION:-auto} TASKS=${TASKS:-cola squad paraphrase}
mkdir -p "$OUT"
for task in $TASKS; do
  case $task in
    cola) cmd=(train_cola.py --model minilm --data-dir "$DATA/cola/raw" --epochs 1 --batch-size 16 --lr 1e-4 --bucket
               --eval-every 120 --log-every 20) ;;
    squad) cmd=(train_squad.py --model minilm --data-dir "$DATA/squad" --train-fraction 0.004 --batch-size 8 --lr 1e-4
                --validation-questions 0 --max-eval-examples 300 --log-every 10) ;;
    paraphrase) cmd=(train_paraphrase.py --model minilm --data-dir "$DATA/paraphrase" --epochs 1 --denoise-steps 30
                     --max-steps 60 --batch-size 16 --lr 1e-4 --eval-every 30 --max-eval 50 --max-target-length 64
                     --log-every 10) ;;
  esac
  echo "python ${cmd[*]} --precision $PRECISION --output-dir $OUT/$task-recipe"
  /usr/bin/time -v -o "$OUT/$task-recipe.time.txt" python "${cmd[@]}" --precision "$PRECISION" \
    --output-dir "$OUT/$task-recipe" > "$OUT/$task-recipe.stdout" 2>&1
done
