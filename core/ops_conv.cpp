// The dense layers: the spatial transformer's localisation network, the stem and the
// downsampling layers. Convolution is patches and a matrix product (the one new
// differentiable primitive is unfold, im2col channels-last, whose backward is fold; the
// GEMM and the bias come from linear), or for the spatial transformer's, cuDNN on CUDA
// and on the CPU the banded kernels of kernels/cpu/conv.cpp; max
// pooling.
#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

namespace {

// The adjoint of unfold: [N * Ho * Wo, KH * KW * C] patches summed back into [N, H, W, C].
Tensor fold(const Tensor& cols, const kernels::Unfold& p) {
  const Tensor dcols = cols.contiguous();
  Tensor dx = Tensor::empty({p.n, p.h, p.w, p.c}, dcols.dtype(), dcols.device());
  if (dx.numel() > 0) EMONEXT_KERNEL(dcols.device(), fold, p, dx.data_ptr(), dcols.data_ptr());
  return dx;
}

// x [N, H, W, C] -> [N * Ho * Wo, KH * KW * C], rows ordered (n, oy, ox), columns (i, j, c).
Tensor unfold(const Tensor& x, const kernels::Unfold& p) {
  const Tensor xc = x.contiguous();
  Tensor cols = Tensor::empty({p.n * p.ho * p.wo, p.kh * p.kw * p.c}, x.dtype(), x.device());
  if (cols.numel() > 0) EMONEXT_KERNEL(x.device(), unfold, p, cols.data_ptr(), xc.data_ptr());
  return record(cols, "unfold", {x}, [p](const Tensor& g) { return std::vector<Tensor>{fold(g, p)}; });
}

// The unfold path's forward (without the bias) and gradients, for x [N, H, W, Cin] and
// the weight [Cout, KH, KW, Cin]: conv2d's path where neither cuDNN nor the banded CPU
// kernels apply, and the cuDNN path's fallback when a cuDNN call fails as it runs.
Tensor conv2d_by_unfold(const Tensor& x, const Tensor& w_khwc, const kernels::Unfold& p, const Tensor& bias) {
  const int64_t cout = w_khwc.size(0);
  return linear(unfold(x, p), w_khwc.reshape({cout, p.kh * p.kw * p.c}), bias).reshape({p.n, p.ho, p.wo, cout});
}
std::vector<Tensor> conv2d_grads_by_unfold(const Tensor& xc, const Tensor& wc, const Tensor& dy, const kernels::Unfold& p,
                                           bool want_dx) {
  const int64_t cout = wc.size(0);
  const Tensor dy2 = dy.reshape({p.n * p.ho * p.wo, cout});
  const Tensor dw = matmul(dy2.transpose(0, 1), unfold(xc, p)).reshape(wc.shape());
  return {want_dx ? fold(matmul(dy2, wc.reshape({cout, p.kh * p.kw * p.c})), p) : Tensor(), dw};
}

// The stem and the downsampling layers: windows that tile the input (kernel = stride, no
// padding), whose unfold is a reshuffle of the input, no larger: they stay a GEMM on
// every backend, as the models issue asks.
bool patchify(const kernels::Unfold& p) { return p.kh == p.stride && p.kw == p.stride && p.pad == 0; }

// x [N, H, W, Cin] and the weight [Cout, KH, KW, Cin] -> y [N, Ho, Wo, Cout] by the
// backend's own convolution (kernels.h's conv2d_forward: the CPU's banded kernels, which
// unfold bands of rows in cache rather than the batch's patches and save only x for the
// backward; cuDNN on CUDA), or an undefined tensor where the backend has none for these
// shapes and dtype. A backward the backend fails (a cuDNN call that fails as it runs)
// gets the unfold path's gradients.
Tensor conv2d_direct(const Tensor& x, const Tensor& w_khwc, const kernels::Unfold& p, int64_t cout) {
  const Tensor xc = x.contiguous(), wc = w_khwc.contiguous();
  Tensor y = Tensor::empty({p.n, p.ho, p.wo, cout}, x.dtype(), x.device());
  if (y.numel() == 0 || !EMONEXT_KERNEL_IF(x.device(), conv2d_forward, p, cout, y.data_ptr(), xc.data_ptr(), wc.data_ptr()))
    return Tensor();
  return record(y, "conv2d", {x, w_khwc}, [p, cout, xc, wc, want_dx = x.requires_grad()](const Tensor& g) {
    const Tensor dy = g.contiguous();
    Tensor dx = want_dx ? Tensor::empty(xc.shape(), xc.dtype(), xc.device()) : Tensor();
    Tensor dw = Tensor::empty(wc.shape(), wc.dtype(), wc.device());
    if (EMONEXT_KERNEL_IF(dy.device(), conv2d_backward, p, cout, want_dx ? dx.data_ptr() : nullptr, dw.data_ptr(), dy.data_ptr(),
                          xc.data_ptr(), wc.data_ptr()))
      return std::vector<Tensor>{dx, dw};
    return conv2d_grads_by_unfold(xc, wc, dy, p, want_dx);
  });
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding) {
  check_floating("conv2d", x);
  check_same("conv2d", x, weight);
  EMONEXT_CHECK(x.dim() == 4, "conv2d: input must be channels-last [N, H, W, C], got ", x.str());
  EMONEXT_CHECK(weight.dim() == 4 && weight.size(1) == x.size(3), "conv2d: weight ", shape_str(weight.shape()),
                " does not fit ", x.size(3), " input channels (expected [Cout, ", x.size(3), ", KH, KW])");
  EMONEXT_CHECK(stride >= 1 && padding >= 0, "conv2d: stride ", stride, " must be >= 1 and padding ", padding, " >= 0");
  kernels::Unfold p{x.dtype(), x.size(0), x.size(1), x.size(2), x.size(3), weight.size(2), weight.size(3), stride, padding, 0, 0};
  p.ho = (p.h + 2 * padding - p.kh) / stride + 1;
  p.wo = (p.w + 2 * padding - p.kw) / stride + 1;
  EMONEXT_CHECK(p.h + 2 * padding >= p.kh && p.w + 2 * padding >= p.kw, "conv2d: kernel ", p.kh, "x", p.kw,
                " is larger than the padded input ", p.h + 2 * padding, "x", p.w + 2 * padding);
  const int64_t cout = weight.size(0);
  if (bias.defined()) {
    check_same("conv2d", x, bias);
    EMONEXT_CHECK((bias.shape() == Shape{cout}), "conv2d: bias ", shape_str(bias.shape()), " (expected [", cout, "])");
  }
  // [Cout, Cin, KH, KW] -> [Cout, KH, KW, Cin]: cuDNN's channels-last filter, and (flattened)
  // the column order of the patches.
  const Tensor w_khwc = weight.permute({0, 2, 3, 1});
  const Tensor y = patchify(p) ? Tensor() : conv2d_direct(x, w_khwc, p, cout);  // without the bias
  if (y.defined()) return bias.defined() ? add(y, bias) : y;
  return conv2d_by_unfold(x, w_khwc, p, bias);
}

Tensor max_pool2d(const Tensor& x, int64_t k, int64_t stride) {
  check_floating("max_pool2d", x);
  EMONEXT_CHECK(x.dim() == 4, "max_pool2d: input must be channels-last [N, H, W, C], got ", x.str());
  if (stride == 0) stride = k;
  EMONEXT_CHECK(k >= 1 && stride >= 1, "max_pool2d: window ", k, " and stride ", stride, " must be positive");
  EMONEXT_CHECK(x.size(1) >= k && x.size(2) >= k, "max_pool2d: window ", k, " is larger than the input ",
                x.size(1), "x", x.size(2));
  const kernels::Pool p{x.dtype(), x.size(0), x.size(1), x.size(2), x.size(3), k, stride,
                        (x.size(1) - k) / stride + 1, (x.size(2) - k) / stride + 1};
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({p.n, p.ho, p.wo, p.c}, x.dtype(), x.device());
  const Tensor argmax = Tensor::empty({p.n, p.ho, p.wo, p.c}, DType::I64, x.device());
  if (y.numel() > 0) EMONEXT_KERNEL(x.device(), max_pool_forward, p, y.data_ptr(), argmax.data<int64_t>(), xc.data_ptr());
  return record(y, "max_pool2d", {x}, [p, argmax](const Tensor& g) {
    const Tensor dy = g.contiguous();
    Tensor dx = Tensor::empty({p.n, p.h, p.w, p.c}, dy.dtype(), dy.device());
    if (dx.numel() > 0) EMONEXT_KERNEL(dy.device(), max_pool_backward, p, dx.data_ptr(), dy.data_ptr(), argmax.data<int64_t>());
    return std::vector<Tensor>{dx};
  });
}

}  // namespace emonext
