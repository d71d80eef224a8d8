// Sum and max across a thread block with warp shuffles. Every thread of the
// block must call these (they contain __syncthreads), and every thread gets
// the result. blockDim.x must be a multiple of 32 and at most 1024.
#pragma once
#include <cuda_runtime.h>

namespace emonext::kernels::cuda {

template <class A>
__device__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class A>
__device__ A warp_max(A v) {
  for (int o = 16; o > 0; o >>= 1) {
    const A other = __shfl_xor_sync(0xffffffffu, v, o);
    v = (v != v || v > other) ? v : other;  // NaN propagates
  }
  return v;
}

// shared must hold 32 values of A.
template <class A, bool kMax>
__device__ A block_reduce(A v, A* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // shared may still be read by an earlier call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  A r = lane < warps ? shared[lane] : (kMax ? shared[0] : A(0));
  r = kMax ? warp_max(r) : warp_sum(r);
  return r;
}

}  // namespace emonext::kernels::cuda
