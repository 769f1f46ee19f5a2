#!/usr/bin/env bash
# Runs Schemathesis over the Matrix Client-Server API's OpenAPI definitions (vendored in
# tests/schemathesis/spec/) against a homeserver:
#   tests/schemathesis/run.sh BASE_URL        e.g. tests/schemathesis/run.sh http://127.0.0.1:8008
# Needs tests/schemathesis/install.sh to have run. Fails on any 5xx and on any answer that does
# not match the spec's schema for its status; run.py lists the checks, the bounds and the
# operations left out with the reason. The script bounds itself; `timeout` is a last resort.
set -uo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 BASE_URL" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="$ROOT/.tools/schemathesis-venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "schemathesis: dependencies missing; run tests/schemathesis/install.sh first" >&2
    exit 2
fi
echo "=== Schemathesis (Matrix Client-Server OpenAPI) ==="
timeout -k 5 600 "$PY" "$HERE/run.py" "$1"
