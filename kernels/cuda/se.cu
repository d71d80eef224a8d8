// Squeeze-and-excitation gate backward (CUDA), one pass over dy and x:
//   dx[n,s,c] = dy[n,s,c] * g[n,c],   dg[n,c] = sum_s dy[n,s,c] * x[n,s,c]
// The H*W positions are cut into chunks of 32 so that there is a thread per
// (n, chunk, pack of channels): a thread moves 16 bytes per load when C allows,
// and a warp reads consecutive channels. Each thread writes its part of dx and a
// partial dg; partials.cuh adds the partials in chunk order, so dg is the same
// bits run after run. (The forward is a broadcast multiply: elementwise.cu.)
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

constexpr int64_t kPositionsPerChunk = 32;

template <class T, int V>
__global__ void se_gate_backward_kernel(T* dx, acc_t<T>* partial, const T* dy, const T* x, const T* g, int64_t n, int64_t hw,
                                        int64_t c, int64_t chunks) {
  using A = acc_t<T>;
  const int64_t packs = c / V;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n * chunks * packs; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = t % packs * V, chunk = (t / packs) % chunks, b = t / (packs * chunks);
    const Pack<T, V> gate = load_pack<V>(g + b * c + k);
    const int64_t first = chunk * kPositionsPerChunk, last = first + kPositionsPerChunk < hw ? first + kPositionsPerChunk : hw;
    A acc[V] = {};
#pragma unroll 4
    for (int64_t s = first; s < last; ++s) {
      const int64_t i = (b * hw + s) * c + k;
      const Pack<T, V> d = load_pack<V>(dy + i), v = load_pack<V>(x + i);
      Pack<T, V> out;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        out.v[e] = store<T>(load(d.v[e]) * load(gate.v[e]));
        acc[e] += load(d.v[e]) * load(v.v[e]);
      }
      store_pack<V>(dx + i, out);
    }
#pragma unroll
    for (int e = 0; e < V; ++e) partial[(b * chunks + chunk) * c + k + e] = acc[e];  // [n, chunk, c]
  }
}

}  // namespace

void se_gate_backward(void* dx, void* dg, const void* dy, const void* x, const void* g, DType dtype, int64_t n, int64_t hw,
                      int64_t c, Stream s) {
  dispatch_floating<Types>(dtype, "se_gate_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t chunks = std::max<int64_t>(1, (hw + kPositionsPerChunk - 1) / kPositionsPerChunk);
    Workspace partial(size_t(n * chunks * c) * sizeof(A));
    auto* out = static_cast<T*>(dx);
    const auto *pdy = static_cast<const T*>(dy), *px = static_cast<const T*>(x), *pg = static_cast<const T*>(g);
    with_pack_width<T>(c, {dx, dy, x, g}, [&](auto v) {
      constexpr int V = decltype(v)::value;
      EMONEXT_LAUNCH((se_gate_backward_kernel<T, V>), blocks_for(n * chunks * (c / V), 256), 256, 0, s, out, partial.as<A>(), pdy,
                     px, pg, n, hw, c, chunks);
    });
    for (int64_t first = 0; first < n; first += 65535)  // grid.y: at most 65535 images per launch
      sum_partials<T>(static_cast<T*>(dg) + first * c, partial.as<A>() + first * chunks * c, std::min<int64_t>(n - first, 65535),
                      chunks, c, s);
  });
}

}  // namespace emonext::kernels::cuda
