#!/usr/bin/env bash
# Install rawdream into ./.venv on a fresh Debian/Ubuntu machine (idempotent: a second run takes seconds).
#   bash scripts/install.sh          what `rawdream run` needs
#   bash scripts/install.sh --test   also the test tools and Debian's chromium (the report's browser test)
#  - apt: Mesa EGL (offscreen OpenGL on the CPU) for MuJoCo rendering, only if missing
#  - PyTorch 2.13.0: the CPU build where no NVIDIA GPU is present (set TORCH_INDEX_URL to choose another)
#  - rawdream itself, editable, with test tools
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
PKGS="libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglib2.0-0"
EXTRAS=""
if [ "${1:-}" = "--test" ]; then
  PKGS="$PKGS chromium"  # the report's browser test drives Debian's chromium (playwright never downloads one)
  EXTRAS="[test]"
fi
for pkg in $PKGS; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install] apt packages for offscreen rendering: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
PIP=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    $PIP install -q "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    $PIP install -q "torch==2.13.0"                          # CUDA build from PyPI
  elif $PIP download -q --no-deps --no-index -d /tmp/rawdream-torch "torch==2.13.0" >/dev/null 2>&1; then
    $PIP install -q "torch==2.13.0"                          # a local CPU wheel (pip find-links) is there
  else
    $PIP install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
if ! $PIP install -q -e ".$EXTRAS" > .venv/install.log 2>&1; then
  grep -vE "^WARNING: Location|ignored: it is neither" .venv/install.log | tail -20
  echo "[install] pip failed (full log: .venv/install.log)"; exit 1
fi
.venv/bin/python - <<'PY'
import numpy as np
from rawdream.envs import make_env
env = make_env("reach")
obs, _ = env.reset(0)
env.close()
assert obs["image"].mean() > 10, "MuJoCo rendered a black frame: offscreen OpenGL (EGL) is not working"
print("[install] ok: rawdream", __import__("rawdream").__version__, "| torch", __import__("torch").__version__,
      "| MuJoCo renders offscreen")
PY
