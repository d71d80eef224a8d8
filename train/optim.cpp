#include "train/optim.h"

#include <cmath>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/ops.h"
#include "train/amp.h"

namespace emonext {

AdamW::AdamW(Module& model, Options o) : o_(o), params_(model.named_parameters()) {
  for (const Module::Named& p : params_) {
    m_.push_back(Tensor::zeros(p.tensor->shape(), p.tensor->dtype(), p.tensor->device()));
    v_.push_back(Tensor::zeros(p.tensor->shape(), p.tensor->dtype(), p.tensor->device()));
    // Norm weights, biases and layer scales are 1-D; conv and Linear weights are not.
    decay_.push_back(o.decay_norms_and_biases || p.tensor->dim() > 1);
  }
}

void AdamW::step(double lr, double grad_scale) {
  ++t_;
  update({lr, o_.beta1, o_.beta2, o_.eps, o_.weight_decay, t_, grad_scale});
}

void AdamW::step(const Tensor& control) {
  AdamWHyper h{0, o_.beta1, o_.beta2, o_.eps, o_.weight_decay};
  h.control = &control;
  update(h);
}

void AdamW::update(const AdamWHyper& h) {
  NoGradGuard no_grad;
  std::vector<Tensor> grads;
  grads.reserve(params_.size());  // the list below points into it
  std::vector<AdamWParam> list;
  for (size_t i = 0; i < params_.size(); ++i) {
    grads.push_back(params_[i].tensor->grad());
    if (grads.back().defined()) list.push_back({params_[i].tensor, &grads.back(), &m_[i], &v_[i], decay_[i]});
  }
  adamw_update_(list, h);  // a few launches in all
}

std::vector<std::pair<std::string, Tensor*>> AdamW::state() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].name, &m_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].name, &v_[i]);
  }
  return out;
}

Tensor grad_norm_parts(Module& model) {
  NoGradGuard no_grad;
  std::vector<Tensor> grads;
  for (const Module::Named& p : model.named_parameters())
    if (p.tensor->grad().defined()) grads.push_back(p.tensor->grad().to(DType::F32));
  return grads.empty() ? Tensor() : sum_squares(grads);
}

double grad_norm(Module& model) {
  const Tensor parts = grad_norm_parts(model);
  if (!parts.defined()) return 0;
  double total = 0;  // the parts are added in parameter order, in double (as step_check_apply does)
  for (double v : parts.to_vector()) total += v;
  return std::sqrt(total);
}

double clip_factor(double norm, double max_norm) { return kernels::clip_factor(norm, max_norm); }

StepChecks::StepChecks(Device dev, int64_t capacity, double clip, LossScaler& scaler, AdamW& opt)
    : dev_(dev), capacity_(capacity), clip_(clip), scaler_(scaler), opt_(opt) {
  EMONEXT_CHECK(capacity >= 1, "StepChecks: the ring needs a row at least, got ", capacity);
  block_ = Tensor::zeros({kernels::kStateSize + capacity * kernels::kRecordSize}, DType::F64, dev);
  state_ = block_.slice(0, 0, kernels::kStateSize);
  records_ = block_.slice(0, kernels::kStateSize, block_.numel()).reshape({capacity, kernels::kRecordSize});
  upload();
}

void StepChecks::upload(int64_t run_steps) {
  EMONEXT_CHECK(pending_ == 0, "StepChecks: ", pending_, " steps are not read yet; read() before upload()");
  EMONEXT_CHECK(run_steps >= 0 && run_steps < (int64_t(1) << 53), "StepChecks: a run's step count must be in [0, 2^53), got ",
                run_steps);
  std::vector<double> s(kernels::kStateSize, 0.0);
  s[kernels::kLossScale] = scaler_.factor();
  s[kernels::kGoodSteps] = double(scaler_.good);
  s[kernels::kAdamSteps] = double(opt_.steps());
  s[kernels::kRunSteps] = double(run_steps);
  state_.copy_(Tensor::from_vector(s, {kernels::kStateSize}, DType::F64));
  steps_ = run_steps;
}

Tensor StepChecks::loss_scale() const { return state_.slice(0, kernels::kLossScale, kernels::kLossScale + 1).to(DType::F32); }

void StepChecks::check(Module& model, const Tensor& loss, const Tensor& logits, const Tensor& labels,
                       const LrSchedule& schedule) {
  EMONEXT_CHECK(pending_ < capacity_, "StepChecks: ", capacity_, " steps since the last read fill the ring; read() first");
  NoGradGuard no_grad;
  Tensor parts = grad_norm_parts(model);
  if (!parts.defined()) parts = Tensor::zeros({0}, DType::F32, dev_);
  step_check_(state_, records_, parts, loss.detach(), logits.detach().contiguous(), labels,
              {clip_, scaler_.on, LossScaler::kFloor, schedule});
}

void StepChecks::count() {
  EMONEXT_CHECK(pending_ < capacity_, "StepChecks: ", capacity_, " steps since the last read fill the ring; read() first");
  ++pending_;
  ++steps_;
}

std::vector<StepRecord> StepChecks::read() {
  const std::vector<double> b = block_.to_vector();  // the state and the whole ring (the trainer's has at most 1000 rows)
  std::vector<StepRecord> out;
  for (int64_t s = steps_ - pending_; s < steps_; ++s) {
    const double* r = b.data() + kernels::kStateSize + (s % capacity_) * kernels::kRecordSize;
    out.push_back({r[kernels::kRecLoss], r[kernels::kRecNorm], r[kernels::kRecScale], int64_t(r[kernels::kRecCorrect]),
                   r[kernels::kRecSkipped] != 0, kernels::StepHalt(int(r[kernels::kRecHalted]))});
  }
  pending_ = 0;
  ++reads_;
  if (scaler_.on) {
    scaler_.scale = b[kernels::kLossScale];
    scaler_.good = int64_t(b[kernels::kGoodSteps]);
  }
  opt_.set_steps(int64_t(b[kernels::kAdamSteps]));
  return out;
}

double clip_grad_norm(Module& model, double max_norm) {
  NoGradGuard no_grad;
  const double norm = grad_norm(model), scale = clip_factor(norm, max_norm);
  if (scale != 1.0)
    for (const Module::Named& p : model.named_parameters())
      if (p.tensor->grad().defined()) p.tensor->set_grad(p.tensor->grad() * scale);
  return norm;
}

Schedule schedule_from_name(const std::string& name) {
  if (name == "restarts") return Schedule::Restarts;
  if (name == "cosine") return Schedule::Cosine;
  if (name == "constant") return Schedule::Constant;
  throw Error("unknown schedule '" + name + "'; use restarts, cosine or constant");
}

double learning_rate(Schedule s, double peak, int64_t step, int64_t warmup, int64_t cycle, int64_t total_steps) {
  return scheduled_lr({s, peak, warmup, cycle, total_steps}, step);
}

Ema::Ema(Module& model, int64_t every) : every_(every) {
  NoGradGuard no_grad;
  for (const Module::Named& t : model.named_tensors()) {
    names_.push_back(t.name);
    values_.push_back(t.tensor->detach().clone());
  }
}

void Ema::update(Module& model, int64_t step) {
  if (step % every_ == 0) apply(model, {.every = every_, .step = step});  // no launch on the other steps
}

void Ema::update(Module& model, const Tensor& control) { apply(model, {.every = every_, .control = &control}); }

void Ema::apply(Module& model, const EmaHyper& h) {
  NoGradGuard no_grad;
  const std::vector<Module::Named> now = model.named_tensors();
  EMONEXT_CHECK(now.size() == values_.size(), "Ema: the model has ", now.size(), " tensors, the average ", values_.size());
  std::vector<Tensor*> averages;
  std::vector<const Tensor*> tensors;
  for (size_t i = 0; i < now.size(); ++i) {
    averages.push_back(&values_[i]);
    tensors.push_back(now[i].tensor);
  }
  ema_update_(averages, tensors, h);
}

void Ema::swap(Module& model) {
  NoGradGuard no_grad;
  const std::vector<Module::Named> now = model.named_tensors();
  for (size_t i = 0; i < now.size(); ++i) {
    const Tensor tmp = now[i].tensor->detach().clone();
    now[i].tensor->copy_(values_[i]);
    values_[i].copy_(tmp);  // in place: a captured step's EMA update writes to these addresses
  }
}

std::vector<std::pair<std::string, Tensor*>> Ema::state() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (size_t i = 0; i < names_.size(); ++i) out.emplace_back("ema." + names_[i], &values_[i]);
  return out;
}

}  // namespace emonext
