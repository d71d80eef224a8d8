// Element-wise ops with broadcasting, and their backward formulas.
#include <cmath>

#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

using kernels::BinaryOp;
using kernels::CompareOp;
using kernels::UnaryOp;

void check_floating(const char* op, const Tensor& t) {
  EMONEXT_CHECK(is_floating(t.dtype()), op, ": expected a floating tensor (f32, f64, bf16, f16), got ", t.str(),
                "; convert with .to(DType::F32)");
}

void check_same(const char* op, const Tensor& a, const Tensor& b) {
  EMONEXT_CHECK(a.device() == b.device(), op, ": tensors on different devices: ", a.str(), " and ", b.str(),
                "; move one with .to(", a.device().str(), ")");
  EMONEXT_CHECK(a.dtype() == b.dtype(), op, ": tensors of different dtypes: ", a.str(), " and ", b.str(),
                "; convert one with .to(", dtype_name(a.dtype()), ")");
}

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    EMONEXT_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                  " do not broadcast (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

Tensor binary_forward(BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  check_same(name, a, b);
  check_floating(name, a);
  const Shape shape = broadcast_shapes(name, a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  EMONEXT_KERNEL(out.device(), binary, op, view_of(out), view_as(a, shape), view_as(b, shape));
  return out;
}

Tensor unary_forward(UnaryOp op, const char* name, const Tensor& a, double scalar = 0.0) {
  check_floating(name, a);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  EMONEXT_KERNEL(out.device(), unary, op, view_of(out), view_of(a), scalar);
  return out;
}

Tensor compare_op(CompareOp op, const char* name, const Tensor& a, const Tensor& b) {
  check_same(name, a, b);
  const Shape shape = broadcast_shapes(name, a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, DType::U8, a.device());
  EMONEXT_KERNEL(out.device(), compare, op, view_of(out), view_as(a, shape), view_as(b, shape));
  return out;
}

using Grads = std::vector<Tensor>;

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  const Shape sa = a.shape(), sb = b.shape();
  return record(binary_forward(BinaryOp::Add, "add", a, b), "add", {a, b},
                [=](const Tensor& g) { return Grads{sum_to(g, sa), sum_to(g, sb)}; });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  const Shape sa = a.shape(), sb = b.shape();
  return record(binary_forward(BinaryOp::Sub, "sub", a, b), "sub", {a, b},
                [=](const Tensor& g) { return Grads{sum_to(g, sa), sum_to(neg(g), sb)}; });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return record(binary_forward(BinaryOp::Mul, "mul", a, b), "mul", {a, b}, [=](const Tensor& g) {
    return Grads{ga ? sum_to(mul(g, b), a.shape()) : Tensor(), gb ? sum_to(mul(g, a), b.shape()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return record(binary_forward(BinaryOp::Div, "div", a, b), "div", {a, b}, [=](const Tensor& g) {
    const Tensor ga_full = div(g, b);  // d(a/b)/da = 1/b; d(a/b)/db = -a/b^2 = -(g/b) * a/b
    return Grads{ga ? sum_to(ga_full, a.shape()) : Tensor(), gb ? sum_to(neg(mul(ga_full, div(a, b))), b.shape()) : Tensor()};
  });
}

Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Pow, "pow", a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return record(out, "pow", {a, b}, [=, out = out.detach()](const Tensor& g) {
    // d/da a^b = b * a^(b-1); d/db a^b = a^b * log(a)
    return Grads{ga ? sum_to(mul(g, mul(b, pow(a, sub(b, Tensor::ones({}, b.dtype(), b.device()))))), a.shape()) : Tensor(),
                 gb ? sum_to(mul(g, mul(out, log(a))), b.shape()) : Tensor()};
  });
}

Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Maximum, "maximum", a, b);
  // The gradient goes to the larger input; a tie splits it in half, as torch.maximum does.
  return record(out, "maximum", {a, b}, [=](const Tensor& g) {
    const Tensor zero = Tensor::zeros({}, g.dtype(), g.device());
    const Tensor half = mul(where(eq(a, b), zero + 0.5, zero + 1.0), g);
    return Grads{sum_to(where(ge(a, b), half, zero), a.shape()), sum_to(where(le(a, b), half, zero), b.shape())};
  });
}

Tensor add(const Tensor& a, double s) {
  return record(unary_forward(UnaryOp::AddScalar, "add", a, s), "add_scalar", {a}, [](const Tensor& g) { return Grads{g}; });
}

Tensor mul(const Tensor& a, double s) {
  return record(unary_forward(UnaryOp::MulScalar, "mul", a, s), "mul_scalar", {a},
                [s](const Tensor& g) { return Grads{mul(g, s)}; });
}

Tensor pow(const Tensor& a, double e) {
  if (e == 2.0) return mul(a, a);  // BatchNorm's variance: a multiply is exact and far cheaper than powf
  return record(unary_forward(UnaryOp::PowScalar, "pow", a, e), "pow_scalar", {a},
                [=](const Tensor& g) { return Grads{mul(mul(g, pow(a, e - 1.0)), e)}; });
}

Tensor neg(const Tensor& a) {
  return record(unary_forward(UnaryOp::Neg, "neg", a), "neg", {a}, [](const Tensor& g) { return Grads{neg(g)}; });
}

Tensor cast(const Tensor& a, DType dtype) {
  EMONEXT_CHECK(is_floating(a.dtype()) && is_floating(dtype), "cast: floating dtypes only, got ", dtype_name(a.dtype()), " -> ",
                dtype_name(dtype), " (use Tensor::to for others; it is not differentiable)");
  if (a.dtype() == dtype) return a;
  const DType from = a.dtype();
  return record(a.detach().to(dtype), "cast", {a}, [from](const Tensor& g) { return Grads{cast(g, from)}; });
}

Tensor exp(const Tensor& a) {
  Tensor out = unary_forward(UnaryOp::Exp, "exp", a);
  return record(out, "exp", {a}, [y = out.detach()](const Tensor& g) { return Grads{mul(g, y)}; });
}

Tensor log(const Tensor& a) {
  return record(unary_forward(UnaryOp::Log, "log", a), "log", {a}, [a](const Tensor& g) { return Grads{div(g, a)}; });
}

Tensor sqrt(const Tensor& a) {
  Tensor out = unary_forward(UnaryOp::Sqrt, "sqrt", a);
  return record(out, "sqrt", {a}, [y = out.detach()](const Tensor& g) { return Grads{div(mul(g, 0.5), y)}; });
}

Tensor relu(const Tensor& a) {
  return record(unary_forward(UnaryOp::Relu, "relu", a), "relu", {a}, [a](const Tensor& g) {
    Tensor dx = Tensor::empty(g.shape(), g.dtype(), g.device());
    EMONEXT_KERNEL(dx.device(), binary, BinaryOp::ReluBackward, view_of(dx), view_of(g), view_of(a));
    return Grads{dx};
  });
}

Tensor sigmoid(const Tensor& a) {
  Tensor out = unary_forward(UnaryOp::Sigmoid, "sigmoid", a);
  return record(out, "sigmoid", {a}, [y = out.detach()](const Tensor& g) {
    return Grads{mul(g, mul(y, add(neg(y), 1.0)))};  // y (1 - y)
  });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same("where", a, b);
  EMONEXT_CHECK(cond.dtype() == DType::U8, "where: the condition must be a u8 mask (from eq, gt, ...), got ", cond.str());
  EMONEXT_CHECK(cond.device() == a.device(), "where: condition on ", cond.device().str(), ", values on ",
                a.device().str(), "; move the condition with .to(", a.device().str(), ")");
  const Shape shape = broadcast_shapes("where", cond.shape(), broadcast_shapes("where", a.shape(), b.shape()));
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  EMONEXT_KERNEL(out.device(), where, view_of(out), view_as(cond, shape), view_as(a, shape), view_as(b, shape));
  return record(out, "where", {a, b}, [=](const Tensor& g) {
    const Tensor zero = Tensor::zeros({}, g.dtype(), g.device());
    return Grads{sum_to(where(cond, g, zero), a.shape()), sum_to(where(cond, zero, g), b.shape())};
  });
}

Tensor eq(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Eq, "eq", a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Ne, "ne", a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Gt, "gt", a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Ge, "ge", a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Lt, "lt", a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Le, "le", a, b); }

}  // namespace emonext
