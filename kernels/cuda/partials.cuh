// The second half of every deterministic reduction in the CUDA backend: a first
// kernel writes per-chunk partial sums (or maxima) in the accumulation type, and
// this one adds them in a fixed order, so the result is the same bits run after run
// whatever order the blocks ran in.
//
//   out[o, j] = sum_{k < chunks} part[(o * chunks + k) * n + j],   o < outer, j < n
//
// A block of 32 x 32 threads takes 32 consecutive j (coalesced reads); its 32 rows
// of threads each walk every 32nd chunk, and the 32 row sums are added in row order
// through shared memory. The tree's shape depends only on the sizes.
#pragma once
#include <cmath>

#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"

namespace emonext::kernels::cuda {

namespace partials_detail {

template <class A, bool kMax>
__device__ __forceinline__ A combine(A acc, A v) {
  if constexpr (kMax) return (acc != acc || acc > v) ? acc : v;  // NaN propagates
  else return acc + v;
}

template <class T, bool kMax>
__global__ void __launch_bounds__(1024) sum_partials_kernel(T* out, const acc_t<T>* part, int64_t chunks, int64_t n) {
  using A = acc_t<T>;
  __shared__ A rows[32][33];
  const int64_t j = int64_t(blockIdx.x) * 32 + threadIdx.x, o = blockIdx.y;
  A acc = kMax ? A(-INFINITY) : A(0);
  if (j < n)
    for (int64_t k = threadIdx.y; k < chunks; k += 32) acc = combine<A, kMax>(acc, part[(o * chunks + k) * n + j]);
  rows[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < n) {
    for (int r = 1; r < 32; ++r) acc = combine<A, kMax>(acc, rows[r][threadIdx.x]);
    out[o * n + j] = store<T>(acc);
  }
}

}  // namespace partials_detail

// part: [outer, chunks, n] in acc_t<T>; out: [outer, n] in T. outer <= 65535.
template <class T, bool kMax = false>
void sum_partials(T* out, const acc_t<T>* part, int64_t outer, int64_t chunks, int64_t n, Stream s) {
  EMONEXT_LAUNCH((partials_detail::sum_partials_kernel<T, kMax>), dim3(unsigned((n + 31) / 32), unsigned(outer)), dim3(32, 32), 0,
                 s, out, part, chunks, n);
}

}  // namespace emonext::kernels::cuda
