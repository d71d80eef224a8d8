// BatchNorm in training mode over the rows of contiguous x [rows, c] (CUDA); the
// formulas, and the shifted sums of the statistics, as in kernels/cpu/batchnorm.cpp.
//
// Three launches each way. Forward: a thread per (chunk of 32 rows, pack of channels)
// writes the chunk's sums of x - K and (x - K)^2 (K = x's first row); partials.cuh
// adds both sets of chunks in one launch; a thread per pack of y then reads the sums,
// normalises, and the threads of row 0 also write the saved mean and rstd and move
// the running statistics. Backward: the same chunk sums of dy and dy * xhat, their
// fixed-order sum, then dx, the threads of row 0 writing dw and db. Sums in f32 (f64
// for f64), in a fixed order: the same bits every run.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/pack.cuh"
#include "kernels/cuda/partials.cuh"
#include "kernels/cuda/workspace.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "kernels/formulas.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;
constexpr int64_t kChunk = 32;  // rows per partial sum

// part_a/part_b [chunks, c]: over the chunk's rows, the sums of x - K and (x - K)^2
// (forward), or of dy and dy * xhat with xhat = (x - mean) * rstd (backward).
template <class T, int V, bool kBackward>
__global__ void batch_norm_partials_kernel(acc_t<T>* part_a, acc_t<T>* part_b, const T* x, const T* dy, const acc_t<T>* mean,
                                           const acc_t<T>* rstd, int64_t rows, int64_t c, int64_t chunks) {
  using A = acc_t<T>;
  const int64_t packs = c / V;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < chunks * packs; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = t % packs * V, chunk = t / packs;
    const int64_t first = chunk * kChunk, last = first + kChunk < rows ? first + kChunk : rows;
    A shift[V], scale[V], a[V], b[V];
    const Pack<T, V> k = load_pack<V>(x + j);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      shift[e] = kBackward ? mean[j + e] : load(k.v[e]);
      scale[e] = kBackward ? rstd[j + e] : A(1);
      a[e] = b[e] = A(0);
    }
    for (int64_t r = first; r < last; ++r) {
      const Pack<T, V> v = load_pack<V>(x + r * c + j);
      if constexpr (kBackward) {
        const Pack<T, V> g = load_pack<V>(dy + r * c + j);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const A gv = load(g.v[e]);
          a[e] += gv;
          b[e] += gv * ((load(v.v[e]) - shift[e]) * scale[e]);
        }
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const A d = load(v.v[e]) - shift[e];
          a[e] += d;
          b[e] += d * d;
        }
      }
    }
#pragma unroll
    for (int e = 0; e < V; ++e) {
      part_a[chunk * c + j + e] = a[e];
      part_b[chunk * c + j + e] = b[e];
    }
  }
}

// y = (x - mean) * rstd * w + b from sums = [sum (x - K), sum (x - K)^2]; row 0's threads
// also save mean and rstd and move the running statistics (when given).
template <class T, int V>
__global__ void batch_norm_forward_kernel(T* y, acc_t<T>* mean, acc_t<T>* rstd, T* running_mean, T* running_var, const T* x,
                                          const T* w, const T* b, const acc_t<T>* sums, int64_t rows, int64_t c, double eps,
                                          double momentum) {
  using A = acc_t<T>;
  const int64_t packs = c / V;
  const A m = A(rows);
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < rows * packs; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = t % packs * V, r = t / packs;
    const Pack<T, V> v = load_pack<V>(x + r * c + j), k = load_pack<V>(x + j), pw = load_pack<V>(w + j), pb = load_pack<V>(b + j);
    Pack<T, V> out;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const A shifted = sums[j + e] / m;
      const A d2 = sums[c + j + e] / m - shifted * shifted, var = d2 > A(0) ? d2 : A(0);
      const A mu = load(k.v[e]) + shifted, rs = A(1) / m_sqrt(var + A(eps));
      out.v[e] = store<T>((load(v.v[e]) - mu) * rs * load(pw.v[e]) + load(pb.v[e]));
      if (r == 0) {
        mean[j + e] = mu;
        rstd[j + e] = rs;
        if (running_mean) {
          running_mean[j + e] = store<T>(A((1 - momentum) * double(load(running_mean[j + e])) + momentum * double(mu)));
          running_var[j + e] =
              store<T>(A((1 - momentum) * double(load(running_var[j + e])) + momentum * double(var) * double(m) / double(m - 1)));
        }
      }
    }
    store_pack<V>(y + r * c + j, out);
  }
}

// dx = w * rstd * (dy - db / M - xhat * dw / M) from sums = [db, dw]; row 0's threads also
// write dw and db.
template <class T, int V>
__global__ void batch_norm_backward_kernel(T* dx, T* dw, T* db, const T* dy, const T* x, const acc_t<T>* mean,
                                           const acc_t<T>* rstd, const T* w, const acc_t<T>* sums, int64_t rows, int64_t c) {
  using A = acc_t<T>;
  const int64_t packs = c / V;
  const A m = A(rows);
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < rows * packs; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = t % packs * V, r = t / packs;
    const Pack<T, V> v = load_pack<V>(x + r * c + j), g = load_pack<V>(dy + r * c + j), pw = load_pack<V>(w + j);
    Pack<T, V> out;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const A sg = sums[j + e], sgx = sums[c + j + e];
      const A xhat = (load(v.v[e]) - mean[j + e]) * rstd[j + e];
      out.v[e] = store<T>(load(pw.v[e]) * rstd[j + e] * (load(g.v[e]) - sg / m - xhat * sgx / m));
      if (r == 0) {
        db[j + e] = store<T>(sg);
        dw[j + e] = store<T>(sgx);
      }
    }
    store_pack<V>(dx + r * c + j, out);
  }
}

// The chunk sums of either direction and their fixed-order total, sums [2, c] in A.
template <class T, int V, bool kBackward>
void column_sum_pairs(acc_t<T>* sums, const T* x, const T* dy, const acc_t<T>* mean, const acc_t<T>* rstd, int64_t rows, int64_t c,
                      Stream s) {
  using A = acc_t<T>;
  const int64_t chunks = std::max<int64_t>(1, (rows + kChunk - 1) / kChunk);
  Workspace part(size_t(2 * chunks * c) * sizeof(A));
  A *part_a = part.as<A>(), *part_b = part_a + chunks * c;
  EMONEXT_LAUNCH((batch_norm_partials_kernel<T, V, kBackward>), blocks_for(chunks * (c / V), kThreads), kThreads, 0, s, part_a,
                 part_b, x, dy, mean, rstd, rows, c, chunks);
  sum_partials<A>(sums, part_a, c, sums + c, part_b, c, chunks, s);
}

}  // namespace

void batch_norm_forward(void* y, void* mean, void* rstd, void* running_mean, void* running_var, const void* x, const void* w,
                        const void* b, DType dtype, int64_t rows, int64_t c, double eps, double momentum, Stream s) {
  dispatch_floating<Types>(dtype, "batch_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    Workspace sums(size_t(2 * c) * sizeof(A));
    with_pack_width<T>(c, {y, x, w, b}, [&](auto v) {
      constexpr int V = decltype(v)::value;
      column_sum_pairs<T, V, false>(sums.as<A>(), static_cast<const T*>(x), nullptr, nullptr, nullptr, rows, c, s);
      EMONEXT_LAUNCH((batch_norm_forward_kernel<T, V>), blocks_for(rows * (c / V), kThreads), kThreads, 0, s, static_cast<T*>(y),
                     static_cast<A*>(mean), static_cast<A*>(rstd), static_cast<T*>(running_mean), static_cast<T*>(running_var),
                     static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), sums.as<A>(), rows, c, eps,
                     momentum);
    });
  });
}

void batch_norm_backward(void* dx, void* dw, void* db, const void* dy, const void* x, const void* mean, const void* rstd,
                         const void* w, DType dtype, int64_t rows, int64_t c, Stream s) {
  dispatch_floating<Types>(dtype, "batch_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    Workspace sums(size_t(2 * c) * sizeof(A));
    with_pack_width<T>(c, {dx, dy, x, w}, [&](auto v) {
      constexpr int V = decltype(v)::value;
      column_sum_pairs<T, V, true>(sums.as<A>(), static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<const A*>(mean),
                                   static_cast<const A*>(rstd), rows, c, s);
      EMONEXT_LAUNCH((batch_norm_backward_kernel<T, V>), blocks_for(rows * (c / V), kThreads), kThreads, 0, s, static_cast<T*>(dx),
                     static_cast<T*>(dw), static_cast<T*>(db), static_cast<const T*>(dy), static_cast<const T*>(x),
                     static_cast<const A*>(mean), static_cast<const A*>(rstd), static_cast<const T*>(w), sums.as<A>(), rows, c);
    });
  });
}

}  // namespace emonext::kernels::cuda
