// LayerNorm over the last dimension (CUDA); formulas as in kernels/cpu/layernorm.cpp.
//
// Rows whose length is a multiple of the 16-byte pack (every ConvNeXt width) take
// the packed kernels: a group of `tpr` threads (a power of two up to 32, so that a
// warp holds 32 / tpr rows) owns a row, each thread holding up to VPL packs of it in
// registers, pack j at column (j * tpr + lane) * V. x is read from memory once: the
// mean, the variance (second pass over the registers) and y all come from those
// registers. The backward pass is one kernel too: it reads dy and x once, writes dx,
// and keeps each thread's columns' dw and db sums in registers over the block's rows
// (a thread's columns are the same for every row it takes); the block's groups are
// added in group order and a second kernel (partials.cuh) adds the blocks in order,
// so dw and db are the same bits run after run.
//
// Other rows (odd lengths, unaligned views, rows longer than 32 x 16 packs): one
// warp per row and scalar loads; dw and db by a column kernel over chunks of rows.
#include <algorithm>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/pack.cuh"
#include "kernels/cuda/partials.cuh"
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

// Sum over the tpr threads of a row group (xor partners stay inside the group).
template <class A>
__device__ __forceinline__ A group_sum(A v, int tpr) {
  for (int o = tpr / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Threads per row: enough for every pack of the row to have a thread, at most a warp.
inline int threads_per_row(int64_t packs) {
  int t = 1;
  while (t < 32 && t < packs) t *= 2;
  return t;
}

constexpr int kPackedThreads = 256;
// Registers bound the packs a thread holds: the forward keeps VPL x V values, the
// backward five times as many (w, dy, x and the dw, db sums), so it stops at 32
// values (and 8 packs).
constexpr int kForwardMaxPacks = 16;
template <class T> constexpr int kBackwardMaxPacks = 32 / kPackSize<T> < 8 ? 32 / kPackSize<T> : 8;

template <class T, int VPL>
__global__ void __launch_bounds__(kPackedThreads)
    layer_norm_forward_packed_kernel(T* y, stat_t<T>* mean, stat_t<T>* rstd, const T* x, const T* w, const T* b, int64_t rows,
                                     int64_t cols, int tpr, double eps) {
  using A = acc_t<T>;
  constexpr int V = kPackSize<T>;
  const int lane = int(threadIdx.x) % tpr;
  const int64_t row = int64_t(blockIdx.x) * (kPackedThreads / tpr) + threadIdx.x / tpr;
  const bool active = row < rows;  // inactive threads still take part in the shuffles
  const int64_t packs = cols / V;
  A v[VPL][V];
  A s = 0;
#pragma unroll
  for (int j = 0; j < VPL; ++j) {
    const int64_t pk = int64_t(j) * tpr + lane;
    Pack<T> p{};
    if (active && pk < packs) p = load_pack<V>(x + row * cols + pk * V);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      v[j][k] = load(p.v[k]);
      s += v[j][k];
    }
  }
  const A mu = group_sum(s, tpr) / A(cols);
  A s2 = 0;
#pragma unroll
  for (int j = 0; j < VPL; ++j)
    if (int64_t(j) * tpr + lane < packs)
#pragma unroll
      for (int k = 0; k < V; ++k) s2 += (v[j][k] - mu) * (v[j][k] - mu);
  const A rs = A(1) / m_sqrt(group_sum(s2, tpr) / A(cols) + A(eps));
  if (!active) return;
  if (lane == 0) {
    mean[row] = stat_t<T>(mu);
    rstd[row] = stat_t<T>(rs);
  }
#pragma unroll
  for (int j = 0; j < VPL; ++j) {
    const int64_t pk = int64_t(j) * tpr + lane;
    if (pk >= packs) continue;
    const Pack<T> pw = load_pack<V>(w + pk * V), pb = load_pack<V>(b + pk * V);
    Pack<T> out;
#pragma unroll
    for (int k = 0; k < V; ++k) out.v[k] = store<T>((v[j][k] - mu) * rs * load(pw.v[k]) + load(pb.v[k]));
    store_pack<V>(y + row * cols + pk * V, out);
  }
}

// Block b takes rows [b * rows_per_block, +rows_per_block); its group g every
// (kPackedThreads / tpr)-th of them from g. Writes dx, and the block's dw and db
// partials into part_w[b] and part_b[b].
template <class T, int VPL>
__global__ void __launch_bounds__(kPackedThreads)
    layer_norm_backward_packed_kernel(T* dx, acc_t<T>* part_w, acc_t<T>* part_b, const T* dy, const T* x,
                                      const stat_t<T>* mean, const stat_t<T>* rstd, const T* w, int64_t rows, int64_t cols,
                                      int tpr, int64_t rows_per_block) {
  using A = acc_t<T>;
  constexpr int V = kPackSize<T>;
  __shared__ A groups[kPackedThreads];
  const int lane = int(threadIdx.x) % tpr, group = int(threadIdx.x) / tpr, n_groups = kPackedThreads / tpr;
  const int64_t packs = cols / V, first = int64_t(blockIdx.x) * rows_per_block;
  const int64_t last = first + rows_per_block < rows ? first + rows_per_block : rows;
  Pack<T> wr[VPL];
  A aw[VPL][V], ab[VPL][V];
#pragma unroll
  for (int j = 0; j < VPL; ++j) {
    const int64_t pk = int64_t(j) * tpr + lane;
    wr[j] = pk < packs ? load_pack<V>(w + pk * V) : Pack<T>{};
#pragma unroll
    for (int k = 0; k < V; ++k) aw[j][k] = ab[j][k] = 0;
  }
  // The trip count is the same for every thread of the block, so warps stay whole for the shuffles.
  for (int64_t r0 = first; r0 < last; r0 += n_groups) {
    const int64_t row = r0 + group;
    const bool active = row < last;
    const A mu = active ? A(mean[row]) : A(0), rs = active ? A(rstd[row]) : A(0);
    Pack<T> pd[VPL], px[VPL];  // kept in T (half the registers in 16-bit); g and xhat are recomputed
    A sg = 0, sgx = 0;
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int64_t pk = int64_t(j) * tpr + lane;
      pd[j] = px[j] = Pack<T>{};
      if (active && pk < packs) {
        pd[j] = load_pack<V>(dy + row * cols + pk * V);
        px[j] = load_pack<V>(x + row * cols + pk * V);
      }
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const A d = load(pd[j].v[k]), xh = (load(px[j].v[k]) - mu) * rs;  // both 0 where inactive
        const A g = d * load(wr[j].v[k]);
        sg += g;
        sgx += g * xh;
        aw[j][k] += d * xh;
        ab[j][k] += d;
      }
    }
    sg = group_sum(sg, tpr) / A(cols);
    sgx = group_sum(sgx, tpr) / A(cols);
    if (!active) continue;
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int64_t pk = int64_t(j) * tpr + lane;
      if (pk >= packs) continue;
      Pack<T> out;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const A xh = (load(px[j].v[k]) - mu) * rs, g = load(pd[j].v[k]) * load(wr[j].v[k]);
        out.v[k] = store<T>(rs * (g - sg - xh * sgx));
      }
      store_pack<V>(dx + row * cols + pk * V, out);
    }
  }
  // The groups' sums, added in group order, one value per thread at a time.
  for (int which = 0; which < 2; ++which)
#pragma unroll
    for (int j = 0; j < VPL; ++j)
#pragma unroll
      for (int k = 0; k < V; ++k) {
        __syncthreads();
        groups[threadIdx.x] = which == 0 ? aw[j][k] : ab[j][k];
        __syncthreads();
        const int64_t pk = int64_t(j) * tpr + lane;
        if (group == 0 && pk < packs) {
          A sum = 0;
          for (int q = 0; q < n_groups; ++q) sum += groups[q * tpr + lane];
          (which == 0 ? part_w : part_b)[int64_t(blockIdx.x) * cols + pk * V + k] = sum;
        }
      }
}

// The smallest instantiated packs-per-thread (1, 2, 4, 8, 16, at most max_vpl) that
// holds a row, or 0 when none does.
inline int packs_per_thread(int64_t packs, int tpr, int max_vpl) {
  const int64_t need = (packs + tpr - 1) / tpr;
  for (int v = 1; v <= max_vpl; v *= 2)
    if (need <= v) return v;
  return 0;
}

// Calls f(std::integral_constant<int, VPL>) for the runtime VPL, instantiating only up to kMax.
template <int kMax, class F>
void with_packs_per_thread(int vpl, F&& f) {
  if (vpl == 1) f(std::integral_constant<int, 1>{});
  else if (vpl == 2) f(std::integral_constant<int, 2>{});
  else if (vpl == 4) f(std::integral_constant<int, 4>{});
  else if constexpr (kMax >= 8) {
    if (vpl == 8) f(std::integral_constant<int, 8>{});
    else if constexpr (kMax >= 16) f(std::integral_constant<int, 16>{});
  }
}

}  // namespace

void layer_norm_forward(void* y, void* mean, void* rstd, const void* x, const void* w, const void* b, DType dtype,
                        int64_t rows, int64_t cols, double eps, Stream s) {
  dispatch_floating<Types>(dtype, "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int V = kPackSize<T>;
    const int tpr = threads_per_row(cols / V);
    const int vpl = cols % V == 0 && aligned16({y, x, w, b}) ? packs_per_thread(cols / V, tpr, kForwardMaxPacks) : 0;
    if (vpl > 0) {
      with_packs_per_thread<kForwardMaxPacks>(vpl, [&](auto c) {
        EMONEXT_LAUNCH((layer_norm_forward_packed_kernel<T, decltype(c)::value>),
                       unsigned((rows + kPackedThreads / tpr - 1) / (kPackedThreads / tpr)), kPackedThreads, 0, s,
                       static_cast<T*>(y), static_cast<stat_t<T>*>(mean), static_cast<stat_t<T>*>(rstd),
                       static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), rows, cols, tpr, eps);
      });
      return;
    }
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
    constexpr int V = kPackSize<T>;
    const auto* m = static_cast<const stat_t<T>*>(mean);
    const auto* r = static_cast<const stat_t<T>*>(rstd);
    const int tpr = threads_per_row(cols / V);
    const int vpl = cols % V == 0 && aligned16({dx, dy, x, w}) ? packs_per_thread(cols / V, tpr, kBackwardMaxPacks<T>) : 0;
    if (vpl > 0) {
      // 16 rows per group and block: enough blocks to fill the device, few partials.
      const int64_t rows_per_block = int64_t(kPackedThreads / tpr) * 16;
      const int64_t blocks = std::max<int64_t>(1, (rows + rows_per_block - 1) / rows_per_block);
      Workspace part(size_t(2 * blocks * cols) * sizeof(A));
      A* part_w = part.as<A>();
      A* part_b = part_w + blocks * cols;
      with_packs_per_thread<kBackwardMaxPacks<T>>(vpl, [&](auto c) {
        EMONEXT_LAUNCH((layer_norm_backward_packed_kernel<T, decltype(c)::value>), unsigned(blocks), kPackedThreads, 0, s,
                       static_cast<T*>(dx), part_w, part_b, static_cast<const T*>(dy), static_cast<const T*>(x), m, r,
                       static_cast<const T*>(w), rows, cols, tpr, rows_per_block);
      });
      sum_partials<T>(static_cast<T*>(dw), part_w, cols, static_cast<T*>(db), part_b, cols, blocks, s);
      return;
    }
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
    sum_partials<T>(static_cast<T*>(dw), part_w, cols, static_cast<T*>(db), part_b, cols, chunks, s);
  });
}

}  // namespace emonext::kernels::cuda
