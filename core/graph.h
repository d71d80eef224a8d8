// A CUDA graph: the GPU work that a piece of host code queues, recorded once and
// replayed. A replay costs one launch however many kernels the work holds, and the host
// code does not run again: only what the GPU does is repeated, with the same pointers and
// the same by-value arguments (a learning rate or a step count passed by value is
// replayed as it was; one read from device memory is current). The rules, which a
// capture enforces (kernels/cuda/runtime.h): no host wait inside, and the memory the work
// allocates is freed within it. Run the work once before capturing it: libraries make
// their handles and workspaces at first use (cuBLAS with cudaMalloc, which a capture
// refuses), and the tensors that last from step to step must exist already. CUDA
// devices only.
#pragma once
#include <functional>

#include "core/device.h"

namespace emonext {

class GpuGraph {
 public:
  // Runs `queue` with the device's stream captured: its host code runs once, now; the GPU
  // work it queues is recorded and runs at each replay(), not now. If `queue` throws or
  // breaks a rule, the capture is discarded and the error passed on.
  GpuGraph(Device device, const std::function<void()>& queue);
  ~GpuGraph();
  GpuGraph(const GpuGraph&) = delete;
  GpuGraph& operator=(const GpuGraph&) = delete;

  // Queues the recorded work on the device's stream (no host wait).
  void replay() const;

 private:
  Device device_;
  void* graph_ = nullptr;
};

}  // namespace emonext
