// Finite-difference gradient checking in f64 on the CPU: every differentiable
// op's test compares its backward with central differences through this.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace emonext {

struct GradCheckResult {
  bool ok = true;
  double max_abs_error = 0;  // over every checked element
  std::string report;        // the worst mismatches, readable
};

// f maps the inputs to one tensor y. The scalar checked is sum(y * w) for a
// fixed random w, so every output element contributes a different weight.
// Only floating inputs are differentiated; each must be f64 on the CPU.
GradCheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          double eps = 1e-6, double atol = 1e-7, double rtol = 1e-5);

}  // namespace emonext
