#!/usr/bin/env bash
# Differential test of the Python rule against the Rust plugin, natively (no Wasm):
#   bash examples/python-earn-rule/conformance/run.sh [CASES] [SEED]
# Builds the small harness crate next to this script into the target directory (offline, from
# the crates the repository's lock files already fetched), then runs conformance.py.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/python-earn-rule-conformance
cargo build --quiet --offline --manifest-path "$HERE/Cargo.toml" --target-dir "$TARGET"
PYTHONDONTWRITEBYTECODE=1 python3 "$HERE/conformance.py" \
    "$TARGET/debug/earn-category-multiplier-conformance" "${1:-20000}" "${2:-1}"
