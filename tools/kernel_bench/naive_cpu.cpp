// The CPU baselines: each kernel as the plain loop its formula describes.
#include <algorithm>
#include <cmath>
#include <vector>

#include "tools/kernel_bench/baselines.h"

namespace emonext::bench::naive_cpu {

void dwconv_forward(const kernels::DwConv& p, float* y, const float* x, const float* w, const float* b) {
  const int64_t pad = p.k / 2;
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t h = 0; h < p.h; ++h)
      for (int64_t wo = 0; wo < p.w; ++wo)
        for (int64_t c = 0; c < p.c; ++c) {
          float acc = b ? b[c] : 0.0f;
          for (int64_t i = 0; i < p.k; ++i)
            for (int64_t j = 0; j < p.k; ++j) {
              const int64_t hi = h + i - pad, wi = wo + j - pad;
              if (hi >= 0 && hi < p.h && wi >= 0 && wi < p.w)
                acc += x[((n * p.h + hi) * p.w + wi) * p.c + c] * w[(c * p.k + i) * p.k + j];
            }
          y[((n * p.h + h) * p.w + wo) * p.c + c] = acc;
        }
}

void dwconv_backward_input(const kernels::DwConv& p, float* dx, const float* dy, const float* w) {
  const int64_t pad = p.k / 2;
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t h = 0; h < p.h; ++h)
      for (int64_t wi = 0; wi < p.w; ++wi)
        for (int64_t c = 0; c < p.c; ++c) {
          float acc = 0;
          for (int64_t i = 0; i < p.k; ++i)
            for (int64_t j = 0; j < p.k; ++j) {
              const int64_t ho = h - i + pad, wo = wi - j + pad;
              if (ho >= 0 && ho < p.h && wo >= 0 && wo < p.w)
                acc += dy[((n * p.h + ho) * p.w + wo) * p.c + c] * w[(c * p.k + i) * p.k + j];
            }
          dx[((n * p.h + h) * p.w + wi) * p.c + c] = acc;
        }
}

void dwconv_backward_weight(const kernels::DwConv& p, float* dw, const float* dy, const float* x) {
  const int64_t pad = p.k / 2;
  for (int64_t i = 0; i < p.k; ++i)
    for (int64_t j = 0; j < p.k; ++j)
      for (int64_t c = 0; c < p.c; ++c) {
        double acc = 0;
        for (int64_t n = 0; n < p.n; ++n)
          for (int64_t h = 0; h < p.h; ++h)
            for (int64_t wo = 0; wo < p.w; ++wo) {
              const int64_t hi = h + i - pad, wi = wo + j - pad;
              if (hi >= 0 && hi < p.h && wi >= 0 && wi < p.w)
                acc += double(dy[((n * p.h + h) * p.w + wo) * p.c + c]) * x[((n * p.h + hi) * p.w + wi) * p.c + c];
            }
        dw[(c * p.k + i) * p.k + j] = float(acc);
      }
}

void layer_norm_forward(float* y, const float* x, const float* w, const float* b, int64_t rows, int64_t cols, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < cols; ++c) mean += x[r * cols + c];
    mean /= double(cols);
    for (int64_t c = 0; c < cols; ++c) var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
    const double rstd = 1.0 / std::sqrt(var / double(cols) + eps);
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = float((x[r * cols + c] - mean) * rstd * w[c] + b[c]);
  }
}

void layer_norm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t rows,
                         int64_t cols, double eps) {
  std::vector<double> aw(size_t(cols), 0.0), ab(size_t(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < cols; ++c) mean += x[r * cols + c];
    mean /= double(cols);
    for (int64_t c = 0; c < cols; ++c) var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
    const double rstd = 1.0 / std::sqrt(var / double(cols) + eps);
    double sg = 0, sgx = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = (x[r * cols + c] - mean) * rstd, g = double(dy[r * cols + c]) * w[c];
      sg += g;
      sgx += g * xhat;
      aw[size_t(c)] += dy[r * cols + c] * xhat;
      ab[size_t(c)] += dy[r * cols + c];
    }
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = (x[r * cols + c] - mean) * rstd, g = double(dy[r * cols + c]) * w[c];
      dx[r * cols + c] = float(rstd * (g - sg / double(cols) - xhat * sgx / double(cols)));
    }
  }
  for (int64_t c = 0; c < cols; ++c) {
    dw[c] = float(aw[size_t(c)]);
    db[c] = float(ab[size_t(c)]);
  }
}

void bias_gelu_forward(float* y, const float* x, const float* b, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float v = x[r * cols + c] + b[c];
      y[r * cols + c] = 0.5f * v * (1.0f + std::erf(v * 0.70710678f));
    }
}

void gelu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    dx[i] = dy[i] * (0.5f * (1.0f + std::erf(v * 0.70710678f)) + v * 0.39894228f * std::exp(-0.5f * v * v));
  }
}

void se_gate_forward(float* y, const float* x, const float* g, int64_t n, int64_t hw, int64_t c) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t s = 0; s < hw; ++s)
      for (int64_t k = 0; k < c; ++k) y[(b * hw + s) * c + k] = x[(b * hw + s) * c + k] * g[b * c + k];
}

void se_gate_backward(float* dx, float* dg, const float* dy, const float* x, const float* g, int64_t n, int64_t hw, int64_t c) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k) {
      double acc = 0;
      for (int64_t s = 0; s < hw; ++s) {
        const int64_t i = (b * hw + s) * c + k;
        dx[i] = dy[i] * g[b * c + k];
        acc += double(dy[i]) * x[i];
      }
      dg[b * c + k] = float(acc);
    }
}

void se_pool(float* out, const float* x, int64_t n, int64_t hw, int64_t c) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k) {
      double acc = 0;
      for (int64_t s = 0; s < hw; ++s) acc += x[(b * hw + s) * c + k];
      out[b * c + k] = float(acc / double(hw));
    }
}

namespace {
// The bilinear neighbours of a grid point, written out as PyTorch's CPU code does.
struct Corners {
  int64_t x[4], y[4];
  float w[4];
  float ix, iy, sx, sy;
};
Corners corners(const kernels::GridSample& p, float gx, float gy) {
  Corners k;
  k.sx = p.align_corners ? float(p.w - 1) / 2 : float(p.w) / 2;
  k.sy = p.align_corners ? float(p.h - 1) / 2 : float(p.h) / 2;
  k.ix = p.align_corners ? (gx + 1) * k.sx : ((gx + 1) * float(p.w) - 1) / 2;
  k.iy = p.align_corners ? (gy + 1) * k.sy : ((gy + 1) * float(p.h) - 1) / 2;
  const float x0 = std::floor(k.ix), y0 = std::floor(k.iy), fx = k.ix - x0, fy = k.iy - y0;
  for (int i = 0; i < 4; ++i) {
    k.x[i] = int64_t(x0) + (i & 1);
    k.y[i] = int64_t(y0) + (i >> 1);
    k.w[i] = ((i & 1) ? fx : 1 - fx) * ((i >> 1) ? fy : 1 - fy);
  }
  return k;
}
bool in_image(const kernels::GridSample& p, int64_t x, int64_t y) { return x >= 0 && x < p.w && y >= 0 && y < p.h; }
}  // namespace

void grid_sample_forward(const kernels::GridSample& p, float* out, const float* in, const float* grid) {
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t o = 0; o < p.ho * p.wo; ++o) {
      const Corners k = corners(p, grid[(n * p.ho * p.wo + o) * 2], grid[(n * p.ho * p.wo + o) * 2 + 1]);
      for (int64_t c = 0; c < p.c; ++c) {
        float acc = 0;
        for (int i = 0; i < 4; ++i)
          if (in_image(p, k.x[i], k.y[i])) acc += k.w[i] * in[((n * p.h + k.y[i]) * p.w + k.x[i]) * p.c + c];
        out[(n * p.ho * p.wo + o) * p.c + c] = acc;
      }
    }
}

void grid_sample_backward(const kernels::GridSample& p, float* din, float* dgrid, const float* dout, const float* in, const float* grid) {
  std::fill(din, din + p.n * p.h * p.w * p.c, 0.0f);
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t o = 0; o < p.ho * p.wo; ++o) {
      const int64_t at = n * p.ho * p.wo + o;
      const Corners k = corners(p, grid[at * 2], grid[at * 2 + 1]);
      const float fx = k.ix - std::floor(k.ix), fy = k.iy - std::floor(k.iy);
      const float dwx[4] = {-(1 - fy), 1 - fy, -fy, fy}, dwy[4] = {-(1 - fx), -fx, 1 - fx, fx};
      float gx = 0, gy = 0;
      for (int64_t c = 0; c < p.c; ++c) {
        const float d = dout[at * p.c + c];
        for (int i = 0; i < 4; ++i) {
          if (!in_image(p, k.x[i], k.y[i])) continue;
          const int64_t src = ((n * p.h + k.y[i]) * p.w + k.x[i]) * p.c + c;
          din[src] += k.w[i] * d;
          gx += dwx[i] * in[src] * d;
          gy += dwy[i] * in[src] * d;
        }
      }
      dgrid[at * 2] = gx * k.sx;
      dgrid[at * 2 + 1] = gy * k.sy;
    }
}

}  // namespace emonext::bench::naive_cpu
