// The optimizer's fused update (CPU): AdamW on every parameter of a list in one
// pass over p, m, v and g, where the op-by-op form read and wrote them some 35
// times, and one parallel loop over the whole list's chunks (multi_tensor.h).
// The formula is kernels/formulas.h's adamw_apply, shared with the CUDA twin, and so
// is the training step's check before it (kernels.h, step_check_apply). The weights'
// EMA is one such pass too (ema_step).
#include <type_traits>

#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/multi_tensor.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

void adamw_step(const AdamWStep& a, const std::vector<AdamWTensor>& tensors, Stream) {
  if (adamw_skips(a)) return;
  dispatch_floating<Types>(a.dtype, "adamw_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const std::vector<TensorChunk> chunks = tensor_chunks(tensors.size(), 1 << 14, [&](size_t i) { return tensors[i].n; });
#pragma omp parallel for schedule(static) if (chunks.size() > 1)
    for (size_t c = 0; c < chunks.size(); ++c) {
      const AdamWTensor& x = tensors[chunks[c].tensor];
      const AdamWScalars<A> s = adamw_scalars<A>(a, x.weight_decay);
      T *p = static_cast<T*>(x.p), *m = static_cast<T*>(x.m), *v = static_cast<T*>(x.v);
      const T* g = static_cast<const T*>(x.g);
      for (int64_t i = chunks[c].first; i < chunks[c].last; ++i) {
        A pi = load(p[i]), mi = load(m[i]), vi = load(v[i]);
        adamw_apply<A>(pi, mi, vi, load(g[i]), s);
        p[i] = store<T>(pi);
        m[i] = store<T>(mi);
        v[i] = store<T>(vi);
      }
    }
  });
}

void ema_step(const EmaStep& a, const std::vector<EmaTensor>& tensors, Stream) {
  const double d = ema_decay(a);
  if (d < 0) return;
  dispatch_all<Types>(a.dtype, "ema_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const std::vector<TensorChunk> chunks = tensor_chunks(tensors.size(), 1 << 14, [&](size_t i) { return tensors[i].n; });
#pragma omp parallel for schedule(static) if (chunks.size() > 1)
    for (size_t c = 0; c < chunks.size(); ++c) {
      T* v = static_cast<T*>(tensors[chunks[c].tensor].v);
      const T* x = static_cast<const T*>(tensors[chunks[c].tensor].x);
      for (int64_t i = chunks[c].first; i < chunks[c].last; ++i) {
        if constexpr (std::is_integral_v<T>) v[i] = x[i];
        else v[i] = store<T>(ema_apply<acc_t<T>>(load(v[i]), load(x[i]), d));
      }
    }
  });
}

void step_check(const StepCheck& a, Stream) { step_check_apply(a); }

}  // namespace emonext::kernels::cpu
