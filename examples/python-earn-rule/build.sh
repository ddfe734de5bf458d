#!/usr/bin/env bash
# Builds the Python earn rule into a WebAssembly component with componentize-py.
#
#   bash examples/python-earn-rule/build.sh [OUT]
#
# OUT defaults to ${CARGO_TARGET_DIR:-<repo>/target}/plugins/python. The component is
# $OUT/python_earn_rule.wasm. componentize-py is installed at the pinned version into a venv
# at $OUT/venv (the only network access: PyPI, on the first build). A build is skipped when
# the inputs — app source, WIT, componentize-py version, this script — hash to the value in
# $OUT/python_earn_rule.wasm.stamp.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
PYTHON=${PYTHON:-python3}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-${CARGO_TARGET_DIR:-$REPO/target}/plugins/python}
WASM=$OUT/python_earn_rule.wasm
STAMP=$WASM.stamp

WIT_DIR=$REPO/wit/since_v0.1.0
APP_FILES=(app.py rules.py)

mkdir -p "$OUT"
# One build at a time per OUT (parallel test runs share the target directory).
if command -v flock >/dev/null; then
    exec 9>"$OUT/.build.lock"
    flock 9
fi

inputs_hash() {
    {
        echo "componentize-py $COMPONENTIZE_PY_VERSION"
        sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
        for f in "${APP_FILES[@]}"; do echo "app/$f"; sha256sum <"$HERE/src/$f"; done
        for f in "$WIT_DIR"/*.wit; do echo "wit/${f##*/}"; sha256sum <"$f"; done
    } | sha256sum | cut -d' ' -f1
}

HASH=$(inputs_hash)
if [[ -f $WASM && -f $STAMP && $(cat "$STAMP") == "$HASH" ]]; then
    echo "python earn rule: up to date ($WASM)"
    exit 0
fi

# componentize-py at the pinned version, in a venv of its own.
VENV=$OUT/venv
installed=$("$VENV/bin/python" -c \
    'import importlib.metadata as m; print(m.version("componentize-py"))' 2>/dev/null || true)
if [[ $installed != "$COMPONENTIZE_PY_VERSION" ]]; then
    echo "python earn rule: installing componentize-py==$COMPONENTIZE_PY_VERSION into $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# Stage exactly the inputs that were hashed — the whole WIT package (a world may use any of
# it) and the app — so nothing else (tests, __pycache__, a user's virtualenv) ends up inside the
# component.
STAGE=$OUT/stage
rm -rf "$STAGE"
mkdir -p "$STAGE/wit" "$STAGE/app" "$STAGE/no-venv/lib/site-packages"
cp "$WIT_DIR"/*.wit "$STAGE/wit/"
for f in "${APP_FILES[@]}"; do cp "$HERE/src/$f" "$STAGE/app/"; done

# --stub-wasi replaces every WASI import with a trapping stub, so the component imports only
# `loyalty:plugin/host` — the world's contract — and instantiates on a host that links no WASI.
# CPython is pre-initialised at build time, so a call needs no WASI; the cost is that the hash
# seed and `random`'s seed are fixed at build time (wanted here: calls are deterministic).
echo "python earn rule: building $WASM"
start=$(date +%s)
rm -f "$STAMP"
(
    cd "$STAGE"
    # componentize-py appends a host site-packages directory to the guest's path: that of
    # $VIRTUAL_ENV if set, else of the Python running it. Point it at an empty one, so neither
    # the caller's virtualenv nor the build venv (pip, setuptools) reaches the component.
    VIRTUAL_ENV=$STAGE/no-venv PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/componentize-py" --quiet \
        -d "$STAGE/wit" -w earn-rule \
        componentize app --stub-wasi -p "$STAGE/app" -o "$WASM.tmp"
)
mv "$WASM.tmp" "$WASM"
echo "$HASH" >"$STAMP"
echo "python earn rule: built in $(($(date +%s) - start)) s, $(stat -c %s "$WASM") bytes"
