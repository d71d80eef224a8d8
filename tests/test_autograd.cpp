// The autograd engine itself: accumulation, no-grad, detach, freeing the graph.
#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"

namespace emonext {
namespace {

Tensor leaf(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector(v, s).set_requires_grad(); }

TEST(Autograd, TensorUsedTwiceAccumulates) {
  const Tensor x = leaf({1, 2, 3}, {3});
  sum(mul(x, x)).backward();  // d/dx sum(x^2) = 2x
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 4, 6}));
}

TEST(Autograd, DiamondGraphSumsBothPaths) {
  const Tensor x = leaf({1, -2}, {2});
  const Tensor a = mul(x, 3.0), b = exp(x);
  sum(add(a, mul(b, a))).backward();  // d/dx [3x + 3x e^x] = 3 + 3 e^x (1 + x)
  const std::vector<double> g = x.grad().to_vector();
  EXPECT_NEAR(g[0], 3 + 3 * std::exp(1.0) * 2, 1e-5);
  EXPECT_NEAR(g[1], 3 + 3 * std::exp(-2.0) * -1, 1e-5);
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  const Tensor x = leaf({1, 2}, {2});
  sum(mul(x, 2.0)).backward();
  sum(mul(x, 2.0)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{4, 4}));
}

// A leaf's first gradient is the backward's own tensor when nothing else holds it (no
// copy, as PyTorch's AccumulateGrad), and a copy when something may: another gradient
// sharing it, a backward that kept it, the caller's gradient, a view.
TEST(Autograd, ALeafTakesItsGradientWithoutACopyOnlyWhenNothingElseHoldsIt) {
  const Tensor x = leaf({1, 2, 3}, {3});
  enum Hand { Fresh, Kept, ViewOfKept, PartOfAStorage };
  const void* handed = nullptr;
  Tensor kept;
  auto backward_handing = [&](Hand hand) {
    x.set_grad(Tensor());
    Tensor y = record(Tensor::zeros({3}), "probe", {x}, [&, hand](const Tensor& g) {
      Tensor out = hand == PartOfAStorage ? mul(concat({g, g}, 0), 2.0).slice(0, 0, 3) : mul(g, 2.0);
      if (hand == Kept || hand == ViewOfKept) kept = out;
      if (hand == ViewOfKept) out = out.reshape({1, 3}).reshape({3});
      handed = out.data_ptr();
      return std::vector<Tensor>{out};
    });
    sum(y).backward();
    EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 2, 2})) << hand;
    return x.grad().data_ptr() == handed;
  };
  EXPECT_TRUE(backward_handing(Fresh)) << "a fresh gradient was copied";
  EXPECT_FALSE(backward_handing(Kept)) << "a gradient the backward kept became .grad";
  EXPECT_FALSE(backward_handing(ViewOfKept)) << "a view of a kept tensor became .grad";
  EXPECT_FALSE(backward_handing(PartOfAStorage)) << "part of a larger storage became .grad";
  // add's backward hands the caller's gradient to both inputs: neither may own it.
  const Tensor a = leaf({1, 2}, {2}), b = leaf({3, 4}, {2}), seed = Tensor::ones({2});
  add(a, b).backward(seed);
  EXPECT_NE(a.grad().data_ptr(), seed.data_ptr());
  EXPECT_NE(b.grad().data_ptr(), seed.data_ptr());
  EXPECT_NE(a.grad().data_ptr(), b.grad().data_ptr());
}

TEST(Autograd, NoGradRecordsNothing) {
  const Tensor x = leaf({1, 2}, {2});
  {
    NoGradGuard no_grad;
    const Tensor y = mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_FALSE(y.grad_fn());
    EXPECT_FALSE(grad_enabled());
  }
  EXPECT_TRUE(grad_enabled());
  EXPECT_TRUE(mul(x, x).requires_grad());
}

TEST(Autograd, DetachStopsGradient) {
  const Tensor x = leaf({1, 2}, {2});
  const Tensor y = add(mul(x, x.detach()), x);  // d/dx = detached x + 1
  sum(y).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 3}));
  EXPECT_FALSE(x.detach().requires_grad());
  EXPECT_EQ(x.detach().storage(), x.storage());
}

TEST(Autograd, GradFlowsThroughViews) {
  const Tensor x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  sum(mul(x.transpose(0, 1).slice(0, 1, 3), 2.0)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{0, 2, 2, 0, 2, 2}));
}

TEST(Autograd, BackwardFreesTheGraphAndSavedTensors) {
  const Tensor x = leaf(std::vector<double>(250000, 1.0), {500, 500});  // 1 MB
  Tensor loss;
  {
    const Tensor y = exp(mul(x, 2.0));  // exp keeps its 1 MB output for its backward
    loss = sum(y);
  }
  const size_t with_graph = memory_stats(Device::cpu()).in_use;
  loss.backward();
  x.set_grad(Tensor());  // drop the 1 MB gradient, which is new
  const size_t after = memory_stats(Device::cpu()).in_use;
  EXPECT_LE(after + 1000000, with_graph) << "exp's saved output was not freed: " << with_graph << " -> " << after;
  // A second backward through the freed graph is an error, not a crash.
  EXPECT_THROW(loss.backward(), Error);
}

TEST(Autograd, RequiresGradOnlyForFloatingLeaves) {
  Tensor i = Tensor::zeros({2}, DType::I64);
  EXPECT_THROW(i.set_requires_grad(), Error);
  Tensor y = mul(leaf({1}, {1}), 2.0);
  EXPECT_THROW(y.set_requires_grad(false), Error);
}

TEST(Autograd, BackwardNeedsAScalarOrAGradient) {
  const Tensor x = leaf({1, 2}, {2});
  const Tensor y = mul(x, 3.0);
  EXPECT_THROW(y.backward(), Error);
  y.backward(Tensor::ones({2}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{3, 3}));
  EXPECT_THROW(Tensor::ones({2}).backward(), Error);  // nothing requires grad
}

TEST(Autograd, InPlaceOnATensorThatRequiresGradIsRefused) {
  Tensor x = leaf({1, 2}, {2});
  EXPECT_THROW(x.fill_(0), Error);
  NoGradGuard no_grad;  // as an optimizer step does
  x.fill_(0);
  EXPECT_EQ(x.to_vector(), (std::vector<double>{0, 0}));
}

TEST(Autograd, DtypeAndCloneAreDifferentiable) {
  const Tensor x = leaf({1, 2}, {2});
  sum(mul(x.to(DType::F64).clone(), 5.0)).backward();
  EXPECT_EQ(x.grad().dtype(), DType::F32);
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{5, 5}));
}

TEST(BatchNorm, RunningStatisticsMoveByMomentumWithUnbiasedVariance) {
  // Two channels, 4 values each: channel 0 = 1, 2, 3, 4; channel 1 = 10, 10, 10, 14.
  const Tensor x = Tensor::from_vector({1, 10, 2, 10, 3, 10, 4, 14}, {2, 2, 1, 2}, DType::F64);
  Tensor rm = Tensor::zeros({2}, DType::F64), rv = Tensor::ones({2}, DType::F64);
  const Tensor w = Tensor::ones({2}, DType::F64), b = Tensor::zeros({2}, DType::F64);
  batch_norm(x, w, b, rm, rv, true, 0.1, 1e-5);
  // means 2.5 and 11; unbiased variances 5/3 and 4; PyTorch: new = 0.9 * old + 0.1 * batch
  const std::vector<double> m = rm.to_vector(), v = rv.to_vector();
  EXPECT_NEAR(m[0], 0.25, 1e-12);
  EXPECT_NEAR(m[1], 1.1, 1e-12);
  EXPECT_NEAR(v[0], 0.9 + 0.1 * 5.0 / 3.0, 1e-12);
  EXPECT_NEAR(v[1], 0.9 + 0.1 * 4.0, 1e-12);
  EXPECT_FALSE(rm.requires_grad());
  // Eval mode leaves them alone and uses them.
  const std::vector<double> before = rm.to_vector();
  const Tensor y = batch_norm(x, w, b, rm, rv, false, 0.1, 1e-5);
  EXPECT_EQ(rm.to_vector(), before);
  EXPECT_NEAR(y.to_vector()[0], (1 - 0.25) / std::sqrt(v[0] + 1e-5), 1e-12);
}

}  // namespace
}  // namespace emonext
