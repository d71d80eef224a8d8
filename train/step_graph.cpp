#include "train/step_graph.h"

#include <cstdio>

#include "core/base/error.h"
#include "core/storage.h"

namespace emonext {

StepGraph::StepGraph(Device device, Generator& gen, Queue queue, std::function<void()> reset)
    : device_(device), gen_(gen), queue_(std::move(queue)), reset_(std::move(reset)) {
  EMONEXT_CHECK(device_.is_cuda(), "a step graph runs on a CUDA device; ", device_.str(), " is not one");
}

bool StepGraph::fits(const std::vector<Tensor>& inputs) const {
  if (inputs.size() != inputs_.size()) return false;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].shape() != inputs_[i].shape() || inputs[i].dtype() != inputs_[i].dtype()) return false;
  return true;
}

void StepGraph::step(const std::vector<Tensor>& inputs) {
  if (!warmed_up_ || !failure_.empty() || (graph_ && !fits(inputs)) || (!graph_ && !capture(inputs))) {
    queue_(inputs);
    warmed_up_ = true;
    return;
  }
  for (size_t i = 0; i < inputs.size(); ++i) inputs_[i].copy_(inputs[i]);
  // The fill takes the counter by value, as a double: exact below 2^53 (a run draws a
  // few dozen counters a step).
  EMONEXT_CHECK(gen_.counter() < (uint64_t(1) << 53), "the drop-path generator's counter passed 2^53");
  counter_base_.fill_(double(gen_.counter()));
  graph_->replay();
  gen_.set_state(gen_.seed(), gen_.counter() + draws_per_step_);
  if (++replays_ == 1) {
    // The graph's memory is its own: what the eager steps left in the pool (their peak)
    // goes back to the device, after one wait for the first replay (the frees queued
    // before it must have run).
    synchronize(device_);
    trim_device_memory(device_);
  }
}

bool StepGraph::capture(const std::vector<Tensor>& inputs) {
  for (const Tensor& t : inputs) inputs_.push_back(Tensor::empty(t.shape(), t.dtype(), device_));
  counter_base_ = Tensor::zeros({1}, DType::I64, device_);
  // While capturing, the draws count their counters from 0 on top of the base; the
  // generator is put back as it was, and each replay moves it on by what a step took.
  struct PutBack {
    Generator& gen;
    uint64_t counter;
    ~PutBack() {
      gen.set_state(gen.seed(), counter);
      gen.set_counter_base(nullptr);
    }
  } put_back{gen_, gen_.counter()};
  gen_.set_state(gen_.seed(), 0);
  gen_.set_counter_base(&counter_base_);
  try {
    graph_ = std::make_unique<GpuGraph>(device_, [&] { queue_(inputs_); });
  } catch (const Error& e) {
    // Nothing the capture queued ran; the generator is put back (put_back) and the
    // gradients the interrupted step left are dropped, so the eager steps from here on
    // are the ones --cuda-graph off takes.
    inputs_.clear();
    counter_base_ = Tensor();
    if (reset_) reset_();
    failure_ = e.what();
    std::fprintf(stderr, "emonext: the training step could not be captured as a CUDA graph, so every step runs eagerly "
                 "(as with --cuda-graph off): %s\n", failure_.c_str());
    return false;
  }
  draws_per_step_ = gen_.counter();
  return true;
}

}  // namespace emonext
