// The kernels that make ConvNeXt and EmoNeXt what they are, as differentiable
// ops: LayerNorm, GELU (and bias + GELU), depthwise convolution, SE pooling and
// gating, and the spatial transformer's affine grid and grid sampling.
#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

using Grads = std::vector<Tensor>;

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_floating("layer_norm", x);
  check_same("layer_norm", x, weight);
  check_same("layer_norm", x, bias);
  EMONEXT_CHECK(x.dim() >= 1, "layer_norm: input must have at least one dim");
  const int64_t cols = x.size(-1);
  EMONEXT_CHECK((weight.shape() == Shape{cols}) && (bias.shape() == Shape{cols}), "layer_norm: input last dim ", cols,
                " but weight ", shape_str(weight.shape()), " and bias ", shape_str(bias.shape()), " (expected [", cols, "])");
  EMONEXT_CHECK(eps > 0, "layer_norm: eps must be positive, got ", eps);
  const Tensor xc = x.contiguous(), w = weight.contiguous(), b = bias.contiguous();
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  const DType stat = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, stat, x.device()), rstd = Tensor::empty({rows}, stat, x.device());
  if (rows > 0)
    EMONEXT_KERNEL(x.device(), layer_norm_forward, y.data_ptr(), mean.data_ptr(), rstd.data_ptr(), xc.data_ptr(), w.data_ptr(),
                   b.data_ptr(), x.dtype(), rows, cols, eps);
  return record(y, "layer_norm", {x, weight, bias}, [=](const Tensor& g) {
    const Tensor dy = g.contiguous();
    Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
    Tensor dw = Tensor::empty({cols}, xc.dtype(), xc.device()), db = Tensor::empty({cols}, xc.dtype(), xc.device());
    if (rows > 0)
      EMONEXT_KERNEL(xc.device(), layer_norm_backward, dx.data_ptr(), dw.data_ptr(), db.data_ptr(), dy.data_ptr(),
                     xc.data_ptr(), mean.data_ptr(), rstd.data_ptr(), w.data_ptr(), xc.dtype(), rows, cols);
    else {
      dw.zero_();
      db.zero_();
    }
    return Grads{dx, dw, db};
  });
}

namespace {
kernels::BinaryOp gelu_backward_op(GeluApprox a) {
  return a == GeluApprox::Tanh ? kernels::BinaryOp::GeluTanhBackward : kernels::BinaryOp::GeluErfBackward;
}

// g * gelu'(t), one element-wise pass.
Tensor gelu_backward(const Tensor& g, const Tensor& t, GeluApprox approx) {
  Tensor dx = Tensor::empty(g.shape(), g.dtype(), g.device());
  EMONEXT_KERNEL(dx.device(), binary, gelu_backward_op(approx), view_of(dx), view_of(g), view_as(t, g.shape()));
  return dx;
}
}  // namespace

Tensor gelu(const Tensor& x, GeluApprox approx) {
  check_floating("gelu", x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  const auto op = approx == GeluApprox::Tanh ? kernels::UnaryOp::GeluTanh : kernels::UnaryOp::GeluErf;
  EMONEXT_KERNEL(y.device(), unary, op, view_of(y), view_of(x), 0.0);
  return record(y, "gelu", {x}, [=](const Tensor& g) { return Grads{gelu_backward(g, x, approx)}; });
}

Tensor bias_gelu(const Tensor& x, const Tensor& bias, GeluApprox approx) {
  check_floating("bias_gelu", x);
  check_same("bias_gelu", x, bias);
  EMONEXT_CHECK(x.dim() >= 1 && (bias.shape() == Shape{x.size(-1)}), "bias_gelu: bias ", shape_str(bias.shape()),
                " does not match the last dim of ", shape_str(x.shape()));
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  const auto op = approx == GeluApprox::Tanh ? kernels::BinaryOp::AddGeluTanh : kernels::BinaryOp::AddGeluErf;
  EMONEXT_KERNEL(y.device(), binary, op, view_of(y), view_of(x), view_as(bias, x.shape()));
  return record(y, "bias_gelu", {x, bias}, [=](const Tensor& g) {
    // One pass: dx and the bias's gradient (dx's column sums) together.
    const Tensor dy = g.contiguous(), xc = x.contiguous(), bc = bias.contiguous();
    Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device()), db = Tensor::empty(bc.shape(), bc.dtype(), bc.device());
    if (dy.numel() > 0)
      EMONEXT_KERNEL(dy.device(), bias_gelu_backward, xc.dtype(), approx == GeluApprox::Tanh, dx.data_ptr(), db.data_ptr(),
                     dy.data_ptr(), xc.data_ptr(), bc.data_ptr(), xc.numel() / bc.numel(), bc.numel());
    else
      db.zero_();
    return Grads{dx, db};
  });
}

Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_floating("depthwise_conv2d", x);
  check_same("depthwise_conv2d", x, weight);
  EMONEXT_CHECK(x.dim() == 4, "depthwise_conv2d: input must be channels-last [N, H, W, C], got ", x.str());
  const int64_t C = x.size(3);
  EMONEXT_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 && weight.size(2) == weight.size(3),
                "depthwise_conv2d: weight ", shape_str(weight.shape()), " does not fit ", C, " channels (expected [", C,
                ", 1, K, K])");
  const int64_t K = weight.size(2);
  EMONEXT_CHECK(K % 2 == 1, "depthwise_conv2d: kernel size ", K, " must be odd (padding K/2 keeps the size)");
  if (bias.defined()) {
    check_same("depthwise_conv2d", x, bias);
    EMONEXT_CHECK((bias.shape() == Shape{C}), "depthwise_conv2d: bias ", shape_str(bias.shape()), " (expected [", C, "])");
  }
  // The kernels read the weight in PyTorch's layout, [C, 1, K, K] as [C, K*K]: no copy.
  const Tensor wc = weight.contiguous();
  const Tensor xc = x.contiguous(), bc = bias.defined() ? bias.contiguous() : Tensor();
  const kernels::DwConv p{x.dtype(), x.size(0), x.size(1), x.size(2), C, K};
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y.numel() > 0)
    EMONEXT_KERNEL(x.device(), dwconv_forward, p, y.data_ptr(), xc.data_ptr(), wc.data_ptr(), bc.defined() ? bc.data_ptr() : nullptr);
  std::vector<Tensor> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  return record(y, "depthwise_conv2d", inputs, [=, has_bias = bias.defined()](const Tensor& g) {
    const Tensor dy = g.contiguous();
    Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
    Tensor dw = Tensor::empty(wc.shape(), wc.dtype(), wc.device());
    Tensor db = has_bias ? Tensor::empty({C}, wc.dtype(), wc.device()) : Tensor();
    if (dy.numel() > 0) {
      EMONEXT_KERNEL(dy.device(), dwconv_backward_input, p, dx.data_ptr(), dy.data_ptr(), wc.data_ptr());
      EMONEXT_KERNEL(dy.device(), dwconv_backward_weight, p, dw.data_ptr(), has_bias ? db.data_ptr() : nullptr, dy.data_ptr(),
                     xc.data_ptr());
    } else {
      for (Tensor* t : {&dx, &dw, &db})
        if (t->defined()) t->zero_();
    }
    Grads grads{dx, dw};
    if (has_bias) grads.push_back(db);
    return grads;
  });
}

Tensor layer_scale_residual(const Tensor& x, const Tensor& h, const Tensor& bias, const Tensor& gamma, const Tensor& drop_u,
                            double keep) {
  const char* op = "layer_scale_residual";
  check_floating(op, x);
  for (const Tensor* t : {&h, &bias, &gamma}) check_same(op, x, *t);
  EMONEXT_CHECK(x.dim() == 4 && h.shape() == x.shape(), op, ": x ", shape_str(x.shape()), " and h ", shape_str(h.shape()),
                " must be one [N, H, W, C] shape");
  const int64_t n = x.size(0), hw = x.size(1) * x.size(2), c = x.size(3);
  for (const Tensor* t : {&bias, &gamma})
    EMONEXT_CHECK((t->shape() == Shape{c}), op, ": bias and gamma must be [", c, "], got ", t->str());
  const bool drops = drop_u.defined();
  if (drops) {
    EMONEXT_CHECK(drop_u.dtype() == DType::F32 && drop_u.device() == x.device() && (drop_u.shape() == Shape{n}), op,
                  ": drop_u must be f32 [", n, "] on ", x.device().str(), ", got ", drop_u.str());
    EMONEXT_CHECK(keep > 0 && keep <= 1, op, ": keep must be in (0, 1], got ", keep);
  }
  const kernels::LayerScaleResidual p{x.dtype(), n, hw, c, drops ? keep : 1.0};
  const Tensor xc = x.contiguous(), hc = h.contiguous(), bc = bias.contiguous(), gc = gamma.contiguous();
  const Tensor uc = drops ? drop_u.contiguous() : Tensor();
  const float* u = drops ? static_cast<const float*>(uc.data_ptr()) : nullptr;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y.numel() > 0) EMONEXT_KERNEL(x.device(), layer_scale_residual_forward, p, y.data_ptr(), xc.data_ptr(), hc.data_ptr(),
                                    bc.data_ptr(), gc.data_ptr(), u);
  return record(y, op, {x, h, bias, gamma}, [=](const Tensor& g) {
    const Tensor dy = g.contiguous();
    Tensor dh = Tensor::empty(hc.shape(), hc.dtype(), hc.device()), db = Tensor::empty({c}, bc.dtype(), bc.device()),
           dgamma = Tensor::empty({c}, gc.dtype(), gc.device());
    // The draws' pointer is taken from uc here, not captured from the forward: naming uc
    // is what makes the closure keep the draws alive (the caller's tensor is long gone).
    const float* uu = uc.defined() ? static_cast<const float*>(uc.data_ptr()) : nullptr;
    if (dy.numel() > 0) {
      EMONEXT_KERNEL(dy.device(), layer_scale_residual_backward, p, dh.data_ptr(), db.data_ptr(), dgamma.data_ptr(), dy.data_ptr(),
                     hc.data_ptr(), bc.data_ptr(), gc.data_ptr(), uu);
    } else {
      db.zero_();
      dgamma.zero_();
    }
    return Grads{g, dh, db, dgamma};  // the residual passes g on as it is
  });
}

Tensor global_avg_pool(const Tensor& x) {
  EMONEXT_CHECK(x.dim() == 4, "global_avg_pool: input must be channels-last [N, H, W, C], got ", x.str());
  return mean(x, {1, 2});
}

Tensor se_gate(const Tensor& x, const Tensor& gate) {
  check_floating("se_gate", x);
  check_same("se_gate", x, gate);
  EMONEXT_CHECK(x.dim() == 4 && (gate.shape() == Shape{x.size(0), x.size(3)}), "se_gate: gate ", shape_str(gate.shape()),
                " does not fit input ", shape_str(x.shape()), " (expected [N, C] for [N, H, W, C])");
  const int64_t n = x.size(0), hw = x.size(1) * x.size(2), c = x.size(3);
  const Shape g4{n, 1, 1, c};
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  EMONEXT_KERNEL(y.device(), binary, kernels::BinaryOp::Mul, view_of(y), view_of(x), view_as(gate.reshape(g4), x.shape()));
  const Tensor xc = x.contiguous(), gc = gate.contiguous();
  return record(y, "se_gate", {x, gate}, [=](const Tensor& g) {
    const Tensor dy = g.contiguous();
    Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device()), dg = Tensor::empty(gc.shape(), gc.dtype(), gc.device());
    if (dy.numel() > 0)
      EMONEXT_KERNEL(dy.device(), se_gate_backward, dx.data_ptr(), dg.data_ptr(), dy.data_ptr(), xc.data_ptr(), gc.data_ptr(),
                     xc.dtype(), n, hw, c);
    else
      dg.zero_();
    return Grads{dx, dg};
  });
}

namespace {
// PyTorch's base-grid coordinates: linspace(-1, 1, n), scaled by (n - 1) / n without align_corners; 0 for n = 1.
std::vector<double> grid_coordinates(int64_t n, bool align_corners) {
  std::vector<double> v(static_cast<size_t>(n), 0.0);
  if (n <= 1) return v;
  for (int64_t i = 0; i < n; ++i) {
    const double x = -1.0 + 2.0 * double(i) / double(n - 1);
    v[size_t(i)] = align_corners ? x : x * double(n - 1) / double(n);
  }
  return v;
}
}  // namespace

Tensor affine_grid(const Tensor& theta, int64_t h, int64_t w, bool align_corners) {
  check_floating("affine_grid", theta);
  EMONEXT_CHECK(theta.dim() == 3 && theta.size(1) == 2 && theta.size(2) == 3, "affine_grid: theta must be [N, 2, 3], got ",
                theta.str());
  EMONEXT_CHECK(h > 0 && w > 0, "affine_grid: output size ", h, "x", w, " must be positive");
  const std::vector<double> xs = grid_coordinates(w, align_corners), ys = grid_coordinates(h, align_corners);
  std::vector<double> base;
  base.reserve(size_t(h * w * 3));
  for (int64_t i = 0; i < h; ++i)
    for (int64_t j = 0; j < w; ++j) base.insert(base.end(), {xs[size_t(j)], ys[size_t(i)], 1.0});
  // grid[n, p] = theta[n] @ (x_p, y_p, 1): one batched matmul, differentiable in theta.
  const Tensor b = Tensor::from_vector(base, {1, h * w, 3}, theta.dtype(), theta.device());
  return matmul(b, theta.transpose(1, 2)).reshape({theta.size(0), h, w, 2});
}

Tensor grid_sample(const Tensor& input, const Tensor& grid, bool align_corners, bool deterministic) {
  check_floating("grid_sample", input);
  check_same("grid_sample", input, grid);
  EMONEXT_CHECK(input.dim() == 4, "grid_sample: input must be channels-last [N, H, W, C], got ", input.str());
  EMONEXT_CHECK(grid.dim() == 4 && grid.size(0) == input.size(0) && grid.size(3) == 2, "grid_sample: grid ",
                shape_str(grid.shape()), " does not fit input ", shape_str(input.shape()), " (expected [", input.size(0),
                ", Ho, Wo, 2])");
  const kernels::GridSample p{input.dtype(), input.size(0), input.size(1), input.size(2), input.size(3),
                              grid.size(1), grid.size(2), align_corners};
  const Tensor x = input.contiguous(), g = grid.contiguous();
  Tensor y = Tensor::empty({p.n, p.ho, p.wo, p.c}, input.dtype(), input.device());
  if (y.numel() > 0) EMONEXT_KERNEL(y.device(), grid_sample_forward, p, y.data_ptr(), x.data_ptr(), g.data_ptr());
  return record(y, "grid_sample", {input, grid}, [=, need_x = input.requires_grad(), need_g = grid.requires_grad()](const Tensor& dy_) {
    const Tensor dy = dy_.contiguous();
    Tensor dx = need_x ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
    Tensor dg = need_g ? Tensor::empty(g.shape(), g.dtype(), g.device()) : Tensor();
    if (dy.numel() > 0)
      EMONEXT_KERNEL(dy.device(), grid_sample_backward, p, need_x ? dx.data_ptr() : nullptr, need_g ? dg.data_ptr() : nullptr,
                     dy.data_ptr(), x.data_ptr(), g.data_ptr(), deterministic);
    else {
      if (need_x) dx.zero_();
      if (need_g) dg.zero_();
    }
    return Grads{dx, dg};
  });
}

}  // namespace emonext
