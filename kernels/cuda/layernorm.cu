// LayerNorm over the last dimension (CUDA); formulas as in kernels/cpu/layernorm.cpp.
// Forward and the input gradient: one warp per row, 8 rows per block; the row's
// statistics are warp reductions (two passes: mean, then variance). dw and db:
// blocks of 32 columns x a chunk of rows write partial sums, and a second kernel
// adds the chunks in order, so the result is the same bits run after run.
#include <algorithm>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/workspace.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kRowsPerBlock = 8;  // one warp each
template <class T> using stat_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T>
__global__ void layer_norm_forward_kernel(T* y, stat_t<T>* mean, stat_t<T>* rstd, const T* x, const T* w, const T* b,
                                          int64_t rows, int64_t cols, double eps) {
  using A = acc_t<T>;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = int(threadIdx.x % 32);
  if (row >= rows) return;  // the whole warp leaves together
  const T* xr = x + row * cols;
  A s = 0;
  for (int64_t c = lane; c < cols; c += 32) s += load(xr[c]);
  const A mu = warp_sum(s) / A(cols);
  A s2 = 0;
  for (int64_t c = lane; c < cols; c += 32) {
    const A d = load(xr[c]) - mu;
    s2 += d * d;
  }
  const A rs = A(1) / m_sqrt(warp_sum(s2) / A(cols) + A(eps));
  if (lane == 0) {
    mean[row] = stat_t<T>(mu);
    rstd[row] = stat_t<T>(rs);
  }
  T* yr = y + row * cols;
  for (int64_t c = lane; c < cols; c += 32) yr[c] = store<T>((load(xr[c]) - mu) * rs * load(w[c]) + load(b[c]));
}

template <class T>
__global__ void layer_norm_backward_input_kernel(T* dx, const T* dy, const T* x, const stat_t<T>* mean,
                                                 const stat_t<T>* rstd, const T* w, int64_t rows, int64_t cols) {
  using A = acc_t<T>;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = int(threadIdx.x % 32);
  if (row >= rows) return;
  const T *dyr = dy + row * cols, *xr = x + row * cols;
  const A mu = A(mean[row]), rs = A(rstd[row]);
  A sg = 0, sgx = 0;
  for (int64_t c = lane; c < cols; c += 32) {
    const A g = load(dyr[c]) * load(w[c]);
    sg += g;
    sgx += g * (load(xr[c]) - mu) * rs;
  }
  sg = warp_sum(sg) / A(cols);
  sgx = warp_sum(sgx) / A(cols);
  for (int64_t c = lane; c < cols; c += 32) {
    const A g = load(dyr[c]) * load(w[c]);
    dx[row * cols + c] = store<T>(rs * (g - sg - (load(xr[c]) - mu) * rs * sgx));
  }
}

// Block (32, 8): columns [32 * blockIdx.x, +32), rows [chunk * blockIdx.y, +chunk).
template <class T>
__global__ void layer_norm_backward_params_kernel(acc_t<T>* part_w, acc_t<T>* part_b, const T* dy, const T* x,
                                                  const stat_t<T>* mean, const stat_t<T>* rstd, int64_t rows,
                                                  int64_t cols, int64_t chunk) {
  using A = acc_t<T>;
  __shared__ A sw[8][32], sb[8][32];
  const int64_t col = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t first = int64_t(blockIdx.y) * chunk, last = first + chunk < rows ? first + chunk : rows;
  A aw = 0, ab = 0;
  if (col < cols)
    for (int64_t r = first + threadIdx.y; r < last; r += 8) {
      const A d = load(dy[r * cols + col]);
      aw += d * (load(x[r * cols + col]) - A(mean[r])) * A(rstd[r]);
      ab += d;
    }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    for (int k = 1; k < 8; ++k) {
      aw += sw[k][threadIdx.x];
      ab += sb[k][threadIdx.x];
    }
    part_w[int64_t(blockIdx.y) * cols + col] = aw;
    part_b[int64_t(blockIdx.y) * cols + col] = ab;
  }
}

template <class T>
__global__ void sum_chunks_kernel(T* dw, T* db, const acc_t<T>* part_w, const acc_t<T>* part_b, int64_t chunks, int64_t cols) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    acc_t<T> aw = 0, ab = 0;
    for (int64_t k = 0; k < chunks; ++k) {
      aw += part_w[k * cols + c];
      ab += part_b[k * cols + c];
    }
    dw[c] = store<T>(aw);
    db[c] = store<T>(ab);
  }
}

}  // namespace

void layer_norm_forward(void* y, void* mean, void* rstd, const void* x, const void* w, const void* b, DType dtype,
                        int64_t rows, int64_t cols, double eps, Stream s) {
  dispatch_floating<Types>(dtype, "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(layer_norm_forward_kernel<T>, unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock), kRowsPerBlock * 32,
                   0, s, static_cast<T*>(y), static_cast<stat_t<T>*>(mean), static_cast<stat_t<T>*>(rstd),
                   static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), rows, cols, eps);
  });
}

void layer_norm_backward(void* dx, void* dw, void* db, const void* dy, const void* x, const void* mean,
                         const void* rstd, const void* w, DType dtype, int64_t rows, int64_t cols, Stream s) {
  dispatch_floating<Types>(dtype, "layer_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const auto* m = static_cast<const stat_t<T>*>(mean);
    const auto* r = static_cast<const stat_t<T>*>(rstd);
    EMONEXT_LAUNCH(layer_norm_backward_input_kernel<T>, unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock),
                   kRowsPerBlock * 32, 0, s, static_cast<T*>(dx), static_cast<const T*>(dy), static_cast<const T*>(x), m, r,
                   static_cast<const T*>(w), rows, cols);
    const int64_t chunk = std::max<int64_t>(256, (rows + 65534) / 65535);  // grid.y stays within 65535
    const int64_t chunks = std::max<int64_t>(1, (rows + chunk - 1) / chunk);
    Workspace part(size_t(2 * chunks * cols) * sizeof(A));
    A* part_w = part.as<A>();
    A* part_b = part_w + chunks * cols;
    EMONEXT_LAUNCH(layer_norm_backward_params_kernel<T>, dim3(unsigned((cols + 31) / 32), unsigned(chunks)), dim3(32, 8), 0, s,
                   part_w, part_b, static_cast<const T*>(dy), static_cast<const T*>(x), m, r, rows, cols, chunk);
    EMONEXT_LAUNCH(sum_chunks_kernel<T>, blocks_for(cols, 256), 256, 0, s, static_cast<T*>(dw), static_cast<T*>(db),
                   part_w, part_b, chunks, cols);
  });
}

}  // namespace emonext::kernels::cuda
