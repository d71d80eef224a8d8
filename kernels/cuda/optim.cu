// The optimizer's fused update (CUDA): AdamW on every parameter of a list in one
// pass over p, m, v and g (28 bytes per f32 element) and a few launches for the
// whole model (kernels/cuda/multi_tensor.cuh), where the op-by-op form took some
// 15 launches and 35 passes per parameter. A thread moves 16-byte packs when
// every pointer allows; the formula is kernels/formulas.h's adamw_apply, shared with
// the CPU twin. The weights' EMA (ema_step) is one such pass too.
#include <type_traits>

#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/multi_tensor.cuh"
#include "kernels/cuda/pack.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;
constexpr int64_t kChunk = 16384;  // elements per block: 64 per thread

// p, m, v, g per parameter; extra: its weight decay (0 where exempt).
using AdamWChunks = TensorChunks<4, 36, 320, double>;

// Elements [first, last) of one parameter: packs of V from first (a multiple of V),
// then the rest one by one.
template <class T, int V>
__device__ void adamw_range(T* p, T* m, T* v, const T* g, int64_t first, int64_t last, const AdamWScalars<acc_t<T>>& s) {
  using A = acc_t<T>;
  const int64_t packed_end = first + (last - first) / V * V;
  for (int64_t i = first + int64_t(threadIdx.x) * V; i < packed_end; i += int64_t(blockDim.x) * V) {
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
  for (int64_t i = packed_end + threadIdx.x; i < last; i += blockDim.x) {
    A pe = load(p[i]), me = load(m[i]), ve = load(v[i]);
    adamw_apply<A>(pe, me, ve, load(g[i]), s);
    p[i] = store<T>(pe);
    m[i] = store<T>(me);
    v[i] = store<T>(ve);
  }
}

// A block per (parameter, chunk) of the launch's map. The scalars are worked out per
// block, since t and the gradients' factor may live in device memory (step_check's).
template <class T, int V>
__global__ void adamw_kernel(AdamWChunks c, AdamWStep a) {
  if (adamw_skips(a)) return;
  const int t = c.tensor_of_block[blockIdx.x];
  const int64_t first = int64_t(c.chunk_of_block[blockIdx.x]) * kChunk;
  const int64_t last = first + kChunk < c.n[t] ? first + kChunk : c.n[t];
  const AdamWScalars<acc_t<T>> s = adamw_scalars<acc_t<T>>(a, c.extra[t]);
  adamw_range<T, V>(static_cast<T*>(c.ptr[0][t]), static_cast<T*>(c.ptr[1][t]), static_cast<T*>(c.ptr[2][t]),
                    static_cast<const T*>(c.ptr[3][t]), first, last, s);
}

// The EMA: v, x per tensor (no extra).
using EmaChunks = TensorChunks<2, 64, 320, uint8_t>;

template <class T>
__global__ void ema_kernel(EmaChunks c, EmaStep a) {
  const double d = ema_decay(a);  // read per block: the step may live in step_check's state
  if (d < 0) return;
  const int t = c.tensor_of_block[blockIdx.x];
  const int64_t first = int64_t(c.chunk_of_block[blockIdx.x]) * kChunk;
  const int64_t last = first + kChunk < c.n[t] ? first + kChunk : c.n[t];
  T* v = static_cast<T*>(c.ptr[0][t]);
  const T* x = static_cast<const T*>(c.ptr[1][t]);
  for (int64_t i = first + threadIdx.x; i < last; i += blockDim.x) {
    if constexpr (std::is_integral_v<T>) v[i] = x[i];
    else v[i] = store<T>(ema_apply<acc_t<T>>(load(v[i]), load(x[i]), d));
  }
}

__global__ void step_check_kernel(StepCheck a) { step_check_apply(a); }

}  // namespace

void adamw_step(const AdamWStep& a, const std::vector<AdamWTensor>& tensors, Stream st) {
  dispatch_floating<Types>(a.dtype, "adamw_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    bool packs = true;  // chunks start at multiples of kChunk, so aligned bases suffice
    for (const AdamWTensor& x : tensors) packs = packs && aligned16({x.p, x.m, x.v, x.g});
    auto fill = [&](AdamWChunks& c, int slot, size_t i) {
      const AdamWTensor& x = tensors[i];
      c.ptr[0][slot] = x.p;
      c.ptr[1][slot] = x.m;
      c.ptr[2][slot] = x.v;
      c.ptr[3][slot] = const_cast<void*>(x.g);  // read only
      c.extra[slot] = x.weight_decay;
      return x.n;
    };
    launch_over_chunks<AdamWChunks>(tensors.size(), kChunk, fill, [&](const AdamWChunks& c, int blocks) {
      if (packs) EMONEXT_LAUNCH((adamw_kernel<T, kPackSize<T>>), unsigned(blocks), kThreads, 0, st, c, a);
      else EMONEXT_LAUNCH((adamw_kernel<T, 1>), unsigned(blocks), kThreads, 0, st, c, a);
    });
  });
}

void ema_step(const EmaStep& a, const std::vector<EmaTensor>& tensors, Stream st) {
  dispatch_all<Types>(a.dtype, "ema_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    auto fill = [&](EmaChunks& c, int slot, size_t i) {
      c.ptr[0][slot] = tensors[i].v;
      c.ptr[1][slot] = const_cast<void*>(tensors[i].x);  // read only
      return tensors[i].n;
    };
    launch_over_chunks<EmaChunks>(tensors.size(), kChunk, fill, [&](const EmaChunks& c, int blocks) {
      EMONEXT_LAUNCH(ema_kernel<T>, unsigned(blocks), kThreads, 0, st, c, a);
    });
  });
}

// The step's check is a few hundred additions: one thread, so that its order is the
// CPU twin's and the norm the same bits.
void step_check(const StepCheck& a, Stream st) { EMONEXT_LAUNCH(step_check_kernel, 1, 1, 0, st, a); }

}  // namespace emonext::kernels::cuda
