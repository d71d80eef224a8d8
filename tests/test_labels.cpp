// Every test that runs device code has gpu in its ctest label (or is in the cuda suite or
// the emulation's checks), so that the GPU check (ctest -L "cuda|gpu") and CI's emulation
// stage run it whatever it is called. tests/CMakeLists.txt gives the label by name (a test
// whose name holds Cuda, Gpu or Device) and tells each test its label in
// EMONEXT_TEST_LABEL; this listener, linked into every test program, fails a test that ran
// kernels on a device or asked for one (REQUIRE_GPU) under ctest without it: renamed, it
// gets it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/device.h"
#include "tests/test_util.h"

namespace emonext::test {

namespace {

bool g_asked_for_gpu = false;

class DeviceTestsHaveTheGpuLabel : public testing::EmptyTestEventListener {
  void OnTestStart(const testing::TestInfo&) override {
    g_asked_for_gpu = false;
    launches_ = gpu_launches();
  }
  void OnTestEnd(const testing::TestInfo& info) override {
    const char* label = std::getenv("EMONEXT_TEST_LABEL");
    if (!label) return;  // not run by ctest
    for (const char* device : {"gpu", "cuda", "emulation"})
      if (std::string(label).find(device) != std::string::npos) return;
    const bool ran_kernels = gpu_launches() != launches_;
    if (!ran_kernels && !g_asked_for_gpu) return;
    ADD_FAILURE() << info.test_suite_name() << "." << info.name() << " " << (ran_kernels ? "ran kernels on a GPU" : "asked for a GPU")
                  << " but its ctest label is '" << label
                  << "': a test that runs device code has Cuda, Gpu or Device in its name, which adds gpu to its label "
                     "(tests/CMakeLists.txt)";
  }
  uint64_t launches_ = 0;
};

const bool g_registered = [] {
  testing::UnitTest::GetInstance()->listeners().Append(new DeviceTestsHaveTheGpuLabel);
  return true;
}();

}  // namespace

void note_gpu_test() { g_asked_for_gpu = true; }

}  // namespace emonext::test
