// The models: parameter names and counts as the reference's, Module behaviour,
// layer semantics that the op tests do not cover (drop path, BatchNorm counter).
#include <gtest/gtest.h>

#include <set>

#include "core/autograd.h"
#include "models/emonext.h"
#include "tests/test_util.h"

namespace emonext::test {
namespace {

std::set<std::string> names(Module& m) {
  std::set<std::string> out;
  for (const Module::Named& n : m.named_tensors()) out.insert(n.name);
  return out;
}

const Tensor& tensor(Module& m, const std::string& name) {
  for (const Module::Named& n : m.named_tensors())
    if (n.name == name) return *n.tensor;
  throw Error("no tensor " + name);
}

TEST(Models, ParameterCountsMatchTheReference) {
  // REFERENCE.md's table: EmoNeXt at 224 x 224 with 7 classes.
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"tiny", 30564331}, {"small", 52198891}, {"base", 91765259}, {"large", 204582475}, {"xlarge", 362312331}};
  for (const auto& [size, count] : expected) {
    EmoNeXt model(convnext_size(size), 7, 224);
    EXPECT_EQ(model.num_parameters(), count) << size;
  }
}

TEST(Models, StateDictNamesAreTheReferences) {
  EmoNeXt model(convnext_size("atto"), 7, 48);
  const std::set<std::string> n = names(model);
  for (const char* key : {"downsample_layers.0.0.weight", "downsample_layers.0.1.bias", "downsample_layers.1.0.weight",
                          "downsample_layers.1.1.weight", "downsample_layers.2.2.fc.0.weight", "downsample_layers.3.2.fc.2.weight",
                          "stages.1.0.dwconv.weight", "stages.2.5.pwconv1.bias", "stages.3.1.gamma", "norm.weight", "head.bias",
                          "localization.0.weight", "localization.1.running_mean", "localization.5.num_batches_tracked",
                          "localization.4.bias", "fc_loc.0.weight", "fc_loc.2.bias", "attention.norm.weight",
                          "attention.query.bias", "attention.key.weight", "attention.value.weight"})
    EXPECT_TRUE(n.count(key)) << key;
  EXPECT_FALSE(n.count("downsample_layers.0.2.fc.0.weight"));  // no SE after the stem
  EXPECT_FALSE(n.count("stages.2.6.gamma"));                    // atto's stage 2 has 6 blocks
  // Shapes in PyTorch's layouts; the STN's flatten size from the image size (48 -> 10 x 8 x 8).
  EXPECT_EQ(tensor(model, "stages.0.0.dwconv.weight").shape(), (Shape{40, 1, 7, 7}));
  EXPECT_EQ(tensor(model, "downsample_layers.1.1.weight").shape(), (Shape{80, 40, 2, 2}));
  EXPECT_EQ(tensor(model, "fc_loc.0.weight").shape(), (Shape{32, 640}));
  EXPECT_EQ(tensor(model, "downsample_layers.3.2.fc.0.weight").shape(), (Shape{20, 320}));
  EXPECT_EQ(tensor(model, "localization.1.num_batches_tracked").dtype(), DType::I64);
  EXPECT_EQ(SpatialTransformer::feature_size(224), 52);
}

TEST(Models, UnknownSizeNamesTheKnownOnes) {
  try {
    convnext_size("medium");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("atto, femto, pico, nano, tiny, small, base, large, xlarge"), std::string::npos);
  }
}

TEST(Models, InitIsTheReferences) {
  EmoNeXt model(convnext_size("atto"), 7, 48);
  Generator gen(3);
  init_weights(model, gen);
  EXPECT_EQ(tensor(model, "fc_loc.2.bias").to_vector(), (std::vector<double>{1, 0, 0, 0, 1, 0}));
  EXPECT_EQ(tensor(model, "fc_loc.2.weight").to_vector(), std::vector<double>(6 * 32, 0.0));
  EXPECT_FLOAT_EQ(float(tensor(model, "stages.2.3.gamma").to_vector()[5]), 1e-6f);
  EXPECT_EQ(tensor(model, "attention.norm.weight").to_vector(), std::vector<double>(320, 1.0));
  EXPECT_EQ(tensor(model, "localization.1.running_var").to_vector(), std::vector<double>(8, 1.0));
  double s2 = 0;
  const std::vector<double> v = tensor(model, "stages.3.1.pwconv2.weight").to_vector();
  for (double x : v) s2 += x * x;
  EXPECT_NEAR(std::sqrt(s2 / double(v.size())), 0.02, 0.001);  // std 0.02
  // The identity STN leaves an image as it is (align_corners sampling at the pixel centres).
  model.eval();
  Generator g2(4);
  const Tensor x = rand({2, 48, 48, 3}, g2);
  expect_close(model.stn.forward(x), x, 1e-5, "identity STN");
}

TEST(Models, ForwardBackwardShapesAndEveryParameterGetsAGradient) {
  EmoNeXt model(convnext_size("atto"), 7, 48);
  Generator gen(5);
  init_weights(model, gen);
  const Tensor x = rand({3, 48, 48, 3}, gen);
  const Tensor labels = Tensor::from_ints({0, 3, 6}, {3});
  const EmoNeXtOutput out = model.forward(x);
  EXPECT_EQ(out.logits.shape(), (Shape{3, 7}));
  EXPECT_EQ(out.attention.shape(), (Shape{3, 3}));
  emonext_loss(out, labels).backward();
  for (const Module::Named& p : model.named_parameters()) {
    if (p.name.starts_with("attention.value.")) EXPECT_FALSE(p.tensor->grad().defined()) << p.name;  // unused, as the reference
    else EXPECT_TRUE(p.tensor->grad().defined()) << p.name;
  }
  model.zero_grad();
  EXPECT_FALSE(model.head.weight.grad().defined());
}

TEST(Models, BatchNormCountsBatchesInTrainModeOnly) {
  BatchNorm2d bn(4);
  Generator gen(6);
  const Tensor x = randn({2, 3, 3, 4}, gen);
  bn.forward(x);
  bn.forward(x);
  EXPECT_EQ(bn.num_batches_tracked.item(), 2.0);
  bn.eval();
  bn.forward(x);
  EXPECT_EQ(bn.num_batches_tracked.item(), 2.0);
}

TEST(Models, DropPathZeroesWholeSamplesAndRescalesTheRest) {
  Generator gen(7);
  const Tensor x = Tensor::ones({1000, 2, 2, 3});
  const std::vector<double> y = drop_path(x, 0.25, true, gen).to_vector();
  int64_t dropped = 0;
  for (int64_t n = 0; n < 1000; ++n) {
    const double first = y[size_t(n * 12)];
    for (int64_t k = 1; k < 12; ++k) ASSERT_EQ(y[size_t(n * 12 + k)], first);  // per sample
    if (first == 0) ++dropped;
    else ASSERT_NEAR(first, 1 / 0.75, 1e-6);
  }
  EXPECT_NEAR(double(dropped) / 1000, 0.25, 0.05);
  expect_close(drop_path(x, 0.25, false, gen), x, 0, "eval mode is the identity");
}

TEST(Models, ToMovesDtypeButKeepsTheCounterAndTheGradFlag) {
  EmoNeXt model(convnext_size("atto"), 7, 48);
  model.to(DType::F64);
  for (const Module::Named& t : model.named_tensors()) {
    if (t.name.ends_with("num_batches_tracked")) EXPECT_EQ(t.tensor->dtype(), DType::I64);
    else EXPECT_EQ(t.tensor->dtype(), DType::F64) << t.name;
  }
  for (const Module::Named& p : model.named_parameters()) EXPECT_TRUE(p.tensor->requires_grad()) << p.name;
}

}  // namespace
}  // namespace emonext::test

#include "models/checkpoint.h"

namespace emonext::test {
namespace {

TEST(Checkpoint, RoundTripsEveryTensorAndTheMetadata) {
  EmoNeXt a(convnext_size("atto"), 7, 48);
  Generator gen(8);
  init_weights(a, gen);
  a.train();
  a.forward(rand({2, 48, 48, 3}, gen));  // moves the BatchNorm statistics and counters
  const ScratchDir dir("checkpoint_roundtrip");
  const std::string path = dir + "/roundtrip.safetensors";
  save_checkpoint(path, a, fer2013_labels(), {{"epoch", "3"}});
  CheckpointInfo info;
  const std::unique_ptr<EmoNeXt> b = load_emonext(path, &info);
  EXPECT_EQ(info.model, "atto");
  EXPECT_EQ(info.classes, 7);
  EXPECT_EQ(info.image_size, 48);
  EXPECT_EQ(info.labels, fer2013_labels());
  EXPECT_EQ(info.metadata.at("epoch"), "3");
  EXPECT_EQ(info.metadata.at("format"), "emonext");
  const std::vector<Module::Named> ta = a.named_tensors(), tb = b->named_tensors();
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_EQ(ta[i].name, tb[i].name);
    EXPECT_EQ(ta[i].tensor->to_vector(), tb[i].tensor->to_vector()) << ta[i].name;
  }
  EXPECT_EQ(tensor(*b, "localization.1.num_batches_tracked").item(), 1.0);
  EXPECT_FALSE(b->training());
}

TEST(Checkpoint, StrictLoadingRefusesAndChangesNothing) {
  EmoNeXt model(convnext_size("atto"), 7, 48);
  std::vector<std::pair<std::string, Tensor>> good;
  for (const Module::Named& t : model.named_tensors()) good.emplace_back(t.name, Tensor::full(t.tensor->shape(), 0.5, t.tensor->dtype()));
  const std::vector<double> before = model.head.weight.to_vector();
  auto expect_refused = [&](std::vector<std::pair<std::string, Tensor>> tensors, const std::string& says) {
    try {
      load_state(model, tensors, "test.safetensors");
      ADD_FAILURE() << "accepted; expected: " << says;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
    EXPECT_EQ(model.head.weight.to_vector(), before) << "a refused load changed the model";
  };
  auto missing = good;
  missing.erase(missing.begin() + 5);
  expect_refused(missing, "missing tensor(s): " + good[5].first);
  auto extra = good;
  extra.emplace_back("head.extra", Tensor::zeros({1}));
  expect_refused(extra, "unexpected tensor(s): head.extra");
  auto wrong = good;
  for (auto& [name, t] : wrong)
    if (name == "head.weight") t = Tensor::zeros({1000, 320});
  expect_refused(wrong, "shape mismatch: head.weight [1000, 320] (the model's is [7, 320])");
  load_state(model, good, "test.safetensors");
  EXPECT_EQ(model.head.weight.to_vector(), std::vector<double>(7 * 320, 0.5));
  EXPECT_TRUE(model.head.weight.requires_grad());
}

TEST(Checkpoint, AFileWithoutOurMetadataIsAClearError) {
  const ScratchDir dir("checkpoint_plain");
  const std::string path = dir + "/plain.safetensors";
  save_safetensors(path, {{"head.weight", Tensor::zeros({7, 4})}});
  try {
    load_emonext(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not an EmoNeXt checkpoint"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace emonext::test
