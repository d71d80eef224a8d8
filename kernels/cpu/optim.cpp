// The optimizer's fused update (CPU): AdamW on one parameter in one pass over
// p, m, v and g, where the op-by-op form read and wrote them some 35 times.
// The formula is kernels/ops.h's adamw_apply, shared with the CUDA twin.
#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/strided_loop.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

void adamw_step(const AdamWStep& a, void* p, void* m, void* v, const void* g, Stream) {
  dispatch_floating<Types>(a.dtype, "adamw_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const AdamWScalars<A> s = adamw_scalars<A>(a);
    T *pp = static_cast<T*>(p), *pm = static_cast<T*>(m), *pv = static_cast<T*>(v);
    const T* pg = static_cast<const T*>(g);
#pragma omp parallel for schedule(static) if (a.n > kChunk)
    for (int64_t i = 0; i < a.n; ++i) {
      A pi = load(pp[i]), mi = load(pm[i]), vi = load(pv[i]);
      adamw_apply<A>(pi, mi, vi, load(pg[i]), s);
      pp[i] = store<T>(pi);
      pm[i] = store<T>(mi);
      pv[i] = store<T>(vi);
    }
  });
}

}  // namespace emonext::kernels::cpu
