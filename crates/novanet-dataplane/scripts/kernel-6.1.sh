#!/usr/bin/env bash
# Runs novanet-dataplane's test binaries (BPF_PROG_TEST_RUN tests and the namespace integration test) under
# Debian's 6.1 kernel in qemu via virtme-ng: the second point of the verifier matrix (the host runs 6.18).
# Needs: apt-get install qemu-system-x86 busybox-static kmod; pip install virtme-ng. Software emulation
# (nested KVM hangs): fine for functional tests, meaningless for timing. About 40 s after the build.
# Usage: crates/novanet-dataplane/scripts/kernel-6.1.sh   (KVER=6.1.0-NN-amd64 to pick another build)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
. "$repo/scripts/env.sh"
kver=${KVER:-6.1.0-50-amd64}
kdir="$NOVANET_CACHE/kernels/linux-$kver"
if [ ! -e "$kdir/boot/vmlinuz-$kver" ]; then
  dl=$(mktemp -d)
  (cd "$dl" && apt-get download "linux-image-$kver-unsigned" >&2)
  mkdir -p "$kdir" && dpkg-deb -x "$dl"/*.deb "$kdir"
  rm -rf "$dl"
fi
bins=$(cd "$repo" && cargo test -p novanet-dataplane --no-run --message-format=json \
  | jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test) | .executable')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  echo '#!/bin/sh'
  echo 'echo "kernel $(uname -r)"'
  for b in $bins; do echo "$b --test-threads=2 || echo \"FAILED: $b\""; done
} > "$work/run.sh"
chmod +x "$work/run.sh"
# vng's own exit status is unreliable with the console fallback; the log decides.
vng --disable-kvm --force-9p --memory 1G --cpus 2 --rwdir="$work" --run "$kdir/boot/vmlinuz-$kver" \
  --exec "$work/run.sh > $work/log 2>&1" > "$work/vng.log" 2>&1 || true
if [ ! -s "$work/log" ]; then
  echo "kernel-6.1: the guest produced no output; vng log:" >&2
  tail -40 "$work/vng.log" >&2
  exit 1
fi
cat "$work/log"
! grep -q '^FAILED:' "$work/log"
