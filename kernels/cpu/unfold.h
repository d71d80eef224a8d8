// im2col for a band of output rows (CPU): the window geometry and the copy loop that
// unfold (the whole batch) and the banded convolution (conv.cpp) share.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kernels/cpu/cpu_types.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

// The window rows of output rows [oy0, oy1) of image n, in the order of their patches
// (rows (oy, ox), columns (i, j, c)): f(first, pixel, j0, j1) for each, where `first` is
// the row's first value in the band's patches (a row is kw * c values) and its pixels
// j0 .. j1-1 lie in the image, from x's pixel `pixel` on (j0 = j1 = 0 for a row above or
// below the image). A window row reads kw consecutive pixels: one run of values.
template <class F>
void for_each_window_row(const Unfold& p, int64_t n, int64_t oy0, int64_t oy1, F f) {
  for (int64_t oy = oy0; oy < oy1; ++oy)
    for (int64_t ox = 0; ox < p.wo; ++ox) {
      const int64_t x0 = ox * p.stride - p.pad;
      const int64_t j0 = std::clamp<int64_t>(-x0, 0, p.kw), j1 = std::clamp<int64_t>(p.w - x0, j0, p.kw);
      for (int64_t i = 0; i < p.kh; ++i) {
        const int64_t y = oy * p.stride - p.pad + i, first = (((oy - oy0) * p.wo + ox) * p.kh + i) * p.kw * p.c;
        if (y < 0 || y >= p.h)
          f(first, int64_t(0), int64_t(0), int64_t(0));
        else
          f(first, (n * p.h + y) * p.w + x0 + j0, j0, j1);
      }
    }
}

// The patches of output rows [oy0, oy1) of image n of x [n, h, w, c] into cols, zeros
// where a window leaves the image.
template <class T>
void unfold_rows(const Unfold& p, const T* x, int64_t n, int64_t oy0, int64_t oy1, T* cols) {
  const T zero = store<T>(acc_t<T>(0));
  for_each_window_row(p, n, oy0, oy1, [&](int64_t first, int64_t pixel, int64_t j0, int64_t j1) {
    T* dst = cols + first;
    std::fill(dst, dst + j0 * p.c, zero);
    std::copy_n(x + pixel * p.c, (j1 - j0) * p.c, dst + j0 * p.c);
    std::fill(dst + j1 * p.c, dst + p.kw * p.c, zero);
  });
}

}  // namespace emonext::kernels::cpu
