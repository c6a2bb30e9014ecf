#!/usr/bin/env bash
# Kubernetes' own e2e suites against NovaNet in a real lab cluster (`novanet lab cluster`), one command each:
#
#   scripts/e2e.sh netpol        the [sig-network] Netpol specs (SCTP ones skipped: this kernel has no SCTP)
#   scripts/e2e.sh conformance   the sig-network [Conformance] specs
#   scripts/e2e.sh focus <regex> any specs
#
# Builds what it needs, brings up a detached lab cluster with a unique name, runs the pinned `e2e.test`
# from inside the lab underlay, prints its summary (the "Ran N of M Specs" and "SUCCESS!/FAIL!" lines),
# and removes the cluster on exit, even on failure. Extra arguments go to e2e.test (e.g.
# `--ginkgo.skip=...`). Exit status: e2e.test's.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
suite=${1:-}
shift || true
skip='\[Serial\]|\[Disruptive\]|\[Flaky\]|\[Slow\]'
case "$suite" in
  netpol)
    focus='\[sig-network\] Netpol '
    # SCTP: the host kernel is built without it (socket(SCTP) fails with EPROTONOSUPPORT).
    skip='SCTP|\[Serial\]|\[Disruptive\]|\[Flaky\]'
    ;;
  conformance) focus='\[sig-network\].*\[Conformance\]' ;;
  focus)
    focus=${1:?usage: scripts/e2e.sh focus <regex>}
    shift
    ;;
  *)
    echo "usage: scripts/e2e.sh netpol|conformance|focus <regex> [e2e.test args]" >&2
    exit 2
    ;;
esac

bash scripts/setup.sh --k8s
. scripts/env.sh
cargo build --release --workspace --bins
bash scripts/install-bins.sh release
bins=$(ls -d "$NOVANET_CACHE"/k8s/*/bin | head -n1)
name="e2e-$$"
lab_dir="/run/novanet-lab/$name"
cleanup() { "$CARGO_TARGET_DIR/release/novanet" lab down --name "$name" || true; }
trap cleanup EXIT
"$CARGO_TARGET_DIR/release/novanet" lab cluster --detach --name "$name"
underlay=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["underlayNetns"])' "$lab_dir/state.json")
log="${NOVANET_E2E_LOG:-$(mktemp -t "novanet-e2e-$suite.XXXXXX")}"
echo "e2e: $suite (focus: $focus; skip: $skip), log: $log"
start=$(date +%s)
rc=0
nsenter --net="/run/netns/$underlay" -- "$bins/e2e.test" \
  --kubeconfig="$lab_dir/control-plane/admin.kubeconfig" --provider=skeleton \
  --ginkgo.no-color --ginkgo.timeout=2h --ginkgo.focus="$focus" --ginkgo.skip="$skip" "$@" >"$log" 2>&1 || rc=$?
grep -E '^\[FAIL\]|^  \[FAIL\]|Ran [0-9]+ of [0-9]+ Specs|SUCCESS!|FAIL!' "$log" | sort -u || true
echo "e2e: $suite took $(( $(date +%s) - start ))s, exit $rc"
exit "$rc"
