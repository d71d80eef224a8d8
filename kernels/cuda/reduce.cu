// Sum and max over the middle dimension of a contiguous [outer, r, inner]
// block (CUDA). inner == 1 (a reduction along contiguous rows): one block per
// row with a block reduction; otherwise one thread per output, walking r with
// coalesced reads across inner. Fixed order: the same bits every run.
#include <cmath>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
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
    } else {
      EMONEXT_LAUNCH(reduce_columns_kernel<T>, blocks_for(outer * inner, kThreads), kThreads, 0, s, op, y, x, outer, r, inner);
    }
  });
}

}  // namespace emonext::kernels::cuda
