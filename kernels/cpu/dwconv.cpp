// Depthwise KxK convolution, stride 1, padding K/2, channels-last (CPU), with the
// weight in PyTorch's layout w[c, t] (t = i*K + j):
//   y[n,h,w,c]  = b[c] + sum_{i,j} x[n, h+i-p, w+j-p, c] * w[c, i*K+j]       (p = K/2, zero outside)
//   dx[n,h,w,c] = sum_{i,j} dy[n, h-i+p, w-j+p, c] * w[c, i*K+j]
//   dw[c, i*K+j] = sum_{n,h,w} dy[n,h,w,c] * x[n, h+i-p, w+j-p, c];   db[c] = sum_{n,h,w} dy[n,h,w,c]
// The innermost loops run over channels, contiguous in x and y; the weight is first
// laid out tap-major ([K*K, C]) in a small buffer so that its channels are contiguous
// too. dw and db sum each output row in the accumulation type, the rows in double per
// image, then the images in order: the same bits for any thread count.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_types.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

namespace {

// Register blocking: a block of kLanes channels (one AVX-512 vector of f32) and a run of
// kRun outputs along W are summed in registers, tap after tap, so that each product costs
// one load of x (the weight's row is reused across the run) instead of the load and
// store of an accumulator in memory. Each output still sums its bias, then its taps in
// (i, j) order: the same bits as one output at a time.
constexpr int64_t kLanes = 16, kRun = 4;

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
    // Outputs wo0 .. wo0 + R - 1 of row h, channels c0 .. c0 + L - 1. Interior: all R
    // outputs, every tap of each inside the row (no column checked); FullLanes: all L
    // channels (constant trip counts).
    auto run = [&]<int64_t R, int64_t L, bool Interior, bool FullLanes>(int64_t n, int64_t h, int64_t wo0, int64_t c0, int64_t rn,
                                                                    int64_t ln) {
      const int64_t r_n = Interior ? R : rn, l_n = FullLanes ? L : ln;
      A acc[R][L];
      for (int64_t r = 0; r < r_n; ++r)
        for (int64_t c = 0; c < l_n; ++c) acc[r][c] = pb ? load(pb[c0 + c]) : A(0);
      for (int64_t i = 0; i < p.k; ++i) {
        const int64_t hi = h + i - pad;
        if (hi < 0 || hi >= p.h) continue;
        const T* xrow = px + (n * p.h + hi) * p.w * C + c0;
        for (int64_t j = 0; j < p.k; ++j) {
          const A* wr = pw + (i * p.k + j) * C + c0;
          for (int64_t r = 0; r < r_n; ++r) {
            const int64_t wi = wo0 + r + j - pad;
            if (!Interior && (wi < 0 || wi >= p.w)) continue;
            const T* xr = xrow + wi * C;
            for (int64_t c = 0; c < l_n; ++c) acc[r][c] += load(xr[c]) * wr[c];
          }
        }
      }
      for (int64_t r = 0; r < r_n; ++r) {
        T* yr = py + ((n * p.h + h) * p.w + wo0 + r) * C + c0;
        for (int64_t c = 0; c < l_n; ++c) yr[c] = store<T>(acc[r][c]);
      }
    };
#pragma omp parallel for collapse(2) schedule(static) if (p.n * p.h * p.w * C > (1 << 14))
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t h = 0; h < p.h; ++h)
        for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
          const int64_t l_n = std::min(kLanes, C - c0);
          for (int64_t wo0 = 0; wo0 < p.w; wo0 += kRun) {
            const int64_t r_n = std::min(kRun, p.w - wo0);
            const bool interior = wo0 - pad >= 0 && wo0 + kRun - 1 + pad < p.w;
            // Constant trip counts where the block allows them: the sums stay in registers.
            if (r_n == kRun && interior && l_n == kLanes)
              run.template operator()<kRun, kLanes, true, true>(n, h, wo0, c0, kRun, kLanes);
            else if (r_n == kRun && interior && l_n == kLanes / 2)  // a half block (atto's 40 channels: 16 + 16 + 8)
              run.template operator()<kRun, kLanes / 2, true, true>(n, h, wo0, c0, kRun, kLanes / 2);
            else if (l_n == kLanes)  // a row's edges, and rows narrower than a run's taps (W < 10)
              run.template operator()<kRun, kLanes, false, true>(n, h, wo0, c0, r_n, kLanes);
            else
              run.template operator()<kRun, kLanes, false, false>(n, h, wo0, c0, r_n, l_n);
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
    T *pdw = static_cast<T*>(dw), *pdb = static_cast<T*>(db);
    const int64_t pad = p.k / 2, C = p.c, taps = p.k * p.k;
    // Each weight's sum: over each output row, in the accumulation type (f32 for f32:
    // twice the SIMD width of double, no conversions in the inner loop), along W; the
    // rows of an image in double, top to bottom; then the images in double, in order: the
    // same bits for any thread count. Within a row, a block of kLanes channels and up to
    // kTapRun taps of one filter row (the same dy, x shifted by one column each) are
    // summed in registers.
    constexpr int64_t kTapRun = 8;
    // Row sums of dy[h] * x[hi] for taps j0 .. j0 + J - 1 of filter row i and channels
    // c0 .. c0 + L - 1, into out[j * kLanes + c]. Full: constant trip counts (the sums
    // stay in registers).
    auto tap_run = [&]<int64_t J, int64_t L, bool Full>(const T* gr, const T* xr, A* out, int64_t j0, int64_t c0, int64_t jn,
                                                     int64_t ln) {
      const int64_t j_n = Full ? J : jn, l_n = Full ? L : ln;
      A acc[J][L] = {};
      auto at = [&](int64_t wo, bool checked) {
        const T* g = gr + wo * C + c0;
        for (int64_t j = 0; j < j_n; ++j) {
          const int64_t wi = wo + j0 + j - pad;
          if (checked && (wi < 0 || wi >= p.w)) continue;
          const T* xv = xr + wi * C + c0;
          for (int64_t c = 0; c < l_n; ++c) acc[j][c] += load(g[c]) * load(xv[c]);
        }
      };
      // Columns inside_begin .. inside_end - 1: every tap of the run falls inside the row,
      // so none is checked.
      const int64_t inside_begin = std::clamp(pad - j0, int64_t(0), p.w);
      const int64_t inside_end = std::clamp(p.w + pad - j0 - (j_n - 1), inside_begin, p.w);
      for (int64_t wo = 0; wo < inside_begin; ++wo) at(wo, true);
      for (int64_t wo = inside_begin; wo < inside_end; ++wo) at(wo, false);
      for (int64_t wo = inside_end; wo < p.w; ++wo) at(wo, true);
      for (int64_t j = 0; j < j_n; ++j)
        for (int64_t c = 0; c < l_n; ++c) out[j * kLanes + c] = acc[j][c];
    };
    // Each image's sums (an image a unit of work, its [taps, C] weight sums then C bias
    // sums written, not added, to its own slice of `part`), then over the images in order,
    // a slice of the weights a thread.
    const int64_t per_image = (taps + 1) * C;
    std::vector<double> part(size_t(p.n * per_image));
#pragma omp parallel if (p.n * p.h * p.w * C > (1 << 14))
    {
      std::vector<A> row(size_t(kTapRun * kLanes));
#pragma omp for schedule(static)
      for (int64_t n = 0; n < p.n; ++n) {
        double* image = part.data() + n * per_image;
        std::fill(image, image + per_image, 0.0);
        for (int64_t h = 0; h < p.h; ++h) {
          const T* gr = pdy + (n * p.h + h) * p.w * C;
          if (pdb) {
            double* bias = image + taps * C;
            for (int64_t c0 = 0; c0 < C; c0 += kLanes) {  // the row's sum per channel along W, then in
              const int64_t l_n = std::min(kLanes, C - c0);
              A sum[kLanes] = {};
              for (int64_t wo = 0; wo < p.w; ++wo)
                for (int64_t c = 0; c < l_n; ++c) sum[c] += load(gr[wo * C + c0 + c]);
              for (int64_t c = 0; c < l_n; ++c) bias[c0 + c] += double(sum[c]);
            }
          }
          for (int64_t i = 0; i < p.k; ++i) {
            const int64_t hi = h + i - pad;
            if (hi < 0 || hi >= p.h) continue;  // a row of zeros: adding it changes no sum
            const T* xr = px + (n * p.h + hi) * p.w * C;
            for (int64_t c0 = 0; c0 < C; c0 += kLanes)
              for (int64_t j0 = 0; j0 < p.k; j0 += kTapRun) {
                const int64_t l_n = std::min(kLanes, C - c0), j_n = std::min(kTapRun, p.k - j0);
                if (l_n == kLanes && j_n == 7)  // ConvNeXt's 7 taps, a full block of channels
                  tap_run.template operator()<7, kLanes, true>(gr, xr, row.data(), j0, c0, 7, kLanes);
                else if (l_n == kLanes / 2 && j_n == 7)
                  tap_run.template operator()<7, kLanes / 2, true>(gr, xr, row.data(), j0, c0, 7, kLanes / 2);
                else
                  tap_run.template operator()<kTapRun, kLanes, false>(gr, xr, row.data(), j0, c0, j_n, l_n);
                for (int64_t j = 0; j < j_n; ++j)
                  for (int64_t c = 0; c < l_n; ++c)
                    image[(i * p.k + j0 + j) * C + c0 + c] += double(row[size_t(j * kLanes + c)]);
              }
          }
        }
      }
      // Over the images in order, then out in [C, taps] order.
      constexpr int64_t kSlice = 64;
#pragma omp for schedule(static)
      for (int64_t q0 = 0; q0 < per_image; q0 += kSlice) {
        const int64_t q_n = std::min(kSlice, per_image - q0);
        double total[kSlice] = {};
        for (int64_t n = 0; n < p.n; ++n)
          for (int64_t q = 0; q < q_n; ++q) total[q] += part[size_t(n * per_image + q0 + q)];
        for (int64_t q = 0; q < q_n; ++q) {
          const int64_t t = (q0 + q) / C, c = (q0 + q) % C;
          if (t < taps)
            pdw[c * taps + t] = store<T>(A(total[q]));
          else if (pdb)
            pdb[c] = store<T>(A(total[q]));
        }
      }
    }
  });
}

}  // namespace emonext::kernels::cpu
