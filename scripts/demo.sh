#!/usr/bin/env bash
# The main job, end to end. For now: the protocol demo (an in-process 3-of-4 federation
# certifies a registration, a mint and a transfer; a client verifies them and catches forgeries).
# Later issues extend this to a networked federation on a real regtest bitcoind.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
echo "== building hallmark (first build of the dependencies takes ~15 minutes on 2 cores)"
cargo build --locked -p hallmark-node --bin hallmark
"$CARGO_TARGET_DIR/debug/hallmark" demo
