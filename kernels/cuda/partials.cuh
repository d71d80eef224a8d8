// The second half of every deterministic reduction in the CUDA backend: a first
// kernel writes per-chunk partial sums (or maxima) in the accumulation type, and
// this one adds them in a fixed order, so the result is the same bits run after run
// whatever order the blocks ran in.
//
//   out[o, j] = sum_{k < chunks} part[(o * chunks + k) * n + j],   o < outer, j < n
//
// A block of 32 x R threads takes 32 consecutive j (coalesced reads); its R rows of
// threads each walk every R-th chunk, and the R row sums are added in row order through
// shared memory. R is 32, or the number of chunks when there are fewer: a row that would
// take no chunk would only add 0 (the sum starts at +0, so it is never -0 and adding +0
// changes no bit), so the bits are those of 32 rows, with no idle threads. The tree's
// shape depends only on the sizes.
//
// A kernel with two gradients to finish (a weight's and a bias's) hands both to one
// launch: the grid's first blocks take the first sum, the rest the second, each with
// the same tree as a call of its own, so the bits do not change.
#pragma once
#include <cmath>

#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"

namespace emonext::kernels::cuda {

namespace partials_detail {

// One sum to finish: part [outer, chunks, n] in the accumulation type -> out [outer, n],
// times scale (1 but for means) before the rounding to T.
template <class T>
struct Partials {
  T* out;
  const acc_t<T>* part;
  int64_t n;
  acc_t<T> scale;
};

template <class A, bool kMax>
__device__ __forceinline__ A combine(A acc, A v) {
  if constexpr (kMax) return (acc != acc || acc > v) ? acc : v;  // NaN propagates
  else return acc + v;
}

// Blocks [0, blocks_a) of the grid's x take sum a, the others sum b.
template <class T, bool kMax>
__global__ void __launch_bounds__(1024) sum_partials_kernel(Partials<T> a, Partials<T> b, unsigned blocks_a, int64_t chunks) {
  using A = acc_t<T>;
  __shared__ A rows[32][33];
  const bool second = blockIdx.x >= blocks_a;
  const Partials<T> p = second ? b : a;
  const int64_t j = int64_t(blockIdx.x - (second ? blocks_a : 0u)) * 32 + threadIdx.x, o = blockIdx.y;
  A acc = kMax ? A(-INFINITY) : A(0);
  if (j < p.n)
    for (int64_t k = threadIdx.y; k < chunks; k += blockDim.y) acc = combine<A, kMax>(acc, p.part[(o * chunks + k) * p.n + j]);
  rows[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < p.n) {
    for (unsigned r = 1; r < blockDim.y; ++r) acc = combine<A, kMax>(acc, rows[r][threadIdx.x]);
    p.out[o * p.n + j] = store<T>(kMax ? acc : acc * p.scale);
  }
}

// The block's rows: 32, or the chunks when there are fewer.
inline unsigned rows_for(int64_t chunks) { return unsigned(chunks < 1 ? 1 : chunks < 32 ? chunks : 32); }

}  // namespace partials_detail

// part: [outer, chunks, n] in acc_t<T>; out: [outer, n] in T, the sums times scale (a
// mean's 1 / count: multiplied before the rounding to T). outer <= 65535.
template <class T, bool kMax = false>
void sum_partials(T* out, const acc_t<T>* part, int64_t outer, int64_t chunks, int64_t n, Stream s,
                  acc_t<T> scale = acc_t<T>(1)) {
  const unsigned blocks = unsigned((n + 31) / 32);
  EMONEXT_LAUNCH((partials_detail::sum_partials_kernel<T, kMax>), dim3(blocks, unsigned(outer)), dim3(32, partials_detail::rows_for(chunks)), 0, s,
                 partials_detail::Partials<T>{out, part, n, scale}, partials_detail::Partials<T>{nullptr, nullptr, 0, acc_t<T>(1)},
                 blocks, chunks);
}

// Two sums over the same number of chunks in one launch: part_a [chunks, n_a] -> out_a
// [n_a] and part_b [chunks, n_b] -> out_b [n_b]. The same bits as two calls.
template <class T>
void sum_partials(T* out_a, const acc_t<T>* part_a, int64_t n_a, T* out_b, const acc_t<T>* part_b, int64_t n_b, int64_t chunks,
                  Stream s) {
  const unsigned blocks_a = unsigned((n_a + 31) / 32), blocks_b = unsigned((n_b + 31) / 32);
  EMONEXT_LAUNCH((partials_detail::sum_partials_kernel<T, false>), dim3(blocks_a + blocks_b, 1u), dim3(32, partials_detail::rows_for(chunks)), 0, s,
                 partials_detail::Partials<T>{out_a, part_a, n_a, acc_t<T>(1)},
                 partials_detail::Partials<T>{out_b, part_b, n_b, acc_t<T>(1)}, blocks_a, chunks);
}

}  // namespace emonext::kernels::cuda
