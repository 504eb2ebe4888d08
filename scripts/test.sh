#!/usr/bin/env bash
# README command: set up (scripts/setup.sh), then run the test suite: `bash scripts/test.sh [pytest args]`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
export HF_HUB_OFFLINE=1
export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
exec python -m pytest -q "$@"
