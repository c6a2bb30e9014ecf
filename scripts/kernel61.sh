#!/usr/bin/env bash
# The dataplane's tests under Debian's 6.1 kernel in qemu (virtme-ng, software emulation): every eBPF
# program loaded by this kernel's verifier and run with BPF_PROG_TEST_RUN, and the real-packet tests between
# namespaces, beside the host kernel's run in scripts/test.sh (a verifier matrix: 6.18 and 6.1).
#   sudo scripts/kernel61.sh        # prints one summary line per test binary, exits non-zero on a failure
# Installs what it needs (qemu-system-x86, kmod, virtme-ng, the kernel package, cached under
# ~/.cache/novanet/kernels). Logs stay in the directory it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

KVER=6.1.0-50-amd64
KDIR="$HOME/.cache/novanet/kernels/$KVER"
# A fresh VM's monotonic clock starts at zero: this test needs it past the 300 s UDP idle time.
SKIP=(--skip test_run::idle_flows_expire_in_the_datapath_and_in_the_sweep)

command -v qemu-system-x86_64 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 kmod >/dev/null
command -v vng >/dev/null || pip install -q virtme-ng
if [ ! -f "$KDIR/boot/vmlinuz-$KVER" ]; then
    mkdir -p "$KDIR"
    (cd "$KDIR" && apt-get download -q "linux-image-$KVER-unsigned" && dpkg-deb -x linux-image-"$KVER"-unsigned_*.deb . && rm -f ./*.deb)
fi

mapfile -t BINS < <(cargo test -p novanet-dataplane --no-run --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"] + " " + m["executable"])')
[ "${#BINS[@]}" -gt 0 ] || { echo "kernel61: no test binaries built" >&2; exit 1; }

OUT=$(mktemp -d /tmp/novanet-kernel61.XXXXXX)
SCRIPT="$OUT/run.sh"
{
    echo 'cd crates/novanet-dataplane'
    echo "uname -r > $OUT/uname"
    for entry in "${BINS[@]}"; do
        name=${entry%% *} bin=${entry#* }
        echo "$bin --test-threads=1 ${SKIP[*]} > $OUT/$name.log 2>&1; echo \$? > $OUT/$name.rc"
    done
} > "$SCRIPT"
echo "kernel61: booting $KVER under qemu (no KVM), logs in $OUT"
vng --disable-kvm --force-9p --memory 2G --cpus 2 --rwdir "$OUT" --run "$KDIR/boot/vmlinuz-$KVER" \
    --exec "bash $SCRIPT" >"$OUT/vm.log" 2>&1 || true

[ -s "$OUT/uname" ] || { echo "kernel61: the VM did not run the tests (see $OUT/vm.log)" >&2; exit 1; }
status=0
for entry in "${BINS[@]}"; do
    name=${entry%% *}
    rc=$(cat "$OUT/$name.rc" 2>/dev/null || echo missing)
    summary=$(grep -E '^test result:' "$OUT/$name.log" 2>/dev/null | tail -1 || true)
    echo "kernel $(cat "$OUT/uname"): $name: ${summary:-no result} (exit $rc)"
    [ "$rc" = 0 ] || status=1
done
echo "kernel61: skipped test_run::idle_flows_expire_in_the_datapath_and_in_the_sweep (needs a clock past 300 s; it runs on the host kernel)"
exit $status
