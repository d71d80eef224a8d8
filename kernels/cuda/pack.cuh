// Packs: V consecutive elements moved by one load or store instruction. With
// V = 16 / sizeof(T) (the default) a thread moves 16 bytes at a time, which is
// what lets a memory-bound kernel keep enough bytes in flight to approach the
// device's copy bandwidth; V = 1 is the scalar fallback for rows whose length
// or address does not allow it.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "kernels/cuda/cuda_types.cuh"

namespace emonext::kernels::cuda {

template <class T, int V = int(16 / sizeof(T))>
struct alignas(sizeof(T) * V) Pack {
  static constexpr int kSize = V;
  T v[V];
};

template <class T> constexpr int kPackSize = Pack<T>::kSize;

// Whether every pointer is a multiple of `bytes` (a power of two) from address 0: may
// be read as packs of that many bytes.
inline bool aligned(uintptr_t bytes, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % bytes != 0) return false;
  return true;
}
inline bool aligned16(std::initializer_list<const void*> ptrs) { return aligned(16, ptrs); }

// Calls f(std::integral_constant<int, V>{}) with V = kPackSize<T> when rows of c elements
// at every pointer can be moved as packs (c a multiple of V, 16-byte aligned pointers),
// else with V = 1: a launch is written once for both widths.
template <class T, class F>
void with_pack_width(int64_t c, std::initializer_list<const void*> ptrs, F&& f) {
  if (c % kPackSize<T> == 0 && aligned16(ptrs)) f(std::integral_constant<int, kPackSize<T>>{});
  else f(std::integral_constant<int, 1>{});
}

template <int V, class T> __device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}
template <int V, class T> __device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& v) {
  *reinterpret_cast<Pack<T, V>*>(p) = v;
}

}  // namespace emonext::kernels::cuda
