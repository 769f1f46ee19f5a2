#!/usr/bin/env bash
# Installs what tests/browser/run.sh needs; safe to run repeatedly.
#  - Debian's Chromium (/usr/bin/chromium), if missing
#  - the npm dependencies pinned in package-lock.json (npm ci), if missing or stale
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ ! -x /usr/bin/chromium ]]; then
    echo "install: apt-get install chromium chromium-driver"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
else
    echo "install: chromium present ($(/usr/bin/chromium --version 2>/dev/null | head -1))"
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install: node/npm missing: apt-get install nodejs npm"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi

cd "$HERE"
if [[ ! -d node_modules/playwright-core || ! -d node_modules/hydrogen-view-sdk \
      || package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "install: npm ci"
    npm ci --no-audit --no-fund --loglevel=error
else
    echo "install: npm dependencies present"
fi
