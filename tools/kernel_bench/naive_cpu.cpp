// The CPU baselines: each kernel as the plain loop its formula describes.
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
                acc += x[((n * p.h + hi) * p.w + wi) * p.c + c] * w[(i * p.k + j) * p.c + c];
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
                acc += dy[((n * p.h + ho) * p.w + wo) * p.c + c] * w[(i * p.k + j) * p.c + c];
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
        dw[(i * p.k + j) * p.c + c] = float(acc);
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

}  // namespace emonext::bench::naive_cpu
