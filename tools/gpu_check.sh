#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds the engine with CUDA for that GPU, runs
# every cuda-labelled test (and the cpu ones, which are quick), reads the compiler's
# register/spill report, runs kernel_bench in f32, bf16 and f16 (each kernel
# validated, then timed against cuDNN or a naive kernel; the fused AdamW against the
# op-by-op update) and short training benchmarks (tiny/224 in f32, bf16 and fp16, and
# atto/48; images/s and GPU launches per step), and prints a short report. Exits
# non-zero if anything failed, if kernel_bench found a kernel that disagrees with its
# check, or if a cuda test skipped because no GPU answered (tests that skip for a
# stated reason of their own, such as a case with no 16-bit meaning, are listed, not
# failed). Meant to finish in well under 8 minutes on an H100.
#
# Packages the GPU image lacks come from .deps/ (made by tools/gpu_deps.sh and
# carried along). Logs go to build-gpu/check/; the bench CSVs, the test logs and the
# build log are also copied to $OUT when it is set (the device tool's output folder).
set -uo pipefail
cd "$(dirname "$0")/.."
build=build-gpu
out=$build/check  # every log; the few worth keeping are copied to $OUT (when set) at the end
mkdir -p "$build" "$out"
t0=$SECONDS

echo "== device =="
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: no GPU visible"

# Dependencies missing from the image: unpack the carried Debian packages into .deps/root.
cmake_extra=()
if [[ -z "$(find /usr/include /usr/local/include -name cblas.h -print -quit 2>/dev/null)" ||
      ! -f /usr/include/stb/stb_image.h ]]; then
  if ls .deps/debs/*.deb >/dev/null 2>&1; then
    for f in .deps/debs/*.deb; do dpkg -x "$f" .deps/root; done
    lib=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
    cmake_extra+=("-DCMAKE_LIBRARY_PATH=$lib/openblas-pthread;$lib"
                  "-DCMAKE_INCLUDE_PATH=$PWD/.deps/root/usr/include/x86_64-linux-gnu/openblas-pthread")
    export LD_LIBRARY_PATH=$lib/openblas-pthread:$lib:${LD_LIBRARY_PATH:-}
    echo "using OpenBLAS and stb from .deps"
  else
    echo "no OpenBLAS on this machine and no .deps/debs: run tools/gpu_deps.sh here and carry .deps" >&2
    exit 2
  fi
fi

# cuDNN (the spatial transformer's Conv2d on CUDA, and kernel_bench's baseline): CMake
# looks beside the toolkit and in pip wheels; when neither holds it, point CUDNN_ROOT at
# whatever copy the image has.
if [[ -z "${CUDNN_ROOT:-}" ]]; then
  h=$(find /usr/local/cuda*/ /usr/include /opt /usr/local/lib -name cudnn.h 2>/dev/null | head -1)
  [[ -n "$h" ]] && export CUDNN_ROOT=$(dirname "$(dirname "$h")") && echo "cudnn.h found in $CUDNN_ROOT"
fi

echo "== build =="
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_extra[@]}" >"$out/configure.log" 2>&1; then
  cat "$out/configure.log"; exit 1
fi
grep "^-- emonext:" "$out/configure.log"
# -k 0: a target that fails to build does not stop the others, so the tests and
# the bench that did build still run and report.
build_ok=1
if ! cmake --build "$build" -j "$(nproc)" -- -k 0 >"$out/build.log" 2>&1; then
  build_ok=0
  echo "BUILD FAILED (continuing with what built):"
  grep -E "error|Error" -A3 "$out/build.log" | head -40
fi
t_build=$((SECONDS - t0))
reports=$(grep -c "bytes spill stores" "$out/build.log")
spills=$(grep "bytes spill stores" "$out/build.log" | grep -vc " 0 bytes spill stores, 0 bytes spill loads")
echo "built in ${t_build} s; ptxas reports read: ${reports} (0 means nothing was recompiled); with local-memory spills: ${spills}"
grep -B1 -E "[1-9][0-9]* bytes spill" "$out/build.log" | head -20

echo "== tests =="
ctest --test-dir "$build" -L cuda --output-on-failure --timeout 300 -j 4 >"$out/ctest_cuda.log" 2>&1
rc_cuda=$?
cp "$build/Testing/Temporary/LastTest.log" "$out/ctest_cuda_full.log" 2>/dev/null
ctest --test-dir "$build" -L cpu --timeout 300 -j 8 >"$out/ctest_cpu.log" 2>&1
rc_cpu=$?
skipped=$(grep -c "(Skipped)" "$out/ctest_cuda.log")
unreached=$(grep -c "no CUDA device answers" "$out/ctest_cuda_full.log" 2>/dev/null)

echo "== kernel_bench (ConvNeXt-Tiny stage 1, batch 64) =="
bench_ok=1
for dtype in f32 bf16 f16; do
  "$build/tools/kernel_bench" --device cuda --dtype "$dtype" --csv "$out/kernel_bench_$dtype.csv" 2>&1 | tee "$out/kernel_bench_$dtype.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || bench_ok=0
done
echo "== kernel_bench (stage 3 shape, bf16) =="
"$build/tools/kernel_bench" --device cuda --dtype bf16 --shape 64,14,14,384 --csv "$out/kernel_bench_stage3_bf16.csv" 2>&1 | tee "$out/kernel_bench_stage3_bf16.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || bench_ok=0

echo "== training benchmark (EmoNeXt-tiny, 224 x 224, batch 64, synthetic data; images/s and launches per step) =="
for amp in off bf16 fp16; do
  timeout 150 "$build/tools/emonext_train" --benchmark 30 --model tiny --img-size 224 --batch 64 --device cuda --amp "$amp" \
      --out "$out/bench_$amp" 2>&1 | tail -1 | tee -a "$out/train_bench.log"
done
# The small model, where a step is short and the host's launch rate may bound it.
timeout 60 "$build/tools/emonext_train" --benchmark 40 --model atto --img-size 48 --batch 64 --device cuda \
    --out "$out/bench_atto" 2>&1 | tail -1 | tee -a "$out/train_bench.log"

echo "== report =="
echo "cuda tests: $(grep -E "tests passed|tests failed" "$out/ctest_cuda.log" | tail -1); skipped ${skipped}, of which for want of a GPU: ${unreached:-?}"
echo "cpu tests:  $(grep -E "tests passed|tests failed" "$out/ctest_cpu.log" | tail -1)"
echo "kernel_bench checks: $([[ $bench_ok -eq 1 ]] && echo "all passed" || echo "SOME FAILED (see FAILED CHECK above)")"
grep -E "\(Failed\)|\(SEGFAULT\)|\(Subprocess aborted\)|\(Timeout\)" "$out/ctest_cuda.log" | head -30
grep "(Skipped)" "$out/ctest_cuda.log" | sed 's/^/skipped: /' | head -10
echo "total ${SECONDS} s"
if [[ -n "${OUT:-}" ]]; then  # the device tool brings back at most 8 files
  cp "$out"/kernel_bench_{f32,bf16,f16,stage3_bf16}.csv "$out"/ctest_cuda_full.log "$out"/ctest_cpu.log "$out"/train_bench.log "$OUT"/ 2>/dev/null
fi
[[ $build_ok -eq 1 && $rc_cuda -eq 0 && $rc_cpu -eq 0 && ${unreached:-1} -eq 0 && $bench_ok -eq 1 ]]
