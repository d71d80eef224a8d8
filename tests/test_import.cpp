// Pretrained weights in: the three ConvNeXt naming schemes and EmoNeXt's own
// checkpoints give the same model, the backbone bit for bit, the logits PyTorch
// gives with the same weights, and every refusal names its cause and writes nothing.
// The weight files (15 MB each) are made at test time by the PyTorch twin, in the three
// schemes' names; files that the real timm and torchvision wrote are read at the end
// (their names always, their values where the PyTorch 2 environment is installed).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

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

// ---- Files the real timm and torchvision wrote ------------------------------------------

// The prefix of the ImageNet head's tensors in a timm or torchvision state dict: what the
// importer leaves out.
std::string imagenet_head(const std::string& scheme) { return scheme == "timm" ? "head.fc." : "classifier.2."; }

// The names, dtypes and shapes of timm's convnext_atto and convnext_tiny and of
// torchvision's convnext_tiny state dicts, as the libraries gave them
// (tests/fixtures/library_names.txt, from tools/reference/library_weights.py --names),
// imported as zeros: every tensor finds its place, the head is all that is left, and
// the scheme and size are recognised. This needs no PyTorch at all.
TEST(Import, TheLibrariesOwnNamesAndShapesMapOntoTheModel) {
  std::map<std::pair<std::string, std::string>, std::vector<std::pair<std::string, Tensor>>> models;
  std::ifstream in(fixture_path("library_names.txt"));
  ASSERT_TRUE(in) << fixture_path("library_names.txt");
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string scheme, size, name, dtype, dims;
    ASSERT_TRUE(words >> scheme >> size >> name >> dtype >> dims) << line;
    ASSERT_EQ(dtype, "float32") << line;
    Shape shape;
    for (std::istringstream d(dims); std::getline(d, dims, ',');) shape.push_back(std::stoll(dims));
    models[{scheme, size}].emplace_back(name, Tensor::zeros(shape));
  }
  ASSERT_EQ(models.size(), 3u);
  for (const auto& [which, tensors] : models) {
    const auto& [scheme, size] = which;
    ImportReport r;
    const auto model = import_pretrained(tensors, scheme + " " + size, WeightSource::Auto, "", 7, 64, 0, r);
    EXPECT_STREQ(weight_source_name(r.source), scheme.c_str());
    EXPECT_EQ(r.size, size) << scheme;
    EXPECT_EQ(r.loaded.size() + r.ignored.size(), tensors.size()) << scheme << " " << size;
    const std::string head = imagenet_head(scheme);
    EXPECT_EQ(r.ignored, (std::vector<std::string>{head + "weight", head + "bias"})) << scheme << " " << size;
    // What the file lacks is EmoNeXt's own: the spatial transformer, SE, attention, the new head.
    for (const std::string& n : r.initialised) {
      EXPECT_TRUE(n.starts_with("localization.") || n.starts_with("fc_loc.") ||
                  (n.starts_with("downsample_layers.") && n.find(".2.") != std::string::npos) ||
                  n.starts_with("attention.") || n.starts_with("head."))
          << scheme << " " << size << " left " << n << " to the initialisation";
    }
  }
}

// Writes the files with the real libraries once per test process (tests/test_import.cpp's
// other files come from the twin on Debian's PyTorch 1.13): empty with the reason in
// `missing` where the PyTorch 2 environment is not there. A script that fails where it
// is there is a failure, not a skip.
struct LibraryFiles {
  std::string dir, missing, failure;
};

const LibraryFiles& library_files() {
  static const ScratchDir folder("library_weights");
  static const LibraryFiles files = [] {
    const char* env = std::getenv("EMONEXT_PYTORCH2_PYTHON");
    const std::string python = env ? env : std::string(EMONEXT_SOURCE_DIR) + "/.venv-pytorch2/bin/python";
    if (!std::filesystem::exists(python)) {
      return LibraryFiles{"", "needs PyTorch 2 with timm and torchvision at " + python +
                                  " (tools/reference/setup_pytorch2.sh makes it, or set EMONEXT_PYTORCH2_PYTHON)", ""};
    }
    int code = 0;
    const std::string out = run_command(
        python + " " + EMONEXT_SOURCE_DIR + "/tools/reference/library_weights.py " + folder.path() + " 2>&1", &code);
    return code == 0 ? LibraryFiles{folder.path(), "", ""} : LibraryFiles{"", "", out};
  }();
  return files;
}

#define REQUIRE_LIBRARY_FILES()                                              \
  if (library_files().dir.empty() && library_files().failure.empty())         \
    GTEST_SKIP() << library_files().missing;                                 \
  ASSERT_TRUE(library_files().failure.empty()) << "library_weights.py failed:\n" << library_files().failure

// convnext_import takes FILE; its backbone, put into a bare ConvNeXt with the file's own
// ImageNet head, must give the library's own logits (`logits_of` in logits.safetensors)
// on the library's images.
void expect_the_librarys_logits(const std::string& file, const std::string& scheme, const std::string& size,
                                const std::string& logits_of) {
  const std::string d = library_files().dir, path = d + "/" + file, ckpt = path + ".engine.safetensors";
  std::string out;
  ASSERT_EQ(run_tool(EMONEXT_CONVNEXT_IMPORT, "--in " + path + " --out " + ckpt + " --img-size 64", &out), 0) << out;
  EXPECT_NE(out.find("source: " + scheme + " (detected"), std::string::npos) << out;
  EXPECT_NE(out.find("EmoNeXt-" + size + " (detected"), std::string::npos) << out;
  const auto imported = load_emonext(ckpt);
  ConvNeXt bare(convnext_size(size), 1000);
  std::set<std::string> wanted;
  for (const Module::Named& t : bare.named_tensors()) wanted.insert(t.name);
  std::vector<std::pair<std::string, Tensor>> state;
  for (const Module::Named& t : imported->named_tensors()) {
    if (wanted.contains(t.name) && !t.name.starts_with("head.")) state.emplace_back(t.name, *t.tensor);
  }
  const std::string head = imagenet_head(scheme);
  for (const auto& [name, t] : read_weight_file(path)) {
    if (name.starts_with(head)) state.emplace_back("head." + name.substr(head.size()), t);
  }
  load_state(bare, state, path);
  bare.eval();
  const Tensor images = load_safetensors(d + "/images.safetensors").at("images").permute({0, 2, 3, 1}).contiguous();
  const Tensor want = load_safetensors(d + "/logits.safetensors").at(logits_of);
  double largest = 0;
  for (double v : want.to_vector()) largest = std::max(largest, std::fabs(v));
  EXPECT_GT(largest, 0.1) << file << ": logits this small would hide a wrong tensor";
  expect_rel(bare.forward(images), want, 1e-4, file, 1.0);  // within 1e-4 of max(1, the largest logit)
}

TEST(Import, FilesTimmWroteGiveTimmsLogits) {
  REQUIRE_LIBRARY_FILES();
  // atto keeps its MLP as 1x1 convolutions (timm's conv_mlp), tiny as Linear layers.
  for (const std::string size : {"atto", "tiny"}) {
    expect_the_librarys_logits("timm_" + size + "/model.safetensors", "timm", size, "timm_" + size);
    expect_the_librarys_logits("timm_" + size + "/pytorch_model.bin", "timm", size, "timm_" + size);
  }
}

TEST(Import, FilesTorchvisionWroteGiveTorchvisionsLogits) {
  REQUIRE_LIBRARY_FILES();
  expect_the_librarys_logits("torchvision.pth", "torchvision", "tiny", "torchvision");
}

}  // namespace
}  // namespace emonext::test
