// The one place a CUDA kernel is launched. Every kernel in kernels/cuda goes
// through EMONEXT_LAUNCH(kernel, grid, block, shared_bytes, stream, args...),
// which launches and then checks the launch, naming the kernel on failure (and,
// with EMONEXT_SYNC_LAUNCHES=1, waits for it and names it if it faulted: runtime.h).
// Keeping the <<<>>> syntax here alone is what lets the emulation build
// (kernels/cuda/emulation) run the same kernel code on a CPU: there, this
// function hands the kernel to the fiber scheduler instead.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.h"
#include "kernels/view.h"
#if EMONEXT_CUDA_EMULATION
#include "kernels/cuda/emulation/scheduler.h"
#endif

namespace emonext::kernels::cuda {

template <class... Params, class... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, Stream stream,
            Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;  // empty work: nothing to launch
#if EMONEXT_CUDA_EMULATION
  // The arguments are copied, as a real launch copies them: a captured launch runs later.
  const cudaError_t status = emu::launch(name, reinterpret_cast<const void*>(kernel), grid, block, shared_bytes,
                                         static_cast<cudaStream_t>(stream), [=] { kernel(args...); });
#else
  kernel<<<grid, block, shared_bytes, static_cast<cudaStream_t>(stream)>>>(std::forward<Args>(args)...);
  const cudaError_t status = cudaGetLastError();
#endif
  if (status != cudaSuccess)
    fail(detail::concat("CUDA kernel launch failed: ", name, " (grid ", grid.x, "x", grid.y, "x", grid.z, ", block ",
                        block.x, "x", block.y, "x", block.z, ", ", shared_bytes, " B shared): ", cudaGetErrorString(status)));
  count_launch(name);
}

// Blocks for a grid-stride loop over n elements.
inline unsigned blocks_for(int64_t n, unsigned threads) {
  const int64_t cap = 132 * 32;  // enough to fill an H100 several times over; the loop covers the rest
  int64_t b = (n + threads - 1) / threads;
  return unsigned(b < cap ? b : cap);
}

}  // namespace emonext::kernels::cuda

#define EMONEXT_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  ::emonext::kernels::cuda::launch(#kernel, kernel, grid, block, shared_bytes, stream, __VA_ARGS__)
