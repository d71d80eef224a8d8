// Bilinear grid sampling with zeros padding (CPU); the formula is in
// kernels/grid_sample_math.h. Images are independent, so the input gradient's
// scatter runs one image per thread, in a fixed order: deterministic.
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/grid_sample_math.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

void grid_sample_forward(const GridSample& p, void* out, const void* in, const void* grid, Stream) {
  dispatch_floating<Types>(p.dtype, "grid_sample", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *x = static_cast<const T*>(in), *g = static_cast<const T*>(grid);
    T* y = static_cast<T*>(out);
#pragma omp parallel for collapse(2) schedule(static) if (p.n * p.ho * p.wo * p.c > (1 << 14))
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t o = 0; o < p.ho * p.wo; ++o) {
        const BilinearTap<A> t = bilinear_tap<A>(load(g[(n * p.ho * p.wo + o) * 2]), load(g[(n * p.ho * p.wo + o) * 2 + 1]), p.w, p.h, p.align_corners);
        for (int64_t c = 0; c < p.c; ++c) {
          A acc = 0;
          for (int k = 0; k < 4; ++k)
            if (inside(t.x(k), t.y(k), p.w, p.h)) acc += t.weight(k) * load(x[((n * p.h + t.y(k)) * p.w + t.x(k)) * p.c + c]);
          y[(n * p.ho * p.wo + o) * p.c + c] = store<T>(acc);
        }
      }
  });
}

void grid_sample_backward(const GridSample& p, void* dinput, void* dgrid, const void* dout, const void* in, const void* grid,
                          bool, Stream) {
  dispatch_floating<Types>(p.dtype, "grid_sample_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *x = static_cast<const T*>(in), *g = static_cast<const T*>(grid), *dy = static_cast<const T*>(dout);
    T *dx = static_cast<T*>(dinput), *dg = static_cast<T*>(dgrid);
#pragma omp parallel for schedule(static) if (p.n > 1 && p.ho * p.wo * p.c > (1 << 12))
    for (int64_t n = 0; n < p.n; ++n) {
      std::vector<A> acc(dx ? size_t(p.h * p.w * p.c) : 0, A(0));
      for (int64_t o = 0; o < p.ho * p.wo; ++o) {
        const int64_t at = n * p.ho * p.wo + o;
        const BilinearTap<A> t = bilinear_tap<A>(load(g[at * 2]), load(g[at * 2 + 1]), p.w, p.h, p.align_corners);
        A gfx = 0, gfy = 0;
        for (int64_t c = 0; c < p.c; ++c) {
          const A d = load(dy[at * p.c + c]);
          for (int k = 0; k < 4; ++k) {
            if (!inside(t.x(k), t.y(k), p.w, p.h)) continue;
            const int64_t src = (t.y(k) * p.w + t.x(k)) * p.c + c;
            if (dx) acc[size_t(src)] += t.weight(k) * d;
            const A v = load(x[n * p.h * p.w * p.c + src]);
            gfx += weight_dfx(t, k) * v * d;
            gfy += weight_dfy(t, k) * v * d;
          }
        }
        if (dg) {
          dg[at * 2] = store<T>(gfx * t.dx_dgx);
          dg[at * 2 + 1] = store<T>(gfy * t.dy_dgy);
        }
      }
      if (dx)
        for (int64_t i = 0; i < p.h * p.w * p.c; ++i) dx[n * p.h * p.w * p.c + i] = store<T>(acc[size_t(i)]);
    }
  });
}

}  // namespace emonext::kernels::cpu
