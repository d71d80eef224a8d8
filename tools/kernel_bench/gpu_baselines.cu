// The GPU baselines of kernel_bench: naive one-thread-per-output kernels (the
// first thing one writes), event timing and the measured copy bandwidth.
// Launches go through the engine's seam like any kernel.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/runtime.h"
#include "kernels/dispatch.h"
#include "kernels/grid_sample_math.h"
#include "tools/kernel_bench/baselines.h"

namespace emonext::bench {

using kernels::cuda::acc_t;
using kernels::cuda::load;
using kernels::cuda::store;
using kernels::cuda::Types;

double gpu_time_ms(const std::function<void()>& fn, int iters) {
  const int device = kernels::cuda::current_device();
  cudaStream_t s = static_cast<cudaStream_t>(kernels::cuda::stream(device));
  for (int i = 0; i < 3; ++i) fn();  // warm-up
  std::vector<double> ms;
  cudaEvent_t start, stop;
  EMONEXT_CUDA_CHECK(cudaEventCreate(&start));
  EMONEXT_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < iters; ++i) {
    EMONEXT_CUDA_CHECK(cudaEventRecord(start, s));
    fn();
    EMONEXT_CUDA_CHECK(cudaEventRecord(stop, s));
    EMONEXT_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    EMONEXT_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  EMONEXT_CUDA_CHECK(cudaEventDestroy(start));
  EMONEXT_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double gpu_copy_bandwidth_gbs(int device) {
  const size_t bytes = size_t(1) << 30;
  void* a = kernels::cuda::allocate(bytes, device);
  void* b = kernels::cuda::allocate(bytes, device);
  cudaStream_t s = static_cast<cudaStream_t>(kernels::cuda::stream(device));
  const double ms = gpu_time_ms([&] { EMONEXT_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s)); }, 10);
  kernels::cuda::deallocate(a, device);
  kernels::cuda::deallocate(b, device);
  return 2.0 * double(bytes) / (ms * 1e6);  // read + write
}

namespace naive_gpu {

namespace {

kernels::Stream stream() { return kernels::cuda::stream(kernels::cuda::current_device()); }
unsigned blocks(int64_t n) { return unsigned((n + 255) / 256); }

template <class T>
__global__ void ln_forward(T* y, const T* x, const T* w, const T* b, int64_t rows, int64_t cols, float eps) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // one thread per row
  if (r >= rows) return;
  float mean = 0, var = 0;
  for (int64_t c = 0; c < cols; ++c) mean += load(x[r * cols + c]);
  mean /= float(cols);
  for (int64_t c = 0; c < cols; ++c) var += (load(x[r * cols + c]) - mean) * (load(x[r * cols + c]) - mean);
  const float rstd = rsqrtf(var / float(cols) + eps);
  for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = store<T>(acc_t<T>((load(x[r * cols + c]) - mean) * rstd * load(w[c]) + load(b[c])));
}

template <class T>
__global__ void ln_backward_input(T* dx, const T* dy, const T* x, const T* w, int64_t rows, int64_t cols, float eps) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float mean = 0, var = 0, sg = 0, sgx = 0;
  for (int64_t c = 0; c < cols; ++c) mean += load(x[r * cols + c]);
  mean /= float(cols);
  for (int64_t c = 0; c < cols; ++c) var += (load(x[r * cols + c]) - mean) * (load(x[r * cols + c]) - mean);
  const float rstd = rsqrtf(var / float(cols) + eps);
  for (int64_t c = 0; c < cols; ++c) {
    const float g = load(dy[r * cols + c]) * load(w[c]);
    sg += g;
    sgx += g * (load(x[r * cols + c]) - mean) * rstd;
  }
  for (int64_t c = 0; c < cols; ++c) {
    const float g = load(dy[r * cols + c]) * load(w[c]), xhat = (load(x[r * cols + c]) - mean) * rstd;
    dx[r * cols + c] = store<T>(acc_t<T>(rstd * (g - sg / float(cols) - xhat * sgx / float(cols))));
  }
}

template <class T>
__global__ void ln_backward_params(T* dw, T* db, const T* dy, const T* x, int64_t rows, int64_t cols, float eps) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // one thread per column
  if (c >= cols) return;
  float aw = 0, ab = 0;
  for (int64_t r = 0; r < rows; ++r) {
    float mean = 0, var = 0;
    for (int64_t k = 0; k < cols; ++k) mean += load(x[r * cols + k]);
    mean /= float(cols);
    for (int64_t k = 0; k < cols; ++k) var += (load(x[r * cols + k]) - mean) * (load(x[r * cols + k]) - mean);
    const float xhat = (load(x[r * cols + c]) - mean) * rsqrtf(var / float(cols) + eps);
    aw += load(dy[r * cols + c]) * xhat;
    ab += load(dy[r * cols + c]);
  }
  dw[c] = store<T>(acc_t<T>(aw));
  db[c] = store<T>(acc_t<T>(ab));
}

template <class T>
__global__ void bias_gelu(T* y, const T* x, const T* b, int64_t n, int64_t cols) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = load(x[i]) + load(b[i % cols]);
  y[i] = store<T>(acc_t<T>(0.5f * v * (1.0f + erff(v * 0.70710678f))));
}

template <class T>
__global__ void gelu_back(T* dx, const T* dy, const T* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = load(x[i]);
  dx[i] = store<T>(acc_t<T>(load(dy[i]) * (0.5f * (1.0f + erff(v * 0.70710678f)) + v * 0.39894228f * expf(-0.5f * v * v))));
}

template <class T>
__global__ void se_forward(T* y, const T* x, const T* g, int64_t n, int64_t hw, int64_t c) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * hw * c) return;
  y[i] = store<T>(acc_t<T>(load(x[i]) * load(g[(i / (hw * c)) * c + i % c])));
}

template <class T>
__global__ void se_backward_dx(T* dx, const T* dy, const T* g, int64_t n, int64_t hw, int64_t c) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * hw * c) return;
  dx[i] = store<T>(acc_t<T>(load(dy[i]) * load(g[(i / (hw * c)) * c + i % c])));
}

template <class T>
__global__ void se_backward_dg(T* dg, const T* dy, const T* x, int64_t n, int64_t hw, int64_t c) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * c) return;
  float acc = 0;
  for (int64_t s = 0; s < hw; ++s) acc += load(dy[((t / c) * hw + s) * c + t % c]) * load(x[((t / c) * hw + s) * c + t % c]);
  dg[t] = store<T>(acc_t<T>(acc));
}

template <class T>
__global__ void se_pool_kernel(T* out, const T* x, int64_t n, int64_t hw, int64_t c) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * c) return;
  float acc = 0;
  for (int64_t s = 0; s < hw; ++s) acc += load(x[((t / c) * hw + s) * c + t % c]);
  out[t] = store<T>(acc_t<T>(acc / float(hw)));
}

// One thread per output element (n, o, c), recomputing the neighbours for each channel.
template <class T>
__global__ void gs_forward(kernels::GridSample p, T* out, const T* in, const T* grid) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= p.n * p.ho * p.wo * p.c) return;
  const int64_t c = t % p.c, at = t / p.c, n = at / (p.ho * p.wo);
  const auto k = kernels::bilinear_tap<float>(load(grid[at * 2]), load(grid[at * 2 + 1]), p.w, p.h, p.align_corners);
  float acc = 0;
  for (int i = 0; i < 4; ++i)
    if (kernels::inside(k.x(i), k.y(i), p.w, p.h)) acc += k.weight(i) * load(in[((n * p.h + k.y(i)) * p.w + k.x(i)) * p.c + c]);
  out[t] = store<T>(acc_t<T>(acc));
}

template <class T>
__global__ void gs_backward(kernels::GridSample p, float* din, T* dgrid, const T* dout, const T* in, const T* grid) {
  const int64_t at = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (at >= p.n * p.ho * p.wo) return;
  const int64_t n = at / (p.ho * p.wo);
  const auto k = kernels::bilinear_tap<float>(load(grid[at * 2]), load(grid[at * 2 + 1]), p.w, p.h, p.align_corners);
  float gx = 0, gy = 0;
  for (int64_t c = 0; c < p.c; ++c)
    for (int i = 0; i < 4; ++i) {
      if (!kernels::inside(k.x(i), k.y(i), p.w, p.h)) continue;
      const int64_t src = ((n * p.h + k.y(i)) * p.w + k.x(i)) * p.c + c;
      const float d = load(dout[at * p.c + c]);
      atomicAdd(din + src, k.weight(i) * d);
      gx += kernels::weight_dfx(k, i) * load(in[src]) * d;
      gy += kernels::weight_dfy(k, i) * load(in[src]) * d;
    }
  dgrid[at * 2] = store<T>(acc_t<T>(gx * k.dx_dgx));
  dgrid[at * 2 + 1] = store<T>(acc_t<T>(gy * k.dy_dgy));
}

}  // namespace

#define EMONEXT_BENCH_DISPATCH(t, ...) \
  kernels::dispatch_floating<Types>(t, "kernel_bench", [&](auto tag) { using T = typename decltype(tag)::type; __VA_ARGS__; })

void layer_norm_forward(DType t, void* y, const void* x, const void* w, const void* b, int64_t rows, int64_t cols, double eps) {
  EMONEXT_BENCH_DISPATCH(t, EMONEXT_LAUNCH(ln_forward<T>, blocks(rows), 256, 0, stream(), static_cast<T*>(y),
                                           static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), rows,
                                           cols, float(eps)));
}
void layer_norm_backward(DType t, void* dx, void* dw, void* db, const void* dy, const void* x, const void* w, int64_t rows,
                         int64_t cols, double eps) {
  EMONEXT_BENCH_DISPATCH(t, {
    EMONEXT_LAUNCH(ln_backward_input<T>, blocks(rows), 256, 0, stream(), static_cast<T*>(dx), static_cast<const T*>(dy),
                   static_cast<const T*>(x), static_cast<const T*>(w), rows, cols, float(eps));
    EMONEXT_LAUNCH(ln_backward_params<T>, blocks(cols), 256, 0, stream(), static_cast<T*>(dw), static_cast<T*>(db),
                   static_cast<const T*>(dy), static_cast<const T*>(x), rows, cols, float(eps));
  });
}
void bias_gelu_forward(DType t, void* y, const void* x, const void* b, int64_t rows, int64_t cols) {
  EMONEXT_BENCH_DISPATCH(t, EMONEXT_LAUNCH(bias_gelu<T>, blocks(rows * cols), 256, 0, stream(), static_cast<T*>(y),
                                           static_cast<const T*>(x), static_cast<const T*>(b), rows * cols, cols));
}
void gelu_backward(DType t, void* dx, const void* dy, const void* x, int64_t n) {
  EMONEXT_BENCH_DISPATCH(t, EMONEXT_LAUNCH(gelu_back<T>, blocks(n), 256, 0, stream(), static_cast<T*>(dx),
                                           static_cast<const T*>(dy), static_cast<const T*>(x), n));
}
void se_gate_forward(DType t, void* y, const void* x, const void* g, int64_t n, int64_t hw, int64_t c) {
  EMONEXT_BENCH_DISPATCH(t, EMONEXT_LAUNCH(se_forward<T>, blocks(n * hw * c), 256, 0, stream(), static_cast<T*>(y),
                                           static_cast<const T*>(x), static_cast<const T*>(g), n, hw, c));
}
void se_gate_backward(DType t, void* dx, void* dg, const void* dy, const void* x, const void* g, int64_t n, int64_t hw, int64_t c) {
  EMONEXT_BENCH_DISPATCH(t, {
    EMONEXT_LAUNCH(se_backward_dx<T>, blocks(n * hw * c), 256, 0, stream(), static_cast<T*>(dx), static_cast<const T*>(dy),
                   static_cast<const T*>(g), n, hw, c);
    EMONEXT_LAUNCH(se_backward_dg<T>, blocks(n * c), 256, 0, stream(), static_cast<T*>(dg), static_cast<const T*>(dy),
                   static_cast<const T*>(x), n, hw, c);
  });
}

void se_pool(DType t, void* out, const void* x, int64_t n, int64_t hw, int64_t c) {
  EMONEXT_BENCH_DISPATCH(t, EMONEXT_LAUNCH(se_pool_kernel<T>, blocks(n * c), 256, 0, stream(), static_cast<T*>(out),
                                           static_cast<const T*>(x), n, hw, c));
}
void grid_sample_forward(const kernels::GridSample& p, void* out, const void* in, const void* grid) {
  EMONEXT_BENCH_DISPATCH(p.dtype, EMONEXT_LAUNCH(gs_forward<T>, blocks(p.n * p.ho * p.wo * p.c), 256, 0, stream(), p,
                                                 static_cast<T*>(out), static_cast<const T*>(in), static_cast<const T*>(grid)));
}
void grid_sample_backward(const kernels::GridSample& p, float* din, void* dgrid, const void* dout, const void* in, const void* grid) {
  EMONEXT_CUDA_CHECK(cudaMemsetAsync(din, 0, size_t(p.n * p.h * p.w * p.c) * sizeof(float), static_cast<cudaStream_t>(stream())));
  EMONEXT_BENCH_DISPATCH(p.dtype, EMONEXT_LAUNCH(gs_backward<T>, blocks(p.n * p.ho * p.wo), 256, 0, stream(), p, din,
                                                 static_cast<T*>(dgrid), static_cast<const T*>(dout), static_cast<const T*>(in),
                                                 static_cast<const T*>(grid)));
}

}  // namespace naive_gpu

}  // namespace emonext::bench
