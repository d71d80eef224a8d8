#include "train/data_parallel.h"

#include <chrono>

#include "core/base/error.h"
#include "core/ops.h"

namespace emonext {

void GradientBuckets::make(const std::vector<Module::Named>& params) {
  const int64_t per_bucket = kBucketBytes / int64_t(sizeof(float));
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!with_grad_[i]) continue;
    const Tensor& g = params[i].tensor->grad();
    EMONEXT_CHECK(g.dtype() == DType::F32, "data parallelism: the gradient of ", params[i].name, " is ", g.str(),
                  "; the buckets hold the master's f32 gradients");
    if (buckets_.empty() || sizes.back() + g.numel() > per_bucket) {  // a tensor larger than a bucket gets one of its own
      buckets_.emplace_back();
      sizes.push_back(0);
    }
    buckets_.back().params.push_back(params[i].tensor);
    bucket_of_[&params[i].tensor->impl()] = buckets_.size() - 1;
    sizes.back() += g.numel();
    elements_ += g.numel();
  }
  for (size_t k = 0; k < buckets_.size(); ++k)
    buckets_[k].flat = Tensor::empty({sizes[k]}, DType::F32, buckets_[k].params.front()->grad().device());
}

namespace {
// f(gradient, its slice of the bucket's flat tensor, in the gradient's shape), for each
// of the bucket's parameters: packing and unpacking walk the bucket the same way.
template <class F>
void each_slice(std::vector<Tensor*>& params, Tensor& flat, F f) {
  int64_t at = 0;
  for (Tensor* p : params) {
    Tensor g = p->grad();
    f(g, flat.slice(0, at, at + g.numel()).reshape(g.shape()));
    at += g.numel();
  }
}
}  // namespace

void GradientBuckets::sum(Bucket& b) {
  const auto start = std::chrono::steady_clock::now();
  NoGradGuard no_grad;
  each_slice(b.params, b.flat, [](const Tensor& g, Tensor slice) { slice.copy_(g); });
  all_reduce_sum_start(b.flat, "the gradients' all-reduce");
  b.summed = true;
  ++sums_;
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::unique_ptr<LeafGradReady> GradientBuckets::overlap() {
  if (buckets_.empty()) return nullptr;
  for (Bucket& b : buckets_) {
    b.waiting = b.params.size();
    b.summed = false;
  }
  return std::make_unique<LeafGradReady>([this](const Tensor& leaf) {
    const auto it = bucket_of_.find(&leaf.impl());
    if (it == bucket_of_.end()) return;
    Bucket& b = buckets_[it->second];
    if (--b.waiting == 0) {
      sum(b);
      ++overlapped_;
    }
  });
}

void GradientBuckets::all_reduce(Module& model) {
  const std::vector<Module::Named> params = model.named_parameters();
  std::vector<bool> with_grad;
  for (const Module::Named& p : params) with_grad.push_back(p.tensor->grad().defined());
  if (buckets_.empty()) {
    with_grad_ = with_grad;
    make(params);
  }
  EMONEXT_CHECK(with_grad == with_grad_, "data parallelism: this step's parameters with gradients differ from the first step's");
  if (buckets_.empty()) return;
  for (Bucket& b : buckets_)
    if (!b.summed) sum(b);
  // One join for every bucket, here where the step needs the sums: the backward's later
  // kernels never waited behind a bucket's sum.
  const auto start = std::chrono::steady_clock::now();
  const Device device = buckets_.front().flat.device();
  all_reduce_sum_join(device);
  NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    each_slice(b.params, b.flat, [](Tensor& g, const Tensor& slice) { g.copy_(slice); });
    b.summed = false;
  }
  all_reduce_sum_wait(device, "the gradients' all-reduce");
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace emonext
