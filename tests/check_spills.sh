#!/usr/bin/env bash
# Compiles the device code of every kernels/cuda/*.cu file (-cubin: no host pass) for the
# build's architecture with ptxas' resource report and fails if any kernel spills
# registers to local memory.
#   tests/check_spills.sh NVCC ARCH SOURCE_DIR
set -uo pipefail
nvcc=$1 arch=$2 src=$3
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
for f in "$src"/kernels/cuda/*.cu; do
  if ! "$nvcc" -std=c++17 -arch="sm_$arch" --expt-relaxed-constexpr -Xptxas=-v -I"$src" -cubin "$f" -o /dev/null >"$report" 2>&1; then
    cat "$report"; exit 1
  fi
  kernels=$(grep -c "bytes spill stores" "$report")
  spills=$(grep "bytes spill stores" "$report" | grep -v " 0 bytes spill stores, 0 bytes spill loads")
  echo "$(basename "$f"): ${kernels} kernels, $( [[ -z "$spills" ]] && echo "no spills" || echo "SPILLS")"
  if [[ -n "$spills" ]]; then
    grep -B2 -E "[1-9][0-9]* bytes spill" "$report"
    status=1
  fi
done
exit $status
