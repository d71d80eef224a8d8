// Squeeze-and-excitation gate backward (CUDA), one pass over dy and x:
//   dx[n,s,c] = dy[n,s,c] * g[n,c],   dg[n,c] = sum_s dy[n,s,c] * x[n,s,c]
// The H*W positions are cut into chunks of 64 so that there is a thread per
// (n, chunk, c) (a warp reads 32 consecutive channels); each writes its part of
// dx and a partial dg, and a second kernel adds the partials in chunk order,
// so dg is the same bits run after run.
#include <algorithm>

#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/workspace.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr int64_t kPositionsPerChunk = 64;

template <class T>
__global__ void se_gate_backward_kernel(T* dx, acc_t<T>* partial, const T* dy, const T* x, const T* g, int64_t n, int64_t hw,
                                        int64_t c, int64_t chunks) {
  using A = acc_t<T>;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n * chunks * c; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = t % c, chunk = (t / c) % chunks, b = t / (c * chunks);
    const A gate = load(g[b * c + k]);
    const int64_t first = chunk * kPositionsPerChunk, last = first + kPositionsPerChunk < hw ? first + kPositionsPerChunk : hw;
    A acc = 0;
    for (int64_t s = first; s < last; ++s) {
      const int64_t i = (b * hw + s) * c + k;
      const A d = load(dy[i]);
      dx[i] = store<T>(d * gate);
      acc += d * load(x[i]);
    }
    partial[t] = acc;  // [n, chunk, c]
  }
}

template <class T>
__global__ void se_sum_chunks_kernel(T* dg, const acc_t<T>* partial, int64_t n, int64_t c, int64_t chunks) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n * c; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = t / c, k = t % c;
    acc_t<T> acc = 0;
    for (int64_t j = 0; j < chunks; ++j) acc += partial[(b * chunks + j) * c + k];
    dg[t] = store<T>(acc);
  }
}

}  // namespace

void se_gate_backward(void* dx, void* dg, const void* dy, const void* x, const void* g, DType dtype, int64_t n, int64_t hw,
                      int64_t c, Stream s) {
  dispatch_floating<Types>(dtype, "se_gate_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t chunks = std::max<int64_t>(1, (hw + kPositionsPerChunk - 1) / kPositionsPerChunk);
    Workspace partial(size_t(n * chunks * c) * sizeof(A));
    EMONEXT_LAUNCH(se_gate_backward_kernel<T>, blocks_for(n * chunks * c, 256), 256, 0, s, static_cast<T*>(dx), partial.as<A>(),
                   static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(g), n, hw, c, chunks);
    EMONEXT_LAUNCH(se_sum_chunks_kernel<T>, blocks_for(n * c, 256), 256, 0, s, static_cast<T*>(dg), partial.as<A>(), n, c, chunks);
  });
}

}  // namespace emonext::kernels::cuda
