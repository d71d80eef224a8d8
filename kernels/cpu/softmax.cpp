// softmax and log_softmax over the last dimension of [rows, cols] (CPU),
// forward and backward:
//   softmax:      y = exp(x - max) / sum,        dx = y * (dy - sum(dy * y))
//   log_softmax:  y = x - max - log(sum),        dx = dy - exp(y) * sum(dy)
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

void softmax_forward(bool log, void* out, const void* in, DType dtype, int64_t rows, int64_t cols, Stream) {
  dispatch_floating<Types>(dtype, "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 15))
    for (int64_t r = 0; r < rows; ++r) {
      const T* x = static_cast<const T*>(in) + r * cols;
      T* y = static_cast<T*>(out) + r * cols;
      A mx = -std::numeric_limits<A>::infinity();
      for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, load(x[c]));
      A sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += m_exp(load(x[c]) - mx);
      if (log) {
        const A lse = mx + m_log(sum);
        for (int64_t c = 0; c < cols; ++c) y[c] = store<T>(load(x[c]) - lse);
      } else {
        for (int64_t c = 0; c < cols; ++c) y[c] = store<T>(m_exp(load(x[c]) - mx) / sum);
      }
    }
  });
}

void softmax_backward(bool log, void* dx, const void* y, const void* dy, DType dtype, int64_t rows, int64_t cols, Stream) {
  dispatch_floating<Types>(dtype, "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 15))
    for (int64_t r = 0; r < rows; ++r) {
      const T* py = static_cast<const T*>(y) + r * cols;
      const T* pdy = static_cast<const T*>(dy) + r * cols;
      T* pdx = static_cast<T*>(dx) + r * cols;
      A dot = 0;
      for (int64_t c = 0; c < cols; ++c) dot += log ? load(pdy[c]) : load(pdy[c]) * load(py[c]);
      for (int64_t c = 0; c < cols; ++c)
        pdx[c] = store<T>(log ? load(pdy[c]) - m_exp(load(py[c])) * dot : load(py[c]) * (load(pdy[c]) - dot));
    }
  });
}

}  // namespace emonext::kernels::cpu
