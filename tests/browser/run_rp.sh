#!/usr/bin/env bash
# Headless Chromium logs in to the demo service (tests/oauth/demo_rp.py) with haetae:
#   tests/browser/run_rp.sh BASE_URL [OUT_DIR]
# Needs tests/browser/install.sh and tests/oauth/install.sh. Starts the demo service on a free
# loopback port and stops it afterwards; the browser part caps itself at 60 s.
set -uo pipefail
if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 BASE_URL [OUT_DIR]" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="$ROOT/.tools/oauth-venv/bin/python"
OUT_DIR="${2:-$HERE/out}"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
SERVICE="http://127.0.0.1:$PORT"
"$PY" "$ROOT/tests/oauth/demo_rp.py" "$1" "$PORT" &
SERVICE_PID=$!
trap 'kill "$SERVICE_PID" 2>/dev/null; wait "$SERVICE_PID" 2>/dev/null' EXIT
for _ in $(seq 1 200); do
    curl -sf "$SERVICE/" >/dev/null 2>&1 && break
    kill -0 "$SERVICE_PID" 2>/dev/null || { echo "rp login: FAILED: the demo service exited" >&2; exit 1; }
    sleep 0.1
done
timeout -k 5 75 node "$HERE/rp_login.mjs" "$1" "$SERVICE" "$OUT_DIR"
