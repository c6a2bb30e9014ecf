#!/usr/bin/env bash
# The quickstart: installs what NovaNet needs, builds it, brings up the lab of examples/quickstart.yaml
# (one node namespace with a real agent, two pods wired by the real CNI plugin), and pings between the pods.
# Puts `novanet` and `novanetctl` on PATH (scripts/install-bins.sh: symlinks in /usr/local/bin), so the
# README's commands work as written afterwards. The lab stays up: `novanet lab status|exec|probe --name
# quickstart`, then `novanet lab down --name quickstart`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace --bins
bash scripts/install-bins.sh release
bin="$CARGO_TARGET_DIR/release"
# Re-running replaces the previous quickstart lab.
"$bin/novanet" lab down --name quickstart >/dev/null 2>&1 || true
"$bin/novanet" lab up --name quickstart -f "${1:-examples/quickstart.yaml}"
server_ip=$("$bin/novanet" lab status --name quickstart | awk '$1 == "demo/server" {print $3}')
echo
echo "+ novanet lab exec --name quickstart client -- ping -c 3 $server_ip"
"$bin/novanet" lab exec --name quickstart client -- ping -c 3 "$server_ip"
echo
echo "The lab is still up. novanet and novanetctl are on PATH (links to $bin)."
echo "Remove it with: novanet lab down --name quickstart"
