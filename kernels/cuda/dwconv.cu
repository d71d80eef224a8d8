// Depthwise KxK convolution, stride 1, padding K/2, channels-last (CUDA);
// formulas as in kernels/cpu/dwconv.cpp. Forward and input gradient (the same
// correlation, the latter with the kernel flipped): one thread per output element, channels fastest, so a warp reads 32 consecutive channels
// of x (or dy) and of the [K, K, C] weight at each tap. Weight gradient: each
// (row chunk, tap, channel) thread sums its rows into a partial, and a second
// kernel adds the chunks in order: the same bits run after run.
#include <algorithm>

#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/workspace.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;

// y[n,h,w,c] = b[c] + sum_{i,j} x[n, h+i-p, w+j-p, c] * wt[tap(i,j), c]; with flip the
// taps run (K-1-i, K-1-j): the input gradient is dy correlated with the flipped kernel.
template <class T>
__global__ void dwconv_correlate_kernel(DwConv p, T* y, const T* x, const T* w, const T* b, bool flip) {
  using A = acc_t<T>;
  const int64_t total = p.n * p.h * p.w * p.c, pad = p.k / 2;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = t % p.c, wo = (t / p.c) % p.w, h = (t / (p.c * p.w)) % p.h, n = t / (p.c * p.w * p.h);
    A acc = b ? load(b[c]) : A(0);
    for (int64_t i = 0; i < p.k; ++i) {
      const int64_t hi = h + i - pad;
      if (hi < 0 || hi >= p.h) continue;
      for (int64_t j = 0; j < p.k; ++j) {
        const int64_t wi = wo + j - pad;
        if (wi < 0 || wi >= p.w) continue;
        const int64_t tap = flip ? (p.k - 1 - i) * p.k + (p.k - 1 - j) : i * p.k + j;
        acc += load(x[((n * p.h + hi) * p.w + wi) * p.c + c]) * load(w[tap * p.c + c]);
      }
    }
    y[t] = store<T>(acc);
  }
}

// Thread (tap, c) of chunk blockIdx.y sums dy * x over the image rows (n, h) of that chunk.
template <class T>
__global__ void dwconv_weight_partial_kernel(DwConv p, acc_t<T>* part, const T* dy, const T* x, int64_t rows_per_chunk) {
  using A = acc_t<T>;
  const int64_t taps_c = p.k * p.k * p.c, pad = p.k / 2;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= taps_c) return;
  const int64_t c = t % p.c, tap = t / p.c, i = tap / p.k, j = tap % p.k;
  const int64_t first = int64_t(blockIdx.y) * rows_per_chunk, last = std::min(first + rows_per_chunk, p.n * p.h);
  A acc = 0;
  for (int64_t row = first; row < last; ++row) {
    const int64_t n = row / p.h, h = row % p.h, hi = h + i - pad;
    if (hi < 0 || hi >= p.h) continue;
    for (int64_t wo = 0; wo < p.w; ++wo) {
      const int64_t wi = wo + j - pad;
      if (wi < 0 || wi >= p.w) continue;
      acc += load(dy[((n * p.h + h) * p.w + wo) * p.c + c]) * load(x[((n * p.h + hi) * p.w + wi) * p.c + c]);
    }
  }
  part[int64_t(blockIdx.y) * taps_c + t] = acc;
}

template <class T>
__global__ void sum_partials_kernel(T* out, const acc_t<T>* part, int64_t chunks, int64_t n) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    acc_t<T> acc = 0;
    for (int64_t k = 0; k < chunks; ++k) acc += part[k * n + t];
    out[t] = store<T>(acc);
  }
}

}  // namespace

void dwconv_forward(const DwConv& p, void* y, const void* x, const void* w, const void* b, Stream s) {
  dispatch_floating<Types>(p.dtype, "dwconv", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(dwconv_correlate_kernel<T>, blocks_for(p.n * p.h * p.w * p.c, kThreads), kThreads, 0, s, p,
                   static_cast<T*>(y), static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), false);
  });
}

void dwconv_backward_input(const DwConv& p, void* dx, const void* dy, const void* w, Stream s) {
  dispatch_floating<Types>(p.dtype, "dwconv_backward_input", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(dwconv_correlate_kernel<T>, blocks_for(p.n * p.h * p.w * p.c, kThreads), kThreads, 0, s, p,
                   static_cast<T*>(dx), static_cast<const T*>(dy), static_cast<const T*>(w), static_cast<const T*>(nullptr), true);
  });
}

void dwconv_backward_weight(const DwConv& p, void* dw, const void* dy, const void* x, Stream s) {
  dispatch_floating<Types>(p.dtype, "dwconv_backward_weight", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t taps_c = p.k * p.k * p.c, rows = p.n * p.h;
    const int64_t rows_per_chunk = std::max<int64_t>(4, (rows + 65534) / 65535);
    const int64_t chunks = std::max<int64_t>(1, (rows + rows_per_chunk - 1) / rows_per_chunk);
    Workspace part(size_t(chunks * taps_c) * sizeof(A));
    EMONEXT_LAUNCH(dwconv_weight_partial_kernel<T>, dim3(unsigned((taps_c + kThreads - 1) / kThreads), unsigned(chunks)),
                   kThreads, 0, s, p, part.as<A>(), static_cast<const T*>(dy), static_cast<const T*>(x), rows_per_chunk);
    EMONEXT_LAUNCH(sum_partials_kernel<T>, blocks_for(taps_c, kThreads), kThreads, 0, s, static_cast<T*>(dw), part.as<A>(),
                   chunks, taps_c);
  });
}

}  // namespace emonext::kernels::cuda
