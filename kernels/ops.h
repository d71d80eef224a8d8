// The element-wise formulas, written once and compiled by both backends
// (host compiler for kernels/cpu, nvcc for kernels/cuda). A is the
// accumulation type: float for f32/bf16/f16, double for f64.
#pragma once
#include <cmath>

#include "core/base/macros.h"

namespace emonext::kernels {

enum class UnaryOp : int { Neg, Exp, Log, Sqrt, Relu, Sigmoid, AddScalar, MulScalar, PowScalar };
enum class BinaryOp : int { Add, Sub, Mul, Div, Pow, Maximum, ReluBackward };
enum class CompareOp : int { Eq, Ne, Gt, Ge, Lt, Le };
enum class ReduceOp : int { Sum, Max };
enum class RandomKind : int { Uniform, Normal };

EMONEXT_HD float m_exp(float x) { return expf(x); }
EMONEXT_HD double m_exp(double x) { return exp(x); }
EMONEXT_HD float m_log(float x) { return logf(x); }
EMONEXT_HD double m_log(double x) { return log(x); }
EMONEXT_HD float m_sqrt(float x) { return sqrtf(x); }
EMONEXT_HD double m_sqrt(double x) { return sqrt(x); }
EMONEXT_HD float m_pow(float x, float y) { return powf(x, y); }
EMONEXT_HD double m_pow(double x, double y) { return pow(x, y); }

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

}  // namespace emonext::kernels
