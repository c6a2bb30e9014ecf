#!/usr/bin/env bash
# Installs everything NovaNet's build, lab and tests need, idempotently, on a fresh Debian 12 machine.
# Usage: scripts/setup.sh            (build + light lab)
#        scripts/setup.sh --k8s      (also the Kubernetes binaries the tests use, from tools/; cached)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
# Installs the Debian packages among "$@" that are not installed yet.
install_missing() {
  local missing=() p
  for p in "$@"; do have_pkg "$p" || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
}
install_missing rustc-web cargo-web libstd-rust-web-dev-bpf llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev \
  protobuf-compiler iproute2 iputils-ping iperf3 sockperf bpftool util-linux procps jq

if ! "$NOVANET_TOOLS/bin/bpf-linker" --version 2>/dev/null | grep -q '^bpf-linker 0.13'; then
  echo "setup: building bpf-linker 0.13 against LLVM 22" >&2
  PATH=/usr/lib/llvm-22/bin:$PATH cargo install --locked bpf-linker --version '^0.13' \
    --no-default-features --features llvm-22 --root "$NOVANET_TOOLS" >&2
fi

if [ "${1:-}" = "--k8s" ]; then
  # The lab's images and registry (tools/images/build.sh, crates/novanet-lab/src/registry.rs): skopeo
  # pushes the OCI archives, containerd + runc run them; gcc/libc6-dev build the static pause, and the
  # agnhost image copies curl, OpenBSD netcat (`nc -u`), dig, bash and iproute2 with their libraries.
  # containernetworking-plugins: the reference `loopback` plugin lab nodes ship, as node images do.
  # wget: GNU wget replaces busybox's in the images (Debian's busybox 1.35 wget segfaults on -T).
  install_missing containernetworking-plugins skopeo containerd runc busybox-static wget gcc libc6-dev curl \
    netcat-openbsd bind9-dnsutils bash iproute2 jq
  # What the tests start: a control plane, kubectl, helm, the registry, and what goes into the agnhost
  # image. tools/build.sh with no names builds them all.
  "$here/tools/build.sh" etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm \
    registry agnhost coredns kubelet kube-proxy e2e.test
fi
