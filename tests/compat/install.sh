#!/usr/bin/env bash
# Idempotent installer for the client-library compatibility tests.
#   - .tools/venv (gitignored) with the pinned matrix-nio from tests/compat/requirements.txt
#   - tests/compat/js/node_modules via `npm ci` (pinned matrix-js-sdk, package-lock.json)
# Quiet unless something fails. Re-running is cheap: each step is skipped while
# its pin file (requirements.txt / package-lock.json) is unchanged.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/.tools/venv"
JS="$HERE/js"

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

run() {
    if ! "$@" >"$LOG" 2>&1; then
        echo "compat/install.sh: command failed: $*" >&2
        cat "$LOG" >&2
        exit 1
    fi
}

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "compat/install.sh: '$1' not found on PATH" >&2; exit 1; }
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# --- Python: matrix-nio -------------------------------------------------------
need python3
mkdir -p "$ROOT/.tools"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    run python3 -m venv "$VENV"
fi
PY_STAMP="$VENV/.compat-requirements.sha256"
PY_WANT="$(sha "$HERE/requirements.txt")"
if [ "$(cat "$PY_STAMP" 2>/dev/null || true)" != "$PY_WANT" ] \
   || ! "$VENV/bin/python" -c 'import nio' >/dev/null 2>&1; then
    run "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        -r "$HERE/requirements.txt"
    echo "$PY_WANT" >"$PY_STAMP"
fi

# --- Node: matrix-js-sdk ------------------------------------------------------
need node
need npm
JS_STAMP="$JS/node_modules/.compat-lock.sha256"
JS_WANT="$(sha "$JS/package-lock.json")"
if [ "$(cat "$JS_STAMP" 2>/dev/null || true)" != "$JS_WANT" ]; then
    (cd "$JS" && run npm ci --no-audit --no-fund --loglevel=error)
    echo "$JS_WANT" >"$JS_STAMP"
fi
