// AdamW, gradient-norm clipping, learning-rate schedules and the weights' EMA, as
// the training recipe (REFERENCE.md) uses them. Everything runs on the parameters'
// device with the engine's ops, in f32 (the master weights).
#pragma once
#include <string>
#include <vector>

#include "core/ops.h"
#include "kernels/kernels.h"
#include "layers/module.h"

namespace emonext {

struct LossScaler;  // train/amp.h

// AdamW (Loshchilov & Hutter), PyTorch's formula: p -= lr * wd * p (decoupled), then
// m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps),
// one fused pass per parameter, a few kernel launches for the whole model
// (adamw_update_ in core/ops.h).
class AdamW {
 public:
  struct Options {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
    bool decay_norms_and_biases = true;  // the reference decays every parameter
  };
  AdamW(Module& model, Options o);
  // Parameters without a gradient are left alone. The gradients are used multiplied by
  // grad_scale (clip_factor's result), which leaves them as they are in .grad.
  void step(double lr, double grad_scale = 1.0);
  // The same with the learning rate, the step count, the gradients' factor and whether to
  // skip read on the device from `control` (StepChecks::control()); steps() then counts on
  // the device, and StepChecks::read() brings it back.
  void step(const Tensor& control);
  int64_t steps() const { return t_; }
  // The moments, named "exp_avg.<param>" and "exp_avg_sq.<param>", for checkpoints.
  std::vector<std::pair<std::string, Tensor*>> state();
  void set_steps(int64_t t) { t_ = t; }

 private:
  void update(const AdamWHyper& h);  // adamw_update_ on every parameter with a gradient

  Options o_;
  std::vector<Module::Named> params_;
  std::vector<Tensor> m_, v_;
  std::vector<bool> decay_;
  int64_t t_ = 0;
};

// The squares of each parameter's gradient summed, as a device tensor of f32 parts (one
// pass over each gradient, no transfer); undefined when no parameter has a gradient.
Tensor grad_norm_parts(Module& model);
// The joint L2 norm of every parameter's gradient (inf or NaN when a gradient is): the
// parts above added in parameter order in f64, after one transfer from the device.
double grad_norm(Module& model);
// torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6) when the norm is
// above max_norm, else 1 (kernels/formulas.h, shared with the device's check).
double clip_factor(double norm, double max_norm);
// Scales every gradient so that their joint L2 norm is at most max_norm; returns the
// norm before scaling (inf or NaN when a gradient is).
double clip_grad_norm(Module& model, double max_norm);

// What the device's check (step_check_ in core/ops.h) recorded of one training step.
struct StepRecord {
  double loss = 0, grad_norm = 0;  // the norm unscaled (inf or NaN when a gradient was)
  double loss_scale = 1;           // the scale the step's loss was multiplied by (fp16; else 1)
  int64_t correct = 0;             // the batch's images classified right, before the update
  bool skipped = false;            // the update was skipped: inf/NaN gradients, or the run halted
  kernels::StepHalt halted = kernels::kRunning;  // why the run must stop
};

// A training step's checks kept on the device, so that the host need not wait for
// them: the gradient norm, clipping's factor, fp16's overflow check and loss scale,
// AdamW's step count, the skip, the run's step count and the schedule's learning rate
// live in a small f64 block that AdamW reads (control()); step s's figures go to row
// s mod capacity of a ring, which the host reads with one transfer when it wants them
// (read()). Nothing a step's launches take by value changes from step to step, so a CUDA
// graph can replay them.
class StepChecks {
 public:
  StepChecks(Device dev, int64_t capacity, double clip, LossScaler& scaler, AdamW& opt);
  // The host's copies (the scaler, AdamW's step count, the run's step count) onto the
  // device: at the start, and after a resume has loaded them. No steps may be pending.
  void upload(int64_t run_steps = 0);
  // The loss scale as an f32 device scalar, to multiply an fp16 step's loss by.
  Tensor loss_scale() const;
  // After the backward pass and any sum over the ranks: queues the one launch that checks
  // the step, sets its learning rate (`schedule` at the run's step count) and records it.
  // It changes nothing on the host (a graph can capture it): count() the step after.
  void check(Module& model, const Tensor& loss, const Tensor& logits, const Tensor& labels, const LrSchedule& schedule);
  // Counts one step whose check is queued (check(), or a graph's replay of it), for
  // read(). At most capacity() steps between reads.
  void count();
  const Tensor& control() const { return state_; }
  int64_t capacity() const { return capacity_; }
  int64_t pending() const { return pending_; }
  int64_t reads() const { return reads_; }  // read() calls so far
  // The records of the steps counted since the last read, oldest first (one transfer:
  // the host waits for the device here), with the scaler's state and AdamW's step count
  // copied back into the host's objects.
  std::vector<StepRecord> read();

 private:
  Device dev_;
  int64_t capacity_, pending_ = 0, reads_ = 0;
  int64_t steps_ = 0;  // the run's steps counted, as the device's kRunSteps will be
  double clip_;
  LossScaler& scaler_;
  AdamW& opt_;
  Tensor block_;            // f64: the state, then the records, so that one transfer reads both
  Tensor state_, records_;  // views of it: [kStateSize] and [capacity, kRecordSize]
};

// restarts, cosine, constant: core/base/schedule.h says what each does.
Schedule schedule_from_name(const std::string& name);
// The learning rate at optimiser step `step` (0-based): scheduled_lr, the
// formula the device's step check uses.
double learning_rate(Schedule s, double peak, int64_t step, int64_t warmup, int64_t cycle, int64_t total_steps);

// The reference's EMA of the weights and BatchNorm buffers: every `every` optimiser
// steps s, decay d = min(0.99, 1 - (1 + s - 100)^(-2/3)), a plain copy while s <= 100.
// One pass over every tensor, a few launches (ema_update_ in core/ops.h).
class Ema {
 public:
  explicit Ema(Module& model, int64_t every = 16);
  void update(Module& model, int64_t step);  // call after every optimiser step (1-based)
  // The same with the step read on the device from `control` (StepChecks::control(),
  // after the step's check): queued every step, it updates on the steps it is due, so a
  // CUDA graph can replay it.
  void update(Module& model, const Tensor& control);
  // Swaps the EMA values into the model (and back on the second call), in place: every
  // tensor keeps its memory.
  void swap(Module& model);
  std::vector<std::pair<std::string, Tensor*>> state();  // "ema.<name>"

 private:
  void apply(Module& model, const EmaHyper& h);

  int64_t every_;
  std::vector<std::string> names_;
  std::vector<Tensor> values_;
};

}  // namespace emonext
