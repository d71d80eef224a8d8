#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks (apt packages only), configures and
# builds the engine. Idempotent: with nothing to install and nothing changed it
# takes a second or two.
#
#   tools/setup.sh [--tests] [extra cmake -D options]
#
# --tests also installs what only the tests need: Debian's python3-torch, which runs
# the PyTorch twin (tools/reference/emonext_twin.py) that checks the engine's
# checkpoints; the engine itself never uses Python.
#
# Environment: EMONEXT_BUILD_DIR (default build), CI=true turns warnings into errors.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build g++ pkg-config libgtest-dev libopenblas-dev libstb-dev libturbojpeg0-dev)
if [[ "${1:-}" == "--tests" ]]; then
  packages+=(python3-torch)
  shift
fi
# Open MPI for data-parallel runs (mpirun), unless the build is asked to go without it.
[[ " $* " == *" -DEMONEXT_MPI=OFF "* ]] || packages+=(openmpi-bin libopenmpi-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build_dir=${EMONEXT_BUILD_DIR:-build}
args=(-G Ninja -DCMAKE_BUILD_TYPE=Release)
[[ "${CI:-}" == "true" ]] && args+=(-DEMONEXT_WERROR=ON)
if [[ ! -f "$build_dir/build.ninja" || $# -gt 0 || "${CI:-}" == "true" ]]; then
  mkdir -p "$build_dir"
  cmake -S . -B "$build_dir" "${args[@]}" "$@" >"$build_dir/configure.log" 2>&1 || {
    cat "$build_dir/configure.log"; exit 1; }
  grep -E "^-- emonext:" "$build_dir/configure.log" || true
fi
cmake --build "$build_dir" -j "$(nproc)"
