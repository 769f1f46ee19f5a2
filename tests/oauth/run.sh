#!/usr/bin/env bash
# Runs the OAuth 2.0 and OpenID Connect test driven by Authlib against a homeserver:
#   tests/oauth/run.sh BASE_URL        e.g. tests/oauth/run.sh http://127.0.0.1:8008
# Needs tests/oauth/install.sh to have run. The script bounds itself; `timeout` is a last resort.
set -uo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 BASE_URL" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="$ROOT/.tools/oauth-venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "oauth: dependencies missing; run tests/oauth/install.sh first" >&2
    exit 2
fi
failed=0
echo "=== Authlib (OAuth 2.0, OpenID Connect) ==="
timeout -k 5 75 "$PY" "$HERE/authlib_flow.py" "$1" || failed=1
echo "=== demo service signing in with haetae (OpenID Connect) ==="
timeout -k 5 60 "$PY" "$HERE/demo_rp_flow.py" "$1" || failed=1
exit "$failed"
