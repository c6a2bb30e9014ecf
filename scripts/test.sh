#!/usr/bin/env bash
# Runs every NovaNet test: unit tests, datapath tests with real packets in network namespaces, the lab
# integration tests, and the tests against a genuine Kubernetes control plane. Installs what it needs
# first (scripts/setup.sh --k8s; idempotent, cached outside the clone). Needs root (namespaces, eBPF).
#
# A test that cannot run here skips (novanet_testkit::skip): libtest counts it as passed, so each skip
# is recorded in $NOVANET_SKIP_LOG and the closing summary lists them. With CI=true or
# NOVANET_REQUIRE_ALL=1 a skip fails its test instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh --k8s
. scripts/env.sh
start=$(date +%s)
# The lab tests run the agent and CNI binaries, so build them before the tests.
cargo build --workspace --bins

NOVANET_SKIP_LOG=$(mktemp -t novanet-skips.XXXXXX)
export NOVANET_SKIP_LOG
output=$(mktemp -t novanet-test-output.XXXXXX)
trap 'rm -f "$NOVANET_SKIP_LOG" "$output"' EXIT
# The README's commands call `novanet` from PATH (crates/novanet-lab/tests/lab_cli.rs runs them as written).
bash scripts/install-bins.sh debug
rc=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$output" || rc=$?

# libtest's "test result: ok. N passed; M failed; ..." lines, summed; a skipped test is among the passed.
sum() { grep -oE "^test result: [A-Za-z]+\. .*" "$output" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
passed=$(sum passed)
failed=$(sum failed)
skipped=$(wc -l <"$NOVANET_SKIP_LOG")
if [ "$skipped" -gt 0 ]; then
  echo "skipped tests:"
  sed 's/^SKIP /  /' "$NOVANET_SKIP_LOG"
fi
echo "tests: $((passed + failed - skipped)) ran, $skipped skipped"
echo "$((passed - skipped)) passed, $failed failed, $skipped skipped"
if [ "$rc" -ne 0 ]; then
  echo "tests FAILED (cargo test exit $rc) after $(( $(date +%s) - start ))s"
  exit "$rc"
fi
echo "all tests passed in $(( $(date +%s) - start ))s"
