#!/usr/bin/env bash
# The whole training recipe of the shipped models, stage by stage (docs/TRAINING.md):
#   vae -> teacher -> causal init (one, shared) -> for each memory mode (hybrid, sink, window, same budget):
#   dmd -> long -> ship
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

stage() {  # stage NAME OUT ARGS...: run `train NAME` into OUT unless OUT/metrics.json says it reached --steps
  local name="$1" out="$2"
  shift 2
  local steps="" prev=""
  for arg in "$@"; do  # the --steps of this call (a later call may continue a finished run with more)
    [ "$prev" = "--steps" ] && steps="$arg"
    prev="$arg"
  done
  if [ -f "$out/metrics.json" ] && python - "$out/metrics.json" "$steps" <<'PY'
import json, sys
done = json.load(open(sys.argv[1])).get("steps", 0)
sys.exit(0 if not sys.argv[2] or done >= int(sys.argv[2]) else 1)
PY
  then
    echo "== $name: $out is finished, skipped"
    return
  fi
  echo "== $name -> $out"
  # shellcheck disable=SC2086
  python -m videossm train "$name" --out "$out" "$@" $EXTRA
}

# The VAE: a wide encoder (only training runs it) and a decoder whose capacity sits at low resolution
# (dim_mult 1,2,4 over 8 channels), so streaming decode stays ~80 ms per block; object pixels weigh 20x.
stage vae "$RUNS/vae" --base-dim 32 --dim-mult 1,2,4 --res-blocks 1 --decoder-dim 8 --object-weight 20 \
  --steps 10000 --eval-every 1000
# The teacher: three steps in four on 9-latent-frame clips, which cost a fifth of a 5 s clip on a CPU, and
# each encoded clip used ~4 times (the VAE encoder's cost is mostly per call). Its gate stopped moving at
# step ~5000 (docs/TRAINING.md), so the shipped chain distils the step-7400 EMA.
stage teacher "$RUNS/teacher" --vae "$RUNS/vae/vae" --short-frames 9 --short-share 0.75 --reuse 4 --steps 7400 \
  --train-shift 6
# One causal init serves the three modes (as Self-Forcing ships one ode_init): trained with the window and
# sink that all modes share, so each mode starts the DMD stage from the same weights (hybrid's memory is
# zero-gated, so it starts as exactly this model) and the comparison controls for the init. It is teacher
# forcing on the world's own noised clips (`--source world`), not ODE regression on the teacher's
# trajectories: this teacher loses the object from pure noise, and the student would learn that.
stage causal "$RUNS/causal" --teacher "$RUNS/teacher/teacher" --source world --memory sink --reuse 4 --steps 600 \
  --save-every 100
for mode in $MODES; do
  stage dmd "$RUNS/dmd-$mode" --student "$RUNS/causal/student" --teacher "$RUNS/teacher/teacher" --memory "$mode" \
    --steps 400
  stage long "$RUNS/long-$mode" --student "$RUNS/dmd-$mode/student" --teacher "$RUNS/teacher/teacher" \
    --memory "$mode" --steps 200
  python -m videossm train ship --student "$RUNS/long-$mode/student" --to "assets/videossm-$mode"
done
