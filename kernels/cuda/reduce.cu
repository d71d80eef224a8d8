// Sum and max over the middle dimension of a contiguous [outer, r, inner]
// block (CUDA). inner == 1 (a reduction along contiguous rows): one block per
// row with a block reduction. Otherwise, when r is long (the SE block's pool over
// H x W, [N, H*W, C]): r is cut into chunks of 32 and a thread per (outer, chunk,
// pack of inner) walks its chunk with 16-byte loads, then partials.cuh combines the
// chunks; short r: one thread per output walking r. Fixed order throughout: the
// same bits every run.
#include <algorithm>
#include <cmath>

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

constexpr unsigned kThreads = 256;

template <class A>
__device__ A reduce_init(ReduceOp op) { return op == ReduceOp::Sum ? A(0) : -INFINITY; }

template <class A>
__device__ A reduce_step(ReduceOp op, A acc, A v) {
  if (op == ReduceOp::Sum) return acc + v;
  return (acc != acc || acc > v) ? acc : v;
}

template <class T>
__global__ void reduce_rows_kernel(ReduceOp op, T* out, const T* in, int64_t r) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const T* row = in + int64_t(blockIdx.x) * r;
  A acc = reduce_init<A>(op);
  for (int64_t j = threadIdx.x; j < r; j += blockDim.x) acc = reduce_step(op, acc, load(row[j]));
  acc = op == ReduceOp::Sum ? block_reduce<A, false>(acc, shared) : block_reduce<A, true>(acc, shared);
  if (threadIdx.x == 0) out[blockIdx.x] = store<T>(acc);
}

template <class T>
__global__ void reduce_columns_kernel(ReduceOp op, T* out, const T* in, int64_t outer, int64_t r, int64_t inner) {
  using A = acc_t<T>;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < outer * inner; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const T* p = in + o * r * inner + i;
    A acc = reduce_init<A>(op);
    for (int64_t j = 0; j < r; ++j) acc = reduce_step(op, acc, load(p[j * inner]));
    out[t] = store<T>(acc);
  }
}

constexpr int64_t kChunk = 32;

// part[o, chunk, i] = the reduction of in[o, j, i] over j in the chunk; a thread per (o, chunk, pack).
template <class T, int V>
__global__ void reduce_column_chunks_kernel(ReduceOp op, acc_t<T>* part, const T* in, int64_t outer, int64_t r, int64_t inner,
                                            int64_t chunks) {
  using A = acc_t<T>;
  const int64_t packs = inner / V;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < outer * chunks * packs; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t % packs * V, chunk = (t / packs) % chunks, o = t / (packs * chunks);
    const int64_t first = chunk * kChunk, last = first + kChunk < r ? first + kChunk : r;
    A acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = reduce_init<A>(op);
#pragma unroll 4
    for (int64_t j = first; j < last; ++j) {
      const Pack<T, V> v = load_pack<V>(in + (o * r + j) * inner + i);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] = reduce_step(op, acc[e], load(v.v[e]));
    }
#pragma unroll
    for (int e = 0; e < V; ++e) part[(o * chunks + chunk) * inner + i + e] = acc[e];
  }
}

}  // namespace

void reduce(ReduceOp op, void* out, const void* in, DType dtype, int64_t outer, int64_t r, int64_t inner, Stream s) {
  dispatch_floating<Types>(dtype, "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* y = static_cast<T*>(out);
    const T* x = static_cast<const T*>(in);
    if (inner == 1) {
      for (int64_t first = 0; first < outer; first += 65535 * 1024LL) {  // grid.x is at most 2^31-1; stay far below
        const int64_t rows = std::min<int64_t>(outer - first, 65535 * 1024LL);
        EMONEXT_LAUNCH(reduce_rows_kernel<T>, unsigned(rows), kThreads, 0, s, op, y + first, x + first * r, r);
      }
    } else if (r > 2 * kChunk) {
      using A = acc_t<T>;
      constexpr int V = kPackSize<T>;
      const int64_t chunks = (r + kChunk - 1) / kChunk;
      Workspace part(size_t(outer * chunks * inner) * sizeof(A));
      if (inner % V == 0 && aligned16({in}))
        EMONEXT_LAUNCH((reduce_column_chunks_kernel<T, V>), blocks_for(outer * chunks * (inner / V), kThreads), kThreads, 0, s, op,
                       part.as<A>(), x, outer, r, inner, chunks);
      else
        EMONEXT_LAUNCH((reduce_column_chunks_kernel<T, 1>), blocks_for(outer * chunks * inner, kThreads), kThreads, 0, s, op,
                       part.as<A>(), x, outer, r, inner, chunks);
      for (int64_t first = 0; first < outer; first += 65535) {  // grid.y: at most 65535 per launch
        const int64_t m = std::min<int64_t>(outer - first, 65535);
        if (op == ReduceOp::Sum) sum_partials<T, false>(y + first * inner, part.as<A>() + first * chunks * inner, m, chunks, inner, s);
        else sum_partials<T, true>(y + first * inner, part.as<A>() + first * chunks * inner, m, chunks, inner, s);
      }
    } else {
      EMONEXT_LAUNCH(reduce_columns_kernel<T>, blocks_for(outer * inner, kThreads), kThreads, 0, s, op, y, x, outer, r, inner);
    }
  });
}

}  // namespace emonext::kernels::cuda
