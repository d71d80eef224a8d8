// Depthwise KxK convolution, stride 1, padding K/2, channels-last (CPU), with the
// weight in PyTorch's layout w[c, t] (t = i*K + j):
//   y[n,h,w,c]  = b[c] + sum_{i,j} x[n, h+i-p, w+j-p, c] * w[c, i*K+j]       (p = K/2, zero outside)
//   dx[n,h,w,c] = sum_{i,j} dy[n, h-i+p, w-j+p, c] * w[c, i*K+j]
//   dw[c, i*K+j] = sum_{n,h,w} dy[n,h,w,c] * x[n, h+i-p, w+j-p, c];   db[c] = sum_{n,h,w} dy[n,h,w,c]
// The innermost loops run over channels, contiguous in x and y; the weight is first
// laid out tap-major ([K*K, C]) in a small buffer so that its channels are contiguous
// too. dw and db sum each output row in the accumulation type, the rows in double per
// image, then the images in order: the same bits for any thread count.
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

namespace {

// y[n,h,w,c] = b[c] + sum_{i,j} x[n, h+i-p, w+j-p, c] * w[c, tap(i,j)], with tap(i,j) = i*K + j,
// or (K-1-i)*K + (K-1-j) when flip: the input gradient is this correlation of dy with the
// flipped kernel, since h - i + p = h + (K-1-i) - p when K - 1 = 2p.
void correlate(const DwConv& p, void* y, const void* x, const void* w, const void* b, bool flip) {
  dispatch_floating<Types>(p.dtype, "dwconv", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *px = static_cast<const T*>(x), *pb = static_cast<const T*>(b);
    T* py = static_cast<T*>(y);
    const int64_t pad = p.k / 2, C = p.c, taps = p.k * p.k;
    std::vector<A> wt(size_t(taps * C));  // wt[t, c] = w[c, t], or w[c, K*K-1-t] when flipped
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t) wt[size_t(t * C + c)] = load(static_cast<const T*>(w)[c * taps + (flip ? taps - 1 - t : t)]);
    const A* __restrict pw = wt.data();
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
              const A* wr = pw + (i * p.k + j) * C;
              for (int64_t c = 0; c < C; ++c) acc[size_t(c)] += load(xr[c]) * wr[c];
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

void dwconv_backward_weight(const DwConv& p, void* dw, void* db, const void* dy, const void* x, Stream) {
  dispatch_floating<Types>(p.dtype, "dwconv_backward_weight", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pdy = static_cast<const T*>(dy), *px = static_cast<const T*>(x);
    const int64_t pad = p.k / 2, C = p.c, taps = p.k * p.k;
    // Per image: [taps, C] sums of dy * x, then C sums of dy, in double. Each output row's
    // products are first summed in the accumulation type (f32 for f32: twice the SIMD
    // width of double, and no conversions in the inner loop), then added in.
    const int64_t per_image = (taps + 1) * C;
    std::vector<double> part(size_t(p.n * per_image), 0.0);
#pragma omp parallel if (p.n > 1 && p.h * p.w * C > (1 << 12))
    {
      std::vector<A> row(static_cast<size_t>(per_image));
#pragma omp for schedule(static)
      for (int64_t n = 0; n < p.n; ++n) {
        double* acc = part.data() + n * per_image;
        for (int64_t h = 0; h < p.h; ++h) {
          std::fill(row.begin(), row.end(), A(0));
          A* bias = row.data() + taps * C;
          for (int64_t wo = 0; wo < p.w; ++wo) {
            const T* gr = pdy + ((n * p.h + h) * p.w + wo) * C;
            if (db)
              for (int64_t c = 0; c < C; ++c) bias[c] += load(gr[c]);
            for (int64_t i = 0; i < p.k; ++i) {
              const int64_t hi = h + i - pad;
              if (hi < 0 || hi >= p.h) continue;
              for (int64_t j = 0; j < p.k; ++j) {
                const int64_t wi = wo + j - pad;
                if (wi < 0 || wi >= p.w) continue;
                const T* xr = px + ((n * p.h + hi) * p.w + wi) * C;
                A* a = row.data() + (i * p.k + j) * C;
                for (int64_t c = 0; c < C; ++c) a[c] += load(gr[c]) * load(xr[c]);
              }
            }
          }
          for (int64_t q = 0; q < per_image; ++q) acc[q] += double(row[size_t(q)]);
        }
      }
    }
    // Over the images in order (the same bits for any thread count), then out in [C, taps] order.
    std::vector<double> total(size_t(per_image), 0.0);
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t q = 0; q < per_image; ++q) total[size_t(q)] += part[size_t(n * per_image + q)];
    T *pdw = static_cast<T*>(dw), *pdb = static_cast<T*>(db);
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t t = 0; t < taps; ++t) pdw[c * taps + t] = store<T>(A(total[size_t(t * C + c)]));
      if (pdb) pdb[c] = store<T>(A(total[size_t(taps * C + c)]));
    }
  });
}

}  // namespace emonext::kernels::cpu
