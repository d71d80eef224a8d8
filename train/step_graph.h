// A training step as one CUDA graph (--cuda-graph, on by default on a single GPU): the
// step's forward, loss, backward, checks, AdamW update and EMA are captured once and then
// replayed, one launch a step in place of several hundred, and the host code that queues
// them (autograd, the ops' checks, the allocator) runs once instead of every step.
//
// A replay repeats the captured launches with the same pointers and by-value arguments,
// so everything that changes from step to step reaches them through device memory:
//   - the batch: copied into the graph's own input tensors before each replay;
//   - the learning rate, AdamW's step count, the clip factor and the skip, the ring row
//     of the step's figures: StepChecks' state on the device (train/optim.h);
//   - drop path's random draws: the generator's Philox counter, which the draws' kernels
//     read from a device scalar that the host moves on before each replay (the draws
//     then use the very counters an eager step would: the same bits);
//   - the EMA's every-16 decision and decay: from the step count in that state too.
// The step's host bookkeeping (the step count, StepChecks::count) stays with the caller,
// which runs it for replays as for eager steps.
//
// A capture that fails (a call it cannot record, made by the engine or a library, or a
// GPU that invalidates it) is reported once and the run goes on eagerly: the step being
// captured and every later one run as with --cuda-graph off, with the same bits.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/graph.h"
#include "core/ops.h"

namespace emonext {

class StepGraph {
 public:
  // The step's device work: queue(inputs) queues one step reading the tensors `inputs`
  // (on the device) and drawing from `gen`, and changes no host state that later steps
  // depend on. It is run eagerly once, as a warm-up, before anything is captured.
  using Queue = std::function<void(const std::vector<Tensor>& inputs)>;
  // `reset` drops what a step stopped part-way leaves behind for the next one (the
  // parameters' gradients): run after a failed capture, before the step runs eagerly.
  StepGraph(Device device, Generator& gen, Queue queue, std::function<void()> reset);

  // One step on `inputs`: eager for the first step (the warm-up: cuBLAS's handle and
  // workspace, the tensors that outlive a step) and for inputs of another shape than
  // the captured one; captured at the second step, and replayed from then on (or, if the
  // capture failed, eager from then on).
  void step(const std::vector<Tensor>& inputs);
  // The steps replayed from the graph so far (the capture's step included).
  int64_t replays() const { return replays_; }
  // Why the capture failed ("" while it has not).
  const std::string& failure() const { return failure_; }

 private:
  bool fits(const std::vector<Tensor>& inputs) const;  // the captured inputs' shapes and dtypes
  bool capture(const std::vector<Tensor>& inputs);     // false: failed (failure_ says why)

  Device device_;
  Generator& gen_;
  Queue queue_;
  std::function<void()> reset_;
  std::string failure_;
  bool warmed_up_ = false;
  std::vector<Tensor> inputs_;  // the graph's: each replay's batch is copied here
  Tensor counter_base_;         // i64 [1]: the Philox counter of the replayed step's first draw
  uint64_t draws_per_step_ = 0;  // the Philox counters a step takes
  std::unique_ptr<GpuGraph> graph_;
  int64_t replays_ = 0;
};

}  // namespace emonext
