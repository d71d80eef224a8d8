// One CBLAS product on the calling thread, for the CPU kernels that split work over
// the OpenMP threads themselves (gemm.cpp, conv.cpp).
#pragma once
#include <cblas.h>

#include <cstdint>
#include <mutex>
#include <type_traits>

namespace emonext::kernels::cpu {

// OpenBLAS's switch, where the BLAS linked is OpenBLAS (a weak symbol: null otherwise).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

// BLAS runs single-threaded: OpenBLAS's own thread pool busy-waits between calls and
// fought the engine's OpenMP threads for the cores (on 2 cores it halved training
// speed, docs/PERF.md "CPU speed, change by change"). Called before the first product.
inline void single_threaded_blas() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (openblas_set_num_threads) openblas_set_num_threads(1);
  });
}

// Row-major C = alpha op(A) op(B) + beta C, with C [m, n] and op(A) [m, k]; T is float
// or double.
template <class T>
void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
               int64_t ldb, T beta, T* c, int64_t ldc) {
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

}  // namespace emonext::kernels::cpu
