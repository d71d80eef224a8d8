// The kernels that make ConvNeXt and EmoNeXt what they are, as differentiable
// ops: GELU (and bias + GELU), depthwise convolution, the block's end, SE pooling and
// gating.
#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

using Grads = std::vector<Tensor>;

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

const char* gelu_name(GeluApprox approx) { return approx == GeluApprox::Tanh ? "tanh" : "erf"; }

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

namespace {

// c [m, n] = a [m, k] @ b^T (b [n, k]) or a @ b (b [k, n]) with an epilogue; a, b, bias and
// aux contiguous, aux [m, n]. False, with nothing written, where the backend has no
// algorithm for it (kernels.h gemm_epilogue): the caller computes it unfused.
[[nodiscard]] bool gemm_with_epilogue(kernels::GemmEpilogue epilogue, const Tensor& c, const Tensor& a, const Tensor& b, bool b_transposed,
                        const Tensor& bias, const Tensor& aux) {
  kernels::Gemm g;
  g.dtype = c.dtype();
  g.trans_b = b_transposed;
  g.m = a.size(0); g.k = a.size(1); g.n = c.size(1);
  g.a = a.data_ptr(); g.lda = g.k;
  g.b = b.data_ptr(); g.ldb = b.size(1);
  g.c = c.data_ptr(); g.ldc = g.n;
  g.epilogue = epilogue;
  if (epilogue == kernels::GemmEpilogue::BiasGeluTanh) g.bias = bias.data_ptr();
  else g.bias_grad = bias.data_ptr();
  g.aux = aux.data_ptr(); g.ldaux = g.n;
  return EMONEXT_KERNEL_IF(c.device(), gemm_epilogue, g);
}

}  // namespace

Tensor gelu_mlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, GeluApprox approx, bool epilogue) {
  check_floating("gelu_mlp", x);
  for (const Tensor* t : {&w1, &b1, &w2}) check_same("gelu_mlp", x, *t);
  EMONEXT_CHECK(w1.dim() == 2 && x.dim() >= 1 && x.size(-1) == w1.size(1) && (b1.shape() == Shape{w1.size(0)}) &&
                    w2.dim() == 2 && w2.size(1) == w1.size(0),
                "gelu_mlp: input ", shape_str(x.shape()), ", w1 ", shape_str(w1.shape()), ", b1 ", shape_str(b1.shape()),
                " and w2 ", shape_str(w2.shape()), " do not chain (expected [..., C], [H, C], [H], [C2, H])");
  const int64_t hidden = w1.size(0);
  const bool fused = epilogue && approx == GeluApprox::Tanh && x.dtype() != DType::F64 && hidden % 8 == 0 && x.numel() > 0;
  if (!fused) return linear(bias_gelu(linear(x, w1), b1, approx), w2);
  Shape out_shape = x.shape();
  out_shape.back() = w2.size(0);
  const Tensor x2 = x.reshape({-1, x.size(-1)});
  const int64_t rows = x2.size(0);
  Tensor y, act, pre;
  bool computed = false;
  const Tensor w1c = w1.detach().contiguous(), w2c = w2.detach().contiguous();
  {
    NoGradGuard no_grad;
    act = Tensor::empty({rows, hidden}, x.dtype(), x.device());
    pre = Tensor::empty({rows, hidden}, x.dtype(), x.device());
    computed = gemm_with_epilogue(kernels::GemmEpilogue::BiasGeluTanh, act, x2.detach().contiguous(), w1c, true,
                                  b1.detach().contiguous(), pre);
    if (computed) y = matmul(act, w2c.transpose(0, 1));
  }
  if (!computed) return linear(bias_gelu(linear(x, w1), b1, approx), w2);  // no algorithm for the epilogue
  y = record(y, "gelu_mlp", {x2, w1, b1, w2}, [x2, w1c, w2c, act, pre](const Tensor& g) {
    const Tensor gc = g.contiguous();
    Tensor dpre = Tensor::empty(pre.shape(), pre.dtype(), pre.device());
    Tensor db1 = Tensor::empty({pre.size(1)}, pre.dtype(), pre.device());
    if (!gemm_with_epilogue(kernels::GemmEpilogue::GeluTanhBackward, dpre, gc, w2c, false, db1, pre)) {
      // Unfused: d(act) = g w2, then dpre = d(act) gelu'(pre) with its column sums (pre
      // holds the bias already: bias_gelu's backward with a zero bias).
      const Tensor dact = matmul(gc, w2c), zero = Tensor::zeros({pre.size(1)}, pre.dtype(), pre.device());
      EMONEXT_KERNEL(pre.device(), bias_gelu_backward, pre.dtype(), true, dpre.data_ptr(), db1.data_ptr(), dact.data_ptr(),
                     pre.data_ptr(), zero.data_ptr(), pre.size(0), pre.size(1));
    }
    return Grads{matmul(dpre, w1c), matmul(dpre.transpose(0, 1), x2.detach()), db1, matmul(gc.transpose(0, 1), act)};
  });
  return y.reshape(out_shape);
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

}  // namespace emonext
