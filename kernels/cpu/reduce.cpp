// Sum and max over the middle dimension of a contiguous [outer, r, inner]
// block (CPU). Sums accumulate in double; max propagates NaN as torch.amax.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

void reduce(ReduceOp op, void* out, const void* in, DType dtype, int64_t outer, int64_t r, int64_t inner, Stream) {
  dispatch_floating<Types>(dtype, "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* x = static_cast<const T*>(in);
    T* y = static_cast<T*>(out);
#pragma omp parallel for collapse(2) schedule(static) if (outer * r * inner > (1 << 15))
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        const T* p = x + o * r * inner + i;
        if (op == ReduceOp::Sum) {
          double acc = 0;
          for (int64_t j = 0; j < r; ++j) acc += double(load(p[j * inner]));
          y[o * inner + i] = store<T>(A(acc));
        } else {
          A m = -std::numeric_limits<A>::infinity();
          for (int64_t j = 0; j < r; ++j) {
            const A v = load(p[j * inner]);
            if (v > m || std::isnan(v)) m = v;
            if (std::isnan(m)) break;
          }
          y[o * inner + i] = store<T>(m);
        }
      }
    }
  });
}

}  // namespace emonext::kernels::cpu
