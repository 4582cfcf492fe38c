#!/usr/bin/env bash
# The embedded RL comparison on a lent GPU machine, in one call: every method x 3 seeds on the arith
# test split at the shared embedded settings (trainers/loop.py EMBEDDED_DEFAULTS), plus maskgrpo and
# diffu-grpo at three learning rates on the *validation* split (to check the lr choice; never on test).
# Needs the cached tiny model carried as .harness_home.  STEPS, LIMIT and BUDGET_S may be set.
set -u
export PYTHONPATH=$PWD HARNESS_HOME=$PWD/.harness_home OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
DEV=${DEV:-cuda}
python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || DEV=cpu
STEPS=${STEPS:-120}; BUDGET_S=${BUDGET_S:-420}; LIMIT=${LIMIT:-}
start=$(date +%s)
LIM=(); [ -n "$LIMIT" ] && LIM=(--limit "$LIMIT")
timeout "$BUDGET_S" python3 benchmarks/rl_sweep.py --task arith --device $DEV --workers 21 --steps "$STEPS" \
  --eval-split test --compare-layout "${LIM[@]}" \
  --grid '{"method": ["maskgrpo", "diffu-grpo", "unigrpo", "coupled-grpo", "tracerl", "wd1", "spg"], "seed": [0, 1, 2]}' \
  --out results > "$OUT/compare.jsonl" 2> "$OUT/compare.err" &
timeout "$BUDGET_S" python3 benchmarks/rl_sweep.py --task arith --device $DEV --workers 6 --steps "$STEPS" \
  --eval-split validation "${LIM[@]}" --grid '{"method": ["maskgrpo", "diffu-grpo"], "lr": [1e-5, 2e-5, 5e-5]}' \
  --out sweep > "$OUT/sweep.jsonl" 2> "$OUT/sweep.err" &
wait
echo "device=$DEV steps=$STEPS took $(( $(date +%s) - start ))s"
cat "$OUT/compare.jsonl" "$OUT/sweep.jsonl"; tail -3 "$OUT/compare.err"
tar czf "$OUT/results.tgz" --exclude='checkpoints' --exclude='*samples.jsonl' --exclude='base_eval.json' results sweep 2>/dev/null
ls -la "$OUT"
