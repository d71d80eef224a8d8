// Squeeze-and-excitation gate backward (CUDA), one pass over dy and x:
//   dx[n,s,c] = dy[n,s,c] * g[n,c],   dg[n,c] = sum_s dy[n,s,c] * x[n,s,c]
// One thread per (n, c), walking s: a warp reads 32 consecutive channels; the
// sum runs in a fixed order, so dg is the same bits run after run.
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

template <class T>
__global__ void se_gate_backward_kernel(T* dx, T* dg, const T* dy, const T* x, const T* g, int64_t n, int64_t hw, int64_t c) {
  using A = acc_t<T>;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n * c; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = t / c, k = t % c;
    const A gate = load(g[t]);
    A acc = 0;
    for (int64_t s = 0; s < hw; ++s) {
      const int64_t i = (b * hw + s) * c + k;
      const A d = load(dy[i]);
      dx[i] = store<T>(d * gate);
      acc += d * load(x[i]);
    }
    dg[t] = store<T>(acc);
  }
}

}  // namespace

void se_gate_backward(void* dx, void* dg, const void* dy, const void* x, const void* g, DType dtype, int64_t n, int64_t hw,
                      int64_t c, Stream s) {
  dispatch_floating<Types>(dtype, "se_gate_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(se_gate_backward_kernel<T>, blocks_for(n * c, 256), 256, 0, s, static_cast<T*>(dx), static_cast<T*>(dg),
                   static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(g), n, hw, c);
  });
}

}  // namespace emonext::kernels::cuda
