#!/usr/bin/env bash
# matrix-rust-sdk (Element X's engine) against haetae, through simplified sliding sync.
#   tests/rust-sdk/run.sh BASE_URL      e.g. tests/rust-sdk/run.sh http://127.0.0.1:8008
# Builds the test program (its own Cargo project, outside the workspace, into
# target/rust-sdk), runs the client scenarios against BASE_URL, then the failover scenario
# against a three-DC deployment of its own (`haetae cluster up`, from target/debug/haetae):
# node 1 is SIGKILLed while the client syncs there, and the client carries on at node 2.
# Runs both scenarios (even if the first fails) and exits non-zero if either failed.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BASE_URL" >&2
    exit 2
fi
BASE_URL="$1"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export CARGO_TARGET_DIR="$ROOT/target/rust-sdk"
PROGRAM="$CARGO_TARGET_DIR/debug/haetae-rust-sdk-test"
HAETAE="$ROOT/target/debug/haetae"

echo "=== building the matrix-rust-sdk test program ==="
build_started=$SECONDS
(cd "$HERE" && cargo build --locked) || { echo "rust-sdk: build failed" >&2; exit 1; }
echo "built in $((SECONDS - build_started)) s"

# Each scenario bounds its steps (30-60 s each); `timeout` is only a last resort.
echo "=== matrix-rust-sdk: SyncService, room list, timeline, invite, encryption ==="
timeout -k 5 300 "$PROGRAM" basic "$BASE_URL"
BASIC_RC=$?

echo "=== matrix-rust-sdk: node killed mid-sync, client continues at another DC ==="
FAILOVER_RC=1
CLUSTER="$(mktemp -d)"
"$HAETAE" cluster up --dir "$CLUSTER/deployment" >"$CLUSTER/up.log" 2>&1 &
SUPERVISOR_PID=$!
stop_cluster() {
    "$HAETAE" cluster down --dir "$CLUSTER/deployment" >/dev/null 2>&1 || true
    kill "$SUPERVISOR_PID" 2>/dev/null || true
    wait "$SUPERVISOR_PID" 2>/dev/null || true
    rm -rf "$CLUSTER"
}
trap stop_cluster EXIT
# Ready when the supervisor has printed the Matrix endpoints (every DC serving).
ready=0
for _ in $(seq 1 1200); do
    if grep -q "Matrix endpoints" "$CLUSTER/up.log" 2>/dev/null; then ready=1; break; fi
    if ! kill -0 "$SUPERVISOR_PID" 2>/dev/null; then break; fi
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    cat "$CLUSTER/up.log"
    echo "rust-sdk: the three-DC deployment did not come up" >&2
else
    # Node 1 and node 2's Matrix endpoints and node 1's PID, from the deployment's state file.
    read -r NODE1 NODE2 NODE1_PID < <(python3 - "$CLUSTER/deployment/cluster.json" <<'PY'
import json, sys
dcs = json.load(open(sys.argv[1]))["dcs"]
print(f"http://{dcs[0]['host']}:{dcs[0]['http_port']}", f"http://{dcs[1]['host']}:{dcs[1]['http_port']}", dcs[0]["node_pid"])
PY
)
    timeout -k 5 300 "$PROGRAM" failover "$NODE1" "$NODE2" "$NODE1_PID"
    FAILOVER_RC=$?
    [ $FAILOVER_RC -ne 0 ] && tail -30 "$CLUSTER/up.log"
fi

result() { [ "$1" -eq 0 ] && echo "passed" || echo "FAILED (exit $1)"; }
echo "=== summary ==="
echo "client scenarios:  $(result $BASIC_RC)"
echo "failover scenario: $(result $FAILOVER_RC)"
PASSED=0; FAILED=0
for rc in $BASIC_RC $FAILOVER_RC; do
    if [ "$rc" -eq 0 ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
done
echo "rust-sdk: $PASSED passed, $FAILED failed"
[ $BASIC_RC -eq 0 ] && [ $FAILOVER_RC -eq 0 ]
