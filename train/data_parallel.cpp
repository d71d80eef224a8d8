#include "train/data_parallel.h"

#include <chrono>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/ops.h"

namespace emonext {

void GradientBuckets::all_reduce(Module& model) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<Module::Named> params = model.named_parameters();
  std::vector<bool> with_grad;
  for (const Module::Named& p : params) with_grad.push_back(p.tensor->grad().defined());
  if (buckets_.empty()) {
    with_grad_ = with_grad;
    const int64_t per_bucket = kBucketBytes / int64_t(sizeof(float));
    std::vector<int64_t> sizes;
    for (size_t i = 0; i < params.size(); ++i) {
      if (!with_grad[i]) continue;
      const Tensor& g = params[i].tensor->grad();
      EMONEXT_CHECK(g.dtype() == DType::F32, "data parallelism: the gradient of ", params[i].name, " is ", g.str(),
                    "; the buckets hold the master's f32 gradients");
      if (buckets_.empty() || sizes.back() + g.numel() > per_bucket) {  // a tensor larger than a bucket gets one of its own
        buckets_.emplace_back();
        sizes.push_back(0);
      }
      buckets_.back().params.push_back(i);
      sizes.back() += g.numel();
      elements_ += g.numel();
    }
    for (size_t k = 0; k < buckets_.size(); ++k)
      buckets_[k].flat = Tensor::empty({sizes[k]}, DType::F32, params[buckets_[k].params.front()].tensor->grad().device());
  }
  EMONEXT_CHECK(with_grad == with_grad_, "data parallelism: this step's parameters with gradients differ from the first step's");
  NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    int64_t at = 0;
    for (size_t i : b.params) {
      const Tensor& g = params[i].tensor->grad();
      b.flat.slice(0, at, at + g.numel()).copy_(g.reshape({g.numel()}));
      at += g.numel();
    }
    all_reduce_sum_(b.flat, "the gradients' all-reduce");
    at = 0;
    for (size_t i : b.params) {
      Tensor g = params[i].tensor->grad();
      g.copy_(b.flat.slice(0, at, at + g.numel()).reshape(g.shape()));
      at += g.numel();
    }
  }
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace emonext
