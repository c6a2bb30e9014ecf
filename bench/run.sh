#!/usr/bin/env bash
# Builds the workspace binaries in release (the bench drives the real novanet-agent and novanet-cni, found
# next to its own executable) and runs the benchmark. Arguments go to novanet-bench, e.g.
#   sudo bench/run.sh --rounds 3 --seconds 3 --pods 100 [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --release --workspace --bins
exec "$CARGO_TARGET_DIR/release/novanet-bench" "$@"
