#!/usr/bin/env bash
# Installs the Debian packages the build needs (idempotent; does nothing when all are present).
#   libclang-dev: RocksDB's bindgen.  cmake, pkg-config: -sys crates and the bitcoind build.
#   libboost-dev, libevent-dev: building bitcoind from source (scripts/bitcoind.sh).
set -euo pipefail
packages=(libclang-dev cmake pkg-config libboost-dev libevent-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
echo "setup: done" >&2
