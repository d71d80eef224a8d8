// The end of a ConvNeXt block (CPU): y = x + (h + b) * gamma * m in one pass, where
// op by op it took four (the Linear's bias, the layer scale, drop path's mask, the
// residual add), and the backward in one pass over g and h that writes dh and both
// parameter gradients' column sums. Sums run over fixed chunks of rows in double,
// then the chunks in order: the same bits on any number of threads.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/partials.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

namespace {
constexpr int64_t kRowsPerChunk = 128;
}

void layer_scale_residual_forward(const LayerScaleResidual& p, void* y, const void* x, const void* h, const void* b,
                                  const void* gamma, const float* u, Stream) {
  dispatch_floating<Types>(p.dtype, "layer_scale_residual_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *px = static_cast<const T*>(x), *ph = static_cast<const T*>(h), *pb = static_cast<const T*>(b),
            *pgamma = static_cast<const T*>(gamma);
    T* py = static_cast<T*>(y);
    const int64_t rows = p.n * p.hw, c = p.c;
#pragma omp parallel for schedule(static) if (rows * c > (1 << 15))
    for (int64_t r = 0; r < rows; ++r) {
      const A m = drop_path_scale<A>(u, r / p.hw, p.keep);
      const T *xr = px + r * c, *hr = ph + r * c;
      T* yr = py + r * c;
      for (int64_t k = 0; k < c; ++k) {
        const A hb = load(hr[k]) + load(pb[k]);
        const A scaled = hb * load(pgamma[k]);  // the order and roundings of the ops it replaces
        yr[k] = store<T>(load(xr[k]) + scaled * m);
      }
    }
  });
}

void layer_scale_residual_backward(const LayerScaleResidual& p, void* dh, void* db, void* dgamma, const void* g, const void* h,
                                   const void* b, const void* gamma, const float* u, Stream) {
  dispatch_floating<Types>(p.dtype, "layer_scale_residual_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pg = static_cast<const T*>(g), *ph = static_cast<const T*>(h), *pb = static_cast<const T*>(b),
            *pgamma = static_cast<const T*>(gamma);
    T* pdh = static_cast<T*>(dh);
    const int64_t rows = p.n * p.hw, c = p.c;
    const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
    std::vector<double> part_b(size_t(chunks * c), 0.0), part_gamma(size_t(chunks * c), 0.0);
#pragma omp parallel for schedule(static) if (rows * c > (1 << 15))
    for (int64_t ch = 0; ch < chunks; ++ch) {
      double *acc_b = part_b.data() + ch * c, *acc_gamma = part_gamma.data() + ch * c;
      for (int64_t r = ch * kRowsPerChunk; r < std::min(rows, (ch + 1) * kRowsPerChunk); ++r) {
        const A m = drop_path_scale<A>(u, r / p.hw, p.keep);
        const T *gr = pg + r * c, *hr = ph + r * c;
        T* dhr = pdh + r * c;
        for (int64_t k = 0; k < c; ++k) {
          const A gm = load(gr[k]) * m, d = gm * load(pgamma[k]);
          dhr[k] = store<T>(d);
          acc_b[k] += double(d);
          acc_gamma[k] += double(gm * (load(hr[k]) + load(pb[k])));
        }
      }
    }
    sum_partials(static_cast<T*>(db), part_b.data(), 1, chunks, c);
    sum_partials(static_cast<T*>(dgamma), part_gamma.data(), 1, chunks, c);
  });
}

}  // namespace emonext::kernels::cpu
