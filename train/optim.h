// AdamW, gradient-norm clipping, learning-rate schedules and the weights' EMA, as
// the training recipe (REFERENCE.md) uses them. Everything runs on the parameters'
// device with the engine's ops, in f32 (the master weights).
#pragma once
#include <string>
#include <vector>

#include "layers/module.h"

namespace emonext {

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
  int64_t steps() const { return t_; }
  // The moments, named "exp_avg.<param>" and "exp_avg_sq.<param>", for checkpoints.
  std::vector<std::pair<std::string, Tensor*>> state();
  void set_steps(int64_t t) { t_ = t; }

 private:
  Options o_;
  std::vector<Module::Named> params_;
  std::vector<Tensor> m_, v_;
  std::vector<bool> decay_;
  int64_t t_ = 0;
};

// The joint L2 norm of every parameter's gradient (inf or NaN when a gradient is): one
// pass over each gradient and one transfer from the device.
double grad_norm(Module& model);
// torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6) when the norm is
// above max_norm, else 1. The trainer hands it to AdamW::step.
double clip_factor(double norm, double max_norm);
// Scales every gradient so that their joint L2 norm is at most max_norm; returns the
// norm before scaling (inf or NaN when a gradient is).
double clip_grad_norm(Module& model, double max_norm);

enum class Schedule { Restarts, Cosine, Constant };
Schedule schedule_from_name(const std::string& name);  // restarts, cosine, constant
// The learning rate at optimiser step `step` (0-based):
//   restarts: the reference's cosine with warm restarts: c = step mod cycle; peak * c / warmup
//             while c < warmup, else peak * (1 + cos(pi (c - warmup) / (cycle - warmup))) / 2
//   cosine:   linear warm-up over `warmup` steps, then one cosine to 0 at total_steps
//   constant: peak
double learning_rate(Schedule s, double peak, int64_t step, int64_t warmup, int64_t cycle, int64_t total_steps);

// The reference's EMA of the weights and BatchNorm buffers: every `every` optimiser
// steps s, decay d = min(0.99, 1 - (1 + s - 100)^(-2/3)), a plain copy while s <= 100.
class Ema {
 public:
  explicit Ema(Module& model, int64_t every = 16);
  void update(Module& model, int64_t step);  // call after every optimiser step
  // Swaps the EMA values into the model (and back on the second call).
  void swap(Module& model);
  std::vector<std::pair<std::string, Tensor*>> state();  // "ema.<name>"

 private:
  int64_t every_;
  std::vector<std::string> names_;
  std::vector<Tensor> values_;
};

}  // namespace emonext
