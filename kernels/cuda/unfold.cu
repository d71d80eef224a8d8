// im2col for channels-last images (CUDA), and its adjoint; formulas as in
// kernels/cpu/unfold.cpp. One thread per output element, channels fastest. fold
// gathers (one thread per input element, fixed order): no atomics, the same bits
// run after run.
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;

template <class T>
__global__ void unfold_kernel(Unfold p, T* cols, const T* x) {
  const int64_t total = p.n * p.ho * p.wo * p.kh * p.kw * p.c;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = t;
    const int64_t c = r % p.c; r /= p.c;
    const int64_t j = r % p.kw; r /= p.kw;
    const int64_t i = r % p.kh; r /= p.kh;
    const int64_t ox = r % p.wo; r /= p.wo;
    const int64_t oy = r % p.ho, n = r / p.ho;
    const int64_t y = oy * p.stride - p.pad + i, xx = ox * p.stride - p.pad + j;
    cols[t] = (y >= 0 && y < p.h && xx >= 0 && xx < p.w) ? x[((n * p.h + y) * p.w + xx) * p.c + c] : store<T>(acc_t<T>(0));
  }
}

template <class T>
__global__ void fold_kernel(Unfold p, T* dx, const T* cols) {
  using A = acc_t<T>;
  const int64_t total = p.n * p.h * p.w * p.c;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = t % p.c, xx = (t / p.c) % p.w, y = (t / (p.c * p.w)) % p.h, n = t / (p.c * p.w * p.h);
    A acc = 0;
    for (int64_t i = 0; i < p.kh; ++i) {
      const int64_t ty = y + p.pad - i;
      if (ty < 0 || ty % p.stride != 0 || ty / p.stride >= p.ho) continue;
      for (int64_t j = 0; j < p.kw; ++j) {
        const int64_t tx = xx + p.pad - j;
        if (tx < 0 || tx % p.stride != 0 || tx / p.stride >= p.wo) continue;
        acc += load(cols[((((n * p.ho + ty / p.stride) * p.wo + tx / p.stride) * p.kh + i) * p.kw + j) * p.c + c]);
      }
    }
    dx[t] = store<T>(acc);
  }
}

}  // namespace

void unfold(const Unfold& p, void* cols, const void* x, Stream s) {
  dispatch_floating<Types>(p.dtype, "unfold", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(unfold_kernel<T>, blocks_for(p.n * p.ho * p.wo * p.kh * p.kw * p.c, kThreads), kThreads, 0, s, p,
                   static_cast<T*>(cols), static_cast<const T*>(x));
  });
}

void fold(const Unfold& p, void* dx, const void* dcols, Stream s) {
  dispatch_floating<Types>(p.dtype, "fold", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(fold_kernel<T>, blocks_for(p.n * p.h * p.w * p.c, kThreads), kThreads, 0, s, p, static_cast<T*>(dx),
                   static_cast<const T*>(dcols));
  });
}

}  // namespace emonext::kernels::cuda
