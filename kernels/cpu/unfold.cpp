// im2col for channels-last images (CPU), and its adjoint:
//   cols[n, oy, ox, i, j, c] = x[n, oy*s - pad + i, ox*s - pad + j, c]   (0 outside)
//   dx[n, y, x, c] = sum over (oy, i), (ox, j) with oy*s - pad + i = y, ox*s - pad + j = x of dcols[...]
// fold gathers: each dx element sums its own contributions in a fixed order. Both move
// whole window rows (kw * c consecutive values) where they can: unfold always, fold for
// the patchify convolutions, whose windows do not overlap.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/unfold.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

void unfold(const Unfold& p, void* cols, const void* x, Stream) {
  dispatch_floating<Types>(p.dtype, "unfold", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = static_cast<const T*>(x);
    T* pc = static_cast<T*>(cols);
    const int64_t row = p.wo * p.kh * p.kw * p.c;  // one output row's patches
#pragma omp parallel for collapse(2) schedule(static) if (p.n * p.ho * row > (1 << 15))
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t oy = 0; oy < p.ho; ++oy) unfold_rows(p, px, n, oy, oy + 1, pc + (n * p.ho + oy) * row);
  });
}

void fold(const Unfold& p, void* dx, const void* dcols, Stream) {
  dispatch_floating<Types>(p.dtype, "fold", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* pc = static_cast<const T*>(dcols);
    T* pd = static_cast<T*>(dx);
    if (p.stride == p.kh && p.stride == p.kw && p.pad == 0) {
      // Patchify (the stem, the downsampling layers): windows tile the image without
      // overlap, so every dx pixel has at most one window, and a window row is kw * c
      // consecutive values on both sides: copies, and zeros where no window reaches.
      const T zero = store<T>(A(0));
#pragma omp parallel for collapse(2) schedule(static) if (p.n * p.h * p.w * p.c > (1 << 15))
      for (int64_t n = 0; n < p.n; ++n)
        for (int64_t y = 0; y < p.h; ++y) {
          T* row = pd + (n * p.h + y) * p.w * p.c;
          const int64_t oy = y / p.kh, i = y % p.kh;
          if (oy >= p.ho) {
            std::fill(row, row + p.w * p.c, zero);
            continue;
          }
          for (int64_t ox = 0; ox < p.wo; ++ox)
            std::copy_n(pc + (((n * p.ho + oy) * p.wo + ox) * p.kh + i) * p.kw * p.c, p.kw * p.c, row + ox * p.kw * p.c);
          std::fill(row + p.wo * p.kw * p.c, row + p.w * p.c, zero);
        }
      return;
    }
#pragma omp parallel if (p.n * p.h * p.w * p.c > (1 << 15))
    {
      std::vector<A> acc(size_t(p.c));  // one pixel's channels, summed over the windows that cover it
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < p.n; ++n)
        for (int64_t y = 0; y < p.h; ++y)
          for (int64_t xx = 0; xx < p.w; ++xx) {
            std::fill(acc.begin(), acc.end(), A(0));
            for (int64_t i = 0; i < p.kh; ++i) {
              const int64_t ty = y + p.pad - i;  // = oy * stride
              if (ty < 0 || ty % p.stride != 0 || ty / p.stride >= p.ho) continue;
              for (int64_t j = 0; j < p.kw; ++j) {
                const int64_t tx = xx + p.pad - j;
                if (tx < 0 || tx % p.stride != 0 || tx / p.stride >= p.wo) continue;
                const T* src = pc + ((((n * p.ho + ty / p.stride) * p.wo + tx / p.stride) * p.kh + i) * p.kw + j) * p.c;
                for (int64_t c = 0; c < p.c; ++c) acc[size_t(c)] += load(src[c]);
              }
            }
            T* dst = pd + ((n * p.h + y) * p.w + xx) * p.c;
            for (int64_t c = 0; c < p.c; ++c) dst[c] = store<T>(acc[size_t(c)]);
          }
    }
  });
}

}  // namespace emonext::kernels::cpu
