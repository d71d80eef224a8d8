// Runs a generic lambda with the C++ type of a DType. Each backend names its
// own 16-bit types (Types::bf16, Types::f16): emonext::bf16 on the CPU,
// __nv_bfloat16 under CUDA.
#pragma once
#include <cstdint>

#include <type_traits>

#include "core/base/dtype.h"
#include "core/base/error.h"
#include "kernels/formulas.h"

namespace emonext::kernels {

template <class T>
struct Tag { using type = T; };

template <class Types, class Fn>
void dispatch_floating(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::F32: fn(Tag<float>{}); return;
    case DType::F64: fn(Tag<double>{}); return;
    case DType::BF16: fn(Tag<typename Types::bf16>{}); return;
    case DType::F16: fn(Tag<typename Types::f16>{}); return;
    default: fail(detail::concat(op, ": dtype ", dt, " is not supported; expected f32, f64, bf16 or f16"));
  }
}

template <class Types, class Fn>
void dispatch_all(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::I64: fn(Tag<int64_t>{}); return;
    case DType::U8: fn(Tag<uint8_t>{}); return;
    default: dispatch_floating<Types>(dt, op, fn);
  }
}

// Runs fn with the op as a compile-time constant (std::integral_constant), so that
// unary_apply / binary_apply's switch folds away inside a loop.
template <class Fn>
void dispatch_unary_op(UnaryOp op, Fn&& fn) {
  using U = UnaryOp;
  switch (op) {
#define EMONEXT_CASE(name) case U::name: fn(std::integral_constant<U, U::name>{}); return;
    EMONEXT_CASE(Neg) EMONEXT_CASE(Exp) EMONEXT_CASE(Log) EMONEXT_CASE(Sqrt) EMONEXT_CASE(Relu) EMONEXT_CASE(Sigmoid)
    EMONEXT_CASE(AddScalar) EMONEXT_CASE(MulScalar) EMONEXT_CASE(PowScalar) EMONEXT_CASE(GeluErf) EMONEXT_CASE(GeluTanh)
#undef EMONEXT_CASE
  }
}

template <class Fn>
void dispatch_binary_op(BinaryOp op, Fn&& fn) {
  using B = BinaryOp;
  switch (op) {
#define EMONEXT_CASE(name) case B::name: fn(std::integral_constant<B, B::name>{}); return;
    EMONEXT_CASE(Add) EMONEXT_CASE(Sub) EMONEXT_CASE(Mul) EMONEXT_CASE(Div) EMONEXT_CASE(Pow) EMONEXT_CASE(Maximum)
    EMONEXT_CASE(ReluBackward) EMONEXT_CASE(GeluErfBackward) EMONEXT_CASE(GeluTanhBackward) EMONEXT_CASE(AddGeluErf)
    EMONEXT_CASE(AddGeluTanh)
#undef EMONEXT_CASE
  }
}

}  // namespace emonext::kernels
