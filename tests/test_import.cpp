// Pretrained weights in: the three ConvNeXt naming schemes and EmoNeXt's own
// checkpoints give the same model, the backbone bit for bit, the logits PyTorch
// gives with the same weights, and every refusal names its cause and writes nothing.
// The weight files (15 MB each) are made at test time by the PyTorch twin.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <sys/wait.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "models/checkpoint.h"
#include "models/pretrained.h"
#include "tests/op_cases.h"
#include "tests/test_util.h"

namespace emonext::test {
namespace {

// The folder of twin-made files, made once per test process (ctest runs each test in
// its own, in parallel: the folder is the process's) and removed at exit; empty when
// PyTorch is missing.
const std::string& pretrained_dir() {
  static const ScratchDir folder("pretrained");
  static const std::string dir =
      have_reference_torch() && run_twin("pretrained " + folder + " >/dev/null") == 0 ? folder.path() : std::string();
  return dir;
}

#define REQUIRE_TWIN_FILES()                                                                                          \
  if (pretrained_dir().empty())                                                                                       \
  GTEST_SKIP() << "needs /usr/bin/python3 with torch to write the weight files (Debian's python3-torch; tools/setup.sh " \
                  "--tests installs it)"

std::unique_ptr<EmoNeXt> import(const std::string& file, ImportReport& r, const std::string& size = "") {
  return import_pretrained(pretrained_dir() + "/" + file, WeightSource::Auto, size, 7, 48, 1, r);
}

void expect_same_model(Module& a, Module& b, double tol, const std::string& what) {
  const auto ta = a.named_tensors(), tb = b.named_tensors();
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    const std::vector<double> x = ta[i].tensor->to_vector(), y = tb[i].tensor->to_vector();
    double worst = 0;
    for (size_t k = 0; k < x.size(); ++k) worst = std::max(worst, std::fabs(x[k] - y[k]) / (1 + std::fabs(y[k])));
    EXPECT_LE(worst, tol) << what << ": " << ta[i].name;
  }
}

TEST(Import, TheThreeConvNeXtSchemesGiveTheSameModel) {
  REQUIRE_TWIN_FILES();
  ImportReport fb;
  auto reference = import("facebook.pth", fb);
  EXPECT_EQ(fb.source, WeightSource::Facebook);
  EXPECT_TRUE(fb.source_detected && fb.size_detected);
  EXPECT_EQ(fb.size, "atto");
  EXPECT_EQ(fb.loaded.size(), 126u);
  EXPECT_EQ(fb.ignored, (std::vector<std::string>{"head.weight", "head.bias"}));
  // The backbone is the file's, bit for bit.
  const SafeTensors original = load_safetensors(pretrained_dir() + "/original.safetensors");
  for (const Module::Named& t : reference->named_tensors()) {
    if (original.contains(t.name) && !t.name.starts_with("head.")) {
      EXPECT_EQ(t.tensor->to_vector(), original.at(t.name).to_vector()) << t.name;
    }
  }
  for (const auto& [file, source] : std::vector<std::pair<std::string, WeightSource>>{
           {"model.safetensors", WeightSource::Timm}, {"pytorch_model.bin", WeightSource::Timm}, {"torchvision.pth", WeightSource::Torchvision}}) {
    ImportReport r;
    auto m = import(file, r);
    EXPECT_EQ(r.source, source) << file;
    EXPECT_EQ(r.loaded.size(), 126u) << file;
    EXPECT_EQ(r.ignored.size(), 2u) << file;
    expect_same_model(*m, *reference, 0, file);  // same seed, same file values: identical
  }
  ImportReport half;
  auto m16 = import("facebook_f16.pth", half);
  expect_same_model(*m16, *reference, 1e-3, "f16 source");  // f16 rounding of the same values
}

TEST(Import, ImportedWeightsGivePyTorchsLogits) {
  REQUIRE_TWIN_FILES();
  ImportReport r;
  auto model = import("torchvision.pth", r);
  model->eval();
  Generator gen(2);
  const Tensor images = rand({2, 48, 48, 3}, gen);
  const Tensor logits = model->forward(images).logits;
  const std::string d = pretrained_dir(), ckpt = d + "/imported.safetensors";
  save_checkpoint(ckpt, *model, fer2013_labels());
  save_safetensors(d + "/in.safetensors", {{"images", images.permute({0, 3, 1, 2}).contiguous()}});
  save_safetensors(d + "/out.safetensors", {{"logits", logits.detach()}});
  const std::string args = "check " + ckpt + " " + d + "/in.safetensors " + d + "/out.safetensors";
  EXPECT_EQ(run_twin(args), 0) << args;
}

TEST(Import, EmoNeXtCheckpointsModelAndEmaForms) {
  REQUIRE_TWIN_FILES();
  ImportReport a, b;
  auto m1 = import("emonext.pth", a);
  auto m2 = import("emonext_ema.pth", b);
  EXPECT_EQ(a.source, WeightSource::EmoNeXt);
  EXPECT_TRUE(a.initialised.empty());
  EXPECT_EQ(a.loaded.size(), m1->named_tensors().size());
  expect_same_model(*m1, *m2, 0, "ema form");
}

void expect_refusal(const std::string& file, const std::string& says, const std::string& size = "") {
  ImportReport r;
  try {
    import(file, r, size);
    ADD_FAILURE() << file << " imported; expected: " << says;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

TEST(Import, RefusalsNameTheirCause) {
  REQUIRE_TWIN_FILES();
  expect_refusal("missing.pth", "missing tensor(s) for a facebook atto checkpoint: stages.2.3.pwconv1.weight");
  expect_refusal("unexpected.pth", "unexpected tensor(s): stages.1.0.extra_thing");
  expect_refusal("mismatch.pth", "shape mismatch: stages.1.0.pwconv1.weight [320, 81] (the model's is [320, 80])");
  expect_refusal("facebook.pth", "holds ConvNeXt-atto weights, not tiny", "tiny");
  // Truncated: the first 100 kB of a good file.
  std::ifstream in(pretrained_dir() + "/facebook.pth", std::ios::binary);
  std::vector<char> head(100000);
  in.read(head.data(), std::streamsize(head.size()));
  std::ofstream(pretrained_dir() + "/truncated.pth", std::ios::binary).write(head.data(), std::streamsize(head.size()));
  expect_refusal("truncated.pth", "corrupt or truncated");
  ImportReport r;
  EXPECT_THROW(import_pretrained(fixture_path("torch_legacy.pt"), WeightSource::Auto, "", 7, 48, 0, r), Error);
}

TEST(Import, TheToolWritesNothingWhenItRefuses) {
  REQUIRE_TWIN_FILES();
  const std::string out = pretrained_dir() + "/refused.safetensors";
  std::filesystem::remove(out);
  const std::string cmd = std::string(EMONEXT_CONVNEXT_IMPORT) + " --in " + pretrained_dir() + "/mismatch.pth --out " + out +
                          " --img-size 48 >/dev/null 2>&1";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_FALSE(std::filesystem::exists(out));
  // A model too small to run (ConvNeXt needs 32 pixels): a usage error, before the file is read.
  const std::string small = std::string(EMONEXT_CONVNEXT_IMPORT) + " --in " + pretrained_dir() + "/model.safetensors --out " +
                            out + " --img-size 24 --model atto >/dev/null 2>&1";
  const int status = std::system(small.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status;
  EXPECT_FALSE(std::filesystem::exists(out));
  const std::string ok = std::string(EMONEXT_CONVNEXT_IMPORT) + " --in " + pretrained_dir() + "/model.safetensors --out " + out +
                         " --img-size 48 --model atto >/dev/null 2>&1";
  EXPECT_EQ(std::system(ok.c_str()), 0);
  CheckpointInfo info;
  load_emonext(out, &info);
  EXPECT_EQ(info.metadata.at("source"), "timm");
  EXPECT_EQ(info.image_size, 48);
}

}  // namespace
}  // namespace emonext::test
