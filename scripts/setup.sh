#!/usr/bin/env bash
# Set up guidelab in a virtual environment: `bash scripts/setup.sh [test|dev]`.
#
# - The environment is ./.venv (it may be a link to a cached one, as CI makes it); one that
#   already works is reused, so a second run only refreshes the editable install.
# - PyTorch: a CPU-only wheel is preferred when pip can find one (it is a few hundred MB; the
#   default Linux wheel brings CUDA, several GB). Otherwise the default build is installed.
#   An environment that already has torch >= 2.4 keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
case "$extra" in ""|test|dev) ;; *) echo "setup.sh: unknown extra '$extra' (expected test or dev)" >&2; exit 2;; esac

python_bin="${PYTHON:-python3}"
if ! .venv/bin/python -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
    rm -rf .venv
    "$python_bin" -c 'import sys; assert sys.version_info >= (3, 10), "guidelab needs Python >= 3.10"'
    "$python_bin" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

has_torch() {
    .venv/bin/python - <<'PY' 2>/dev/null
import torch
major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
assert (major, minor) >= (2, 4)
PY
}
if ! has_torch; then
    # CPU-only wheels carry a local version label "+cpu"; take one if an index or find-links has it.
    "${pip[@]}" install --only-binary=:all: "torch==2.13.0+cpu" 2>/dev/null \
        || "${pip[@]}" install "torch>=2.4"
fi
target="."
[ -n "$extra" ] && target=".[$extra]"
"${pip[@]}" install -e "$target"
echo "guidelab is set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
