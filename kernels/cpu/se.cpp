// Squeeze-and-excitation gate backward (CPU), one pass over dy and x:
//   dx[n,s,c] = dy[n,s,c] * g[n,c],   dg[n,c] = sum_s dy[n,s,c] * x[n,s,c]
// (the forward gate is the broadcast multiply, the pool a mean over s).
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

void se_gate_backward(void* dx, void* dg, const void* dy, const void* x, const void* g, DType dtype, int64_t n,
                      int64_t hw, int64_t c, Stream) {
  dispatch_floating<Types>(dtype, "se_gate_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pdy = static_cast<const T*>(dy), *px = static_cast<const T*>(x), *pg = static_cast<const T*>(g);
    T *pdx = static_cast<T*>(dx), *pdg = static_cast<T*>(dg);
#pragma omp parallel for schedule(static) if (n > 1 && hw * c > (1 << 12))
    for (int64_t b = 0; b < n; ++b) {
      std::vector<double> acc(size_t(c), 0.0);
      for (int64_t s = 0; s < hw; ++s) {
        const int64_t base = (b * hw + s) * c;
        for (int64_t k = 0; k < c; ++k) {
          const A d = load(pdy[base + k]);
          pdx[base + k] = store<T>(d * load(pg[b * c + k]));
          acc[size_t(k)] += double(d) * double(load(px[base + k]));
        }
      }
      for (int64_t k = 0; k < c; ++k) pdg[b * c + k] = store<T>(A(acc[size_t(k)]));
    }
  });
}

}  // namespace emonext::kernels::cpu
