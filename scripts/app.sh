#!/usr/bin/env bash
# README command: set up (scripts/setup.sh), then start the app: `bash scripts/app.sh [app.py options]`.
# Defaults: the embedded "tiny" model, CPU, offline, http://127.0.0.1:7860.
# Override with app.py options (--model, --device, --host, --port; see `bash scripts/app.sh --help`)
# or the environment (VIDEOSSM_MODEL, VIDEOSSM_DEVICE, VIDEOSSM_HOST=0.0.0.0 on a Space or in a container,
# VIDEOSSM_PORT).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
export VIDEOSSM_DEVICE="${VIDEOSSM_DEVICE:-cpu}"
exec python app.py "$@"
