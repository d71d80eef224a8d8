// The end of a ConvNeXt block (CUDA): y = x + (h + b) * gamma * m in one pass, where
// op by op it took four launches and passes (the Linear's bias, the layer scale,
// drop path's mask, the residual add), and the backward in one pass over g and h.
// Backward: rows are cut into chunks of 32, a thread per (chunk, pack of channels)
// writes its rows of dh and the chunk's partial column sums of db and dgamma;
// partials.cuh adds the chunks in order, so the sums are the same bits every run.
// Threads move 16-byte packs when C and the pointers allow.
#include <algorithm>

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
constexpr int64_t kRowsPerChunk = 32;

template <class T, int V>
__global__ void layer_scale_residual_forward_kernel(LayerScaleResidual p, T* y, const T* x, const T* h, const T* b, const T* gamma,
                                                    const float* u) {
  using A = acc_t<T>;
  const int64_t packs = p.n * p.hw * p.c / V;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < packs; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t * V, k = i % p.c;
    const A m = drop_path_scale<A>(u, i / p.c / p.hw, p.keep);
    const Pack<T, V> xv = load_pack<V>(x + i), hv = load_pack<V>(h + i), bv = load_pack<V>(b + k), gv = load_pack<V>(gamma + k);
    Pack<T, V> out;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const A hb = load(hv.v[e]) + load(bv.v[e]);
      const A scaled = hb * load(gv.v[e]);
      out.v[e] = store<T>(load(xv.v[e]) + scaled * m);
    }
    store_pack<V>(y + i, out);
  }
}

// part_b and part_gamma: [chunks, c].
template <class T, int V>
__global__ void layer_scale_residual_backward_kernel(LayerScaleResidual p, T* dh, acc_t<T>* part_b, acc_t<T>* part_gamma, const T* g,
                                                     const T* h, const T* b, const T* gamma, const float* u, int64_t chunks) {
  using A = acc_t<T>;
  const int64_t packs = p.c / V, rows = p.n * p.hw;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < chunks * packs; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = t % packs * V, chunk = t / packs;
    const Pack<T, V> bv = load_pack<V>(b + k), gv = load_pack<V>(gamma + k);
    const int64_t first = chunk * kRowsPerChunk, last = first + kRowsPerChunk < rows ? first + kRowsPerChunk : rows;
    A acc_b[V] = {}, acc_gamma[V] = {};
#pragma unroll 4
    for (int64_t r = first; r < last; ++r) {
      const A m = drop_path_scale<A>(u, r / p.hw, p.keep);
      const int64_t i = r * p.c + k;
      const Pack<T, V> go = load_pack<V>(g + i), hv = load_pack<V>(h + i);
      Pack<T, V> out;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const A gm = load(go.v[e]) * m, d = gm * load(gv.v[e]);
        out.v[e] = store<T>(d);
        acc_b[e] += d;
        acc_gamma[e] += gm * (load(hv.v[e]) + load(bv.v[e]));
      }
      store_pack<V>(dh + i, out);
    }
#pragma unroll
    for (int e = 0; e < V; ++e) {
      part_b[chunk * p.c + k + e] = acc_b[e];
      part_gamma[chunk * p.c + k + e] = acc_gamma[e];
    }
  }
}

}  // namespace

void layer_scale_residual_forward(const LayerScaleResidual& p, void* y, const void* x, const void* h, const void* b,
                                  const void* gamma, const float* u, Stream s) {
  dispatch_floating<Types>(p.dtype, "layer_scale_residual_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    auto* py = static_cast<T*>(y);
    const auto *px = static_cast<const T*>(x), *ph = static_cast<const T*>(h), *pb = static_cast<const T*>(b),
               *pgamma = static_cast<const T*>(gamma);
    const int64_t n = p.n * p.hw * p.c;
    with_pack_width<T>(p.c, {y, x, h, b, gamma}, [&](auto v) {
      constexpr int V = decltype(v)::value;
      EMONEXT_LAUNCH((layer_scale_residual_forward_kernel<T, V>), blocks_for(n / V, kThreads), kThreads, 0, s, p, py, px, ph, pb,
                     pgamma, u);
    });
  });
}

void layer_scale_residual_backward(const LayerScaleResidual& p, void* dh, void* db, void* dgamma, const void* g, const void* h,
                                   const void* b, const void* gamma, const float* u, Stream s) {
  dispatch_floating<Types>(p.dtype, "layer_scale_residual_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t chunks = std::max<int64_t>(1, (p.n * p.hw + kRowsPerChunk - 1) / kRowsPerChunk);
    Workspace part(size_t(2 * chunks * p.c) * sizeof(A));
    A *part_b = part.as<A>(), *part_gamma = part.as<A>() + chunks * p.c;
    auto* pdh = static_cast<T*>(dh);
    const auto *pg = static_cast<const T*>(g), *ph = static_cast<const T*>(h), *pb = static_cast<const T*>(b),
               *pgamma = static_cast<const T*>(gamma);
    with_pack_width<T>(p.c, {dh, g, h, b, gamma}, [&](auto v) {
      constexpr int V = decltype(v)::value;
      EMONEXT_LAUNCH((layer_scale_residual_backward_kernel<T, V>), blocks_for(chunks * (p.c / V), kThreads), kThreads, 0, s, p, pdh,
                     part_b, part_gamma, pg, ph, pb, pgamma, u, chunks);
    });
    sum_partials<T>(static_cast<T*>(db), part_b, p.c, static_cast<T*>(dgamma), part_gamma, p.c, chunks, s);
  });
}

}  // namespace emonext::kernels::cuda
