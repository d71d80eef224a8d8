// The CUDA execution model on a CPU. In the emulation build
// (-DEMONEXT_CUDA_EMULATION=ON) every .cu file is compiled by the host C++
// compiler with this header force-included; the kernels' own code is unchanged.
//
// What it plays:
// - threadIdx, blockIdx, blockDim, gridDim: the running thread's, read from the
//   fiber scheduler (scheduler.cpp). The threads of a block run as cooperative
//   fibers; __syncthreads is a real barrier, and a thread that never reaches it
//   is reported as a deadlock naming the kernel.
// - __shared__: one static per declaration, asked for in one ELF section that
//   the scheduler fills with 0xFF bytes (a NaN pattern) before every block, so a
//   read of shared memory nobody wrote shows up as NaN. Blocks run one at a time,
//   so statics are per-block storage. GCC ignores the section for statics in
//   function templates (docs/EMULATION.md): those are not refilled.
// - warps of 32 lanes: shuffles, votes and __syncwarp exchange through a
//   per-warp slot array between two warp barriers, honouring the lane mask.
// - atomics: fibers switch only at barriers, so a plain read-modify-write is atomic.
// - device memory: real heap blocks (runtime.cpp), 0xFF-filled when allocated, so a
//   read of global memory nobody wrote shows up as NaN too.
// What it does not play: timing, the memory model beyond barriers and atomics,
// tensor-core instructions, bounds checks on __shared__ arrays (ASan skips
// variables in named sections; global memory is real heap and is checked).
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#undef __shared__
#define __shared__ __attribute__((section("emonext_emu_shared"))) static
// Register-allocation hints: nothing to do on a CPU.
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

namespace emonext::emu {

uint3& thread_idx();
uint3& block_idx();
dim3& block_dim();
dim3& grid_dim();
void syncthreads();
void syncwarp(unsigned mask);
// Writes `bits` into this lane's slot, waits for the lanes in mask, returns src_lane's slot.
uint64_t warp_exchange(unsigned mask, uint64_t bits, int src_lane);
// The mask of lanes in `mask` whose predicate is true.
unsigned warp_ballot(unsigned mask, bool predicate);
int lane_id();
// The launch's dynamic shared memory (NaN-filled before each block).
void* dynamic_shared();

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace emonext::emu

#define threadIdx (::emonext::emu::thread_idx())
#define blockIdx (::emonext::emu::block_idx())
#define blockDim (::emonext::emu::block_dim())
#define gridDim (::emonext::emu::grid_dim())
#ifndef warpSize
#define warpSize 32
#endif

// `extern __shared__ T name[];` has no static form: kernels that need dynamic
// shared memory declare it with this macro instead.
#define EMONEXT_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::emonext::emu::dynamic_shared())

inline void __syncthreads() { ::emonext::emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emonext::emu::syncwarp(mask); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = ::emonext::emu::lane_id();
  const int base = lane - lane % width;
  return ::emonext::emu::from_bits<T>(::emonext::emu::warp_exchange(mask, ::emonext::emu::to_bits(v), base + src % width));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = ::emonext::emu::lane_id();
  int src = lane ^ lane_mask;
  if (src / width != lane / width) src = lane;  // outside the segment: keep own value
  return ::emonext::emu::from_bits<T>(::emonext::emu::warp_exchange(mask, ::emonext::emu::to_bits(v), src));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::emonext::emu::lane_id();
  int src = lane + int(delta);
  if (src / width != lane / width) src = lane;
  return ::emonext::emu::from_bits<T>(::emonext::emu::warp_exchange(mask, ::emonext::emu::to_bits(v), src));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::emonext::emu::lane_id();
  int src = lane - int(delta);
  if (src < 0 || src / width != lane / width) src = lane;
  return ::emonext::emu::from_bits<T>(::emonext::emu::warp_exchange(mask, ::emonext::emu::to_bits(v), src));
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return ::emonext::emu::warp_ballot(mask, pred != 0); }
inline int __any_sync(unsigned mask, int pred) { return ::emonext::emu::warp_ballot(mask, pred != 0) != 0; }
inline int __all_sync(unsigned mask, int pred) { return ::emonext::emu::warp_ballot(mask, pred != 0) == ::emonext::emu::warp_ballot(mask, true); }

// ---- atomics: return the old value ----
template <class T>
T emonext_emu_atomic_add(T* p, T v) {
  const T old = *p;
  if constexpr (std::is_same_v<T, __half>) *p = __float2half_rn(__half2float(old) + __half2float(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) *p = __float2bfloat16_rn(__bfloat162float(old) + __bfloat162float(v));
  else *p = old + v;
  return old;
}
inline float atomicAdd(float* p, float v) { return emonext_emu_atomic_add(p, v); }
inline double atomicAdd(double* p, double v) { return emonext_emu_atomic_add(p, v); }
inline int atomicAdd(int* p, int v) { return emonext_emu_atomic_add(p, v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return emonext_emu_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return emonext_emu_atomic_add(p, v); }
inline __half atomicAdd(__half* p, __half v) { return emonext_emu_atomic_add(p, v); }
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) { return emonext_emu_atomic_add(p, v); }
inline int atomicMax(int* p, int v) { const int old = *p; if (v > old) *p = v; return old; }
inline int atomicMin(int* p, int v) { const int old = *p; if (v < old) *p = v; return old; }
inline int atomicExch(int* p, int v) { const int old = *p; *p = v; return old; }
inline int atomicCAS(int* p, int compare, int v) { const int old = *p; if (old == compare) *p = v; return old; }
inline unsigned atomicCAS(unsigned* p, unsigned compare, unsigned v) { const unsigned old = *p; if (old == compare) *p = v; return old; }

// ---- math, bit and load intrinsics (the CUDA headers declare these for the device only) ----
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline int __float2int_rn(float x) { return int(nearbyintf(x)); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
template <class T> T __ldg(const T* p) { return *p; }
