#!/usr/bin/env bash
# Run the client-library compatibility tests against a homeserver.
#   tests/compat/run.sh BASE_URL          e.g. tests/compat/run.sh http://127.0.0.1:8008
# Needs tests/compat/install.sh to have run. Runs every suite (even if an
# earlier one fails), reports each, and exits non-zero if any failed.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BASE_URL" >&2
    exit 2
fi
BASE_URL="$1"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="$ROOT/.tools/venv/bin/python"
NODE="${NODE:-node}"

if [ ! -x "$PY" ] || [ ! -d "$HERE/js/node_modules/matrix-js-sdk" ]; then
    echo "compat: dependencies missing; run tests/compat/install.sh first" >&2
    exit 2
fi

# Each script bounds itself (< 60 s); `timeout` is only a last resort.
run_suite() {
    local name="$1"; shift
    echo "=== $name ==="
    timeout -k 5 75 "$@"
    local rc=$?
    [ $rc -eq 124 ] && echo "$name: FAIL (killed by run.sh after 75 s)" >&2
    return $rc
}

run_suite "matrix-nio" "$PY" "$HERE/nio_smoke.py" "$BASE_URL"
NIO_RC=$?
run_suite "matrix-js-sdk" "$NODE" "$HERE/js/smoke.mjs" "$BASE_URL"
JS_RC=$?
run_suite "matrix-js-sdk oauth" "$NODE" "$HERE/js/oauth_login.mjs" "$BASE_URL"
OAUTH_RC=$?

result() { [ "$1" -eq 0 ] && echo "passed" || echo "FAILED (exit $1)"; }
echo "=== summary ==="
echo "matrix-nio:          $(result $NIO_RC)"
echo "matrix-js-sdk:       $(result $JS_RC)"
echo "matrix-js-sdk oauth: $(result $OAUTH_RC)"
PASSED=0; FAILED=0
for rc in $NIO_RC $JS_RC $OAUTH_RC; do
    if [ "$rc" -eq 0 ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
done
echo "compat: $PASSED passed, $FAILED failed"
[ $NIO_RC -eq 0 ] && [ $JS_RC -eq 0 ] && [ $OAUTH_RC -eq 0 ]
