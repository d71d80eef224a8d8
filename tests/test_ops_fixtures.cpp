// Every op case against PyTorch (forward and the gradient of sum(out * w)),
// in f64 and f32, and against central finite differences in f64.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "tests/op_cases.h"
#include "tests/test_util.h"

namespace emonext::test {
namespace {

std::vector<Tensor> fixture_inputs(const std::string& name, DType dtype) {
  std::vector<Tensor> xs;
  for (int i = 0; op_fixtures().contains(name + ".in" + std::to_string(i)); ++i) {
    const Tensor& t = op_fixtures().at(name + ".in" + std::to_string(i));
    xs.push_back(is_floating(t.dtype()) ? t.to(dtype).detach().clone() : t);  // fresh leaves, never the fixture itself
  }
  return xs;
}

class OpFixture : public ::testing::TestWithParam<std::tuple<OpCase, DType>> {};

TEST_P(OpFixture, ForwardAndBackwardMatchPyTorch) {
  const auto& [c, dtype] = GetParam();
  const double tol = dtype == DType::F64 ? 1e-10 : 2e-5;
  std::vector<Tensor> xs = fixture_inputs(c.name, dtype);
  ASSERT_FALSE(xs.empty()) << "no fixture inputs for " << c.name << "; regenerate with tools/reference/make_op_fixtures.py";
  for (Tensor& x : xs)
    if (is_floating(x.dtype())) x.set_requires_grad(true);
  const Tensor y = c.fn(xs);
  expect_close(y, op_fixtures().at(c.name + ".out"), tol, c.name + " forward");
  sum(mul(y, op_fixtures().at(c.name + ".w").to(dtype))).backward();
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!is_floating(xs[i].dtype())) continue;
    const std::string key = c.name + ".grad" + std::to_string(i);
    ASSERT_TRUE(xs[i].grad().defined()) << key << " was not computed";
    expect_close(xs[i].grad(), op_fixtures().at(key), tol, key);
  }
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<OpCase, DType>>& info) {
  return std::get<0>(info.param).name + "_" + dtype_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Ops, OpFixture,
                         ::testing::Combine(::testing::ValuesIn(op_cases()), ::testing::Values(DType::F64, DType::F32)),
                         case_name);

class OpGradCheck : public ::testing::TestWithParam<OpCase> {};

TEST_P(OpGradCheck, GradientMatchesFiniteDifferences) {
  const OpCase& c = GetParam();
  const GradCheckResult r = gradcheck(c.fn, fixture_inputs(c.name, DType::F64));
  EXPECT_TRUE(r.ok) << c.name << ": max abs error " << r.max_abs_error << "\n" << r.report;
}

INSTANTIATE_TEST_SUITE_P(Ops, OpGradCheck, ::testing::ValuesIn(op_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& p) { return p.param.name + "_f64"; });

// The table and the fixture file name the same cases: a case added on one side only fails here.
TEST(OpFixtureFile, CoversExactlyTheTable) {
  std::set<std::string> in_file, in_table;
  for (const auto& [key, t] : op_fixtures().tensors)
    if (key.size() > 4 && key.compare(key.size() - 4, 4, ".out") == 0) in_file.insert(key.substr(0, key.size() - 4));
  for (const OpCase& c : op_cases()) in_table.insert(c.name);
  EXPECT_EQ(in_file, in_table);
}

// A deliberately wrong backward must be caught by the checker (the checker itself is tested).
TEST(GradCheck, CatchesAWrongGradient) {
  const OpFn wrong = [](const std::vector<Tensor>& x) {
    // y = x^2, but with a backward that claims dy/dx = x.
    Tensor y = mul(x[0].detach(), x[0].detach());
    return record(y, "wrong_square", {x[0]}, [x0 = x[0]](const Tensor& g) { return std::vector<Tensor>{mul(g, x0)}; });
  };
  Generator gen(1);
  const GradCheckResult r = gradcheck(wrong, {randn({3, 2}, gen, 0, 1, DType::F64)});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.report.find("analytic"), std::string::npos);
}

}  // namespace
}  // namespace emonext::test
