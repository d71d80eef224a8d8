// The element-wise formulas, written once and compiled by both backends
// (host compiler for kernels/cpu, nvcc for kernels/cuda). A is the
// accumulation type: float for f32/bf16/f16, double for f64.
#pragma once
#include <cmath>

#include "core/base/macros.h"

namespace emonext::kernels {

enum class UnaryOp : int { Neg, Exp, Log, Sqrt, Relu, Sigmoid, AddScalar, MulScalar, PowScalar, GeluErf, GeluTanh };
// The *Backward ops take (upstream gradient, forward input).
// AddGelu*: gelu(a + b) in one pass (the ConvNeXt block's bias + GELU).
enum class BinaryOp : int { Add, Sub, Mul, Div, Pow, Maximum, ReluBackward, GeluErfBackward, GeluTanhBackward, AddGeluErf, AddGeluTanh };
enum class CompareOp : int { Eq, Ne, Gt, Ge, Lt, Le };
// Mean: the sum times 1 / r, taken in the accumulation type before the result is rounded
// to the tensor's dtype (an f16 sum of 3,136 values of 30 would overflow; their mean does not).
enum class ReduceOp : int { Sum, Max, Mean };
enum class RandomKind : int { Uniform, Normal };

// Global-namespace math (::), so that emonext::exp(Tensor) and friends never hide it.
EMONEXT_HD float m_exp(float x) { return ::expf(x); }
EMONEXT_HD double m_exp(double x) { return ::exp(x); }
EMONEXT_HD float m_log(float x) { return ::logf(x); }
EMONEXT_HD double m_log(double x) { return ::log(x); }
EMONEXT_HD float m_sqrt(float x) { return ::sqrtf(x); }
EMONEXT_HD double m_sqrt(double x) { return ::sqrt(x); }
EMONEXT_HD float m_pow(float x, float y) { return ::powf(x, y); }
EMONEXT_HD double m_pow(double x, double y) { return ::pow(x, y); }
EMONEXT_HD float m_erf(float x) { return ::erff(x); }
EMONEXT_HD double m_erf(double x) { return ::erf(x); }
EMONEXT_HD float m_tanh(float x) { return ::tanhf(x); }
EMONEXT_HD double m_tanh(double x) { return ::tanh(x); }

// GELU as PyTorch defines it. Exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
// Tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <class A>
EMONEXT_HD A gelu_erf(A x) { return A(0.5) * x * (A(1) + m_erf(x * A(0.70710678118654752440))); }
template <class A>
EMONEXT_HD A gelu_erf_grad(A x) {  // Phi(x) + x phi(x)
  return A(0.5) * (A(1) + m_erf(x * A(0.70710678118654752440))) + x * A(0.39894228040143267794) * m_exp(A(-0.5) * x * x);
}
template <class A>
EMONEXT_HD A gelu_tanh(A x) {
  return A(0.5) * x * (A(1) + m_tanh(A(0.79788456080286535588) * (x + A(0.044715) * x * x * x)));
}
template <class A>
EMONEXT_HD A gelu_tanh_grad(A x) {
  const A inner = A(0.79788456080286535588) * (x + A(0.044715) * x * x * x);
  const A t = m_tanh(inner);
  return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * A(0.79788456080286535588) * (A(1) + A(3 * 0.044715) * x * x);
}

template <class A>
EMONEXT_HD A unary_apply(UnaryOp op, A x, A s) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return m_exp(x);
    case UnaryOp::Log: return m_log(x);
    case UnaryOp::Sqrt: return m_sqrt(x);
    case UnaryOp::Relu: return x > A(0) ? x : A(0);
    case UnaryOp::Sigmoid: return A(1) / (A(1) + m_exp(-x));
    case UnaryOp::AddScalar: return x + s;
    case UnaryOp::MulScalar: return x * s;
    case UnaryOp::PowScalar: return m_pow(x, s);
    case UnaryOp::GeluErf: return gelu_erf(x);
    case UnaryOp::GeluTanh: return gelu_tanh(x);
  }
  return x;
}

template <class A>
EMONEXT_HD A binary_apply(BinaryOp op, A a, A b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Pow: return m_pow(a, b);
    case BinaryOp::Maximum: return (a != a || a > b) ? a : b;  // NaN propagates, as in torch.maximum
    case BinaryOp::ReluBackward: return b > A(0) ? a : A(0);   // a: upstream gradient, b: relu input
    case BinaryOp::GeluErfBackward: return a * gelu_erf_grad(b);
    case BinaryOp::GeluTanhBackward: return a * gelu_tanh_grad(b);
    case BinaryOp::AddGeluErf: return gelu_erf(a + b);
    case BinaryOp::AddGeluTanh: return gelu_tanh(a + b);
  }
  return a;
}

template <class A>
EMONEXT_HD bool compare_apply(CompareOp op, A a, A b) {
  switch (op) {
    case CompareOp::Eq: return a == b;
    case CompareOp::Ne: return a != b;
    case CompareOp::Gt: return a > b;
    case CompareOp::Ge: return a >= b;
    case CompareOp::Lt: return a < b;
    case CompareOp::Le: return a <= b;
  }
  return false;
}

// Drop path's scale for one image (timm's drop_path, scale_by_keep): 1 / keep when the
// image's uniform draw u is below keep, else 0; 1 when there are no draws (eval, rate 0).
template <class A>
EMONEXT_HD A drop_path_scale(const float* u, int64_t image, double keep) {
  if (u == nullptr) return A(1);
  return u[image] < float(keep) ? A(1.0 / keep) : A(0);
}

// One AdamW step on one element, in place, in PyTorch 1.13's order and rounding
// (torch/optim/adamw.py, _single_tensor_adamw); the step's scalars come from
// kernels::adamw_scalars in the accumulation type.
template <class A>
struct AdamWScalars {
  A grad_scale;     // the gradient is multiplied by this first (clipping's factor; 1 when not clipped)
  A decay;          // 1 - lr * weight_decay (1 where the parameter is exempt)
  A beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
  A bias2_sqrt;     // sqrt(1 - beta2^t)
  A neg_step_size;  // -lr / (1 - beta1^t)
};
template <class A>
EMONEXT_HD void adamw_apply(A& p, A& m, A& v, A g, const AdamWScalars<A>& s) {
  g = g * s.grad_scale;                              // clip_grad_norm_'s grad.mul_(clip_coef_clamped)
  p = p * s.decay;                                   // param.mul_(1 - lr * weight_decay)
  m = m * s.beta1 + s.one_minus_beta1 * g;           // exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
  v = v * s.beta2 + s.one_minus_beta2 * g * g;       // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
  const A denom = m_sqrt(v) / s.bias2_sqrt + s.eps;  // exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
  p = p + s.neg_step_size * m / denom;               // param.addcdiv_(exp_avg, denom, value=-step_size)
}

// torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6) when the norm is
// above max_norm, else 1 (also for an inf or NaN norm).
EMONEXT_HD double clip_factor(double norm, double max_norm) {
  return norm - norm == 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;  // norm - norm: 0 only when finite
}

}  // namespace emonext::kernels
