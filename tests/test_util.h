// Comparison helpers for tests.
#pragma once
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "core/tensor.h"

// First line of every CUDA test: skips, saying why, where no GPU answers.
#define REQUIRE_GPU()                         \
  if (!::emonext::test::cuda_available()) GTEST_SKIP() << "no CUDA device answers: " << ::emonext::cuda_unavailable_reason()

// The PyTorch twin (tools/reference/emonext_twin.py) runs on Debian's python3-torch;
// tests that compare against it skip, saying so, where it is missing.
#define REQUIRE_REFERENCE_TORCH()          \
  if (!::emonext::test::have_reference_torch()) \
  GTEST_SKIP() << "needs /usr/bin/python3 with torch (Debian's python3-torch; tools/setup.sh --tests installs it)"

// The real FER2013 images, where CI lays them out: ../shared/fer2013 beside the checkout.
#define REQUIRE_FER2013()                                                                                          \
  if (!std::filesystem::is_directory(::emonext::test::fer2013_dir() + "/train") ||                                  \
      !std::filesystem::is_directory(::emonext::test::fer2013_dir() + "/val"))                                      \
  GTEST_SKIP() << "FER2013 is not at " << ::emonext::test::fer2013_dir() << " (see the README)"

namespace emonext::test {

// Says that the running test asked for a GPU (tests/test_labels.cpp).
void note_gpu_test();

// Whether a GPU answers, as a test asks it (the tests' unqualified cuda_available() is
// this one): a test that asks runs device code where one answers, so it must have gpu in
// its ctest label, which tests/test_labels.cpp checks on every machine, GPU or not.
inline bool cuda_available() {
  note_gpu_test();
  return ::emonext::cuda_available();
}

inline std::string fer2013_dir() { return std::string(EMONEXT_SOURCE_DIR) + "/../shared/fer2013"; }

inline bool have_reference_torch() {
  static const bool yes = std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
  return yes;
}

// Runs the twin with these arguments; its exit code.
inline int run_twin(const std::string& args) {
  const std::string cmd = std::string("/usr/bin/python3 ") + EMONEXT_SOURCE_DIR + "/tools/reference/emonext_twin.py " + args;
  return std::system(cmd.c_str());
}

// Runs a shell command and returns what it printed (add 2>&1 to include stderr); its
// exit code goes to *code (-1 when it did not exit normally).
inline std::string run_command(const std::string& cmd, int* code) {
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = pclose(p);
  *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

// One of the project's tools (its path) with these arguments: its exit code, and what it
// printed on stdout and stderr in *output.
inline int run_tool(const std::string& tool, const std::string& args, std::string* output) {
  int code = 0;
  *output = run_command(tool + " " + args + " 2>&1", &code);
  return code;
}

// An environment variable set for the scope (and the commands it runs), then unset.
struct ScopedEnv {
  ScopedEnv(const char* variable, const std::string& value) : name(variable) { setenv(name, value.c_str(), 1); }
  ~ScopedEnv() { unsetenv(name); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  const char* name;
};

// How many times `piece` occurs in `text` (overlapping occurrences counted).
inline size_t occurrences(const std::string& text, const std::string& piece) {
  size_t n = 0;
  for (size_t at = text.find(piece); at != std::string::npos; at = text.find(piece, at + 1)) ++n;
  return n;
}

// A file's bytes (none when it cannot be read).
inline std::vector<char> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// A folder of the test's own under gtest's TempDir (TEST_TMPDIR, else /tmp), named
// emonext_<name>_<pid> so that tests running side by side never share one, emptied when
// made and removed with everything in it when the object goes. Set
// EMONEXT_KEEP_TEST_FILES=1 to keep it for a post-mortem.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(::testing::TempDir() + "/emonext_" + name + "_" + std::to_string(::getpid())) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;  // a destructor must not throw; a leftover folder is harmless
    if (!std::getenv("EMONEXT_KEEP_TEST_FILES")) std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  // Reads as the path it names: dir + "/file", "--out " + dir, f(dir).
  const std::string& path() const { return path_; }
  operator const std::string&() const { return path_; }
  friend std::string operator+(const ScratchDir& d, const std::string& s) { return d.path_ + s; }
  friend std::string operator+(const std::string& s, const ScratchDir& d) { return s + d.path_; }

 private:
  std::string path_;
};

// Runs f, expects emonext::Error, and returns its message.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no emonext::Error was thrown";
  return "";
}

// Runs f and expects an emonext::Error whose message contains `says`.
template <class F>
void expect_error(F f, const std::string& says) {
  const std::string m = error_of(f);
  EXPECT_NE(m.find(says), std::string::npos) << "expected an error saying: " << says << "\ngot: " << m;
}

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

// The op that made y, past the reshapes that restore its shape ("" for no node).
inline std::string producing_op(const Tensor& y) {
  const Node* node = y.grad_fn().get();
  while (node && node->name == "reshape" && !node->next.empty()) node = node->next[0].get();
  return node ? node->name : "";
}

// gelu_mlp (tanh GELU) on copies of x, w1, b1, w2 with the GEMM epilogues on or off: its
// output, then the four gradients for the output's gradient dy, and the name of the op
// that made the output ("gelu_mlp" when fused; the unfused path ends in "linear").
struct GeluMlpRun {
  std::vector<Tensor> values;  // y, dx, dw1, db1, dw2
  std::string op;
};
inline GeluMlpRun run_gelu_mlp(const std::vector<Tensor>& inputs, const Tensor& dy, bool epilogue) {
  std::vector<Tensor> in;
  for (const Tensor& t : inputs) in.push_back(t.detach().clone().set_requires_grad());
  const Tensor y = gelu_mlp(in[0], in[1], in[2], in[3], GeluApprox::Tanh, epilogue);
  GeluMlpRun r{{y.detach()}, producing_op(y)};
  y.backward(dy);
  for (const Tensor& t : in) r.values.push_back(t.grad());
  return r;
}

// max |a - b| <= tol * max |b| (or tol * min_scale when that is larger): the error
// against the tensor's scale, for sums whose small elements are made of large terms.
inline void expect_rel(const Tensor& actual, const Tensor& expected, double tol, const std::string& what, double min_scale = 0) {
  const std::vector<double> a = actual.to_vector(), b = expected.to_vector();
  ASSERT_EQ(a.size(), b.size()) << what;
  double err = 0, scale = min_scale;
  size_t at = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(b[i]));
    if (!(std::fabs(a[i] - b[i]) <= err)) { err = std::fabs(a[i] - b[i]); at = i; }
  }
  EXPECT_LE(err, tol * scale) << what << ": element " << at << " is " << a[at] << ", expected " << b[at] << " (scale " << scale
                              << ")";
}

// Every gradient ("grad.NAME") of the reference `ref` against `ours`, within `tolerance`
// of its scale; a bias's scale is also its layer's weight gradient's, as in the parity
// tests (a bias's gradient can be all but zero where the weight's is not). Returns how
// many were compared.
inline int64_t expect_gradients_near(const SafeTensors& ours, const SafeTensors& ref, double tolerance) {
  int64_t grads = 0;
  for (const auto& [name, g] : ref.tensors) {
    if (!name.starts_with("grad.")) continue;
    ++grads;
    double floor = 0;
    if (name.ends_with(".bias") && ref.contains(name.substr(0, name.size() - 4) + "weight"))
      for (double v : ref.at(name.substr(0, name.size() - 4) + "weight").to_vector()) floor = std::max(floor, std::fabs(v));
    EXPECT_TRUE(ours.contains(name)) << name;
    if (ours.contains(name)) expect_rel(ours.at(name), g, tolerance, name, floor);
  }
  return grads;
}

}  // namespace emonext::test
