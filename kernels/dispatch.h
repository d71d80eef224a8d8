// Runs a generic lambda with the C++ type of a DType. Each backend names its
// own 16-bit types (Types::bf16, Types::f16): emonext::bf16 on the CPU,
// __nv_bfloat16 under CUDA.
#pragma once
#include <cstdint>

#include "core/base/dtype.h"
#include "core/base/error.h"

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

}  // namespace emonext::kernels
