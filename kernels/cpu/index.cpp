// Gather and scatter-add along one dimension of a contiguous [outer, dim, inner]
// block, and one-hot encoding (CPU). index_add runs in a fixed order, so its
// result is deterministic.
#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

void index_select(void* out, const void* in, DType dtype, const int64_t* idx, int64_t outer, int64_t in_dim, int64_t n_idx, int64_t inner, Stream) {
  dispatch_all<Types>(dtype, "index_select", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = static_cast<const T*>(in);
    T* y = static_cast<T*>(out);
#pragma omp parallel for collapse(2) schedule(static) if (outer * n_idx * inner > (1 << 15))
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < n_idx; ++j)
        for (int64_t i = 0; i < inner; ++i) y[(o * n_idx + j) * inner + i] = x[(o * in_dim + idx[j]) * inner + i];
  });
}

void index_add(void* out, const void* src, DType dtype, const int64_t* idx, int64_t outer, int64_t out_dim, int64_t n_idx, int64_t inner, Stream) {
  dispatch_floating<Types>(dtype, "index_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = static_cast<const T*>(src);
    T* y = static_cast<T*>(out);
    // Parallel over (outer, inner): every thread owns whole output columns, so no two threads collide.
#pragma omp parallel for collapse(2) schedule(static) if (outer * n_idx * inner > (1 << 15))
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i)
        for (int64_t j = 0; j < n_idx; ++j) {
          T& dst = y[(o * out_dim + idx[j]) * inner + i];
          dst = store<T>(load(dst) + load(x[(o * n_idx + j) * inner + i]));
        }
  });
}

void one_hot(void* out, DType dtype, const int64_t* labels, int64_t n, int64_t classes, double on, double off, Stream) {
  dispatch_floating<Types>(dtype, "one_hot", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* y = static_cast<T*>(out);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < classes; ++c) y[r * classes + c] = store<T>(acc_t<T>(c == labels[r] ? on : off));
  });
}

}  // namespace emonext::kernels::cpu
