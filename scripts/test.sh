#!/usr/bin/env bash
# The test command: formatting, clippy (warnings are errors), every test of the workspace (with
# the scan page in headless Chromium), the scan page's own JS tests, then a short fuzz run of
# every decoder of untrusted bytes. Extra arguments go to the test runner (e.g. a test name
# filter) and skip the JS tests and the fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

echo "== bitcoind (built once from the libbitcoinkernel-sys source and cached; ~12 min the first time)"
BITCOIND="$(scripts/bitcoind.sh | tail -1)/bitcoind"
export BITCOIND

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
if [ $# -eq 0 ]; then
  echo "== scan page JS tests (node --test)"
  node --test node/assets/scan/test/
  echo "== fuzz (15 s per target; scripts/fuzz.sh -t SECONDS for longer runs)"
  scripts/fuzz.sh -t 15
fi
