#!/usr/bin/env bash
# Runs every NovaNet test: unit tests, datapath tests with real packets in network namespaces, the lab
# integration tests, and the tests against a genuine Kubernetes control plane. Installs what it needs
# first (scripts/setup.sh --k8s; idempotent, cached outside the clone). Needs root (namespaces, eBPF).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh --k8s
. scripts/env.sh
start=$(date +%s)
# The lab tests run the agent and CNI binaries, so build them before the tests.
cargo build --workspace --bins
# The README's commands call `novanet` from PATH (crates/novanet-lab/tests/lab_cli.rs runs them as written).
bash scripts/install-bins.sh debug
cargo test --workspace --no-fail-fast "$@"
echo "all tests passed in $(( $(date +%s) - start ))s"
