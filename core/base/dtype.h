// Element types, and the host-side 16-bit float types.
//
// bf16 and f16 are plain 16-bit containers with round-to-nearest-even
// conversions; they have the same layout as CUDA's __nv_bfloat16 and __half,
// so a buffer written by one side is read unchanged by the other.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/base/error.h"

namespace emonext {

enum class DType : uint8_t { F32, F64, BF16, F16, I64, U8 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I64: return 8;
    case DType::U8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
  }
  return "?";
}

inline DType dtype_from_name(const std::string& s) {
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I64, DType::U8})
    if (s == dtype_name(t)) return t;
  fail("unknown dtype '" + s + "' (expected f32, f64, bf16, f16, i64 or u8)");
}

inline bool is_floating(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

// ---- 16-bit float containers -------------------------------------------------

inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  explicit bf16(float f) {
    uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) { bits = uint16_t((x >> 16) | 0x40u); return; }  // quiet NaN
    x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest, ties to even
    bits = uint16_t(x >> 16);
  }
  explicit operator float() const { return bits_float(uint32_t(bits) << 16); }
};

struct f16 {
  uint16_t bits = 0;
  f16() = default;
  explicit f16(float f) {
    uint32_t x = float_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) { bits = uint16_t(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u)); return; }
    if (ax >= 0x477ff000u) { bits = uint16_t(sign | 0x7c00u); return; }  // >= 65520 rounds to inf
    if (ax < 0x38800000u) {  // below 2^-14: subnormal; a * 2^24 is exact, nearbyint rounds to even
      bits = uint16_t(sign | uint32_t(std::nearbyint(bits_float(ax) * 16777216.0f)));
      return;
    }
    uint32_t h = ((((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13));
    uint32_t rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;  // a carry moves into the exponent correctly
    bits = uint16_t(sign | h);
  }
  explicit operator float() const {
    uint32_t sign = uint32_t(bits & 0x8000u) << 16, e = (bits >> 10) & 0x1fu, m = bits & 0x3ffu;
    if (e == 0) { float v = float(m) * 5.9604644775390625e-8f; return sign ? -v : v; }  // m * 2^-24
    if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
    return bits_float(sign | ((e + 112u) << 23) | (m << 13));
  }
};

}  // namespace emonext
