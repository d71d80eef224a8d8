// The optimiser's update as one op: AdamW over a list of parameters, fused into a few
// multi-tensor launches (kernels/*/optim).
#include <cmath>

#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

void adamw_update_(const std::vector<AdamWParam>& params, const AdamWHyper& h) {
  const char* op = "adamw_update_";
  EMONEXT_CHECK(h.t >= 1, op, ": the step count t starts at 1, got ", h.t);
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
                    x.decay ? 1 - h.lr * h.weight_decay : 1.0});
  }
  if (list.empty()) return;
  kernels::AdamWStep a;
  a.dtype = first.dtype();
  a.grad_scale = h.grad_scale;
  a.beta1 = h.beta1;
  a.beta2 = h.beta2;
  a.eps = h.eps;
  a.bias2_sqrt = std::sqrt(1 - std::pow(h.beta2, double(h.t)));
  a.neg_step_size = -h.lr / (1 - std::pow(h.beta1, double(h.t)));
  EMONEXT_KERNEL(first.device(), adamw_step, a, list);
}

void adamw_update_(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWHyper& h) {
  adamw_update_({{&param, &grad, &exp_avg, &exp_avg_sq}}, h);
}

}  // namespace emonext
