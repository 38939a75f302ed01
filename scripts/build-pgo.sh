#!/usr/bin/env bash
# Builds a profile-guided (PGO) release binary of `hallmark` for operators and benchmarks:
#   1. a release build instrumented to count which branches and calls run (`-Cprofile-generate`),
#   2. a training run: `hallmark bench` with that binary (a local federation of 4 operators under
#      load at the max rate, then at a fixed rate), every process writing its counts on exit,
#   3. `llvm-profdata merge` of the counts,
#   4. the release build again, optimised with them (`-Cprofile-use`): LLVM lays out hot paths
#      together and inlines by measured call counts instead of guesses.
# The release profile (fat LTO, one codegen unit, `Cargo.toml`) is used for both builds, so the
# functions of the profile match those of the final build. Figures: docs/benchmarks.md.
#
# Usage: scripts/build-pgo.sh            prints the path of the binary on its last line
# Cost on 2 cores: 49 min from nothing (two full release builds of 23-24 min, RocksDB's C++
# included, and 2 min of training). A later run rebuilds what changed in the instrumented build,
# and every Rust crate of the final one (rustc tracks the profile, which is new), not the C++.
# Needs `llvm-profdata` able to read rustc's profiles: the `llvm-tools` rustup component, or
# Debian's llvm-19 (installed with apt when none is found; `LLVM_PROFDATA` names another).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/env.sh"
host="$(rustc -vV | sed -n 's/^host: //p')"
pgo="$HALLMARK_CACHE/pgo"
raw="$pgo/raw"
profdata="$pgo/hallmark.profdata"
gen_dir="$HALLMARK_CACHE/target-pgo-gen"
use_dir="$HALLMARK_CACHE/target-pgo"

find_profdata() {
  local c
  for c in "${LLVM_PROFDATA:-}" "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
    llvm-profdata-22 llvm-profdata-21 llvm-profdata-20 llvm-profdata-19; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && { command -v "$c"; return 0; }
  done
  return 1
}
# The build's own packages (libclang for RocksDB, ...), and llvm-19 when no llvm-profdata is found.
if profdata_tool="$(find_profdata)"; then
  "$root/scripts/setup.sh"
else
  echo "build-pgo: no llvm-profdata for rustc's LLVM; installing Debian's llvm-19" >&2
  "$root/scripts/setup.sh" llvm-19
  profdata_tool="$(find_profdata)" || {
    echo "build-pgo: still no llvm-profdata: run 'rustup component add llvm-tools' or set LLVM_PROFDATA" >&2
    exit 1
  }
fi

cd "$root"
echo "build-pgo: [1/4] instrumented release build in $gen_dir" >&2
CARGO_TARGET_DIR="$gen_dir" RUSTFLAGS="-Cprofile-generate=$raw" \
  cargo build --release --locked -p hallmark-node --target "$host"
gen_bin="$gen_dir/$host/release/hallmark"

echo "build-pgo: [2/4] training: hallmark bench with the instrumented binary" >&2
rm -rf "$raw"
mkdir -p "$raw"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# One file per process (the bench client and the operators it starts), merged below.
export LLVM_PROFILE_FILE="$raw/hallmark-%p.profraw"
(cd "$work" && "$gen_bin" bench --duration 30 --clients 512 && "$gen_bin" bench --duration 20 --rate 1500) >&2
n=$(find "$raw" -name '*.profraw' | wc -l)
if [ "$n" -lt 5 ]; then
  echo "build-pgo: expected a profile from each bench client and operator in $raw, found $n" >&2
  exit 1
fi

echo "build-pgo: [3/4] merging $n profiles with $profdata_tool" >&2
unset LLVM_PROFILE_FILE
"$profdata_tool" merge -o "$profdata.tmp" "$raw"
mv "$profdata.tmp" "$profdata"

echo "build-pgo: [4/4] release build with the profile in $use_dir" >&2
CARGO_TARGET_DIR="$use_dir" RUSTFLAGS="-Cprofile-use=$profdata" \
  cargo build --release --locked -p hallmark-node --target "$host"
echo "$use_dir/$host/release/hallmark"
