// The CPU backend's types: accumulation type per element type and the
// load/store conversions around it.
#pragma once
#include <cstdint>

#include "core/base/dtype.h"

namespace emonext::kernels::cpu {

struct Types {
  using bf16 = emonext::bf16;
  using f16 = emonext::f16;
};

template <class T> struct AccType { using type = T; };
template <> struct AccType<emonext::bf16> { using type = float; };
template <> struct AccType<emonext::f16> { using type = float; };
template <class T> using acc_t = typename AccType<T>::type;

template <class T> inline acc_t<T> load(T x) { return static_cast<acc_t<T>>(x); }
template <class T> inline T store(acc_t<T> v) { return static_cast<T>(v); }

// Any type to any type, through double (exact for every value of every dtype
// but i64 beyond 2^53).
template <class To, class From> inline To cast_value(From x) {
  return store<To>(static_cast<acc_t<To>>(static_cast<double>(load(x))));
}

}  // namespace emonext::kernels::cpu
