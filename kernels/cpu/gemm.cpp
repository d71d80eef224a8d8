// Matrix products on the CPU through CBLAS (OpenBLAS). bf16 and f16 operands
// are widened to f32, multiplied with f32 accumulation, and narrowed back; an
// epilogue (Gemm::epilogue: cuBLASLt's bias + GELU and its backward, whose CPU twin
// this is) acts on the f32 product before the narrowing.
//
// Threads: BLAS runs single-threaded (blas.h) and the engine's OpenMP threads share
// the work out (batches, or slices of the larger side of C).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/vector_math.h"  // before kernels/formulas.h

#include "kernels/cpu/blas.h"
#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/partials.h"
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

// One BLAS call on rows [r0, r1) and columns [c0, c1) of C (row-major).
template <class T>
void blas_tile(const Gemm& g, const T* a, const T* b, T* c, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  a += g.trans_a ? r0 : r0 * g.lda;  // row r of op(A)
  b += g.trans_b ? c0 * g.ldb : c0;  // column c of op(B)
  c += r0 * g.ldc + c0;
  blas_gemm<T>(g.trans_a, g.trans_b, r1 - r0, c1 - c0, g.k, T(g.alpha), a, g.lda, b, g.ldb, T(g.beta), c, g.ldc);
}

// The batch of products on the OpenMP threads: whole matrices when there are enough of
// them, else each matrix cut into slices of its larger side (C's rows or columns), so
// that every thread has a share; small products stay on one thread.
template <class T>
void parallel_gemm(const Gemm& g) {
  const int64_t threads = omp_get_max_threads();
  const bool big = double(g.m) * double(g.n) * double(g.k) >= double(1 << 18);
  const int64_t slices = (g.batch >= threads || !big) ? 1 : std::max<int64_t>(1, threads / g.batch);
  const bool by_rows = g.m >= g.n;
  const int64_t side = by_rows ? g.m : g.n, per = (side + slices - 1) / slices;
  const int64_t tasks = g.batch * slices;
#pragma omp parallel for schedule(static) if (tasks > 1 && big)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t i = t / slices, lo = (t % slices) * per, hi = std::min(side, lo + per);
    if (lo >= hi) continue;
    const T* a = static_cast<const T*>(g.a) + i * g.stride_a;
    const T* b = static_cast<const T*>(g.b) + i * g.stride_b;
    T* c = static_cast<T*>(g.c) + i * g.stride_c;
    if (by_rows)
      blas_tile(g, a, b, c, lo, hi, 0, g.n);
    else
      blas_tile(g, a, b, c, 0, g.m, lo, hi);
  }
}

// The epilogue on one matrix's f32 product `acc` (row r at acc + r * ldacc; for f32, g.c
// itself: each element is read before it is written), stored to g.c as T. The bias
// gradient sums the stored values in bias_gelu_backward's chunks: in f32 the fused
// product gives that op's bits.
template <class T>
void apply_epilogue(const Gemm& g, const float* acc, int64_t ldacc) {
  using A = acc_t<T>;
  T* c = static_cast<T*>(g.c);
  T* aux = static_cast<T*>(g.aux);
  if (g.epilogue == GemmEpilogue::BiasGeluTanh) {
    const T* bias = static_cast<const T*>(g.bias);
#pragma omp parallel for schedule(static) if (g.m * g.n > (1 << 15))
    for (int64_t r = 0; r < g.m; ++r)
      for (int64_t j = 0; j < g.n; ++j) {
        const A pre = A(acc[r * ldacc + j]) + load(bias[j]);
        aux[r * g.ldaux + j] = store<T>(pre);
        c[r * g.ldc + j] = store<T>(gelu_tanh(pre));
      }
    return;
  }
  chunked_column_sums(static_cast<T*>(g.bias_grad), g.m, g.n, kBiasRowsPerChunk, [&](int64_t r, double* sums) {
    for (int64_t j = 0; j < g.n; ++j) {
      const T v = store<T>(A(acc[r * ldacc + j]) * gelu_tanh_grad(load(aux[r * g.ldaux + j])));
      c[r * g.ldc + j] = v;
      sums[j] += double(load(v));
    }
  });
}

}  // namespace

void gemm(const Gemm& g, Stream) {
  if (g.m == 0 || g.n == 0) return;
  single_threaded_blas();
  dispatch_floating<Types>(g.dtype, "gemm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (g.epilogue != GemmEpilogue::None) {  // one matrix, C = A B, then the epilogue on C
      Gemm f = g;
      f.batch = 1; f.alpha = 1.0f; f.beta = 0.0f;
      if constexpr (std::is_same_v<T, double>) {
        fail("gemm: an epilogue needs f32, bf16 or f16, not f64");
      } else if constexpr (std::is_same_v<T, float>) {  // the epilogue in place
        parallel_gemm<float>(f);
        apply_epilogue<T>(g, static_cast<const float*>(g.c), g.ldc);
      } else {  // the product in f32, the epilogue before the narrowing
        std::vector<float> fa = widen(static_cast<const T*>(g.a), g.k == 0 ? 0 : span(g.trans_a, g.m, g.k, g.lda));
        std::vector<float> fb = widen(static_cast<const T*>(g.b), g.k == 0 ? 0 : span(g.trans_b, g.k, g.n, g.ldb));
        std::vector<float> fc(size_t(g.m * g.n), 0.0f);
        f.a = fa.data(); f.b = fb.data(); f.c = fc.data(); f.ldc = g.n;
        parallel_gemm<float>(f);
        apply_epilogue<T>(g, fc.data(), g.n);
      }
      return;
    }
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      parallel_gemm<T>(g);
    } else {  // widened to f32, one matrix at a time
      for (int64_t i = 0; i < g.batch; ++i) {
        const T* a = static_cast<const T*>(g.a) + i * g.stride_a;
        const T* b = static_cast<const T*>(g.b) + i * g.stride_b;
        T* c = static_cast<T*>(g.c) + i * g.stride_c;
        std::vector<float> fa = widen(a, g.k == 0 ? 0 : span(g.trans_a, g.m, g.k, g.lda));
        std::vector<float> fb = widen(b, g.k == 0 ? 0 : span(g.trans_b, g.k, g.n, g.ldb));
        std::vector<float> fc = widen(c, span(false, g.m, g.n, g.ldc));
        Gemm f = g;
        f.a = fa.data();
        f.b = fb.data();
        f.c = fc.data();
        f.batch = 1;
        parallel_gemm<float>(f);
        for (int64_t r = 0; r < g.m; ++r)
          for (int64_t col = 0; col < g.n; ++col) c[r * g.ldc + col] = T(fc[size_t(r * g.ldc + col)]);
      }
    }
  });
}

bool gemm_epilogue(const Gemm& g, Stream s) {
  gemm(g, s);
  return true;
}

}  // namespace emonext::kernels::cpu
