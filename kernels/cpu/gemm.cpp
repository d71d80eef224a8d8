// Matrix products on the CPU through CBLAS (OpenBLAS). bf16 and f16 operands
// are widened to f32, multiplied with f32 accumulation, and narrowed back.
#include <cblas.h>

#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

namespace {

template <class T>
std::vector<float> widen(const T* p, int64_t n) {
  std::vector<float> out(size_t(n), 0.0f);
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = float(p[i]);
  return out;
}

// Elements spanned by one row-major matrix of `rows` rows with leading dim ld.
int64_t span(bool trans, int64_t rows, int64_t cols, int64_t ld) { return trans ? (cols - 1) * ld + rows : (rows - 1) * ld + cols; }

}  // namespace

void gemm(const Gemm& g, Stream) {
  const CBLAS_TRANSPOSE ta = g.trans_a ? CblasTrans : CblasNoTrans, tb = g.trans_b ? CblasTrans : CblasNoTrans;
  if (g.m == 0 || g.n == 0) return;
  dispatch_floating<Types>(g.dtype, "gemm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (int64_t i = 0; i < g.batch; ++i) {
      const T* a = static_cast<const T*>(g.a) + i * g.stride_a;
      const T* b = static_cast<const T*>(g.b) + i * g.stride_b;
      T* c = static_cast<T*>(g.c) + i * g.stride_c;
      if constexpr (std::is_same_v<T, float>) {
        cblas_sgemm(CblasRowMajor, ta, tb, int(g.m), int(g.n), int(g.k), g.alpha, a, int(g.lda), b, int(g.ldb), g.beta, c, int(g.ldc));
      } else if constexpr (std::is_same_v<T, double>) {
        cblas_dgemm(CblasRowMajor, ta, tb, int(g.m), int(g.n), int(g.k), g.alpha, a, int(g.lda), b, int(g.ldb), g.beta, c, int(g.ldc));
      } else {
        std::vector<float> fa = widen(a, g.k == 0 ? 0 : span(g.trans_a, g.m, g.k, g.lda));
        std::vector<float> fb = widen(b, g.k == 0 ? 0 : span(g.trans_b, g.k, g.n, g.ldb));
        const int64_t c_span = span(false, g.m, g.n, g.ldc);
        std::vector<float> fc = widen(c, c_span);
        cblas_sgemm(CblasRowMajor, ta, tb, int(g.m), int(g.n), int(g.k), g.alpha, fa.data(), int(g.lda), fb.data(), int(g.ldb), g.beta, fc.data(), int(g.ldc));
        for (int64_t r = 0; r < g.m; ++r)
          for (int64_t col = 0; col < g.n; ++col) c[r * g.ldc + col] = T(fc[size_t(r * g.ldc + col)]);
      }
    }
  });
}

}  // namespace emonext::kernels::cpu
