#!/usr/bin/env bash
# Idempotent installer for the Schemathesis run over the Matrix OpenAPI definitions:
# .tools/schemathesis-venv (gitignored) with the pinned Schemathesis from
# tests/schemathesis/requirements.txt. Quiet unless something fails; skipped while requirements.txt
# is unchanged.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/.tools/schemathesis-venv"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

run() {
    if ! "$@" >"$LOG" 2>&1; then
        echo "schemathesis/install.sh: command failed: $*" >&2
        cat "$LOG" >&2
        exit 1
    fi
}

command -v python3 >/dev/null 2>&1 || { echo "schemathesis/install.sh: 'python3' not found on PATH" >&2; exit 1; }
mkdir -p "$ROOT/.tools"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    run python3 -m venv "$VENV"
fi
STAMP="$VENV/.schemathesis-requirements.sha256"
WANT="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ] || ! "$VENV/bin/python" -c 'import schemathesis' >/dev/null 2>&1; then
    run "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$HERE/requirements.txt"
    echo "$WANT" >"$STAMP"
fi
