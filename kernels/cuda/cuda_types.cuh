// The CUDA backend's types: __nv_bfloat16 and __half, the accumulation type of
// each element type, and the load/store conversions around it.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace emonext::kernels::cuda {

struct Types {
  using bf16 = __nv_bfloat16;
  using f16 = __half;
};

template <class T> struct AccType { using type = T; };
template <> struct AccType<__nv_bfloat16> { using type = float; };
template <> struct AccType<__half> { using type = float; };
template <class T> using acc_t = typename AccType<T>::type;

template <class T> __device__ __forceinline__ acc_t<T> load(T x) { return x; }
template <> __device__ __forceinline__ float load(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> __device__ __forceinline__ float load(__half x) { return __half2float(x); }

template <class T> __device__ __forceinline__ T store(acc_t<T> v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }

template <class To, class From> __device__ __forceinline__ To cast_value(From x) {
  return store<To>(static_cast<acc_t<To>>(static_cast<double>(load(x))));
}

// A host-side double as T, rounded to nearest even (as the CPU backend rounds).
template <class T> T host_value(double v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(float(v));
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(float(v));
  else return static_cast<T>(v);
}

}  // namespace emonext::kernels::cuda
