// Temporary device memory for a kernel's partial results, from the device's
// pool, freed in stream order when the scope ends.
#pragma once
#include <cstddef>

#include "kernels/cuda/runtime.h"

namespace emonext::kernels::cuda {

class Workspace {
 public:
  explicit Workspace(size_t bytes) : device_(current_device()), ptr_(allocate(bytes == 0 ? 1 : bytes, device_)) {}
  ~Workspace() { deallocate(ptr_, device_); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  template <class T> T* as() const { return static_cast<T*>(ptr_); }

 private:
  int device_;
  void* ptr_;
};

}  // namespace emonext::kernels::cuda
