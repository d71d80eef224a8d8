// The second half of the CPU backend's deterministic column sums, as partials.cuh is
// on CUDA: a first loop writes per-chunk partial sums in double, and this adds them in
// chunk order, so the result does not depend on how the chunks were shared out over
// the threads.
//
//   out[o, j] = sum_{k < chunks} part[(o * chunks + k) * n + j],   o < outer, j < n
#pragma once
#include <cstdint>

#include "kernels/cpu/cpu_types.h"

namespace emonext::kernels::cpu {

// scale: 1, or a mean's 1 / count (applied in double, before the rounding to T).
template <class T>
void sum_partials(T* out, const double* part, int64_t outer, int64_t chunks, int64_t n, double scale = 1.0) {
#pragma omp parallel for schedule(static) if (outer * chunks * n > (1 << 15))
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < chunks; ++k) acc += part[(o * chunks + k) * n + j];
      out[o * n + j] = store<T>(acc_t<T>(acc * scale));
    }
}

}  // namespace emonext::kernels::cpu
