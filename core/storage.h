// Storage: one owned block of memory on one device. Tensors share a Storage
// through shared_ptr; views differ only in shape, strides and offset.
#pragma once
#include <cstddef>
#include <memory>

#include "core/device.h"

namespace emonext {

class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

struct MemoryStats {
  size_t in_use = 0;       // bytes held by live Storages
  size_t peak = 0;         // the most ever held at once
  size_t allocations = 0;  // Storages created
  // On a GPU, what the device holds for them by CUDA's count, now and at most: the
  // stream-ordered pool (freed blocks kept for reuse) and the CUDA graphs' own memory.
  // The sum of the two peaks is the figure to set beside PyTorch's max_memory_reserved.
  size_t pool_reserved = 0, pool_reserved_peak = 0, graph_reserved = 0, graph_reserved_peak = 0;
};
MemoryStats memory_stats(Device device);
// On a GPU: returns the pool's unused memory to the device; nothing on the CPU.
void trim_device_memory(Device device);

// For programs that allocate the same large host blocks step after step (training,
// batched prediction): makes the C library keep freed memory for reuse. By default
// glibc maps every block over 32 MiB (an unfolded convolution input, a batch of
// activations) fresh from the kernel and unmaps it on free, so each step pays a page
// fault, and the kernel zero-fills a page, for every 4 KiB it touches: 12% of a CPU
// training step. This turns mmap off and raises the trim threshold to 1 GiB. Call
// it once, early in main(); the tools do. A no-op outside glibc.
void keep_freed_host_memory();

}  // namespace emonext
