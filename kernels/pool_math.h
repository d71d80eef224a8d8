// Max pooling, written once for both backends: the window's maximum and where it
// is (as PyTorch: the first maximum in row-major order; a NaN is taken and kept),
// and the gradient as a gather over the windows that contain an input position.
#pragma once
#include <cstdint>

#include "core/base/macros.h"
#include "kernels/kernels.h"

namespace emonext::kernels {

// The maximum of window (oy, ox) of image n, channel c; *where receives y * w + x.
template <class A, class Load>
EMONEXT_HD A pool_window_max(const Pool& p, int64_t n, int64_t oy, int64_t ox, int64_t c, Load load_at, int64_t* where) {
  A best = load_at(((n * p.h + oy * p.stride) * p.w + ox * p.stride) * p.c + c);
  int64_t at = oy * p.stride * p.w + ox * p.stride;
  for (int64_t i = 0; i < p.k; ++i)
    for (int64_t j = 0; j < p.k; ++j) {
      const int64_t y = oy * p.stride + i, x = ox * p.stride + j;
      const A v = load_at(((n * p.h + y) * p.w + x) * p.c + c);
      if (v > best || (v != v && best == best)) {
        best = v;
        at = y * p.w + x;
      }
    }
  *where = at;
  return best;
}

// d input at (n, y, x, c): the sum of dy over the windows whose maximum sat there.
template <class A, class LoadDy>
EMONEXT_HD A pool_input_grad(const Pool& p, int64_t n, int64_t y, int64_t x, int64_t c, LoadDy load_dy, const int64_t* argmax) {
  A acc = 0;
  const int64_t oy_lo = y < p.k ? 0 : (y - p.k) / p.stride + 1, ox_lo = x < p.k ? 0 : (x - p.k) / p.stride + 1;
  for (int64_t oy = oy_lo; oy <= y / p.stride && oy < p.ho; ++oy)
    for (int64_t ox = ox_lo; ox <= x / p.stride && ox < p.wo; ++ox) {
      const int64_t o = ((n * p.ho + oy) * p.wo + ox) * p.c + c;
      if (argmax[o] == y * p.w + x) acc += load_dy(o);
    }
  return acc;
}

}  // namespace emonext::kernels
