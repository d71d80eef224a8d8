#include "core/gradcheck.h"

#include <cmath>
#include <sstream>

#include "core/autograd.h"
#include "core/ops.h"

namespace emonext {

GradCheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          double eps, double atol, double rtol) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) {
    Tensor c = t.detach().clone();
    if (is_floating(t.dtype())) {
      EMONEXT_CHECK(t.dtype() == DType::F64 && t.device().is_cpu(), "gradcheck: inputs must be f64 on the CPU, got ", t.str());
      c.set_requires_grad(true);
    }
    xs.push_back(c);
  }
  Tensor y = f(xs);
  Generator gen(20231127);
  const Tensor w = randn(y.shape(), gen, 0.0, 1.0, DType::F64);
  auto scalar = [&](const Tensor& out) { return sum(mul(out, w)); };
  scalar(y).backward();

  GradCheckResult result;
  std::ostringstream report;
  int shown = 0;
  NoGradGuard no_grad;
  for (size_t k = 0; k < xs.size(); ++k) {
    if (!is_floating(xs[k].dtype())) continue;
    const Tensor analytic = xs[k].grad().defined() ? xs[k].grad().contiguous() : Tensor::zeros(xs[k].shape(), DType::F64);
    double* p = xs[k].data<double>();
    const double* a = analytic.data<double>();
    for (int64_t i = 0; i < xs[k].numel(); ++i) {
      const double keep = p[i];
      p[i] = keep + eps;
      const double up = scalar(f(xs)).item();
      p[i] = keep - eps;
      const double down = scalar(f(xs)).item();
      p[i] = keep;
      const double numeric = (up - down) / (2 * eps);
      const double err = std::fabs(a[i] - numeric);
      result.max_abs_error = std::max(result.max_abs_error, err);
      if (err > atol + rtol * std::fabs(numeric)) {
        result.ok = false;
        if (shown++ < 5)
          report << "input " << k << " element " << i << ": analytic " << a[i] << ", numeric " << numeric << "\n";
      }
    }
  }
  result.report = report.str();
  return result;
}

}  // namespace emonext
