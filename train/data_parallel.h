// Data parallelism (mpirun -np N emonext_train): what a step adds when it runs on
// several ranks. Each rank trains on its share of the global batch; after the backward
// pass the master's gradients are summed over the ranks (the loss each rank backs
// through is already its share of the global loss), so every rank takes the same
// optimiser step and ends it with the same parameters, bit for bit.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"

namespace emonext {

// The gradients in fixed-size buckets in a fixed order (the parameters' registration
// order): each bucket is one flat f32 tensor on the gradients' device that the
// gradients are packed into, summed over the ranks in one collective
// (all_reduce_sum_: MPI's ring on CPUs and in the emulation build, through host memory
// on a GPU), and unpacked from. Made at the first reduction from the parameters that
// have gradients; every later step must have the same ones (a rank that differs would
// sum the wrong tensors, so it is an error).
class GradientBuckets {
 public:
  static constexpr int64_t kBucketBytes = int64_t(4) << 20;  // 4 MiB: ~1M f32 gradients a collective
  void all_reduce(Module& model);
  size_t buckets() const { return buckets_.size(); }
  int64_t elements() const { return elements_; }
  double seconds() const { return seconds_; }  // spent in all_reduce so far (the host's wall time)

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into the model's parameters
    Tensor flat;                 // f32 [elements of those parameters]
  };
  std::vector<Bucket> buckets_;
  std::vector<bool> with_grad_;
  int64_t elements_ = 0;
  double seconds_ = 0;
};

}  // namespace emonext
