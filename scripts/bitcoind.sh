#!/usr/bin/env bash
# Provides bitcoind and bitcoin-cli and prints the directory holding them (last line of stdout).
#
# Order: $BITCOIND (and $BITCOIN_CLI, default: next to it); bitcoind on PATH; a build cached in
# ~/.cache/hallmark/bitcoin-core/<version>/bin; else build Bitcoin Core from the source tree that
# the crates.io package libbitcoinkernel-sys ships (nothing is downloaded outside the package
# registries), with cmake, once (~12 minutes on 2 cores), and cache it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

CRATE_VERSION="${HALLMARK_KERNEL_CRATE_VERSION:-0.4.1}"
log() { echo "bitcoind.sh: $*" >&2; }

check() { # dir
  [ -x "$1/bitcoind" ] && [ -x "$1/bitcoin-cli" ]
}

if [ -n "${BITCOIND:-}" ]; then
  dir=$(dirname "$(readlink -f "$BITCOIND")")
  cli="${BITCOIN_CLI:-$dir/bitcoin-cli}"
  [ -x "$BITCOIND" ] && [ -x "$cli" ] || { log "BITCOIND=$BITCOIND or its bitcoin-cli is not executable"; exit 1; }
  if [ "$(dirname "$(readlink -f "$cli")")" != "$dir" ]; then
    # Keep the "one directory" contract for callers.
    dir="$HALLMARK_CACHE/bitcoin-env"; mkdir -p "$dir"
    ln -sf "$(readlink -f "$BITCOIND")" "$dir/bitcoind"; ln -sf "$(readlink -f "$cli")" "$dir/bitcoin-cli"
  fi
  echo "$dir"; exit 0
fi
if command -v bitcoind >/dev/null && command -v bitcoin-cli >/dev/null; then
  dir=$(dirname "$(readlink -f "$(command -v bitcoind)")")
  check "$dir" && { echo "$dir"; exit 0; }
fi

prefix="$HALLMARK_CACHE/bitcoin-core/$CRATE_VERSION"
cached() {
  if check "$prefix/bin"; then
    echo "$prefix/bin"; exit 0
  fi
}
cached
# One build at a time (tests and scripts may ask concurrently); whoever waited finds it built.
mkdir -p "$HALLMARK_CACHE/bitcoin-core"
exec 9>"$HALLMARK_CACHE/bitcoin-core/build.lock"
flock 9
cached

log "no bitcoind found: building Bitcoin Core from libbitcoinkernel-sys $CRATE_VERSION (one time, ~12 min on 2 cores)"
scripts/setup.sh
work="$HALLMARK_CACHE/bitcoin-core/build-$CRATE_VERSION"
mkdir -p "$work"
src="$work/src"
if [ ! -f "$src/CMakeLists.txt" ]; then
  log "fetching the crate from crates.io"
  fetchdir="$work/fetch"
  mkdir -p "$fetchdir/src"
  cat > "$fetchdir/Cargo.toml" <<TOML
[package]
name = "fetch-kernel-source"
version = "0.0.0"
edition = "2021"
[dependencies]
libbitcoinkernel-sys = "=$CRATE_VERSION"
TOML
  echo "" > "$fetchdir/src/lib.rs"
  (cd "$fetchdir" && CARGO_TARGET_DIR="$fetchdir/target" cargo fetch -q)
  crate=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -name "libbitcoinkernel-sys-$CRATE_VERSION.crate" | head -1)
  [ -n "$crate" ] || { log "crate file not found after cargo fetch"; exit 1; }
  rm -rf "$work/unpack"; mkdir -p "$work/unpack"
  tar -xzf "$crate" -C "$work/unpack"
  cm=$(find "$work/unpack" -name CMakeLists.txt -path "*bitcoin*" -printf '%d %p\n' | sort -n | head -1 | cut -d' ' -f2)
  [ -n "$cm" ] || { log "no Bitcoin Core source tree inside the crate"; exit 1; }
  rm -rf "$src"; mv "$(dirname "$cm")" "$src"
  log "Bitcoin Core source: $(grep -m1 -E 'set\(CLIENT_VERSION_MAJOR|CLIENT_VERSION_MAJOR' "$src/CMakeLists.txt" || true)"
fi
jobs=$(nproc)
log "configuring (cmake)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_DAEMON=ON -DBUILD_CLI=ON -DENABLE_WALLET=OFF -DENABLE_IPC=OFF -DWITH_ZMQ=OFF \
  -DWITH_EMBEDDED_ASMAP=OFF -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_KERNEL_LIB=OFF \
  -DBUILD_TX=OFF -DBUILD_UTIL=OFF -DBUILD_WALLET_TOOL=OFF -DBUILD_GUI=OFF \
  -DCMAKE_INSTALL_PREFIX="$prefix" >"$work/cmake.log" 2>&1 || { tail -30 "$work/cmake.log" >&2; exit 1; }
log "compiling with $jobs jobs (progress below)"
cmake --build "$work/build" -j "$jobs" --target bitcoind bitcoin-cli 2>&1 | tee "$work/build.log" \
  | grep --line-buffered -E '^\[ *[0-9]+%\]' | awk '{ if ($2 != last) { print "bitcoind.sh: build " $1 " " $2; last = $2 } fflush() }' >&2
mkdir -p "$prefix/bin"
for b in bitcoind bitcoin-cli; do
  f=$(find "$work/build" -type f -name "$b" -perm -u+x | head -1)
  [ -n "$f" ] || { log "build produced no $b; see $work/build.log"; exit 1; }
  cp "$f" "$prefix/bin/$b"
done
"$prefix/bin/bitcoind" -version >/dev/null || { log "the built bitcoind does not run"; exit 1; }
log "built $("$prefix/bin/bitcoind" -version | head -1) into $prefix/bin"
echo "$prefix/bin"
