# Sourced by the scripts: where costly build outputs live (outside the clone, kept between CI runs).
export NOVANET_CACHE="${NOVANET_CACHE:-$HOME/.cache/novanet}"
export NOVANET_TOOLS="$NOVANET_CACHE/tools"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$NOVANET_CACHE/target}"
export PATH="$NOVANET_TOOLS/bin:$PATH"
mkdir -p "$NOVANET_TOOLS/bin"
