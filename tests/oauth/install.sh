#!/usr/bin/env bash
# Idempotent installer for the OAuth client-library test: .tools/oauth-venv (gitignored) with the
# pinned Authlib from tests/oauth/requirements.txt. Quiet unless something fails; skipped while
# requirements.txt is unchanged.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/.tools/oauth-venv"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

run() {
    if ! "$@" >"$LOG" 2>&1; then
        echo "oauth/install.sh: command failed: $*" >&2
        cat "$LOG" >&2
        exit 1
    fi
}

command -v python3 >/dev/null 2>&1 || { echo "oauth/install.sh: 'python3' not found on PATH" >&2; exit 1; }
mkdir -p "$ROOT/.tools"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    run python3 -m venv "$VENV"
fi
STAMP="$VENV/.oauth-requirements.sha256"
WANT="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ] || ! "$VENV/bin/python" -c 'import authlib' >/dev/null 2>&1; then
    run "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$HERE/requirements.txt"
    echo "$WANT" >"$STAMP"
fi
