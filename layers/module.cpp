#include "layers/module.h"

#include "core/base/error.h"

namespace emonext {

void Module::register_parameter(const std::string& name, Tensor* t) {
  EMONEXT_CHECK(t->defined(), "Module: parameter ", name, " is registered before it has a value");
  t->set_requires_grad(true);
  params_.emplace_back(name, t);
}

void Module::register_buffer(const std::string& name, Tensor* t) { buffers_.emplace_back(name, t); }

void Module::register_module(const std::string& name, Module* m) { children_.emplace_back(name, m); }

void Module::collect(const std::string& prefix, bool params, bool buffers, std::vector<Named>& out) {
  if (params)
    for (auto& [name, t] : params_) out.push_back({prefix + name, t});
  if (buffers)
    for (auto& [name, t] : buffers_) out.push_back({prefix + name, t});
  for (auto& [name, child] : children_) child->collect(prefix + name + ".", params, buffers, out);
}

std::vector<Module::Named> Module::named_parameters() {
  std::vector<Named> out;
  collect("", true, false, out);
  return out;
}

std::vector<Module::Named> Module::named_buffers() {
  std::vector<Named> out;
  collect("", false, true, out);
  return out;
}

std::vector<Module::Named> Module::named_tensors() {
  std::vector<Named> out;
  collect("", true, true, out);
  return out;
}

int64_t Module::num_parameters() {
  int64_t n = 0;
  for (const Named& p : named_parameters()) n += p.tensor->numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::to(Device device) {
  for (const Named& n : named_tensors()) {
    const bool grad = n.tensor->requires_grad();
    *n.tensor = n.tensor->detach().to(device);
    if (grad) n.tensor->set_requires_grad(true);
  }
}

void Module::to(DType dtype) {
  for (const Named& n : named_tensors()) {
    if (!is_floating(n.tensor->dtype())) continue;
    const bool grad = n.tensor->requires_grad();
    *n.tensor = n.tensor->detach().to(dtype);
    if (grad) n.tensor->set_requires_grad(true);
  }
}

void Module::zero_grad() {
  for (const Named& p : named_parameters()) p.tensor->set_grad(Tensor());
}

}  // namespace emonext
