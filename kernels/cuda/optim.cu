// The optimizer's fused update (CUDA): AdamW on one parameter in one pass over
// p, m, v and g (28 bytes per f32 element), one launch per parameter where the
// op-by-op form took some 15 launches and 35 passes. A thread moves 16-byte
// packs when every pointer allows; the formula is kernels/ops.h's adamw_apply,
// shared with the CPU twin.
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/pack.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;

// Elements [first, n) as packs of V (n - first a multiple of V, or V = 1).
template <class T, int V>
__global__ void adamw_kernel(T* p, T* m, T* v, const T* g, int64_t first, int64_t n, AdamWScalars<acc_t<T>> s) {
  using A = acc_t<T>;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < (n - first) / V; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = first + k * V;
    Pack<T, V> pp = load_pack<V>(p + i), pm = load_pack<V>(m + i), pv = load_pack<V>(v + i);
    const Pack<T, V> pg = load_pack<V>(g + i);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      A pe = load(pp.v[e]), me = load(pm.v[e]), ve = load(pv.v[e]);
      adamw_apply<A>(pe, me, ve, load(pg.v[e]), s);
      pp.v[e] = store<T>(pe);
      pm.v[e] = store<T>(me);
      pv.v[e] = store<T>(ve);
    }
    store_pack<V>(p + i, pp);
    store_pack<V>(m + i, pm);
    store_pack<V>(v + i, pv);
  }
}

}  // namespace

void adamw_step(const AdamWStep& a, void* p, void* m, void* v, const void* g, Stream st) {
  dispatch_floating<Types>(a.dtype, "adamw_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const AdamWScalars<A> s = adamw_scalars<A>(a);
    T *pp = static_cast<T*>(p), *pm = static_cast<T*>(m), *pv = static_cast<T*>(v);
    const T* pg = static_cast<const T*>(g);
    constexpr int V = kPackSize<T>;
    const int64_t packed = aligned16({pp, pm, pv, pg}) ? a.n / V * V : 0;
    EMONEXT_LAUNCH((adamw_kernel<T, V>), blocks_for(packed / V, kThreads), kThreads, 0, st, pp, pm, pv, pg, 0, packed, s);
    EMONEXT_LAUNCH((adamw_kernel<T, 1>), blocks_for(a.n - packed, kThreads), kThreads, 0, st, pp, pm, pv, pg, packed, a.n, s);
  });
}

}  // namespace emonext::kernels::cuda
