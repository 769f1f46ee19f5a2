#!/usr/bin/env bash
# Headless-Chromium end-to-end test: the Hydrogen Matrix web client against a
# homeserver.
#
#   tests/browser/run.sh BASE_URL [OUT_DIR]
#
# BASE_URL  homeserver base URL, e.g. http://127.0.0.1:8008 (must allow
#           registration with m.login.dummy and send CORS headers)
# OUT_DIR   where the screenshot and browser console log go
#           (default: tests/browser/out/)
#
# Prints the steps and finally "browser e2e: OK (screenshot: PATH)"; exits
# non-zero with the reason on failure. Whole run is capped at 115 s.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 BASE_URL [OUT_DIR]" >&2
    exit 2
fi
BASE_URL="$1"
OUT_DIR="${2:-$HERE/out}"

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
    echo "browser e2e: FAILED: no Chromium at $CHROMIUM (run tests/browser/install.sh, or set CHROMIUM=)" >&2
    exit 1
fi
if ! command -v node >/dev/null; then
    echo "browser e2e: FAILED: node is not installed" >&2
    exit 1
fi

cd "$HERE"
if [[ ! -d node_modules/playwright-core || ! -d node_modules/hydrogen-view-sdk \
      || package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "browser e2e: installing npm dependencies (npm ci)"
    if ! npm ci --no-audit --no-fund --loglevel=error >&2; then
        echo "browser e2e: FAILED: npm ci in $HERE failed" >&2
        exit 1
    fi
fi

export CHROMIUM
# the node script enforces its own 110 s deadline; this is the backstop
set +e
timeout -k 5 115 node "$HERE/e2e.mjs" "$BASE_URL" "$OUT_DIR"
rc=$?
set -e
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "browser e2e: FAILED: hard timeout (115 s) hit" >&2
fi
exit $rc
