// BatchNorm in training mode over the rows of contiguous x [rows, c] (the N*H*W
// positions of a channels-last map), as torch.nn.functional.batch_norm (CPU):
//   mean = sum_r x / M,  var = sum_r (x - mean)^2 / M (biased),  rstd = 1 / sqrt(var + eps)
//   y = (x - mean) * rstd * w + b;  running_mean += momentum * (mean - running_mean), the
//   same for running_var with the unbiased var * M / (M - 1)                  (M = rows)
// Backward, with xhat = (x - mean) * rstd:
//   db = sum_r dy,  dw = sum_r dy * xhat,  dx = w * rstd * (dy - db / M - xhat * dw / M)
// The statistics are one pass of shifted sums, sum (x - K) and sum (x - K)^2 with K the
// first row: a shift inside the data's range keeps the variance from cancelling the
// way sum x^2 - M mean^2 does when |mean| >> std. Sums in double per fixed chunk of
// rows, then over the chunks in order (kernels/cpu/partials.h): the same bits for any
// thread count. The CUDA twin computes the same quantities the same way.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/partials.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

namespace {

constexpr int64_t kRowsPerChunk = 256;

// sums [2, c] = the column sums over all rows of f(r, j) -> (a, b), chunk by chunk.
template <class F>
void column_sum_pairs(std::vector<double>& sums, int64_t rows, int64_t c, F f) {
  const int64_t chunks = std::max<int64_t>(1, (rows + kRowsPerChunk - 1) / kRowsPerChunk);
  std::vector<double> part(size_t(2 * chunks * c), 0.0);  // [2, chunks, c]
#pragma omp parallel for schedule(static) if (rows * c > (1 << 15))
  for (int64_t ch = 0; ch < chunks; ++ch) {
    double* pa = part.data() + ch * c;
    double* pb = part.data() + (chunks + ch) * c;
    for (int64_t r = ch * kRowsPerChunk; r < std::min(rows, (ch + 1) * kRowsPerChunk); ++r)
      for (int64_t j = 0; j < c; ++j) {
        const auto [a, b] = f(r, j);
        pa[j] += a;
        pb[j] += b;
      }
  }
  sums.assign(size_t(2 * c), 0.0);
  sum_partials<double>(sums.data(), part.data(), 2, chunks, c);
}

}  // namespace

void batch_norm_forward(void* y, void* mean, void* rstd, void* running_mean, void* running_var, const void* x, const void* w,
                        const void* b, DType dtype, int64_t rows, int64_t c, double eps, double momentum, Stream) {
  dispatch_floating<Types>(dtype, "batch_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *px = static_cast<const T*>(x), *pw = static_cast<const T*>(w), *pb = static_cast<const T*>(b);
    std::vector<double> sums;
    column_sum_pairs(sums, rows, c, [&](int64_t r, int64_t j) {
      const double d = double(load(px[r * c + j])) - double(load(px[j]));
      return std::pair<double, double>{d, d * d};
    });
    const double m = double(rows);
    std::vector<double> mu(static_cast<size_t>(c)), rs(static_cast<size_t>(c));
    for (int64_t j = 0; j < c; ++j) {
      const double shifted = sums[size_t(j)] / m, var = std::max(0.0, sums[size_t(c + j)] / m - shifted * shifted);
      mu[size_t(j)] = double(load(px[j])) + shifted;
      rs[size_t(j)] = 1.0 / std::sqrt(var + eps);
      static_cast<A*>(mean)[j] = A(mu[size_t(j)]);
      static_cast<A*>(rstd)[j] = A(rs[size_t(j)]);
      if (running_mean) {
        T& rm = static_cast<T*>(running_mean)[j];
        T& rv = static_cast<T*>(running_var)[j];
        rm = store<T>(A((1 - momentum) * double(load(rm)) + momentum * mu[size_t(j)]));
        rv = store<T>(A((1 - momentum) * double(load(rv)) + momentum * var * m / (m - 1)));
      }
    }
    T* py = static_cast<T*>(y);
#pragma omp parallel for schedule(static) if (rows * c > (1 << 15))
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < c; ++j)
        py[r * c + j] = store<T>(A((double(load(px[r * c + j])) - mu[size_t(j)]) * rs[size_t(j)] * double(load(pw[j])) +
                                   double(load(pb[j]))));
  });
}

void batch_norm_backward(void* dx, void* dw, void* db, const void* dy, const void* x, const void* mean, const void* rstd,
                         const void* w, DType dtype, int64_t rows, int64_t c, Stream) {
  dispatch_floating<Types>(dtype, "batch_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pdy = static_cast<const T*>(dy), *px = static_cast<const T*>(x), *pw = static_cast<const T*>(w);
    const A *pm = static_cast<const A*>(mean), *pr = static_cast<const A*>(rstd);
    auto xhat = [&](int64_t r, int64_t j) { return (double(load(px[r * c + j])) - double(pm[j])) * double(pr[j]); };
    std::vector<double> sums;  // [sum dy, sum dy * xhat]
    column_sum_pairs(sums, rows, c, [&](int64_t r, int64_t j) {
      const double g = double(load(pdy[r * c + j]));
      return std::pair<double, double>{g, g * xhat(r, j)};
    });
    for (int64_t j = 0; j < c; ++j) {
      static_cast<T*>(db)[j] = store<T>(A(sums[size_t(j)]));
      static_cast<T*>(dw)[j] = store<T>(A(sums[size_t(c + j)]));
    }
    const double m = double(rows);
    T* pdx = static_cast<T*>(dx);
#pragma omp parallel for schedule(static) if (rows * c > (1 << 15))
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < c; ++j)
        pdx[r * c + j] = store<T>(A(double(load(pw[j])) * double(pr[j]) *
                                    (double(load(pdy[r * c + j])) - sums[size_t(j)] / m - xhat(r, j) * sums[size_t(c + j)] / m)));
  });
}

}  // namespace emonext::kernels::cpu
