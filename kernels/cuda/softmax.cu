// softmax and log_softmax over the last dimension of [rows, cols] (CUDA),
// forward and backward; one block per row. Formulas as in the CPU twin:
//   softmax:      y = exp(x - max) / sum,        dx = y * (dy - sum(dy * y))
//   log_softmax:  y = x - max - log(sum),        dx = dy - exp(y) * sum(dy)
#include <cmath>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;

template <class T>
__global__ void softmax_forward_kernel(bool log, T* out, const T* in, int64_t cols) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const T* x = in + int64_t(blockIdx.x) * cols;
  T* y = out + int64_t(blockIdx.x) * cols;
  A mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = fmax(mx, load(x[c]));
  mx = block_reduce<A, true>(mx, shared);
  A sum = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += m_exp(load(x[c]) - mx);
  sum = block_reduce<A, false>(sum, shared);
  const A lse = mx + m_log(sum);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    y[c] = store<T>(log ? load(x[c]) - lse : m_exp(load(x[c]) - mx) / sum);
}

template <class T>
__global__ void softmax_backward_kernel(bool log, T* dx, const T* y, const T* dy, int64_t cols) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const int64_t base = int64_t(blockIdx.x) * cols;
  A dot = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += log ? load(dy[base + c]) : load(dy[base + c]) * load(y[base + c]);
  dot = block_reduce<A, false>(dot, shared);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const A yv = load(y[base + c]), g = load(dy[base + c]);
    dx[base + c] = store<T>(log ? g - m_exp(yv) * dot : yv * (g - dot));
  }
}

}  // namespace

void softmax_forward(bool log, void* out, const void* in, DType dtype, int64_t rows, int64_t cols, Stream s) {
  EMONEXT_CHECK(rows <= 2147483647, "softmax: ", rows, " rows exceed the grid limit");
  dispatch_floating<Types>(dtype, "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(softmax_forward_kernel<T>, unsigned(rows), kThreads, 0, s, log, static_cast<T*>(out),
                   static_cast<const T*>(in), cols);
  });
}

void softmax_backward(bool log, void* dx, const void* y, const void* dy, DType dtype, int64_t rows, int64_t cols, Stream s) {
  EMONEXT_CHECK(rows <= 2147483647, "softmax_backward: ", rows, " rows exceed the grid limit");
  dispatch_floating<Types>(dtype, "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(softmax_backward_kernel<T>, unsigned(rows), kThreads, 0, s, log, static_cast<T*>(dx),
                   static_cast<const T*>(y), static_cast<const T*>(dy), cols);
  });
}

}  // namespace emonext::kernels::cuda
