// Bilinear sampling with zeros padding, as torch.nn.functional.grid_sample,
// written once for both backends. A grid point (gx, gy) in [-1, 1] maps to the
// pixel coordinates
//   align_corners:  ix = (gx + 1) / 2 * (W - 1)      d ix / d gx = (W - 1) / 2
//   otherwise:      ix = ((gx + 1) * W - 1) / 2      d ix / d gx = W / 2
// and reads the four neighbours (x0, y0) .. (x0 + 1, y0 + 1) with weights
// nw = (1-fx)(1-fy), ne = fx(1-fy), sw = (1-fx)fy, se = fx fy, where
// fx = ix - floor(ix); a neighbour outside the image counts as zero.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/base/macros.h"

namespace emonext::kernels {

template <class A>
struct BilinearTap {
  int64_t x0, y0;  // the north-west neighbour
  A fx, fy;        // fractional position past it
  A dx_dgx, dy_dgy;
  EMONEXT_HD A weight(int k) const {  // k: 0 nw, 1 ne, 2 sw, 3 se
    return ((k & 1) ? fx : A(1) - fx) * ((k & 2) ? fy : A(1) - fy);
  }
  EMONEXT_HD int64_t x(int k) const { return x0 + (k & 1); }
  EMONEXT_HD int64_t y(int k) const { return y0 + ((k >> 1) & 1); }
};

EMONEXT_HD float m_floor(float v) { return floorf(v); }
EMONEXT_HD double m_floor(double v) { return floor(v); }

template <class A>
EMONEXT_HD BilinearTap<A> bilinear_tap(A gx, A gy, int64_t w, int64_t h, bool align_corners) {
  BilinearTap<A> t;
  A ix, iy;
  if (align_corners) {
    t.dx_dgx = A(w - 1) / A(2);
    t.dy_dgy = A(h - 1) / A(2);
    ix = (gx + A(1)) * t.dx_dgx;
    iy = (gy + A(1)) * t.dy_dgy;
  } else {
    t.dx_dgx = A(w) / A(2);
    t.dy_dgy = A(h) / A(2);
    ix = ((gx + A(1)) * A(w) - A(1)) / A(2);
    iy = ((gy + A(1)) * A(h) - A(1)) / A(2);
  }
  const A fx0 = m_floor(ix), fy0 = m_floor(iy);
  // Far outside the image (or NaN) every neighbour is zero; clamp before the integer conversion.
  const A limit = A(1 << 30);
  t.x0 = int64_t(!(fx0 > -limit) ? -limit : (fx0 > limit ? limit : fx0));
  t.y0 = int64_t(!(fy0 > -limit) ? -limit : (fy0 > limit ? limit : fy0));
  t.fx = ix - fx0;
  t.fy = iy - fy0;
  return t;
}

EMONEXT_HD bool inside(int64_t x, int64_t y, int64_t w, int64_t h) { return x >= 0 && x < w && y >= 0 && y < h; }

// d weight_k / d fx and d weight_k / d fy, for the grid gradient.
template <class A>
EMONEXT_HD A weight_dfx(const BilinearTap<A>& t, int k) { return ((k & 1) ? A(1) : A(-1)) * ((k & 2) ? t.fy : A(1) - t.fy); }
template <class A>
EMONEXT_HD A weight_dfy(const BilinearTap<A>& t, int k) { return ((k & 2) ? A(1) : A(-1)) * ((k & 1) ? t.fx : A(1) - t.fx); }

}  // namespace emonext::kernels
