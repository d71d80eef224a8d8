// Max pooling, channels-last (CPU); the formulas are in kernels/pool_math.h.
#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "kernels/pool_math.h"

namespace emonext::kernels::cpu {

void max_pool_forward(const Pool& p, void* out, int64_t* argmax, const void* x, Stream) {
  dispatch_floating<Types>(p.dtype, "max_pool", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* px = static_cast<const T*>(x);
    T* py = static_cast<T*>(out);
    auto load_at = [px](int64_t i) { return load(px[i]); };
#pragma omp parallel for collapse(2) schedule(static) if (p.n * p.ho * p.wo * p.c > (1 << 14))
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t oy = 0; oy < p.ho; ++oy)
        for (int64_t ox = 0; ox < p.wo; ++ox)
          for (int64_t c = 0; c < p.c; ++c) {
            const int64_t o = ((n * p.ho + oy) * p.wo + ox) * p.c + c;
            py[o] = store<T>(pool_window_max<A>(p, n, oy, ox, c, load_at, &argmax[o]));
          }
  });
}

void max_pool_backward(const Pool& p, void* dx, const void* dy, const int64_t* argmax, Stream) {
  dispatch_floating<Types>(p.dtype, "max_pool_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* pdy = static_cast<const T*>(dy);
    T* pdx = static_cast<T*>(dx);
    if (p.stride == p.k) {
      // Windows that do not overlap (the spatial transformer's 2x2 pools): each input
      // position is in one window at most, so each window's dy goes to its maximum and
      // every other position is 0. The same values as the gather below, a fraction of
      // its index arithmetic.
#pragma omp parallel for schedule(static) if (p.n * p.h * p.w * p.c > (1 << 14))
      for (int64_t n = 0; n < p.n; ++n) {
        T* dxn = pdx + n * p.h * p.w * p.c;
        for (int64_t i = 0; i < p.h * p.w * p.c; ++i) dxn[i] = store<T>(A(0));
        for (int64_t o = n * p.ho * p.wo * p.c; o < (n + 1) * p.ho * p.wo * p.c; ++o)
          dxn[argmax[o] * p.c + o % p.c] = pdy[o];
      }
      return;
    }
    auto load_dy = [pdy](int64_t i) { return load(pdy[i]); };
#pragma omp parallel for collapse(2) schedule(static) if (p.n * p.h * p.w * p.c > (1 << 14))
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t y = 0; y < p.h; ++y)
        for (int64_t x = 0; x < p.w; ++x)
          for (int64_t c = 0; c < p.c; ++c)
            pdx[((n * p.h + y) * p.w + x) * p.c + c] = store<T>(pool_input_grad<A>(p, n, y, x, c, load_dy, argmax));
  });
}

}  // namespace emonext::kernels::cpu
