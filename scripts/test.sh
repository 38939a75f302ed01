#!/usr/bin/env bash
# The test command: formatting, clippy (warnings are errors), then every test of the workspace.
# Extra arguments go to the test runner (e.g. a test name filter).
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
