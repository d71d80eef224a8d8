// The CPU backend's fixed-order sums, whose bits do not depend on the thread count.
//
// sum_partials is the second half of the deterministic column sums, as partials.cuh is
// on CUDA: a first loop writes per-chunk partial sums in double, and this adds them in
// chunk order, so the result does not depend on how the chunks were shared out over
// the threads.
//
//   out[o, j] = sum_{k < chunks} part[(o * chunks + k) * n + j],   o < outer, j < n
//
// lane_sum adds n terms in double in kLanes running sums (term i into lane i mod kLanes),
// then the lanes pairwise: one running sum is a chain of dependent adds the compiler may
// not reorder, kLanes of them vectorise, and the order is still fixed.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

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

// The column sums out[j] of a [rows, n] result that row(r, sums) writes, row r adding
// its n terms into sums (its chunk's double partials): chunks of rows_per_chunk rows
// shared over the threads, then sum_partials. bias_gelu's backward and the GEMM's GELU
// epilogue sum in kBiasRowsPerChunk chunks, so that the fused path has the unfused bits.
constexpr int64_t kBiasRowsPerChunk = 64;

template <class T, class Row>
void chunked_column_sums(T* out, int64_t rows, int64_t n, int64_t rows_per_chunk, Row row) {
  const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<double> part(size_t(chunks * n), 0.0);
#pragma omp parallel for schedule(static) if (rows * n > (1 << 15))
  for (int64_t ch = 0; ch < chunks; ++ch)
    for (int64_t r = ch * rows_per_chunk; r < std::min(rows, (ch + 1) * rows_per_chunk); ++r) row(r, part.data() + ch * n);
  sum_partials(out, part.data(), 1, chunks, n);
}

constexpr int kLanes = 8;

template <class Term>
inline double lane_sum(int64_t n, Term term) {
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) lane[k] += term(i + k);
  for (int k = 0; i < n; ++i, ++k) lane[k] += term(i);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace emonext::kernels::cpu
