// The CPU backend's one loop over strided views: calls f(offsets) for every
// element, where offsets[k] is the element offset into views[k]. Work is split
// into chunks of linear indices that run on OpenMP threads; inside a chunk it
// walks the innermost dimension with a constant stride.
#pragma once
#include <algorithm>

#include "kernels/view.h"

namespace emonext::kernels::cpu {

constexpr int64_t kChunk = 1 << 15;

template <int N, class F>
void strided_loop(View* views, F f) {
  coalesce(N, views);
  const View& v0 = views[0];
  const int nd = v0.ndim;
  const int64_t total = v0.numel();
  if (total == 0) return;
  if (nd == 0) {
    int64_t off[N] = {};
    f(off);
    return;
  }
  const int64_t nchunks = (total + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t begin = c * kChunk, end = std::min(total, begin + kChunk);
    int64_t idx[kMaxDims];
    int64_t rest = begin;
    for (int d = nd - 1; d >= 0; --d) { idx[d] = rest % v0.shape[d]; rest /= v0.shape[d]; }
    for (int64_t i = begin; i < end;) {
      int64_t base[N], inner_stride[N];
      for (int k = 0; k < N; ++k) {
        base[k] = 0;
        for (int d = 0; d < nd; ++d) base[k] += idx[d] * views[k].stride[d];
        inner_stride[k] = views[k].stride[nd - 1];
      }
      const int64_t run = std::min(end - i, v0.shape[nd - 1] - idx[nd - 1]);
      bool unit = true;  // every view steps by one element: a loop the compiler can vectorise
      for (int k = 0; k < N; ++k) unit &= inner_stride[k] == 1;
      int64_t off[N];
      if (unit) {
        for (int64_t j = 0; j < run; ++j) {
          for (int k = 0; k < N; ++k) off[k] = base[k] + j;
          f(off);
        }
      } else {
        for (int64_t j = 0; j < run; ++j) {
          for (int k = 0; k < N; ++k) off[k] = base[k] + j * inner_stride[k];
          f(off);
        }
      }
      i += run;
      idx[nd - 1] += run;
      for (int d = nd - 1; d > 0 && idx[d] >= v0.shape[d]; --d) { idx[d] = 0; ++idx[d - 1]; }
    }
  }
}

}  // namespace emonext::kernels::cpu
