// Max pooling, channels-last (CUDA); the formulas are in kernels/pool_math.h.
// One thread per output (forward) or per input element (backward, a gather).
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "kernels/pool_math.h"

namespace emonext::kernels::cuda {

namespace {

// Reads element i as the accumulation type (a functor: no extended device lambdas needed).
template <class T>
struct LoadAt {
  const T* p;
  __device__ acc_t<T> operator()(int64_t i) const { return load(p[i]); }
};

template <class T>
__global__ void max_pool_forward_kernel(Pool p, T* y, int64_t* argmax, const T* x) {
  using A = acc_t<T>;
  const LoadAt<T> load_at{x};
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < p.n * p.ho * p.wo * p.c; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = o % p.c, ox = (o / p.c) % p.wo, oy = (o / (p.c * p.wo)) % p.ho, n = o / (p.c * p.wo * p.ho);
    y[o] = store<T>(pool_window_max<A>(p, n, oy, ox, c, load_at, &argmax[o]));
  }
}

template <class T>
__global__ void max_pool_backward_kernel(Pool p, T* dx, const T* dy, const int64_t* argmax) {
  using A = acc_t<T>;
  const LoadAt<T> load_dy{dy};
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < p.n * p.h * p.w * p.c; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = t % p.c, x = (t / p.c) % p.w, y = (t / (p.c * p.w)) % p.h, n = t / (p.c * p.w * p.h);
    dx[t] = store<T>(pool_input_grad<A>(p, n, y, x, c, load_dy, argmax));
  }
}

}  // namespace

void max_pool_forward(const Pool& p, void* out, int64_t* argmax, const void* x, Stream s) {
  dispatch_floating<Types>(p.dtype, "max_pool", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(max_pool_forward_kernel<T>, blocks_for(p.n * p.ho * p.wo * p.c, 256), 256, 0, s, p, static_cast<T*>(out),
                   argmax, static_cast<const T*>(x));
  });
}

void max_pool_backward(const Pool& p, void* dx, const void* dy, const int64_t* argmax, Stream s) {
  dispatch_floating<Types>(p.dtype, "max_pool_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(max_pool_backward_kernel<T>, blocks_for(p.n * p.h * p.w * p.c, 256), 256, 0, s, p, static_cast<T*>(dx),
                   static_cast<const T*>(dy), argmax);
  });
}

}  // namespace emonext::kernels::cuda
