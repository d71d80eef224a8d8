// Element-wise kernels of the CUDA backend: copy/cast, fill, random, unary,
// binary, compare, where. One thread per element in a grid-stride loop; the
// formulas are in kernels/formulas.h, shared with the CPU twins in kernels/cpu.
// Contiguous unary and binary work (GELU, bias + GELU, the SE gate, the
// optimizer's arithmetic) moves 16-byte packs per thread (pack.cuh) when the
// pointers allow, with a scalar loop for the last n % V elements.
#include "core/base/philox.h"
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/pack.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;

#define EMONEXT_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <class To, class From>
__global__ void copy_kernel(View dst, View src) {
  To* d = static_cast<To*>(dst.data);
  const From* s = static_cast<const From*>(src.data);
  EMONEXT_GRID_STRIDE(i, dst.numel()) {
    if constexpr (std::is_same_v<To, From>) d[dst.offset_of(i)] = s[src.offset_of(i)];
    else d[dst.offset_of(i)] = cast_value<To>(s[src.offset_of(i)]);
  }
}

template <class T>
__global__ void fill_kernel(View dst, T value) {
  T* d = static_cast<T*>(dst.data);
  EMONEXT_GRID_STRIDE(i, dst.numel()) d[dst.offset_of(i)] = value;
}

template <class T>
__global__ void random_kernel(T* dst, int64_t n, RandomKind kind, uint64_t seed, uint64_t counter, const uint64_t* counter_base,
                              float a, float b) {
  if (counter_base) counter += *counter_base;  // read when the kernel runs: a graph's replay draws anew
  EMONEXT_GRID_STRIDE(i, n) {
    const philox::U32x4 r = philox::philox4x32_10(counter + uint64_t(i / 4), seed);
    const int lane = int(i % 4);
    float x;
    if (kind == RandomKind::Uniform) {
      x = a + (b - a) * philox::uniform01(r.v[lane]);
    } else {  // Box-Muller on the lane pair (0,1) or (2,3), as in the CPU twin
      const int p = lane & ~1;
      const float radius = sqrtf(-2.0f * logf(philox::uniform01_open0(r.v[p])));
      const float theta = 6.2831853071795864f * philox::uniform01(r.v[p + 1]);
      x = a + b * radius * ((lane & 1) ? sinf(theta) : cosf(theta));
    }
    dst[i] = store<T>(static_cast<acc_t<T>>(x));
  }
}

// Contiguous operands; elements [first, n) as packs of V (n - first a multiple of
// V, or V = 1). b's element for i is b[i] when b_inner == 0 (b of a's shape),
// b[i % b_inner] when b_block == 0 (b along the last dim: a bias), else
// b[(i / b_block) * b_inner + i % b_inner] (b constant over the middle of
// [N, M, C], b_inner = C, b_block = M * C: the SE gate). V divides b_inner, so a
// pack's b values are consecutive too.
template <class T, int V>
__global__ void unary_contiguous_kernel(UnaryOp op, T* y, const T* x, int64_t first, int64_t n, double scalar) {
  using A = acc_t<T>;
  EMONEXT_GRID_STRIDE(p, (n - first) / V) {
    const int64_t i = first + p * V;
    const Pack<T, V> a = load_pack<V>(x + i);
    Pack<T, V> out;
#pragma unroll
    for (int e = 0; e < V; ++e) out.v[e] = store<T>(unary_apply<A>(op, load(a.v[e]), A(scalar)));
    store_pack<V>(y + i, out);
  }
}

template <class T, int V>
__global__ void binary_contiguous_kernel(BinaryOp op, T* y, const T* a, const T* b, int64_t first, int64_t n, int64_t b_inner,
                                         int64_t b_block) {
  using A = acc_t<T>;
  EMONEXT_GRID_STRIDE(p, (n - first) / V) {
    const int64_t i = first + p * V;
    const int64_t j = b_inner == 0 ? i : b_block == 0 ? i % b_inner : i / b_block * b_inner + i % b_inner;
    const Pack<T, V> va = load_pack<V>(a + i), vb = load_pack<V>(b + j);
    Pack<T, V> out;
#pragma unroll
    for (int e = 0; e < V; ++e) out.v[e] = store<T>(binary_apply<A>(op, load(va.v[e]), load(vb.v[e])));
    store_pack<V>(y + i, out);
  }
}

template <class T>
__global__ void unary_kernel(UnaryOp op, View out, View in, double scalar) {
  using A = acc_t<T>;
  T* y = static_cast<T*>(out.data);
  const T* x = static_cast<const T*>(in.data);
  EMONEXT_GRID_STRIDE(i, out.numel()) y[out.offset_of(i)] = store<T>(unary_apply<A>(op, load(x[in.offset_of(i)]), A(scalar)));
}

template <class T>
__global__ void binary_kernel(BinaryOp op, View out, View a, View b) {
  using A = acc_t<T>;
  T* y = static_cast<T*>(out.data);
  const T* pa = static_cast<const T*>(a.data);
  const T* pb = static_cast<const T*>(b.data);
  EMONEXT_GRID_STRIDE(i, out.numel())
  y[out.offset_of(i)] = store<T>(binary_apply<A>(op, load(pa[a.offset_of(i)]), load(pb[b.offset_of(i)])));
}

template <class T>
__global__ void compare_kernel(CompareOp op, View out, View a, View b) {
  uint8_t* y = static_cast<uint8_t*>(out.data);
  const T* pa = static_cast<const T*>(a.data);
  const T* pb = static_cast<const T*>(b.data);
  EMONEXT_GRID_STRIDE(i, out.numel())
  y[out.offset_of(i)] = compare_apply(op, load(pa[a.offset_of(i)]), load(pb[b.offset_of(i)])) ? 1 : 0;
}

template <class T>
__global__ void where_kernel(View out, View cond, View a, View b) {
  T* y = static_cast<T*>(out.data);
  const uint8_t* c = static_cast<const uint8_t*>(cond.data);
  const T* pa = static_cast<const T*>(a.data);
  const T* pb = static_cast<const T*>(b.data);
  EMONEXT_GRID_STRIDE(i, out.numel()) y[out.offset_of(i)] = c[cond.offset_of(i)] ? pa[a.offset_of(i)] : pb[b.offset_of(i)];
}

}  // namespace

void copy(const View& dst, const View& src, Stream s) {
  View v[2] = {dst, src};
  coalesce(2, v);
  dispatch_all<Types>(dst.dtype, "copy", [&](auto to) {
    using To = typename decltype(to)::type;
    dispatch_all<Types>(src.dtype, "copy", [&](auto from) {
      using From = typename decltype(from)::type;
      // Parenthesised: the template-id's comma would split the macro argument.
      EMONEXT_LAUNCH((copy_kernel<To, From>), blocks_for(v[0].numel(), kThreads), kThreads, 0, s, v[0], v[1]);
    });
  });
}

void fill(const View& dst, double value, Stream s) {
  View v[1] = {dst};
  coalesce(1, v);
  dispatch_all<Types>(dst.dtype, "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(fill_kernel<T>, blocks_for(v[0].numel(), kThreads), kThreads, 0, s, v[0], host_value<T>(value));
  });
}

void random(const View& dst, RandomKind kind, uint64_t seed, uint64_t counter, const uint64_t* counter_base, double a, double b,
            Stream s) {
  dispatch_floating<Types>(dst.dtype, "random", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t n = dst.numel();
    EMONEXT_LAUNCH(random_kernel<T>, blocks_for(n, kThreads), kThreads, 0, s, static_cast<T*>(dst.data), n, kind, seed,
                   counter, counter_base, float(a), float(b));
  });
}

namespace {
// After coalescing, a contiguous view of n elements is one dim of stride 1.
bool flat(const View& v) { return v.ndim <= 1 && (v.ndim == 0 || v.stride[0] == 1 || v.shape[0] == 1); }
}  // namespace

void unary(UnaryOp op, const View& out, const View& in, double scalar, Stream s) {
  View v[2] = {out, in};
  coalesce(2, v);
  const int64_t n = v[0].numel();
  dispatch_floating<Types>(out.dtype, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (flat(v[0]) && flat(v[1])) {
      auto* y = static_cast<T*>(v[0].data);
      const auto* x = static_cast<const T*>(v[1].data);
      constexpr int V = kPackSize<T>;
      const int64_t packed = aligned16({y, x}) ? n / V * V : 0;
      EMONEXT_LAUNCH((unary_contiguous_kernel<T, V>), blocks_for(packed / V, kThreads), kThreads, 0, s, op, y, x, 0, packed, scalar);
      EMONEXT_LAUNCH((unary_contiguous_kernel<T, 1>), blocks_for(n - packed, kThreads), kThreads, 0, s, op, y, x, packed, n, scalar);
    } else
      EMONEXT_LAUNCH(unary_kernel<T>, blocks_for(n, kThreads), kThreads, 0, s, op, v[0], v[1], scalar);
  });
}

void binary(BinaryOp op, const View& out, const View& a, const View& b, Stream s) {
  View v[3] = {out, a, b};
  coalesce(3, v);
  const int64_t n = v[0].numel();
  // After coalescing: b of a's shape is one flat dim; b along the last dim of a
  // contiguous [rows, C] (a bias) has strides (0, 1); b constant over the middle of
  // a contiguous [N, M, C] (the SE gate, [N, 1, 1, C]) has strides (C, 0, 1).
  auto contiguous = [](const View& x) {
    int64_t expect = 1;
    for (int d = x.ndim - 1; d >= 0; --d) {
      if (x.stride[d] != expect && x.shape[d] != 1) return false;
      expect *= x.shape[d];
    }
    return true;
  };
  const bool outer_contiguous = contiguous(v[0]) && contiguous(v[1]);
  int64_t b_inner = -1, b_block = 0;  // b_inner -1: no contiguous form
  if (flat(v[0]) && flat(v[1]) && flat(v[2])) {
    b_inner = 0;
  } else if (outer_contiguous && v[0].ndim == 2 && v[2].stride[0] == 0 && v[2].stride[1] == 1) {
    b_inner = v[0].shape[1];
  } else if (outer_contiguous && v[0].ndim == 3 && v[2].stride[0] == v[0].shape[2] && v[2].stride[1] == 0 && v[2].stride[2] == 1) {
    b_inner = v[0].shape[2];
    b_block = v[0].shape[1] * v[0].shape[2];
  }
  dispatch_floating<Types>(out.dtype, "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (b_inner < 0) {
      EMONEXT_LAUNCH(binary_kernel<T>, blocks_for(n, kThreads), kThreads, 0, s, op, v[0], v[1], v[2]);
      return;
    }
    auto* y = static_cast<T*>(v[0].data);
    const auto *pa = static_cast<const T*>(v[1].data), *pb = static_cast<const T*>(v[2].data);
    constexpr int V = kPackSize<T>;
    int64_t packed = 0;
    if (aligned16({y, pa, pb}) && b_inner % V == 0) packed = n / V * V;
    EMONEXT_LAUNCH((binary_contiguous_kernel<T, V>), blocks_for(packed / V, kThreads), kThreads, 0, s, op, y, pa, pb, 0, packed,
                   b_inner, b_block);
    EMONEXT_LAUNCH((binary_contiguous_kernel<T, 1>), blocks_for(n - packed, kThreads), kThreads, 0, s, op, y, pa, pb, packed, n,
                   b_inner, b_block);
  });
}

void compare(CompareOp op, const View& out, const View& a, const View& b, Stream s) {
  View v[3] = {out, a, b};
  coalesce(3, v);
  dispatch_all<Types>(a.dtype, "compare", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(compare_kernel<T>, blocks_for(v[0].numel(), kThreads), kThreads, 0, s, op, v[0], v[1], v[2]);
  });
}

void where(const View& out, const View& cond, const View& a, const View& b, Stream s) {
  View v[4] = {out, cond, a, b};
  coalesce(4, v);
  dispatch_all<Types>(out.dtype, "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(where_kernel<T>, blocks_for(v[0].numel(), kThreads), kThreads, 0, s, v[0], v[1], v[2], v[3]);
  });
}

}  // namespace emonext::kernels::cuda
