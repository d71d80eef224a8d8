// Bad input raises emonext::Error with a message that names the op, the
// shapes and the fix; nothing aborts.
#include <gtest/gtest.h>

#include "core/ops.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

namespace emonext {
namespace {

using test::error_of;

TEST(Errors, MismatchedShapesNameOpAndShapes) {
  const std::string m = error_of([] { add(Tensor::zeros({2, 3}), Tensor::zeros({4})); });
  EXPECT_NE(m.find("add"), std::string::npos) << m;
  EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
  EXPECT_NE(m.find("[4]"), std::string::npos) << m;
  EXPECT_NE(m.find("broadcast"), std::string::npos) << m;
}

TEST(Errors, MatmulInnerDimensions) {
  const std::string m = error_of([] { matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})); });
  EXPECT_NE(m.find("matmul: inner dims differ: [2, 3] @ [4, 5]"), std::string::npos) << m;
  const std::string lin = error_of([] { linear(Tensor::zeros({2, 3}), Tensor::zeros({5, 4})); });
  EXPECT_NE(lin.find("linear"), std::string::npos) << lin;
}

TEST(Errors, MismatchedDtypeSaysHowToConvert) {
  const std::string m = error_of([] { mul(Tensor::zeros({2}), Tensor::zeros({2}, DType::F64)); });
  EXPECT_NE(m.find("different dtypes"), std::string::npos) << m;
  EXPECT_NE(m.find(".to(f32)"), std::string::npos) << m;
  EXPECT_NE(error_of([] { exp(Tensor::zeros({2}, DType::I64)); }).find("floating"), std::string::npos);
}

TEST(Errors, UnavailableDeviceIsNamed) {
  if (cuda_available()) GTEST_SKIP() << "a GPU answers here; the wrong-device test runs in the cuda suite";
  const std::string m = error_of([] { Tensor::zeros({2}, DType::F32, Device::cuda(0)); });
  EXPECT_TRUE(m.find("cuda:0") != std::string::npos || m.find("no CUDA backend") != std::string::npos) << m;
}

TEST(Errors, LabelsAndIndicesOutOfRange) {
  const Tensor logits = Tensor::zeros({2, 3});
  const std::string m = error_of([&] { cross_entropy(logits, Tensor::from_ints(std::vector<int64_t>{0, 3}, {2})); });
  EXPECT_NE(m.find("label 3 is outside [0, 3)"), std::string::npos) << m;
  const std::string i = error_of([] { index_select(Tensor::zeros({4, 2}), 0, Tensor::from_ints(std::vector<int64_t>{4}, {1})); });
  EXPECT_NE(i.find("index 4 is out of range"), std::string::npos) << i;
}

TEST(Errors, AffineGridRefusesABaseGridOfAnotherSize) {
  const Tensor theta = Tensor::zeros({1, 2, 3}), base = affine_grid_base(4, 4, true, DType::F32, Device::cpu());
  EXPECT_EQ(affine_grid(theta, base, 4, 4).to_vector(), affine_grid(theta, 4, 4, true).to_vector());
  const std::string m = error_of([&] { affine_grid(theta, base, 5, 5); });
  EXPECT_NE(m.find("is not affine_grid_base(5, 5)'s [1, 25, 3]"), std::string::npos) << m;
}

TEST(Errors, BadViews) {
  EXPECT_NE(error_of([] { Tensor::zeros({2, 3}).reshape({4}); }).find("cannot reshape [2, 3]"), std::string::npos);
  EXPECT_NE(error_of([] { Tensor::zeros({2, 3}).expand({2, 4}); }).find("cannot expand"), std::string::npos);
  EXPECT_NE(error_of([] { Tensor::zeros({2}).permute({0, 0}); }).find("permute"), std::string::npos);
  EXPECT_NE(error_of([] { Tensor::zeros({2}).size(3); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([] { Tensor().shape(); }).find("undefined Tensor"), std::string::npos);
}

TEST(Errors, ConvolutionShapes) {
  const std::string ch = error_of([] { conv2d(Tensor::zeros({1, 5, 5, 3}), Tensor::zeros({8, 4, 3, 3})); });
  EXPECT_NE(ch.find("conv2d: weight [8, 4, 3, 3] does not fit 3 input channels"), std::string::npos) << ch;
  const std::string big = error_of([] { conv2d(Tensor::zeros({1, 2, 2, 3}), Tensor::zeros({8, 3, 5, 5})); });
  EXPECT_NE(big.find("larger than the padded input"), std::string::npos) << big;
  const std::string layout = error_of([] { conv2d(Tensor::zeros({3, 5, 5}), Tensor::zeros({8, 3, 3, 3})); });
  EXPECT_NE(layout.find("channels-last"), std::string::npos) << layout;
}

TEST(Errors, BlockEndShapesAndDrawsAreChecked) {
  const Tensor x = Tensor::zeros({2, 3, 3, 4}), c4 = Tensor::zeros({4});
  const std::string h = error_of([&] { layer_scale_residual(x, Tensor::zeros({2, 3, 3, 5}), c4, c4); });
  EXPECT_NE(h.find("layer_scale_residual: x [2, 3, 3, 4] and h [2, 3, 3, 5]"), std::string::npos) << h;
  const std::string g = error_of([&] { layer_scale_residual(x, x, c4, Tensor::zeros({5})); });
  EXPECT_NE(g.find("bias and gamma must be [4]"), std::string::npos) << g;
  const std::string u = error_of([&] { layer_scale_residual(x, x, c4, c4, Tensor::zeros({2}, DType::F64), 0.9); });
  EXPECT_NE(u.find("drop_u must be f32 [2]"), std::string::npos) << u;
  const std::string k = error_of([&] { layer_scale_residual(x, x, c4, c4, Tensor::zeros({2}), 0.0); });
  EXPECT_NE(k.find("keep must be in (0, 1]"), std::string::npos) << k;
}

TEST(Errors, NaNPropagatesRatherThanHiding) {
  // Bad values are not bad input: they flow through as in PyTorch, so a NaN loss is visible to the caller.
  const Tensor x = Tensor::from_vector({-1.0, 4.0}, {2});
  const std::vector<double> r = sqrt(x).to_vector();
  EXPECT_TRUE(std::isnan(r[0]));
  EXPECT_EQ(r[1], 2.0);
  EXPECT_TRUE(std::isnan(max(log(x)).item()));
}

}  // namespace
}  // namespace emonext
