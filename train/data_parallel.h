// Data parallelism (mpirun -np N emonext_train): what a step adds when it runs on
// several ranks. Each rank trains on its share of the global batch; the master's
// gradients are summed over the ranks (the loss each rank backs through is already its
// share of the global loss), so every rank takes the same optimiser step and ends it
// with the same parameters, bit for bit.
#pragma once
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "core/autograd.h"
#include "core/tensor.h"
#include "layers/module.h"

namespace emonext {

// The gradients in fixed-size buckets in a fixed order (the parameters' registration
// order): each bucket is one flat f32 tensor on the gradients' device that the
// gradients are packed into, summed over the ranks in one collective (all_reduce_sum_:
// NCCL on GPUs where the build has it, MPI's ring on CPUs, in the emulation build and
// through host memory otherwise) and unpacked from. The buckets are made at the first
// step's sum from the parameters that have gradients; every later step must have the
// same ones (a rank that differs would sum the wrong tensors, so it is an error).
class GradientBuckets {
 public:
  static constexpr int64_t kBucketBytes = int64_t(4) << 20;  // 4 MiB: ~1M f32 gradients a collective

  // Before the backward pass: while the returned guard lives, each bucket is summed as
  // soon as the backward pass has written the last of its gradients (the backward's
  // order is the same on every rank, so the ranks issue the same sums in the same
  // order), beside the rest of the backward on a GPU with NCCL. None at the first step,
  // before the buckets exist.
  std::unique_ptr<LeafGradReady> overlap();
  // After the backward pass: sums the buckets not summed yet, in order, makes the
  // device's stream wait once for every sum (nothing queued during the backward waited
  // for a bucket), unpacks the sums into the gradients, and waits (bounded) for the sums
  // on the host. Each gradient then holds its sum over the ranks.
  void all_reduce(Module& model);

  size_t buckets() const { return buckets_.size(); }
  int64_t elements() const { return elements_; }
  double seconds() const { return seconds_; }  // spent summing so far (the host's wall time)
  int64_t sums() const { return sums_; }                  // buckets summed so far
  int64_t sums_in_backward() const { return overlapped_; }  // of those, during a backward pass

 private:
  struct Bucket {
    std::vector<Tensor*> params;  // the model's parameters, in registration order
    Tensor flat;                  // f32 [their elements]
    size_t waiting = 0;           // gradients this backward has yet to write (overlap)
    bool summed = false;          // in this step
  };
  void make(const std::vector<Module::Named>& params);
  void sum(Bucket& b);

  std::vector<Bucket> buckets_;
  std::vector<bool> with_grad_;                            // per parameter, as at the first step
  std::unordered_map<const TensorImpl*, size_t> bucket_of_;  // a parameter's bucket
  int64_t elements_ = 0, sums_ = 0, overlapped_ = 0;
  double seconds_ = 0;
};

}  // namespace emonext
