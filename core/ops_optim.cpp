// The optimiser's update as one op: AdamW over a list of parameters, fused into a few
// multi-tensor launches (kernels/*/optim); the weights' EMA the same way; the training
// step's check.
#include <cmath>
#include <map>

#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

namespace {
// `control` as step_check_'s state on `dev`: its data for a kernel, or null without one.
const double* control_data(const char* op, const Tensor* control, Device dev) {
  if (!control) return nullptr;
  const Tensor& c = *control;
  EMONEXT_CHECK(c.dtype() == DType::F64 && c.is_contiguous() && c.numel() == kernels::kStateSize && c.device() == dev, op,
                ": the control must be step_check_'s state (f64 [", int(kernels::kStateSize), "] on ", dev.str(), "), got ",
                c.str());
  return static_cast<const double*>(c.data_ptr());
}
}  // namespace

void adamw_update_(const std::vector<AdamWParam>& params, const AdamWHyper& h) {
  const char* op = "adamw_update_";
  EMONEXT_CHECK(h.control || h.t >= 1, op, ": the step count t starts at 1, got ", h.t);
  if (params.empty()) return;
  const Tensor& first = *params.front().param;
  check_floating(op, first);
  std::vector<Tensor> grads;  // contiguous, alive until the kernels have read them
  std::vector<kernels::AdamWTensor> list;
  for (const AdamWParam& x : params) {
    const Tensor &p = *x.param, &m = *x.exp_avg, &v = *x.exp_avg_sq;  // const names for the checks
    for (const Tensor* t : {&p, x.grad, &m, &v}) {
      check_same(op, first, *t);
      EMONEXT_CHECK(t->shape() == p.shape(), op, ": ", t->str(), " does not match the parameter ", p.str());
    }
    for (const Tensor* t : {&p, &m, &v})
      EMONEXT_CHECK(t->is_contiguous(), op, ": the parameter and its moments must be contiguous, got ", t->str());
    check_inplace(op, p);
    if (p.numel() == 0) continue;
    grads.push_back(x.grad->contiguous());
    list.push_back({x.param->data_ptr(), x.exp_avg->data_ptr(), x.exp_avg_sq->data_ptr(), grads.back().data_ptr(), p.numel(),
                    x.decay ? h.weight_decay : 0.0});
  }
  if (list.empty()) return;
  kernels::AdamWStep a;
  a.dtype = first.dtype();
  a.lr = h.lr;
  a.beta1 = h.beta1;
  a.beta2 = h.beta2;
  a.eps = h.eps;
  a.t = double(h.t);
  a.grad_scale = h.grad_scale;
  a.control = control_data(op, h.control, first.device());
  EMONEXT_KERNEL(first.device(), adamw_step, a, list);
}

void ema_update_(const std::vector<Tensor*>& averages, const std::vector<const Tensor*>& model, const EmaHyper& h) {
  const char* op = "ema_update_";
  EMONEXT_CHECK(averages.size() == model.size(), op, ": ", averages.size(), " averages for ", model.size(), " tensors");
  EMONEXT_CHECK(h.every >= 1 && (h.control || h.step >= 1), op, ": every must be at least 1 and the step start at 1, got every ",
                h.every, ", step ", h.step);
  if (averages.empty()) return;
  const Device dev = averages.front()->device();
  std::vector<Tensor> sources;  // contiguous, alive until the kernels have read them
  sources.reserve(model.size());
  std::map<DType, std::vector<kernels::EmaTensor>> lists;  // one launch list per dtype
  for (size_t i = 0; i < averages.size(); ++i) {
    Tensor& v = *averages[i];
    const Tensor& x = *model[i];
    EMONEXT_CHECK(v.shape() == x.shape() && v.dtype() == x.dtype() && v.device() == dev && x.device() == dev, op, ": the average ",
                  v.str(), " does not match its tensor ", x.str());
    EMONEXT_CHECK(v.is_contiguous(), op, ": the averages must be contiguous, got ", v.str());
    check_inplace(op, v);
    if (v.numel() == 0) continue;
    sources.push_back(x.contiguous());
    lists[v.dtype()].push_back({v.data_ptr(), sources.back().data_ptr(), v.numel()});
  }
  kernels::EmaStep a;
  a.every = h.every;
  a.step = h.step;
  a.control = control_data(op, h.control, dev);
  for (const auto& [dtype, list] : lists) {
    a.dtype = dtype;
    EMONEXT_KERNEL(dev, ema_step, a, list);
  }
}

void adamw_update_(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWHyper& h) {
  adamw_update_({{&param, &grad, &exp_avg, &exp_avg_sq}}, h);
}

void step_check_(Tensor& state, Tensor& records, const Tensor& parts, const Tensor& loss, const Tensor& logits, const Tensor& labels,
                 const StepCheckHyper& h) {
  const char* op = "step_check_";
  const Device dev = state.device();
  const auto check = [&](const Tensor& t, DType dtype, const char* what, bool shape_ok) {
    EMONEXT_CHECK(t.dtype() == dtype && t.is_contiguous() && t.device() == dev && shape_ok, op, ": ", what, " must be ",
                  dtype_name(dtype), ", contiguous, on ", dev.str(), " and of the documented shape, got ", t.str());
  };
  check(state, DType::F64, "the state", state.numel() == kernels::kStateSize);
  check(records, DType::F64, "the records", records.dim() == 2 && records.shape()[1] == kernels::kRecordSize);
  EMONEXT_CHECK(records.shape()[0] >= 1, op, ": the records need a row at least, got ", records.str());
  EMONEXT_CHECK(h.schedule.cycle > h.schedule.warmup && h.schedule.warmup >= 0 && h.schedule.total >= 1, op,
                ": the schedule needs 0 <= warmup < cycle and total >= 1, got warmup ", h.schedule.warmup, ", cycle ",
                h.schedule.cycle, ", total ", h.schedule.total);
  check(parts, DType::F32, "the gradients' parts", parts.dim() == 1);
  check(loss, DType::F32, "the loss", loss.numel() == 1);
  check(logits, DType::F32, "the logits", logits.dim() == 2);
  check(labels, DType::I64, "the labels", labels.dim() == 1 && labels.numel() == logits.shape()[0]);
  check_inplace(op, state);
  kernels::StepCheck a;
  a.state = static_cast<double*>(state.data_ptr());
  a.records = static_cast<double*>(records.data_ptr());
  a.ring_rows = records.shape()[0];
  a.parts = static_cast<const float*>(parts.data_ptr());
  a.n_parts = parts.numel();
  a.loss = static_cast<const float*>(loss.data_ptr());
  a.logits = static_cast<const float*>(logits.data_ptr());
  a.labels = static_cast<const int64_t*>(labels.data_ptr());
  a.rows = logits.shape()[0];
  a.classes = logits.shape()[1];
  a.clip = h.clip;
  a.scaler = h.scaler;
  a.scale_floor = h.scale_floor;
  a.schedule = h.schedule;
  EMONEXT_KERNEL(dev, step_check, a);
}

}  // namespace emonext
