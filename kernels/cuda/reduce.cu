// Sum and max over the middle dimension of a contiguous [outer, r, inner]
// block (CUDA). inner == 1 (a reduction along contiguous rows): one block per
// row with a block reduction. Otherwise, when r is long (the SE block's pool over
// H x W, [N, H*W, C]): r is cut into chunks of 32 and a thread per (outer, chunk,
// pack of inner) walks its chunk with 16-byte loads, then partials.cuh combines the
// chunks; short r: one thread per output walking r. Fixed order throughout: the
// same bits every run. sum_squares (the gradient norm) cuts each tensor of a list
// into blocks the same way, the whole list in a few launches.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/multi_tensor.cuh"
#include "kernels/cuda/pack.cuh"
#include "kernels/cuda/partials.cuh"
#include "kernels/cuda/workspace.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;

template <class A>
__device__ A reduce_init(ReduceOp op) { return op == ReduceOp::Max ? A(-INFINITY) : A(0); }

template <class A>
__device__ A reduce_step(ReduceOp op, A acc, A v) {
  if (op != ReduceOp::Max) return acc + v;
  return (acc != acc || acc > v) ? acc : v;
}

// The reduction of r values as stored: a mean divides its sum first (ReduceOp::Mean).
template <class T>
__device__ T reduce_result(ReduceOp op, acc_t<T> acc, int64_t r) {
  return store<T>(op == ReduceOp::Mean ? acc / acc_t<T>(r) : acc);
}

template <class T>
__global__ void reduce_rows_kernel(ReduceOp op, T* out, const T* in, int64_t r) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const T* row = in + int64_t(blockIdx.x) * r;
  A acc = reduce_init<A>(op);
  for (int64_t j = threadIdx.x; j < r; j += blockDim.x) acc = reduce_step(op, acc, load(row[j]));
  acc = op == ReduceOp::Max ? block_reduce<A, true>(acc, shared) : block_reduce<A, false>(acc, shared);
  if (threadIdx.x == 0) out[blockIdx.x] = reduce_result<T>(op, acc, r);
}

template <class T>
__global__ void reduce_columns_kernel(ReduceOp op, T* out, const T* in, int64_t outer, int64_t r, int64_t inner) {
  using A = acc_t<T>;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < outer * inner; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const T* p = in + o * r * inner + i;
    A acc = reduce_init<A>(op);
    for (int64_t j = 0; j < r; ++j) acc = reduce_step(op, acc, load(p[j * inner]));
    out[t] = reduce_result<T>(op, acc, r);
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

// Sum of squares of a list of tensors (multi_tensor.cuh): a block per chunk of 8192
// values (256 threads, 16-byte packs where every pointer allows) writes the chunk's
// sum to part[tensor * max_chunks + chunk]; the block of a tensor's last chunk also
// zeroes the slots after it, so that partials.cuh can add each tensor's max_chunks
// slots in order (adding zeros changes no bits of these non-negative sums).
constexpr int64_t kSquaresPerBlock = 8192;
using SquaresChunks = TensorChunks<1, 96, 320, char>;

template <class T, int V>
__global__ void sum_squares_kernel(acc_t<T>* part, int64_t max_chunks, SquaresChunks c) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const int t = c.tensor_of_block[blockIdx.x];
  const int64_t chunk = c.chunk_of_block[blockIdx.x], n = c.n[t];
  const T* in = static_cast<const T*>(c.ptr[0][t]);
  const int64_t first = chunk * kSquaresPerBlock;
  const int64_t last = first + kSquaresPerBlock < n ? first + kSquaresPerBlock : n;
  const int64_t packed_end = first + (last - first) / V * V;
  A acc = 0;
  for (int64_t i = first + int64_t(threadIdx.x) * V; i < packed_end; i += int64_t(blockDim.x) * V) {
    const Pack<T, V> v = load_pack<V>(in + i);
#pragma unroll
    for (int e = 0; e < V; ++e) acc += load(v.v[e]) * load(v.v[e]);
  }
  for (int64_t i = packed_end + threadIdx.x; i < last; i += blockDim.x) acc += load(in[i]) * load(in[i]);
  acc = block_reduce<A, false>(acc, shared);
  A* slots = part + int64_t(c.index[t]) * max_chunks;
  if (threadIdx.x == 0) slots[chunk] = acc;
  if (last == n)
    for (int64_t k = chunk + 1 + threadIdx.x; k < max_chunks; k += blockDim.x) slots[k] = A(0);
}

}  // namespace

void sum_squares(void* out, const std::vector<TensorSpan>& in, DType dtype, Stream s) {
  dispatch_floating<Types>(dtype, "sum_squares", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    int64_t max_chunks = 1;
    bool packs = true, any_empty = false;
    for (const TensorSpan& x : in) {
      max_chunks = std::max(max_chunks, (x.n + kSquaresPerBlock - 1) / kSquaresPerBlock);
      packs = packs && aligned16({x.data});
      any_empty = any_empty || x.n == 0;
    }
    const int64_t count = int64_t(in.size());
    // One chunk per tensor at most: the chunk sums are the results.
    Workspace part(max_chunks > 1 ? size_t(count * max_chunks) * sizeof(A) : 0);
    A* slots = max_chunks > 1 ? part.as<A>() : static_cast<A*>(out);
    // An empty tensor has no block to write its slots: start from zeros then.
    if (any_empty)
      EMONEXT_CUDA_CHECK(cudaMemsetAsync(slots, 0, size_t(count * max_chunks) * sizeof(A), static_cast<cudaStream_t>(s)));
    auto fill = [&](SquaresChunks& c, int slot, size_t i) {
      c.ptr[0][slot] = const_cast<void*>(in[i].data);  // read only
      return in[i].n;
    };
    launch_over_chunks<SquaresChunks>(in.size(), kSquaresPerBlock, fill, [&](const SquaresChunks& c, int blocks) {
      if (packs) EMONEXT_LAUNCH((sum_squares_kernel<T, kPackSize<T>>), unsigned(blocks), kThreads, 0, s, slots, max_chunks, c);
      else EMONEXT_LAUNCH((sum_squares_kernel<T, 1>), unsigned(blocks), kThreads, 0, s, slots, max_chunks, c);
    });
    if (max_chunks > 1) sum_partials<A, false>(static_cast<A*>(out), slots, count, max_chunks, 1, s);
  });
}

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
        if (op == ReduceOp::Max) sum_partials<T, true>(y + first * inner, part.as<A>() + first * chunks * inner, m, chunks, inner, s);
        else sum_partials<T, false>(y + first * inner, part.as<A>() + first * chunks * inner, m, chunks, inner, s,
                                    op == ReduceOp::Mean ? A(1) / A(r) : A(1));
      }
    } else {
      EMONEXT_LAUNCH(reduce_columns_kernel<T>, blocks_for(outer * inner, kThreads), kThreads, 0, s, op, y, x, outer, r, inner);
    }
  });
}

}  // namespace emonext::kernels::cuda
