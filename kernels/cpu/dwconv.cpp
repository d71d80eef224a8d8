// Depthwise KxK convolution, stride 1, padding K/2, channels-last (CPU):
//   y[n,h,w,c]  = b[c] + sum_{i,j} x[n, h+i-p, w+j-p, c] * wt[i,j,c]        (p = K/2, zero outside)
//   dx[n,h,w,c] = sum_{i,j} dy[n, h-i+p, w-j+p, c] * wt[i,j,c]
//   dw[i,j,c]   = sum_{n,h,w} dy[n,h,w,c] * x[n, h+i-p, w+j-p, c]
// The innermost loop runs over channels: contiguous in x, y and wt. dw sums in
// double per image, then over images in order: the same bits for any thread count.
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

namespace {

// y[n,h,w,c] = b[c] + sum_{i,j} x[n, h+i-p, w+j-p, c] * wt[tap(i,j), c], with tap(i,j) = (i,j),
// or (K-1-i, K-1-j) when flip: the input gradient is this correlation of dy with the
// flipped kernel, since h - i + p = h + (K-1-i) - p when K - 1 = 2p.
void correlate(const DwConv& p, void* y, const void* x, const void* w, const void* b, bool flip) {
  dispatch_floating<Types>(p.dtype, "dwconv", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *px = static_cast<const T*>(x), *pw = static_cast<const T*>(w), *pb = static_cast<const T*>(b);
    T* py = static_cast<T*>(y);
    const int64_t pad = p.k / 2, C = p.c;
#pragma omp parallel for collapse(2) schedule(static) if (p.n * p.h * p.w * C > (1 << 14))
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t h = 0; h < p.h; ++h) {
        std::vector<A> acc(static_cast<size_t>(C));
        for (int64_t wo = 0; wo < p.w; ++wo) {
          for (int64_t c = 0; c < C; ++c) acc[size_t(c)] = pb ? load(pb[c]) : A(0);
          for (int64_t i = 0; i < p.k; ++i) {
            const int64_t hi = h + i - pad;
            if (hi < 0 || hi >= p.h) continue;
            for (int64_t j = 0; j < p.k; ++j) {
              const int64_t wi = wo + j - pad;
              if (wi < 0 || wi >= p.w) continue;
              const T* xr = px + ((n * p.h + hi) * p.w + wi) * C;
              const T* wr = pw + (flip ? (p.k - 1 - i) * p.k + (p.k - 1 - j) : i * p.k + j) * C;
              for (int64_t c = 0; c < C; ++c) acc[size_t(c)] += load(xr[c]) * load(wr[c]);
            }
          }
          T* yr = py + ((n * p.h + h) * p.w + wo) * C;
          for (int64_t c = 0; c < C; ++c) yr[c] = store<T>(acc[size_t(c)]);
        }
      }
  });
}

}  // namespace

void dwconv_forward(const DwConv& p, void* y, const void* x, const void* w, const void* b, Stream) {
  correlate(p, y, x, w, b, false);
}

void dwconv_backward_input(const DwConv& p, void* dx, const void* dy, const void* w, Stream) {
  correlate(p, dx, dy, w, nullptr, true);
}

void dwconv_backward_weight(const DwConv& p, void* dw, const void* dy, const void* x, Stream) {
  dispatch_floating<Types>(p.dtype, "dwconv_backward_weight", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pdy = static_cast<const T*>(dy), *px = static_cast<const T*>(x);
    const int64_t pad = p.k / 2, C = p.c, taps = p.k * p.k;
    std::vector<double> part(size_t(p.n * taps * C), 0.0);  // per image
#pragma omp parallel for schedule(static) if (p.n > 1 && p.h * p.w * C > (1 << 12))
    for (int64_t n = 0; n < p.n; ++n) {
      double* acc = part.data() + n * taps * C;
      for (int64_t h = 0; h < p.h; ++h)
        for (int64_t wo = 0; wo < p.w; ++wo) {
          const T* gr = pdy + ((n * p.h + h) * p.w + wo) * C;
          for (int64_t i = 0; i < p.k; ++i) {
            const int64_t hi = h + i - pad;
            if (hi < 0 || hi >= p.h) continue;
            for (int64_t j = 0; j < p.k; ++j) {
              const int64_t wi = wo + j - pad;
              if (wi < 0 || wi >= p.w) continue;
              const T* xr = px + ((n * p.h + hi) * p.w + wi) * C;
              double* a = acc + (i * p.k + j) * C;
              for (int64_t c = 0; c < C; ++c) a[c] += double(load(gr[c])) * double(load(xr[c]));
            }
          }
        }
    }
    T* pdw = static_cast<T*>(dw);
    for (int64_t t = 0; t < taps * C; ++t) {
      double s = 0;
      for (int64_t n = 0; n < p.n; ++n) s += part[size_t(n * taps * C + t)];
      pdw[t] = store<T>(A(s));
    }
  });
}

}  // namespace emonext::kernels::cpu
