#!/usr/bin/env bash
# The whole training recipe of the shipped models, stage by stage (docs/TRAINING.md):
#   vae -> teacher -> for each memory mode (hybrid, sink, window, same budget): causal -> dmd -> long -> ship
# Every stage resumes from its latest checkpoint; a finished stage (its metrics.json exists) is skipped,
# so rerunning this script after an interruption continues where it stopped.
#   bash scripts/train_recipe.sh                 # everything, into runs/ and assets/
#   RUNS=/data/runs MODES="hybrid" bash scripts/train_recipe.sh
#   EXTRA="--threads 1" bash scripts/train_recipe.sh   # extra flags for every training stage
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
RUNS="${RUNS:-runs}"
MODES="${MODES:-hybrid sink window}"
EXTRA="${EXTRA:-}"

stage() {  # stage NAME OUT ARGS...: run `train NAME` into OUT unless OUT/metrics.json says it finished
  local name="$1" out="$2"
  shift 2
  if [ -f "$out/metrics.json" ]; then
    echo "== $name: $out is finished, skipped"
    return
  fi
  echo "== $name -> $out"
  # shellcheck disable=SC2086
  python -m videossm train "$name" --out "$out" "$@" $EXTRA
}

stage vae "$RUNS/vae" --base-dim 16 --decoder-dim 12 --object-weight 5 --steps 5000 --eval-every 1000
stage teacher "$RUNS/teacher" --vae "$RUNS/vae/vae"
for mode in $MODES; do
  stage causal "$RUNS/causal-$mode" --teacher "$RUNS/teacher/teacher" --memory "$mode"
  stage dmd "$RUNS/dmd-$mode" --student "$RUNS/causal-$mode/student" --teacher "$RUNS/teacher/teacher"
  stage long "$RUNS/long-$mode" --student "$RUNS/dmd-$mode/student" --teacher "$RUNS/teacher/teacher"
  python -m videossm train ship --student "$RUNS/long-$mode/student" --to "assets/videossm-$mode"
done
