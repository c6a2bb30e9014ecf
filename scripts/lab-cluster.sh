#!/usr/bin/env bash
# A real two-node Kubernetes cluster in lab namespaces (genuine control plane, containerd + kubelet +
# kube-proxy per node, images from the lab's own registry) with NovaNet installed by its Helm chart.
# Installs and builds what it needs first; runs until Ctrl-C, then removes everything.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh --k8s
. scripts/env.sh
cargo build --release --workspace --bins
bash scripts/install-bins.sh release # the README's `novanet lab status|down` afterwards
exec "$CARGO_TARGET_DIR/release/novanet" lab cluster "$@"
