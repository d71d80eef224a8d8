// Comparison helpers for tests.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/device.h"
#include "core/tensor.h"

// First line of every CUDA test: skips, saying why, where no GPU answers.
#define REQUIRE_GPU()         \
  if (!::emonext::cuda_available()) GTEST_SKIP() << "no CUDA device answers: " << ::emonext::cuda_unavailable_reason()

namespace emonext::test {

// |a - b| <= tol * (1 + |b|) element-wise, with the shapes equal; reports the worst element.
inline void expect_close(const Tensor& actual, const Tensor& expected, double tol, const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what << ": shape " << shape_str(actual.shape()) << " vs "
                                              << shape_str(expected.shape());
  const std::vector<double> a = actual.to_vector(), b = expected.to_vector();
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(a[i] - b[i]) / (1 + std::fabs(b[i]));
    if (!(err <= worst)) { worst = err; at = i; }  // NaN counts as worst
  }
  EXPECT_LE(worst, tol) << what << ": element " << at << " is " << a[at] << ", expected " << b[at];
}

}  // namespace emonext::test
