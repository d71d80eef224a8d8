#!/usr/bin/env bash
# PyTorch 2 with timm and torchvision from PyPI, in a virtual environment of its own:
# the peer the CPU benchmark measures the engine against (eager and torch.compile) and
# the libraries whose own files the import tests read. Neither the engine nor the test
# suite needs it: tests that do skip, saying so, where it is missing.
#
#   tools/reference/setup_pytorch2.sh [VENV]        (default: .venv-pytorch2 in the checkout)
#
# Installs the newest torch, torchvision and timm that pip resolves for this Python (or
# the versions in EMONEXT_PYTORCH2_PINS, e.g. "torch==2.15.0 torchvision==0.29.2
# timm==1.0.31"). PyPI's Linux wheels of torch are CUDA builds and pull in CUDA's
# libraries (about 5.5 GB installed); on a machine without a GPU they run on the CPU.
# Idempotent: an environment that already imports all three is left as it is.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${1:-.venv-pytorch2}
py="$venv/bin/python"
check='import torch, torchvision, timm; print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}")'
if [[ -x "$py" ]] && "$py" -c "$check" 2>/dev/null; then
  exit 0
fi
# Debian's /usr/bin/python3 has no venv module without python3-venv; any python3 that has one will do.
base=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import venv, ensurepip' 2>/dev/null; then base=$p; break; fi
done
if [[ -z "$base" ]]; then
  echo "setup_pytorch2: installing python3-venv"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
  base=/usr/bin/python3
fi
"$base" -m venv "$venv"
# shellcheck disable=SC2086  # the pins are words
"$py" -m pip install -q --disable-pip-version-check ${EMONEXT_PYTORCH2_PINS:-torch torchvision timm}
"$py" -c "$check"
