// The dense layers: the spatial transformer's localisation network, the stem and the
// downsampling layers. Convolution is patches and a matrix product (the one new
// differentiable primitive is unfold, im2col channels-last, whose backward is fold; the
// GEMM and the bias come from linear), or for the spatial transformer's, cuDNN on CUDA
// and on the CPU the banded kernels of kernels/cpu/conv.cpp; max
// pooling; batch normalisation (training: one kernel each way; evaluation: element-wise ops).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"
#include "kernels/cuda/cudnn_conv.h"

namespace emonext {

namespace {

std::atomic<bool>& cudnn_switch() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("EMONEXT_CUDNN");
    return !(v && std::strcmp(v, "0") == 0);
  }()};
  return on;
}

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
// padding), whose unfold is a reshuffle of the input, no larger: they stay a GEMM.
bool patchify(const kernels::Unfold& p) { return p.kh == p.stride && p.kw == p.stride && p.pad == 0; }

// The CPU's convolution for overlapping windows (the spatial transformer's), f32 and f64:
// kernels/cpu/conv.cpp unfolds bands of rows in cache rather than the batch's patches
// (for the 7x7 one at 48 x 48, 49 times the input), and saves only x for the backward.
bool uses_banded_cpu(const Tensor& x, const kernels::Unfold& p) {
  return x.device().is_cpu() && (x.dtype() == DType::F32 || x.dtype() == DType::F64) && !patchify(p);
}

// x [N, H, W, Cin] and the weight [Cout, KH, KW, Cin] -> y [N, Ho, Wo, Cout].
Tensor conv2d_banded_cpu(const Tensor& x, const Tensor& w_khwc, const kernels::Unfold& p, int64_t cout) {
  const Tensor xc = x.contiguous(), wc = w_khwc.contiguous();
  Tensor y = Tensor::empty({p.n, p.ho, p.wo, cout}, x.dtype(), x.device());
  if (y.numel() > 0) kernels::cpu::conv2d_forward(p, cout, y.data_ptr(), xc.data_ptr(), wc.data_ptr());
  return record(y, "conv2d", {x, w_khwc}, [p, cout, xc, wc, want_dx = x.requires_grad()](const Tensor& g) {
    const Tensor dy = g.contiguous();
    if (dy.numel() == 0)  // no outputs (cout or the batch is 0): nothing flows back
      return std::vector<Tensor>{want_dx ? Tensor::zeros(xc.shape(), xc.dtype(), xc.device()) : Tensor(),
                                 Tensor::zeros(wc.shape(), wc.dtype(), wc.device())};
    Tensor dx, dw = Tensor::empty(wc.shape(), wc.dtype(), wc.device());
    if (want_dx) {
      dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
      kernels::cpu::conv2d_backward_input(p, cout, dx.data_ptr(), dy.data_ptr(), wc.data_ptr());
    }
    kernels::cpu::conv2d_backward_weight(p, cout, dw.data_ptr(), dy.data_ptr(), xc.data_ptr());
    return std::vector<Tensor>{dx, dw};
  });
}

#if EMONEXT_WITH_CUDA
// x [N, H, W, Cin] and the weight as cuDNN reads it, [Cout, KH, KW, Cin/groups] -> y [N, Ho, Wo, Cout];
// undefined when cuDNN's forward call fails as it runs (the caller then takes the unfold
// path). A backward call that fails has its gradients computed by the unfold path.
Tensor conv2d_cudnn(const Tensor& x, const Tensor& w_khwc, const kernels::cuda::CudnnConv& p, const kernels::Unfold& u) {
  namespace kc = kernels::cuda;
  const Tensor xc = x.contiguous(), wc = w_khwc.contiguous();
  Tensor y = Tensor::empty({p.n, p.ho(), p.wo(), p.cout}, x.dtype(), x.device());
  const int dev = x.device().index;
  kc::set_device(dev);
  if (!kc::cudnn_conv_forward(p, y.data_ptr(), xc.data_ptr(), wc.data_ptr(), nullptr, kc::stream(dev))) return Tensor();
  return record(y, "conv2d", {x, w_khwc}, [p, u, xc, wc, dev, want_dx = x.requires_grad()](const Tensor& g) {
    const Tensor dy = g.contiguous();
    kc::set_device(dev);
    Tensor dx, dw = Tensor::empty(wc.shape(), wc.dtype(), wc.device());
    if (want_dx) {
      dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
      if (!kc::cudnn_conv_backward_data(p, dx.data_ptr(), dy.data_ptr(), wc.data_ptr(), kc::stream(dev)))
        return conv2d_grads_by_unfold(xc, wc, dy, u, want_dx);
    }
    if (!kc::cudnn_conv_backward_filter(p, dw.data_ptr(), dy.data_ptr(), xc.data_ptr(), kc::stream(dev)))
      return std::vector<Tensor>{dx, conv2d_grads_by_unfold(xc, wc, dy, u, false)[1]};
    return std::vector<Tensor>{dx, dw};
  });
}

// cuDNN for the spatial transformer's convolutions; the patchify ones (the stem and the
// downsampling layers: kernel = stride, no padding) stay a GEMM on every backend, their
// unfold being a pure reshuffle of the input.
bool uses_cudnn(const Tensor& x, const kernels::Unfold& u, const kernels::cuda::CudnnConv& p) {
  if (!x.device().is_cuda() || patchify(u) || !cudnn_switch().load() || p.n * p.h * p.w * p.c == 0 || p.cout == 0)
    return false;
  kernels::cuda::set_device(x.device().index);
  return kernels::cuda::cudnn_conv_supported(p);
}
#endif

}  // namespace

void set_cudnn_convolutions(bool on) { cudnn_switch().store(on); }
bool cudnn_convolutions() { return cudnn_switch().load(); }

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
  Tensor y;  // without the bias: cuDNN or the banded kernels, where they apply
#if EMONEXT_WITH_CUDA
  const kernels::cuda::CudnnConv cp{x.dtype(), p.n, p.h, p.w, p.c, cout, p.kh, p.kw, stride, padding, 1, true};
  if (uses_cudnn(x, p, cp)) y = conv2d_cudnn(x, w_khwc, cp, p);
#endif
  if (!y.defined() && uses_banded_cpu(x, p)) y = conv2d_banded_cpu(x, w_khwc, p, cout);
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

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean, Tensor& running_var,
                  bool training, double momentum, double eps) {
  check_floating("batch_norm", x);
  EMONEXT_CHECK(x.dim() == 4, "batch_norm: input must be channels-last [N, H, W, C], got ", x.str());
  const int64_t c = x.size(3);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&weight, &bias, &running_mean, &running_var}) {
    check_same("batch_norm", x, *t);
    EMONEXT_CHECK((t->shape() == Shape{c}), "batch_norm: parameter or buffer ", shape_str(t->shape()), " does not fit ", c,
                  " channels");
  }
  if (training) {
    // One op each way (kernels/*/batchnorm): the statistics, the normalisation and the
    // running statistics' update forward, the parameter sums and dx backward.
    const int64_t rows = x.numel() / c;
    EMONEXT_CHECK(rows > 1, "batch_norm: training needs more than one value per channel, got input ", shape_str(x.shape()));
    EMONEXT_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(),
                  "batch_norm: the running statistics must be contiguous (they are updated in place)");
    const DType stat = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
    const Tensor xc = x.contiguous(), wc = weight.contiguous(), bc = bias.contiguous();
    const Tensor mean_c = Tensor::empty({c}, stat, x.device()), rstd_c = Tensor::empty({c}, stat, x.device());
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    EMONEXT_KERNEL(x.device(), batch_norm_forward, y.data_ptr(), mean_c.data_ptr(), rstd_c.data_ptr(), running_mean.data_ptr(),
                   running_var.data_ptr(), xc.data_ptr(), wc.data_ptr(), bc.data_ptr(), x.dtype(), rows, c, eps, momentum);
    return record(y, "batch_norm", {x, weight, bias}, [=](const Tensor& g) {
      const Tensor dy = g.contiguous();
      Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
      Tensor dw = Tensor::empty({c}, xc.dtype(), xc.device()), db = Tensor::empty({c}, xc.dtype(), xc.device());
      EMONEXT_KERNEL(dy.device(), batch_norm_backward, dx.data_ptr(), dw.data_ptr(), db.data_ptr(), dy.data_ptr(), xc.data_ptr(),
                     mean_c.data_ptr(), rstd_c.data_ptr(), wc.data_ptr(), xc.dtype(), rows, c);
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  // Evaluation: the running statistics, composed of element-wise ops.
  const Tensor& mean_c = running_mean;
  const Tensor& var_c = running_var;
  return add(mul(div(sub(x, mean_c), sqrt(add(var_c, eps))), weight), bias);
}

}  // namespace emonext
