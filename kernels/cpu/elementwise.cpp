// Element-wise kernels of the CPU backend: copy/cast, fill, random, unary,
// binary, compare, where. The formulas are in kernels/formulas.h.
#include <cmath>

#include "kernels/cpu/vector_math.h"  // before kernels/formulas.h

#include "core/base/philox.h"
#include "kernels/cpu/cpu_types.h"
#include "kernels/cpu/strided_loop.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

template <class T> T* typed(const View& v) { return static_cast<T*>(v.data); }

void copy(const View& dst, const View& src, Stream) {
  dispatch_all<Types>(dst.dtype, "copy", [&](auto to) {
    using To = typename decltype(to)::type;
    dispatch_all<Types>(src.dtype, "copy", [&](auto from) {
      using From = typename decltype(from)::type;
      View v[2] = {dst, src};
      To* d = typed<To>(dst);
      const From* s = typed<From>(src);
      strided_loop<2>(v, [&](const int64_t* o) {
        if constexpr (std::is_same_v<To, From>) d[o[0]] = s[o[1]];
        else d[o[0]] = cast_value<To>(s[o[1]]);
      });
    });
  });
}

void fill(const View& dst, double value, Stream) {
  dispatch_all<Types>(dst.dtype, "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T x = store<T>(static_cast<acc_t<T>>(value));
    View v[1] = {dst};
    T* d = typed<T>(dst);
    strided_loop<1>(v, [&](const int64_t* o) { d[o[0]] = x; });
  });
}

void random(const View& dst, RandomKind kind, uint64_t seed, uint64_t counter, const uint64_t* counter_base, double a, double b,
            Stream) {
  if (counter_base) counter += *counter_base;
  dispatch_floating<Types>(dst.dtype, "random", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* d = typed<T>(dst);
    const int64_t n = dst.numel();
#pragma omp parallel for schedule(static) if (n > kChunk)
    for (int64_t i = 0; i < n; ++i) {
      const philox::U32x4 r = philox::philox4x32_10(counter + uint64_t(i / 4), seed);
      const int lane = int(i % 4);
      float x;
      if (kind == RandomKind::Uniform) {
        x = float(a) + float(b - a) * philox::uniform01(r.v[lane]);
      } else {  // Box-Muller on the lane pair (0,1) or (2,3)
        const int p = lane & ~1;
        const float radius = sqrtf(-2.0f * logf(philox::uniform01_open0(r.v[p])));
        const float theta = 6.2831853071795864f * philox::uniform01(r.v[p + 1]);
        x = float(a) + float(b) * radius * ((lane & 1) ? sinf(theta) : cosf(theta));
      }
      d[i] = store<T>(static_cast<acc_t<T>>(x));
    }
  });
}

void unary(UnaryOp op, const View& out, const View& in, double scalar, Stream) {
  dispatch_floating<Types>(out.dtype, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    View v[2] = {out, in};
    T* y = typed<T>(out);
    const T* x = typed<T>(in);
    const A s = A(scalar);
    dispatch_unary_op(op, [&](auto op_c) {
      strided_loop<2>(v, [&](const int64_t* o) { y[o[0]] = store<T>(unary_apply<A>(op_c(), load(x[o[1]]), s)); });
    });
  });
}

void binary(BinaryOp op, const View& out, const View& a, const View& b, Stream) {
  dispatch_floating<Types>(out.dtype, "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    View v[3] = {out, a, b};
    T* y = typed<T>(out);
    const T* pa = typed<T>(a);
    const T* pb = typed<T>(b);
    dispatch_binary_op(op, [&](auto op_c) {
      strided_loop<3>(v, [&](const int64_t* o) { y[o[0]] = store<T>(binary_apply<A>(op_c(), load(pa[o[1]]), load(pb[o[2]]))); });
    });
  });
}

void compare(CompareOp op, const View& out, const View& a, const View& b, Stream) {
  dispatch_all<Types>(a.dtype, "compare", [&](auto tag) {
    using T = typename decltype(tag)::type;
    View v[3] = {out, a, b};
    uint8_t* y = typed<uint8_t>(out);
    const T* pa = typed<T>(a);
    const T* pb = typed<T>(b);
    strided_loop<3>(v, [&](const int64_t* o) { y[o[0]] = compare_apply(op, load(pa[o[1]]), load(pb[o[2]])) ? 1 : 0; });
  });
}

void where(const View& out, const View& cond, const View& a, const View& b, Stream) {
  dispatch_all<Types>(out.dtype, "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    View v[4] = {out, cond, a, b};
    T* y = typed<T>(out);
    const uint8_t* c = typed<uint8_t>(cond);
    const T* pa = typed<T>(a);
    const T* pb = typed<T>(b);
    strided_loop<4>(v, [&](const int64_t* o) { y[o[0]] = c[o[1]] ? pa[o[2]] : pb[o[3]]; });
  });
}

}  // namespace emonext::kernels::cpu
