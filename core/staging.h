// A training batch on its way to the GPU without a host wait. A copy from pageable
// host memory makes the host wait for the device's whole queue (CUDA stages it through
// a buffer of its own); here each batch goes through one of two page-locked (pinned)
// host buffers, on a copy stream beside the compute stream, ordered against it by
// events on the GPU:
//
//   put(k):  compute stream ── records "slot k-1 read" after the work queued so far
//            host            ── waits until slot k's copy of batch k-2 has left its buffer
//                               (only when the GPU is two batches behind), fills it
//            copy stream     ── waits for "slot k read" (batch k-2's step), copies, records "copied"
//            compute stream  ── waits for "copied" before the step's work
//
// so batch k's copy runs while the GPU still computes step k-1.
#pragma once
#include <array>
#include <vector>

#include "core/tensor.h"

namespace emonext {

class InputStaging {
 public:
  explicit InputStaging(Device device);
  ~InputStaging();
  InputStaging(const InputStaging&) = delete;
  InputStaging& operator=(const InputStaging&) = delete;

  // The CPU tensors `host` on the device, in order. The tensors returned are the slot's:
  // they are overwritten two calls later, so a step must be done with them (queued) by
  // then. On the CPU: `host` as it is.
  std::vector<Tensor> put(const std::vector<Tensor>& host);

 private:
  struct Slot {
    std::vector<void*> pinned;        // one page-locked buffer per tensor
    std::vector<size_t> capacity;     // their sizes in bytes
    std::vector<Tensor> device;       // the device tensors the copies land in
    void* copied = nullptr;           // event: the copies are done (on the copy stream)
    void* read = nullptr;             // event: the steps that read `device` are done (compute stream)
  };
  Device device_;
  std::array<Slot, 2> slots_;
  int next_ = 0;
  bool used_ = false;  // a batch has gone through
};

}  // namespace emonext
