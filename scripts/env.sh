# Sourced by the other scripts: shared cache locations outside the clone.
export HALLMARK_CACHE="${HALLMARK_CACHE:-$HOME/.cache/hallmark}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HALLMARK_CACHE/target}"
mkdir -p "$HALLMARK_CACHE" "$CARGO_TARGET_DIR"
