#!/usr/bin/env bash
# One-time (and idempotent) set-up for a fresh machine with python3 (3.10+), pip and venv:
#   - .venv in the repo root with requirements-dev.txt installed (re-run only when the requirements change)
#   - the system ffmpeg/ffprobe (Gradio's streaming video output needs both on PATH)
#   - Debian's chromium (the browser test drives it through Playwright; Playwright's own download is not used)
# Called by scripts/app.sh and scripts/test.sh; safe to run by hand from any directory.
# Environment: PYTHON (interpreter for the venv, default python3), VIDEOSSM_SKIP_APT=1 (never call apt-get).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

say() { echo "[setup] $*"; }
warn() { echo "[setup] WARNING: $*" >&2; }

# Run as root directly, else through sudo (non-interactive) when it exists; fail otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        return 1
    fi
}

apt_install() {  # apt_install PKG...: quiet apt-get install; the log is shown only on failure
    [ "${VIDEOSSM_SKIP_APT:-0}" = 1 ] && return 1
    command -v apt-get >/dev/null 2>&1 || return 1
    local log
    log="$(mktemp)"
    if as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 </dev/null &&
       as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1 </dev/null; then
        rm -f "$log"
        return 0
    fi
    tail -n 5 "$log" >&2 || true
    rm -f "$log"
    return 1
}

# 1. The virtualenv.
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "[setup] ERROR: $PYTHON is missing or older than 3.10 (found: $("$PYTHON" --version 2>&1 || true))" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    say "creating .venv with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian ships ensurepip separately (python3-venv / python3.X-venv).
        rm -rf "$VENV"
        pyver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        say "python3 -m venv failed; installing python${pyver}-venv with apt-get"
        apt_install "python${pyver}-venv" || apt_install python3-venv || {
            echo "[setup] ERROR: cannot create a virtualenv; install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        }
        "$PYTHON" -m venv "$VENV"
    fi
fi

# 2. The Python requirements (skipped while the stamp matches requirements.txt + requirements-dev.txt).
want="$(cat requirements.txt requirements-dev.txt | "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    say "installing requirements-dev.txt into .venv (pip; the first time takes a few minutes)"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements-dev.txt </dev/null
    echo "$want" >"$STAMP"
    say "python requirements installed"
else
    say "python requirements up to date (.venv)"
fi

# 3. The system ffmpeg (ffmpeg + ffprobe).
if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then
    say "ffmpeg/ffprobe found"
else
    say "ffmpeg/ffprobe missing; installing the ffmpeg package with apt-get"
    if apt_install ffmpeg && command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then
        say "ffmpeg installed"
    else
        warn "could not install ffmpeg (needs apt-get and root or sudo). Without ffmpeg and ffprobe on PATH" \
             "the app's streaming video player and the tests that stream video will not work; generation," \
             "mp4 files and the other tests still do. Install it yourself, e.g. 'sudo apt-get install ffmpeg'."
    fi
fi

# 4. The system Chromium for the browser test (tests/test_app_browser.py; VIDEOSSM_CHROMIUM overrides the path).
if [ -x "${VIDEOSSM_CHROMIUM:-/usr/bin/chromium}" ]; then
    say "chromium found"
else
    say "chromium missing; installing the chromium package with apt-get (for the browser test)"
    if apt_install chromium && [ -x /usr/bin/chromium ]; then
        say "chromium installed"
    else
        warn "could not install chromium (needs apt-get and root or sudo); the browser test will be skipped." \
             "Install it yourself, e.g. 'sudo apt-get install chromium'."
    fi
fi
