// Dense convolution as patches and a matrix product: the one new differentiable
// primitive is unfold (im2col, channels-last), whose backward is fold; the GEMM
// and the bias come from matmul and add with their own gradients.
#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

namespace {

// x [N, H, W, C] -> [N * Ho * Wo, KH * KW * C], rows ordered (n, oy, ox), columns (i, j, c).
Tensor unfold(const Tensor& x, const kernels::Unfold& p) {
  const Tensor xc = x.contiguous();
  Tensor cols = Tensor::empty({p.n * p.ho * p.wo, p.kh * p.kw * p.c}, x.dtype(), x.device());
  if (cols.numel() > 0) EMONEXT_KERNEL(x.device(), unfold, p, cols.data_ptr(), xc.data_ptr());
  return record(cols, "unfold", {x}, [p](const Tensor& g) {
    const Tensor dcols = g.contiguous();
    Tensor dx = Tensor::empty({p.n, p.h, p.w, p.c}, dcols.dtype(), dcols.device());
    if (dx.numel() > 0) EMONEXT_KERNEL(dcols.device(), fold, p, dx.data_ptr(), dcols.data_ptr());
    return std::vector<Tensor>{dx};
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
  // [Cout, Cin, KH, KW] -> [Cout, KH * KW * Cin], the column order of the patches.
  const Tensor w2 = weight.permute({0, 2, 3, 1}).reshape({cout, p.kh * p.kw * p.c});
  return linear(unfold(x, p), w2, bias).reshape({p.n, p.ho, p.wo, cout});
}

}  // namespace emonext
