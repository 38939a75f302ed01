#!/usr/bin/env bash
# Installs what the build and tests need (idempotent; does nothing when all is present): Debian
# packages, and the OpenTimestamps client from PyPI. Extra Debian packages may be named as
# arguments (scripts/build-pgo.sh: llvm-19).
#   libclang-dev: RocksDB's bindgen.  cmake, pkg-config: -sys crates and the bitcoind build.
#   libboost-dev, libevent-dev: building bitcoind from source (scripts/bitcoind.sh).
#   chromium, nodejs, npm: the scan page's end-to-end test (tests/browser, playwright-core).
set -euo pipefail
packages=(libclang-dev cmake pkg-config libboost-dev libevent-dev chromium "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -ne 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  echo "setup: done" >&2
fi
# The stock OpenTimestamps client, used by the tests to verify exported .ots proofs.
if ! command -v ots >/dev/null 2>&1; then
  echo "setup: installing opentimestamps-client (PyPI)" >&2
  python3 -m pip install -q opentimestamps-client >/dev/null 2>&1 || pip install -q opentimestamps-client >/dev/null
  hash -r
fi
# Node.js (the machine's, or Debian's) and playwright-core for the browser test.
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing nodejs and npm" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -d "$root/tests/browser/node_modules/playwright-core" ]; then
  echo "setup: installing playwright-core (npm ci in tests/browser)" >&2
  (cd "$root/tests/browser" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
