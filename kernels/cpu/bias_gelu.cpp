// bias_gelu's backward (CPU): dx = g * gelu'(x + b) and the bias's gradient, the
// column sums of dx, in one pass over g and x. Op by op it was three: x + b into a
// new tensor, gelu' times g, then the column sums reading dx again, all on the
// block's widest activations (4C channels). Sums run over fixed chunks of rows in
// double, then the chunks in order: the same bits on any number of threads.

#include "kernels/cpu/vector_math.h"  // before kernels/formulas.h

#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/partials.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

void bias_gelu_backward(DType dtype, bool tanh, void* dx, void* db, const void* g, const void* x, const void* b, int64_t rows,
                        int64_t c, Stream) {
  dispatch_floating<Types>(dtype, "bias_gelu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pg = static_cast<const T*>(g), *px = static_cast<const T*>(x), *pb = static_cast<const T*>(b);
    T* pdx = static_cast<T*>(dx);
    chunked_column_sums(static_cast<T*>(db), rows, c, kBiasRowsPerChunk, [&](int64_t r, double* __restrict acc) {
      const T *__restrict gr = pg + r * c, *__restrict xr = px + r * c, *__restrict br = pb;
      T* __restrict dxr = pdx + r * c;
      // Two loops, each of which vectorises: the GELU's erff and expf go through libmvec.
      if (tanh)
        for (int64_t k = 0; k < c; ++k) dxr[k] = store<T>(load(gr[k]) * gelu_tanh_grad(A(load(xr[k]) + load(br[k]))));
      else
        for (int64_t k = 0; k < c; ++k) dxr[k] = store<T>(load(gr[k]) * gelu_erf_grad(A(load(xr[k]) + load(br[k]))));
      for (int64_t k = 0; k < c; ++k) acc[k] += double(load(dxr[k]));
    });
  });
}

}  // namespace emonext::kernels::cpu
