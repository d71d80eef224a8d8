// Bilinear grid sampling with zeros padding (CUDA); the formula is in
// kernels/grid_sample_math.h. One thread per output pixel, looping over channels
// (the spatial transformer samples 3-channel images). The input gradient is a
// scatter: by default float atomics into an f32 (f64 for f64) workspace, whose
// sums depend on the order threads arrive in; in deterministic mode each
// contribution is rounded to a 64-bit fixed-point integer (2^-32 resolution,
// |sum| < 2^31) and integer atomics add them, which gives the same bits in any order.
#include <cmath>

#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/workspace.cuh"
#include "kernels/dispatch.h"
#include "kernels/grid_sample_math.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;
constexpr double kFixedScale = 4294967296.0;  // 2^32

template <class T>
__global__ void grid_sample_forward_kernel(GridSample p, T* y, const T* x, const T* g) {
  using A = acc_t<T>;
  for (int64_t at = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; at < p.n * p.ho * p.wo; at += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = at / (p.ho * p.wo);
    const BilinearTap<A> t = bilinear_tap<A>(load(g[at * 2]), load(g[at * 2 + 1]), p.w, p.h, p.align_corners);
    for (int64_t c = 0; c < p.c; ++c) {
      A acc = 0;
      for (int k = 0; k < 4; ++k)
        if (inside(t.x(k), t.y(k), p.w, p.h)) acc += t.weight(k) * load(x[((n * p.h + t.y(k)) * p.w + t.x(k)) * p.c + c]);
      y[at * p.c + c] = store<T>(acc);
    }
  }
}

// W: the workspace element type, float/double (atomics) or unsigned long long (fixed point).
template <class T, class W>
__global__ void grid_sample_backward_kernel(GridSample p, W* dx, T* dg, const T* dy, const T* x, const T* g) {
  using A = acc_t<T>;
  for (int64_t at = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; at < p.n * p.ho * p.wo; at += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = at / (p.ho * p.wo);
    const BilinearTap<A> t = bilinear_tap<A>(load(g[at * 2]), load(g[at * 2 + 1]), p.w, p.h, p.align_corners);
    A gfx = 0, gfy = 0;
    for (int64_t c = 0; c < p.c; ++c) {
      const A d = load(dy[at * p.c + c]);
      for (int k = 0; k < 4; ++k) {
        if (!inside(t.x(k), t.y(k), p.w, p.h)) continue;
        const int64_t src = ((n * p.h + t.y(k)) * p.w + t.x(k)) * p.c + c;
        if (dx) {
          if constexpr (std::is_same_v<W, unsigned long long>)
            atomicAdd(dx + src, static_cast<unsigned long long>(llrint(double(t.weight(k) * d) * kFixedScale)));
          else
            atomicAdd(dx + src, W(t.weight(k) * d));
        }
        const A v = load(x[src]);
        gfx += weight_dfx(t, k) * v * d;
        gfy += weight_dfy(t, k) * v * d;
      }
    }
    if (dg) {
      dg[at * 2] = store<T>(gfx * t.dx_dgx);
      dg[at * 2 + 1] = store<T>(gfy * t.dy_dgy);
    }
  }
}

template <class T, class W>
__global__ void workspace_to_input_grad(T* dx, const W* acc, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<W, unsigned long long>)
      dx[i] = store<T>(acc_t<T>(double(static_cast<long long>(acc[i])) / kFixedScale));
    else
      dx[i] = store<T>(acc_t<T>(acc[i]));
  }
}

template <class T, class W>
void backward(const GridSample& p, void* dinput, void* dgrid, const void* dout, const void* in, const void* grid, Stream s) {
  const int64_t pixels = p.n * p.ho * p.wo, in_elems = p.n * p.h * p.w * p.c;
  Workspace acc(dinput ? size_t(in_elems) * sizeof(W) : 1);
  W* w = dinput ? acc.as<W>() : nullptr;
  if (w) EMONEXT_CUDA_CHECK(cudaMemsetAsync(w, 0, size_t(in_elems) * sizeof(W), static_cast<cudaStream_t>(s)));
  EMONEXT_LAUNCH((grid_sample_backward_kernel<T, W>), blocks_for(pixels, kThreads), kThreads, 0, s, p, w, static_cast<T*>(dgrid),
                 static_cast<const T*>(dout), static_cast<const T*>(in), static_cast<const T*>(grid));
  if (w)
    EMONEXT_LAUNCH((workspace_to_input_grad<T, W>), blocks_for(in_elems, kThreads), kThreads, 0, s, static_cast<T*>(dinput), w,
                   in_elems);
}

}  // namespace

void grid_sample_forward(const GridSample& p, void* out, const void* in, const void* grid, Stream s) {
  dispatch_floating<Types>(p.dtype, "grid_sample", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(grid_sample_forward_kernel<T>, blocks_for(p.n * p.ho * p.wo, kThreads), kThreads, 0, s, p, static_cast<T*>(out),
                   static_cast<const T*>(in), static_cast<const T*>(grid));
  });
}

void grid_sample_backward(const GridSample& p, void* dinput, void* dgrid, const void* dout, const void* in, const void* grid,
                          bool deterministic, Stream s) {
  dispatch_floating<Types>(p.dtype, "grid_sample_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (deterministic) backward<T, unsigned long long>(p, dinput, dgrid, dout, in, grid, s);
    else backward<T, acc_t<T>>(p, dinput, dgrid, dout, in, grid, s);
  });
}

}  // namespace emonext::kernels::cuda
