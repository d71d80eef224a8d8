// The seam between core/ and kernels/: turning tensors into kernel Views, and
// calling the kernel of the tensor's backend. This header is the only place in
// core/ that knows whether the CUDA backend was built.
#pragma once
#include <vector>

#include "core/device.h"
#include "core/storage.h"
#include "kernels/kernels.h"
#include "kernels/cuda/nccl.h"
#include "kernels/cuda/runtime.h"

namespace emonext {

class Tensor;
using Shape = std::vector<int64_t>;

// The kernel's view of t, or of t broadcast to `shape` (stride 0 where t has size 1 or lacks the dim).
kernels::View view_of(const Tensor& t);
kernels::View view_as(const Tensor& t, const Shape& shape);

[[noreturn]] void fail_no_cuda();

#if EMONEXT_WITH_CUDA
inline constexpr bool kCudaBuilt = true;
// Runs kernels::cpu::NAME(args..., nullptr) or kernels::cuda::NAME(args..., stream) on `device`.
#define EMONEXT_KERNEL(device, NAME, ...)                                                   \
  do {                                                                                      \
    const ::emonext::Device device_ = (device);                                             \
    if (device_.is_cpu()) {                                                                 \
      ::emonext::kernels::cpu::NAME(__VA_ARGS__, nullptr);                                  \
    } else {                                                                                \
      ::emonext::kernels::cuda::set_device(device_.index);                                  \
      ::emonext::kernels::cuda::NAME(__VA_ARGS__, ::emonext::kernels::cuda::stream(device_.index)); \
    }                                                                                       \
  } while (0)
// The same for a kernel that may decline (returns false: the backend has no path for
// these arguments), as an expression.
#define EMONEXT_KERNEL_IF(device, NAME, ...)                                                          \
  ([&](const ::emonext::Device device_) -> bool {                                                     \
    if (device_.is_cpu()) return ::emonext::kernels::cpu::NAME(__VA_ARGS__, nullptr);                 \
    ::emonext::kernels::cuda::set_device(device_.index);                                              \
    return ::emonext::kernels::cuda::NAME(__VA_ARGS__, ::emonext::kernels::cuda::stream(device_.index)); \
  }(device))
#else
inline constexpr bool kCudaBuilt = false;
#define EMONEXT_KERNEL(device, NAME, ...)                    \
  do {                                                       \
    if (!(device).is_cpu()) ::emonext::fail_no_cuda();       \
    ::emonext::kernels::cpu::NAME(__VA_ARGS__, nullptr);     \
  } while (0)
#define EMONEXT_KERNEL_IF(device, NAME, ...)                                      \
  ([&](const ::emonext::Device device_) -> bool {                                 \
    if (!device_.is_cpu()) ::emonext::fail_no_cuda();                             \
    return ::emonext::kernels::cpu::NAME(__VA_ARGS__, nullptr);                   \
  }(device))
#endif

void* cuda_allocate(size_t bytes, Device device);
void cuda_deallocate(void* ptr, Device device) noexcept;
MemoryStats cuda_memory_stats(Device device);
void cuda_trim_memory(Device device);
// Copies bytes between any two devices (cpu<->cuda, cuda<->cuda, cpu<->cpu).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

}  // namespace emonext
