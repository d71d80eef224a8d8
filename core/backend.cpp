#include "core/backend.h"

#include <cstring>

#include "core/dist.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "kernels/cuda/cudnn_conv.h"

namespace emonext {

void fail_no_cuda() {
  fail("this build of emonext has no CUDA backend: rebuild with the CUDA toolkit installed (cmake -DEMONEXT_CUDA=ON), or use --device cpu");
}

kernels::View view_of(const Tensor& t) { return view_as(t, t.shape()); }

kernels::View view_as(const Tensor& t, const Shape& shape) {
  EMONEXT_CHECK(int(shape.size()) <= kernels::kMaxDims, "tensor of ", shape.size(), " dims: at most ",
                kernels::kMaxDims, " are supported");
  kernels::View v;
  v.data = t.data_ptr();
  v.dtype = t.dtype();
  v.ndim = int(shape.size());
  const int lead = v.ndim - t.dim();
  for (int d = 0; d < v.ndim; ++d) {
    v.shape[d] = shape[size_t(d)];
    const int td = d - lead;
    v.stride[d] = (td < 0 || t.shape()[size_t(td)] == 1) ? 0 : t.strides()[size_t(td)];
  }
  return v;
}

bool cuda_available() { return cuda_device_count() > 0; }

#if EMONEXT_WITH_CUDA
int cuda_device_count() { return kernels::cuda::device_count(); }
std::string cuda_unavailable_reason() { return kernels::cuda::unavailable_reason(); }
void synchronize(Device d) {
  if (d.is_cuda()) kernels::cuda::synchronize(d.index);
}
uint64_t gpu_launches() { return kernels::cuda::launches(); }
uint64_t gpu_host_waits() { return kernels::cuda::host_waits(); }
void* cuda_allocate(size_t bytes, Device device) { return kernels::cuda::allocate(bytes, device.index); }
void cuda_deallocate(void* ptr, Device device) noexcept { kernels::cuda::deallocate(ptr, device.index); }
MemoryStats cuda_memory_stats(Device device) {
  const auto s = kernels::cuda::memory_stats(device.index);
  return {s.in_use, s.peak, s.allocations, s.pool_reserved, s.pool_reserved_peak, s.graph_reserved, s.graph_reserved_peak};
}
void cuda_trim_memory(Device device) { kernels::cuda::trim_pool(device.index); }
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  using kernels::cuda::CopyKind;
  if (dst_device.is_cpu() && src_device.is_cpu()) std::memcpy(dst, src, bytes);
  else if (dst_device.is_cpu()) kernels::cuda::memcpy(dst, src, bytes, CopyKind::DeviceToHost, src_device.index);
  else if (src_device.is_cpu()) kernels::cuda::memcpy(dst, src, bytes, CopyKind::HostToDevice, dst_device.index);
  else if (dst_device == src_device) kernels::cuda::memcpy(dst, src, bytes, CopyKind::DeviceToDevice, dst_device.index);
  else {  // between two GPUs: through the host, simple and always available
    std::vector<unsigned char> host(bytes);
    kernels::cuda::memcpy(host.data(), src, bytes, CopyKind::DeviceToHost, src_device.index);
    kernels::cuda::memcpy(dst, host.data(), bytes, CopyKind::HostToDevice, dst_device.index);
  }
}
#else
int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() { return "this build has no CUDA backend"; }
void synchronize(Device) {}
uint64_t gpu_launches() { return 0; }
uint64_t gpu_host_waits() { return 0; }
void* cuda_allocate(size_t, Device) { fail_no_cuda(); }
void cuda_deallocate(void*, Device) noexcept {}
MemoryStats cuda_memory_stats(Device) { fail_no_cuda(); }
void cuda_trim_memory(Device) { fail_no_cuda(); }
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (!dst_device.is_cpu() || !src_device.is_cpu()) fail_no_cuda();
  std::memcpy(dst, src, bytes);
}
#endif

void set_cudnn_convolutions(bool on) {
#if EMONEXT_WITH_CUDA
  kernels::cuda::set_cudnn_enabled(on);
#else
  (void)on;
#endif
}

bool cudnn_convolutions() {
#if EMONEXT_WITH_CUDA
  return kernels::cuda::cudnn_enabled();
#else
  return false;
#endif
}

const std::vector<std::pair<std::string, DeviceChoice>>& device_choices() {
  static const std::vector<std::pair<std::string, DeviceChoice>> n = {
      {"auto", DeviceChoice::Auto}, {"cpu", DeviceChoice::Cpu}, {"cuda", DeviceChoice::Cuda}};
  return n;
}

Device pick_device(DeviceChoice choice) {
  if (choice == DeviceChoice::Cpu) return Device::cpu();
  if (choice == DeviceChoice::Cuda) EMONEXT_CHECK(cuda_available(), "--device cuda: ", cuda_unavailable_reason());
  // Each rank of a data-parallel run takes the GPU of its rank on its machine (ranks
  // beyond the GPUs share them round-robin).
  return cuda_available() ? Device::cuda(dist::local_rank() % cuda_device_count()) : Device::cpu();
}

}  // namespace emonext
