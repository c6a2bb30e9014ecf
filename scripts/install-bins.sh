#!/usr/bin/env bash
# Puts NovaNet's user commands, `novanet` and `novanetctl`, on PATH: symlinks in /usr/local/bin (or
# $NOVANET_BIN_PREFIX) to one build profile's binaries, replacing older links; idempotent. `novanet`
# finds the agent and the CNI plugin next to the binary the link points at.
# Usage: scripts/install-bins.sh [release|debug]   (default: release, what the quickstart builds)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
profile="${1:-release}"
src="$CARGO_TARGET_DIR/$profile"
dest="${NOVANET_BIN_PREFIX:-/usr/local/bin}"
mkdir -p "$dest"
for bin in novanet novanetctl; do
  [ -x "$src/$bin" ] || { echo "install-bins: $src/$bin is not built (cargo build$([ "$profile" = release ] && echo " --release") --workspace --bins)" >&2; exit 1; }
  if [ "$(readlink "$dest/$bin" 2>/dev/null)" != "$src/$bin" ]; then
    ln -sfn "$src/$bin" "$dest/$bin"
    echo "install-bins: $dest/$bin -> $src/$bin" >&2
  fi
done
