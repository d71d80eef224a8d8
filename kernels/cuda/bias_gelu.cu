// bias_gelu's backward (CUDA): dx = g * gelu'(x + b) and the bias's gradient, the
// column sums of dx, in one pass over g and x, where op by op it was three passes
// (x + b into a new tensor, gelu' times g, the column sums reading dx again) on the
// block's widest activations. Rows are cut into chunks of 32; a thread per (chunk,
// pack of channels) writes its rows of dx and the chunk's partial sums, which
// partials.cuh adds in chunk order: the same bits every run.
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
__global__ void bias_gelu_backward_kernel(bool tanh, T* dx, acc_t<T>* part, const T* g, const T* x, const T* b, int64_t rows,
                                          int64_t c, int64_t chunks) {
  using A = acc_t<T>;
  const int64_t packs = c / V;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < chunks * packs; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = t % packs * V, chunk = t / packs;
    const Pack<T, V> bv = load_pack<V>(b + k);
    const int64_t first = chunk * kRowsPerChunk, last = first + kRowsPerChunk < rows ? first + kRowsPerChunk : rows;
    A acc[V] = {};
#pragma unroll 2
    for (int64_t r = first; r < last; ++r) {
      const int64_t i = r * c + k;
      const Pack<T, V> gv = load_pack<V>(g + i), xv = load_pack<V>(x + i);
      Pack<T, V> out;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const A t_in = load(xv.v[e]) + load(bv.v[e]);
        out.v[e] = store<T>(load(gv.v[e]) * (tanh ? gelu_tanh_grad(t_in) : gelu_erf_grad(t_in)));
        acc[e] += load(out.v[e]);  // the stored value, as the op-by-op column sum read it
      }
      store_pack<V>(dx + i, out);
    }
#pragma unroll
    for (int e = 0; e < V; ++e) part[chunk * c + k + e] = acc[e];
  }
}

}  // namespace

void bias_gelu_backward(DType dtype, bool tanh, void* dx, void* db, const void* g, const void* x, const void* b, int64_t rows,
                        int64_t c, Stream s) {
  dispatch_floating<Types>(dtype, "bias_gelu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t chunks = std::max<int64_t>(1, (rows + kRowsPerChunk - 1) / kRowsPerChunk);
    Workspace part(size_t(chunks * c) * sizeof(A));
    auto* pdx = static_cast<T*>(dx);
    const auto *pg = static_cast<const T*>(g), *px = static_cast<const T*>(x), *pb = static_cast<const T*>(b);
    with_pack_width<T>(c, {dx, g, x, b}, [&](auto v) {
      constexpr int V = decltype(v)::value;
      EMONEXT_LAUNCH((bias_gelu_backward_kernel<T, V>), blocks_for(chunks * (c / V), kThreads), kThreads, 0, s, tanh, pdx,
                     part.as<A>(), pg, px, pb, rows, c, chunks);
    });
    sum_partials<T>(static_cast<T*>(db), part.as<A>(), 1, chunks, c, s);
  });
}

}  // namespace emonext::kernels::cuda
