// Sum, mean and max over the middle dimension of a contiguous [outer, r, inner]
// block (CPU). Sums accumulate in double (a mean is scaled there too, before the
// rounding to the tensor's dtype); max propagates NaN as torch.amax.
// Column sums (inner > 1: the bias gradients, BatchNorm's statistics) read the
// block row by row, in fixed chunks of rows whose partial sums are then added in
// chunk order: every read is sequential, and the bits do not depend on the
// number of threads. Row sums (inner = 1) go through lane_sum's fixed lanes.
// sum_squares (the gradient norm) works the same way on blocks of each tensor of a list.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/multi_tensor.h"
#include "kernels/cpu/partials.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

namespace {

constexpr int64_t kRowsPerChunk = 128;

template <class T>
void column_sum(T* y, const T* x, int64_t outer, int64_t r, int64_t inner, double scale) {
  const int64_t chunks = (r + kRowsPerChunk - 1) / kRowsPerChunk;
  std::vector<double> partial(size_t(outer * chunks * inner), 0.0);
#pragma omp parallel for collapse(2) schedule(static) if (outer * r * inner > (1 << 15))
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c = 0; c < chunks; ++c) {
      double* acc = partial.data() + (o * chunks + c) * inner;
      const int64_t end = std::min(r, (c + 1) * kRowsPerChunk);
      for (int64_t j = c * kRowsPerChunk; j < end; ++j) {
        const T* row = x + (o * r + j) * inner;
        for (int64_t i = 0; i < inner; ++i) acc[i] += double(load(row[i]));
      }
    }
  }
  sum_partials(y, partial.data(), outer, chunks, inner, scale);
}

}  // namespace

// Each tensor in blocks of 2^14 values, each block summed in four interleaved double
// accumulators (no long dependency chain), all the list's blocks in one parallel
// loop; then each tensor's blocks in order: the bits do not depend on the number of
// threads.
void sum_squares(void* out, const std::vector<TensorSpan>& in, DType dtype, Stream) {
  dispatch_floating<Types>(dtype, "sum_squares", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const std::vector<TensorChunk> blocks = tensor_chunks(in.size(), 1 << 14, [&](size_t i) { return in[i].n; });
    std::vector<double> part(blocks.size(), 0.0);
#pragma omp parallel for schedule(static) if (blocks.size() > 1)
    for (size_t b = 0; b < blocks.size(); ++b) {
      const T* x = static_cast<const T*>(in[blocks[b].tensor].data) + blocks[b].first;
      part[b] = lane_sum(blocks[b].last - blocks[b].first, [&](int64_t i) {
        const double v = double(load(x[i]));
        return v * v;
      });
    }
    std::vector<double> total(in.size(), 0.0);
    for (size_t b = 0; b < blocks.size(); ++b) total[blocks[b].tensor] += part[b];
    for (size_t i = 0; i < in.size(); ++i) static_cast<A*>(out)[i] = A(total[i]);
  });
}

void reduce(ReduceOp op, void* out, const void* in, DType dtype, int64_t outer, int64_t r, int64_t inner, Stream) {
  dispatch_floating<Types>(dtype, "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* x = static_cast<const T*>(in);
    T* y = static_cast<T*>(out);
    const double scale = op == ReduceOp::Mean ? 1.0 / double(r) : 1.0;  // a mean divides in double, before rounding
    if (op != ReduceOp::Max && inner > 1) {
      column_sum(y, x, outer, r, inner, scale);
      return;
    }
#pragma omp parallel for collapse(2) schedule(static) if (outer * r * inner > (1 << 15))
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        const T* p = x + o * r * inner + i;
        if (op != ReduceOp::Max) {  // a row (inner is 1 here: column sums went above)
          y[o * inner + i] = store<T>(A(lane_sum(r, [&](int64_t j) { return double(load(p[j])); }) * scale));
        } else {
          A m = -std::numeric_limits<A>::infinity();
          for (int64_t j = 0; j < r; ++j) {
            const A v = load(p[j * inner]);
            if (v > m || std::isnan(v)) m = v;
            if (std::isnan(m)) break;
          }
          y[o * inner + i] = store<T>(m);
        }
      }
    }
  });
}

}  // namespace emonext::kernels::cpu
