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
};
MemoryStats memory_stats(Device device);

}  // namespace emonext
