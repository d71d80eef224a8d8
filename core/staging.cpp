#include "core/staging.h"

#include <cstring>

#include "core/backend.h"
#include "core/base/error.h"

namespace emonext {

#if EMONEXT_WITH_CUDA

InputStaging::InputStaging(Device device) : device_(device) {
  if (device_.is_cpu()) return;
  kernels::cuda::set_device(device_.index);
  for (Slot& s : slots_) {
    s.copied = kernels::cuda::event_create();
    s.read = kernels::cuda::event_create();
  }
}

InputStaging::~InputStaging() {
  if (device_.is_cpu()) return;
  for (Slot& s : slots_) {
    try {
      kernels::cuda::host_wait_event(s.copied);  // no copy may still read a buffer freed here
    } catch (const std::exception&) {
    }
    for (void* p : s.pinned) kernels::cuda::free_pinned(p);
    kernels::cuda::event_destroy(s.copied);
    kernels::cuda::event_destroy(s.read);
  }
}

std::vector<Tensor> InputStaging::put(const std::vector<Tensor>& host) {
  if (device_.is_cpu()) return host;
  kernels::cuda::set_device(device_.index);
  Slot& s = slots_[size_t(next_)];
  // Everything that reads the other slot's batch (its step) is queued by now.
  if (used_) kernels::cuda::record_event(slots_[size_t(next_ ^ 1)].read, device_.index);
  kernels::cuda::host_wait_event(s.copied);  // this slot's buffers are free again
  s.pinned.resize(host.size(), nullptr);
  s.capacity.resize(host.size(), 0);
  s.device.resize(host.size());
  for (size_t i = 0; i < host.size(); ++i) {
    const Tensor t = host[i].contiguous();
    EMONEXT_CHECK(t.device().is_cpu(), "InputStaging::put: tensor ", i, " is on ", t.device().str(), ", not the CPU");
    const size_t bytes = size_t(t.numel()) * dtype_size(t.dtype());
    if (!s.device[i].defined() || s.device[i].shape() != t.shape() || s.device[i].dtype() != t.dtype()) {
      // A new shape (the first batch, a short last one): the copy stream must not write
      // memory the compute stream still reads or has not finished allocating. Rare: wait.
      synchronize(device_);
      s.device[i] = Tensor::empty(t.shape(), t.dtype(), device_);
      synchronize(device_);
    }
    if (s.capacity[i] < bytes) {
      kernels::cuda::free_pinned(s.pinned[i]);
      s.pinned[i] = nullptr;
      s.pinned[i] = kernels::cuda::allocate_pinned(bytes);
      s.capacity[i] = bytes;
    }
    std::memcpy(s.pinned[i], t.data_ptr(), bytes);
    kernels::cuda::copy_in_async(s.device[i].data_ptr(), s.pinned[i], bytes, device_.index, i == 0 ? s.read : nullptr,
                                 i + 1 == host.size() ? s.copied : nullptr);
  }
  kernels::cuda::stream_wait_event(s.copied, device_.index);  // the step's work starts after the copies
  used_ = true;
  next_ ^= 1;
  return s.device;
}

#else

InputStaging::InputStaging(Device device) : device_(device) {}
InputStaging::~InputStaging() = default;
std::vector<Tensor> InputStaging::put(const std::vector<Tensor>& host) {
  if (!device_.is_cpu()) fail_no_cuda();
  return host;
}

#endif

}  // namespace emonext
