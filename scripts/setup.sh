#!/usr/bin/env bash
# Set up guidelab in a virtual environment: `bash scripts/setup.sh [EXTRA[,EXTRA...]]`.
#
# - EXTRA is any extra of pyproject.toml's [project.optional-dependencies] (read from the file:
#   digits, ray, diffusers, all, test, dev, ...), several comma-separated (`digits,ray`), or
#   `torchvision`, which only this script installs (see below).
# - The environment is ./.venv (it may be a link to a cached one, as CI makes it); one that
#   already works is reused, so a second run only refreshes the editable install.
# - PyTorch: a CPU-only wheel is preferred when pip can find one (it is a few hundred MB; the
#   default Linux wheel brings CUDA, several GB). Otherwise the default build is installed.
#   An environment that already has torch >= 2.4 keeps it: extras are installed with the
#   constraint torch==<installed version>, so pip fails rather than replace it.
# - torchvision: each release is built for one torch release (0.<m + 15> for torch 2.m), and a
#   plain requirement would let pip swap torch for the one it wants. So it is installed here,
#   without dependencies, at the release that matches the environment's torch, and kept only if
#   its operators load (torchvision.ops.nms); otherwise it is removed again, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
requested="${1:-}"

python_bin="${PYTHON:-python3}"
at_least_311='import sys; sys.exit(sys.version_info < (3, 11))'
if .venv/bin/python -c "$at_least_311" 2>/dev/null; then
    fresh=0
    python_now=.venv/bin/python
else
    if ! "$python_bin" -c "$at_least_311" 2>/dev/null; then
        found=$("$python_bin" -V 2>/dev/null || echo "not found")
        echo "setup.sh: guidelab needs Python >= 3.11; $python_bin is $found" \
            "(set PYTHON to a Python 3.11 or newer)" >&2
        exit 2
    fi
    fresh=1
    python_now="$python_bin"
fi

# The extras pip installs (pyproject's, comma-separated) and whether torchvision is wanted.
# Names come from pyproject.toml itself, so a new extra needs no change here.
parsed=$("$python_now" - "$requested" <<'PY'
import sys
import tomllib

with open("pyproject.toml", "rb") as handle:
    declared = set(tomllib.load(handle)["project"].get("optional-dependencies", {}))
valid = sorted(declared | {"torchvision"})
asked = [name.strip() for name in sys.argv[1].split(",")] if sys.argv[1].strip() else []
unknown = [name for name in asked if name not in valid]
if unknown:
    print(f"setup.sh: unknown extra {unknown[0]!r}; valid extras: {', '.join(valid)} "
          "(several comma-separated, e.g. digits,ray)", file=sys.stderr)
    sys.exit(2)
print(",".join(name for name in dict.fromkeys(asked) if name != "torchvision"))
print("torchvision" in asked)
PY
) || exit 2
pip_extras=$(sed -n 1p <<<"$parsed")
want_torchvision=$(sed -n 2p <<<"$parsed")

if [ "$fresh" = 1 ]; then
    rm -rf .venv
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

# Pin the environment's torch for everything installed from here on. A constraint on the
# command line adds to any constraints pip's configuration already sets.
torch_version=$(.venv/bin/python -c 'import torch; print(torch.__version__)')
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" >"$constraints"

target="."
[ -n "$pip_extras" ] && target=".[$pip_extras]"
"${pip[@]}" install --constraint "$constraints" -e "$target"

if [ "$want_torchvision" = True ]; then
    torch_minor=$(.venv/bin/python -c 'import torch
major, minor = torch.__version__.split("+")[0].split(".")[:2]
print(minor if major == "2" else "")')
    if [ -z "$torch_minor" ]; then
        echo "setup.sh: torchvision: no known torchvision release for torch $torch_version;" \
            "install torch and its matching torchvision yourself" >&2
        exit 1
    fi
    torchvision_spec="torchvision==0.$((torch_minor + 15)).*"
    "${pip[@]}" install --no-deps --constraint "$constraints" "$torchvision_spec"
    if ! failure=$(.venv/bin/python - 2>&1 <<'PY'
import torch
import torchvision

torchvision.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5)
PY
    ); then
        "${pip[@]}" uninstall -y torchvision
        reason=$(grep -v '^\s*$' <<<"$failure" | tail -n 1)
        echo "setup.sh: torchvision: $torchvision_spec does not work beside torch" \
            "$torch_version ($reason), so it was removed again; for torchvision install a" \
            "CUDA build of torch with its matching torchvision, e.g." \
            "'.venv/bin/pip install torch==2.14.1 torchvision==0.29.1'" >&2
        exit 1
    fi
fi
installed=$(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')
if [ "$want_torchvision" = True ]; then
    installed+=", torchvision $(.venv/bin/python -c 'import torchvision; print(torchvision.__version__)')"
fi
echo "guidelab is set up in .venv ($installed)"
