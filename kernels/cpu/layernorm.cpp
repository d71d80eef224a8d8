// LayerNorm over the last dimension (CPU), as torch.nn.functional.layer_norm:
//   y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps), var biased.
// Backward, with xhat = (x - mean) * rstd and g = dy * w:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dw = sum_rows dy * xhat,  db = sum_rows dy.
// Row statistics and sums accumulate in double, each row's in lane_sum's fixed order. dw
// and db are summed per fixed chunk of rows, then over chunks in order: the same bits
// for any thread count.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/partials.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

namespace {
constexpr int64_t kRowsPerChunk = 256;
template <class T> using stat_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
}  // namespace

void layer_norm_forward(void* y, void* mean, void* rstd, const void* x, const void* w, const void* b, DType dtype,
                        int64_t rows, int64_t cols, double eps, Stream) {
  dispatch_floating<Types>(dtype, "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *px = static_cast<const T*>(x), *pw = static_cast<const T*>(w), *pb = static_cast<const T*>(b);
    T* py = static_cast<T*>(y);
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 15))
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * cols;
      const double mu = lane_sum(cols, [&](int64_t c) { return double(load(xr[c])); }) / double(cols);
      const double var = lane_sum(cols, [&](int64_t c) {
                           const double d = double(load(xr[c])) - mu;
                           return d * d;
                         }) /
                         double(cols);
      const double rs = 1.0 / std::sqrt(var + eps);
      static_cast<stat_t<T>*>(mean)[r] = stat_t<T>(mu);
      static_cast<stat_t<T>*>(rstd)[r] = stat_t<T>(rs);
      for (int64_t c = 0; c < cols; ++c)
        py[r * cols + c] = store<T>(A((double(load(xr[c])) - mu) * rs * double(load(pw[c])) + double(load(pb[c]))));
    }
  });
}

void layer_norm_backward(void* dx, void* dw, void* db, const void* dy, const void* x, const void* mean,
                         const void* rstd, const void* w, DType dtype, int64_t rows, int64_t cols, Stream) {
  dispatch_floating<Types>(dtype, "layer_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pdy = static_cast<const T*>(dy), *px = static_cast<const T*>(x), *pw = static_cast<const T*>(w);
    const stat_t<T>* pm = static_cast<const stat_t<T>*>(mean);
    const stat_t<T>* pr = static_cast<const stat_t<T>*>(rstd);
    T* pdx = static_cast<T*>(dx);
    const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
    std::vector<double> part_w(size_t(chunks * cols), 0.0), part_b(size_t(chunks * cols), 0.0);
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 15))
    for (int64_t ch = 0; ch < chunks; ++ch) {
      double* accw = part_w.data() + ch * cols;
      double* accb = part_b.data() + ch * cols;
      for (int64_t r = ch * kRowsPerChunk; r < std::min(rows, (ch + 1) * kRowsPerChunk); ++r) {
        const T *dyr = pdy + r * cols, *xr = px + r * cols;
        const double mu = pm[r], rs = pr[r];
        const auto xhat_at = [&](int64_t c) { return (double(load(xr[c])) - mu) * rs; };
        const auto g_at = [&](int64_t c) { return double(load(dyr[c])) * double(load(pw[c])); };
        const double sg = lane_sum(cols, g_at) / double(cols);
        const double sgx = lane_sum(cols, [&](int64_t c) { return g_at(c) * xhat_at(c); }) / double(cols);
        for (int64_t c = 0; c < cols; ++c) {
          accw[c] += double(load(dyr[c])) * xhat_at(c);
          accb[c] += double(load(dyr[c]));
        }
        for (int64_t c = 0; c < cols; ++c) pdx[r * cols + c] = store<T>(A(rs * (g_at(c) - sg - xhat_at(c) * sgx)));
      }
    }
    sum_partials(static_cast<T*>(dw), part_w.data(), 1, chunks, cols);
    sum_partials(static_cast<T*>(db), part_b.data(), 1, chunks, cols);
  });
}

}  // namespace emonext::kernels::cpu
