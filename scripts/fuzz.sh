#!/usr/bin/env bash
# Fuzzes every decoder of untrusted bytes (targets in tests/fuzz/fuzz_targets) with cargo fuzz
# (libFuzzer, nightly toolchain).
#
#   scripts/fuzz.sh                 every target for 15 s (what scripts/test.sh runs)
#   scripts/fuzz.sh -t 600 gossip   one target for 10 minutes
#   scripts/fuzz.sh --merge ...     afterwards, minimise what was found into the committed corpus
#   scripts/fuzz.sh --seeds         rewrite the seed inputs from protocol values first
#
# New inputs go to a scratch corpus; the committed one (tests/fuzz/corpus/<target>) is only read,
# unless --merge. A crash fails the script and leaves the input under tests/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

seconds=15
merge=0
seeds=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t|--seconds) seconds="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    --seeds) seeds=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(event certificate gossip proof_bundle http_body)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (crates.io)" >&2
  cargo install cargo-fuzz --locked -q
fi
if [ "$seeds" = 1 ]; then
  cargo test -q -p hallmark-tests --test fuzz_seeds -- --ignored >/dev/null
fi

fuzz_target_dir="$HOME/.cache/hallmark/fuzz-target"
echo "fuzz: building targets (nightly, ASan)" >&2
cargo +nightly fuzz build --fuzz-dir tests/fuzz --target-dir "$fuzz_target_dir" >&2

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
printf '%-14s %10s %10s %8s %8s\n' target runs exec/s cov corpus
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "tests/fuzz/corpus/$t" tests/fuzz/artifacts/"$t"
  log="$scratch/$t.log"
  if ! cargo +nightly fuzz run --fuzz-dir tests/fuzz --target-dir "$fuzz_target_dir" "$t" \
      "$scratch/$t" "tests/fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="tests/fuzz/artifacts/$t/" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $t FAILED (input saved under tests/fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  corpus=$(find "$scratch/$t" "tests/fuzz/corpus/$t" -type f | wc -l)
  printf '%-14s %10s %10s %8s %8s\n' "$t" "$runs" "$speed" "$cov" "$corpus"
  if [ "$merge" = 1 ]; then
    cargo +nightly fuzz run --fuzz-dir tests/fuzz --target-dir "$fuzz_target_dir" "$t" \
      "tests/fuzz/corpus/$t" "$scratch/$t" -- -merge=1 >/dev/null 2>&1
  fi
done
