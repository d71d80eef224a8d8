// The emulation build catches the bugs that blind-written kernels have: each
// planted bug is caught and its correct twin passes. Also: launch limits, warp
// operations on a block that is not a multiple of 32, thread orders.
#include <gtest/gtest.h>

#include <cmath>

#include <cuda_runtime.h>

#include "core/base/error.h"
#include "kernels/cuda/emulation/scheduler.h"
#include "tests/emulation/planted_bugs.h"

namespace emonext::test {
namespace {

using namespace planted;

std::vector<float> iota(size_t n, float start = 1.0f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + float(i);
  return v;
}

// Runs f under a thread order, restoring the default after.
template <class F>
auto with_order(emu::Order order, F f) {
  const emu::Schedule saved = emu::schedule();
  emu::set_schedule({order, 7});
  auto r = f();
  emu::set_schedule(saved);
  return r;
}

// Equal element for element, NaN equal to NaN (a plain == would call any NaN a difference).
bool same_values(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

// ---- 1. an out-of-bounds write: AddressSanitizer reports it ----
TEST(EmulationPlantedBug, OffByOneWriteIsReportedByAddressSanitizer) {
#if defined(__SANITIZE_ADDRESS__)
  EXPECT_DEATH(shift_copy(iota(100), true), "heap-buffer-overflow");
#else
  GTEST_SKIP() << "needs the sanitizer build (-DEMONEXT_SANITIZE=ON), which CI runs";
#endif
}

TEST(EmulationPlantedBug, OffByOneTwinIsCorrect) {
  const std::vector<float> out = shift_copy(iota(100), false);
  EXPECT_EQ(out[0], 0.0f);
  for (size_t i = 1; i < 100; ++i) EXPECT_EQ(out[i], float(i));
}

// ---- 2. a missing barrier: the result depends on the thread order ----
TEST(EmulationPlantedBug, MissingBarrierChangesWithThreadOrder) {
  const std::vector<float> in = iota(256);
  std::vector<float> expected(in.rbegin(), in.rend());
  const auto forward = with_order(emu::Order::Forward, [&] { return reverse_block(in, true); });
  const auto reverse = with_order(emu::Order::Reverse, [&] { return reverse_block(in, true); });
  EXPECT_FALSE(same_values(forward, expected) && same_values(reverse, expected)) << "the race went unseen in both orders";
  EXPECT_FALSE(same_values(forward, reverse)) << "the two thread orders gave the same result";
}

TEST(EmulationPlantedBug, MissingBarrierTwinIsOrderIndependent) {
  const std::vector<float> in = iota(256);
  const std::vector<float> expected(in.rbegin(), in.rend());
  for (emu::Order order : {emu::Order::Forward, emu::Order::Reverse, emu::Order::Shuffle})
    EXPECT_TRUE(same_values(with_order(order, [&] { return reverse_block(in, false); }), expected));
}

// ---- 3. a read of shared memory nobody wrote: it reads the NaN pattern ----
TEST(EmulationPlantedBug, UninitialisedSharedReadGivesNaN) {
  EXPECT_TRUE(std::isnan(sum_shared(iota(48), true)));
}

TEST(EmulationPlantedBug, UninitialisedSharedTwinSumsCorrectly) {
  EXPECT_EQ(sum_shared(iota(48), false), 48.0f * 49.0f / 2.0f);
}

// ---- a thread that skips a barrier: a deadlock report, not a hang ----
TEST(EmulationPlantedBug, SkippedBarrierIsReportedAsDeadlock) {
  try {
    early_exit(true);
    ADD_FAILURE() << "no deadlock reported";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("deadlock"), std::string::npos) << m;
    EXPECT_NE(m.find("early_exit_broken"), std::string::npos) << m;
    EXPECT_NE(m.find("63 thread(s) wait at __syncthreads"), std::string::npos) << m;
  }
  EXPECT_NO_THROW(early_exit(false));
}

// ---- launch limits as on the device ----
TEST(Emulation, LaunchOverTheDeviceLimitsFails) {
  EXPECT_NO_THROW(launch_with(1024, 4096, false));
  try {
    launch_with(1025, 4100, false);
    ADD_FAILURE() << "a block of 1025 threads launched";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("uses_dynamic_shared"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("invalid configuration"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(launch_with(256, 48 * 1024, false));
  EXPECT_THROW(launch_with(256, 64 * 1024, false), Error);  // over the 48 KiB default
  EXPECT_NO_THROW(launch_with(256, 64 * 1024, true));       // after opting in
  EXPECT_THROW(launch_with(256, 228 * 1024, true), Error);  // over the 227 KiB opt-in ceiling
}

// ---- warp operations, on a block of 48 threads: one full warp and one of 16 lanes ----
TEST(Emulation, WarpOperationsFollowLaneSemantics) {
  const size_t n = 48;
  const std::vector<float> in = iota(n, 100.0f);
  for (emu::Order order : {emu::Order::Forward, emu::Order::Reverse, emu::Order::Shuffle}) {
    const std::vector<double> out = with_order(order, [&] { return warp_ops(in); });
    for (size_t t = 0; t < n; ++t) {
      const size_t warp = t / 32, lane = t % 32, lanes = std::min<size_t>(32, n - warp * 32);
      auto at = [&](size_t l) { return double(in[warp * 32 + l]); };
      unsigned ballot = 0;
      for (size_t l = 0; l < lanes; l += 2) ballot |= 1u << l;
      // A source lane outside the warp (or past its last lane) leaves the value unchanged.
      EXPECT_EQ(out[t * 6 + 0], lane >= 1 ? at(lane - 1) : at(lane)) << "shfl_up t=" << t;
      EXPECT_EQ(out[t * 6 + 1], lane + 1 < lanes ? at(lane + 1) : at(lane)) << "shfl_down t=" << t;
      EXPECT_EQ(out[t * 6 + 2], (lane ^ 1) < lanes ? at(lane ^ 1) : at(lane)) << "shfl_xor t=" << t;
      EXPECT_EQ(out[t * 6 + 3], double(float(ballot))) << "ballot t=" << t;
      EXPECT_EQ(out[t * 6 + 4], lanes > 3 ? 1.0 : 0.0) << "any t=" << t;
      EXPECT_EQ(out[t * 6 + 5], 1.0) << "all t=" << t;
    }
  }
}

TEST(Emulation, IntrinsicsAndVectorTypes) {
  const std::vector<double> r = intrinsics(1.7f);
  EXPECT_FLOAT_EQ(float(r[0]), 1.0f / std::sqrt(1.7f));
  EXPECT_FLOAT_EQ(float(r[1]), std::exp(1.7f));
  EXPECT_FLOAT_EQ(float(r[2]), std::log(1.7f));
  EXPECT_EQ(float(r[3]), 1.703125f);   // 1.7 rounded to bf16 (8 significant bits)
  EXPECT_EQ(float(r[4]), 1.7001953125f);  // 1.7 rounded to f16 (11 significant bits)
  EXPECT_FLOAT_EQ(float(r[5]), 17.0f);
  EXPECT_EQ(r[6], 8.0);
  EXPECT_EQ(r[7], double(0x3f800000));
}

TEST(Emulation, ReportsAnH100LikeDevice) {
  cudaDeviceProp p;
  ASSERT_EQ(cudaGetDeviceProperties(&p, 0), cudaSuccess);
  EXPECT_EQ(p.multiProcessorCount, 132);
  EXPECT_EQ(p.sharedMemPerBlock, size_t(48 * 1024));
  EXPECT_EQ(p.sharedMemPerBlockOptin, size_t(227 * 1024));
  EXPECT_EQ(p.maxThreadsPerBlock, 1024);
  EXPECT_EQ(p.warpSize, 32);
  EXPECT_EQ(p.major, 9);
  int n = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  EXPECT_EQ(n, 1);
  EXPECT_EQ(cudaSetDevice(1), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // reading the error clears it
}

}  // namespace
}  // namespace emonext::test
