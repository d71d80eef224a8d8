// The CUDA backend against the CPU backend: every op case of the shared table
// in f32, bf16, f16 and f64, forward and backward; random fills; transfers;
// the memory pool; wrong-device errors; cuDNN's convolutions against the unfold
// path. Skips, saying why, where no GPU answers.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>
#if EMONEXT_WITH_NCCL && !EMONEXT_CUDA_EMULATION
#include <cuda_runtime.h>
#endif

#include "core/autograd.h"
#include "core/graph.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "core/staging.h"
#include "kernels/cuda/cudnn_conv.h"
#include "kernels/cuda/multi_tensor.cuh"
#include "kernels/cuda/nccl.h"
#include "kernels/cuda/runtime.h"
#include "models/emonext.h"
#include "tests/op_cases.h"
#include "tests/test_util.h"
#include "train/optim.h"
#if EMONEXT_CUDA_EMULATION
#include "kernels/cuda/emulation/scheduler.h"
#endif

namespace emonext::test {
namespace {

const Device kGpu = Device::cuda(0);

double tolerance(DType t) {
  switch (t) {
    case DType::F64: return 1e-10;
    case DType::F32: return 1e-4;
    case DType::F16: return 1e-2;
    default: return 5e-2;  // bf16: 8 mantissa bits
  }
}

class CudaOps : public ::testing::TestWithParam<std::tuple<OpCase, DType>> {};

TEST_P(CudaOps, MatchCpuForwardAndBackward) {
  REQUIRE_GPU();
  const auto& [c, dtype] = GetParam();
  if (c.name == "stn_sample" && (dtype == DType::BF16 || dtype == DType::F16))
    GTEST_SKIP() << "affine_grid + grid_sample in 16 bits rounds sample positions by ~0.4%, across pixel boundaries "
                    "where bilinear sampling has kinks, so theta's gradient is ill-conditioned; mixed precision runs "
                    "grid sampling in f32 (as PyTorch's autocast does), and grid_sample alone is tested in 16 bits";
  std::vector<Tensor> cpu_in, gpu_in;
  for (int i = 0; op_fixtures().contains(c.name + ".in" + std::to_string(i)); ++i) {
    const Tensor& t = op_fixtures().at(c.name + ".in" + std::to_string(i));
    // Both sides start from the same values: rounded to the tested dtype, so the comparison
    // measures the kernels' arithmetic and not the rounding of their inputs.
    Tensor a = t, b = is_floating(t.dtype()) ? t.to(dtype).to(kGpu) : t.to(kGpu);
    if (is_floating(t.dtype())) {
      a = t.to(dtype).to(DType::F64).detach().clone().set_requires_grad();
      b = b.detach().set_requires_grad();
    }
    cpu_in.push_back(a);
    gpu_in.push_back(b);
  }
  const Tensor want = c.fn(cpu_in), got = c.fn(gpu_in);
  ASSERT_EQ(got.device(), kGpu);
  ASSERT_EQ(got.dtype(), dtype);
  expect_close(got, want, tolerance(dtype), c.name + " forward");
  const Tensor w = op_fixtures().at(c.name + ".w").to(dtype).to(DType::F64);
  sum(mul(want, w)).backward();
  sum(mul(got, w.to(dtype).to(kGpu))).backward();
  for (size_t i = 0; i < cpu_in.size(); ++i) {
    if (!cpu_in[i].requires_grad()) continue;
    ASSERT_TRUE(gpu_in[i].grad().defined()) << c.name << " grad" << i;
    EXPECT_EQ(gpu_in[i].grad().device(), kGpu);
    expect_close(gpu_in[i].grad(), cpu_in[i].grad(), tolerance(dtype), c.name + " grad" + std::to_string(i));
  }
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<OpCase, DType>>& info) {
  return std::get<0>(info.param).name + "_" + dtype_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Ops, CudaOps,
                         ::testing::Combine(::testing::ValuesIn(op_cases()),
                                            ::testing::Values(DType::F32, DType::BF16, DType::F16, DType::F64)),
                         case_name);

// Conv2d on CUDA runs through cuDNN where it has the shape (patchify convolutions stay a
// GEMM); the unfold + cuBLAS path (the one the emulation build tests against the CPU) is
// the reference here. Shapes: the spatial transformer's two at 48x48 and at 224x224, a
// 3x3 one with tensor-core-friendly channels, and an odd one with stride and padding.
// f32 must go through cuDNN; 16-bit may fall back (C = 3 may have no kernel), as the log says.
TEST(Cuda, DenseConvolutionsThroughCudnnMatchTheUnfoldPath) {
  REQUIRE_GPU();
#if !EMONEXT_WITH_CUDNN || EMONEXT_CUDA_EMULATION
  GTEST_SKIP() << "this build has no cuDNN (the emulation build never has: cuDNN needs a real GPU)";
#endif
  struct Shape7 { int64_t n, h, w, cin, cout, k, stride, pad; };
  const std::vector<Shape7> shapes = {{8, 48, 48, 3, 8, 7, 1, 0},   {8, 21, 21, 8, 10, 5, 1, 0}, {4, 224, 224, 3, 8, 7, 1, 0},
                                      {4, 109, 109, 8, 10, 5, 1, 0}, {4, 28, 28, 64, 32, 3, 1, 1}, {1, 9, 7, 5, 7, 3, 2, 1}};
  struct Restore { ~Restore() { set_cudnn_convolutions(true); } } restore;
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    for (const Shape7& s : shapes) {
      const std::string what = detail::concat(dtype_name(t), " ", s.n, "x", s.h, "x", s.w, "x", s.cin, " -> ", s.cout, " k",
                                              s.k, " s", s.stride, " p", s.pad);
      const kernels::cuda::CudnnConv cp{t, s.n, s.h, s.w, s.cin, s.cout, s.k, s.k, s.stride, s.pad, 1, true};
      const bool cudnn = kernels::cuda::cudnn_conv_supported(cp);
      if (t == DType::F32) {
        EXPECT_TRUE(cudnn) << what << ": cuDNN offers no deterministic algorithm";
      }
      std::cout << what << ": " << (cudnn ? "cuDNN, " + kernels::cuda::cudnn_conv_algorithms(cp) : "unfold (no cuDNN algorithm)")
                << "\n";
      Generator gen(uint64_t(s.h * 131 + s.cout));
      const Tensor x = randn({s.n, s.h, s.w, s.cin}, gen, 0, 1, t, kGpu);
      const Tensor w = randn({s.cout, s.cin, s.k, s.k}, gen, 0, 1.0 / double(s.k * s.k * s.cin), t, kGpu);
      const Tensor b = randn({s.cout}, gen, 0, 0.1, t, kGpu);
      const Tensor dy = randn({s.n, cp.ho(), cp.wo(), s.cout}, gen, 0, 1, t, kGpu);
      auto run = [&](bool use_cudnn) {
        set_cudnn_convolutions(use_cudnn);
        const Tensor xi = x.detach().set_requires_grad(), wi = w.detach().set_requires_grad(), bi = b.detach().set_requires_grad();
        const Tensor y = conv2d(xi, wi, bi, s.stride, s.pad);
        sum(mul(y, dy)).backward();
        return std::vector<Tensor>{y.detach(), xi.grad(), wi.grad(), bi.grad()};
      };
      const std::vector<Tensor> want = run(false), got = run(true), again = run(true);
      const char* names[] = {"y", "dx", "dw", "db"};
      for (size_t i = 0; i < want.size(); ++i) {
        // Sums of up to K*K*Cin (forward) or N*Ho*Wo (weight) terms: compare against each
        // tensor's scale (at least 1), as the two paths sum in different orders.
        expect_rel(got[i], want[i], tolerance(t), what + " " + names[i], 1.0);
        EXPECT_EQ(again[i].to_vector(), got[i].to_vector()) << what << " " << names[i] << " differs between two runs";
      }
    }
  }
}

// A cuDNN call that fails as it runs (simulated: every call reports a failure while
// cudnn_inject_failures is on) does not stop training: the backward's gradients come from
// the unfold path, the failure is said once, and the shape takes the unfold path from
// then on, forward included.
TEST(Cuda, AFailingCudnnCallFallsBackToTheUnfoldPath) {
  REQUIRE_GPU();
#if !EMONEXT_WITH_CUDNN || EMONEXT_CUDA_EMULATION
  GTEST_SKIP() << "this build has no cuDNN (the emulation build never has: cuDNN needs a real GPU)";
#endif
  struct Restore {
    ~Restore() {
      set_cudnn_convolutions(true);
      kernels::cuda::cudnn_inject_failures(false);
    }
  } restore;
  const kernels::cuda::CudnnConv cp{DType::F32, 2, 30, 30, 3, 8, 7, 7, 1, 0, 1, true};  // a shape no other test uses
  ASSERT_TRUE(kernels::cuda::cudnn_conv_supported(cp));
  Generator gen(3);
  const Tensor x = randn({2, 30, 30, 3}, gen, 0, 1, DType::F32, kGpu), w = randn({8, 3, 7, 7}, gen, 0, 0.05, DType::F32, kGpu);
  const Tensor dy = randn({2, 24, 24, 8}, gen, 0, 1, DType::F32, kGpu);
  auto run = [&](bool use_cudnn, bool fail_backward, bool fail_forward = false) {
    set_cudnn_convolutions(use_cudnn);
    const Tensor xi = x.detach().set_requires_grad(), wi = w.detach().set_requires_grad();
    kernels::cuda::cudnn_inject_failures(fail_forward);
    const Tensor y = conv2d(xi, wi, Tensor(), 1, 0);
    kernels::cuda::cudnn_inject_failures(fail_backward);
    sum(mul(y, dy)).backward();
    kernels::cuda::cudnn_inject_failures(false);
    return std::vector<Tensor>{y.detach(), xi.grad(), wi.grad()};
  };
  const std::vector<Tensor> want = run(false, false);
  testing::internal::CaptureStderr();
  const std::vector<Tensor> got = run(true, true);  // the forward through cuDNN, both backward calls fail
  const std::string said = testing::internal::GetCapturedStderr();
  EXPECT_EQ(said.find("cudnnConvolutionBackward"), said.rfind("cudnnConvolutionBackward")) << said;
  EXPECT_NE(said.find("take the unfold path"), std::string::npos) << said;
  EXPECT_FALSE(kernels::cuda::cudnn_conv_supported(cp)) << "the failed plan is not used again";
  const std::vector<Tensor> after = run(true, false);
  const char* names[] = {"y", "dx", "dw"};
  for (size_t i = 0; i < want.size(); ++i) {
    expect_rel(got[i], want[i], 1e-4, std::string("cuDNN forward, unfold backward: ") + names[i], 1.0);
    EXPECT_EQ(after[i].to_vector(), want[i].to_vector()) << names[i] << ": after the failure the unfold path runs";
  }
  // A forward call that fails: that convolution is the unfold path's, forward and backward.
  const Tensor x2 = x.slice(1, 0, 28).slice(2, 0, 28).contiguous();
  const kernels::cuda::CudnnConv cp2{DType::F32, 2, 28, 28, 3, 8, 7, 7, 1, 0, 1, true};
  ASSERT_TRUE(kernels::cuda::cudnn_conv_supported(cp2));
  const auto run2 = [&](bool fail) {
    kernels::cuda::cudnn_inject_failures(fail);
    const Tensor xi = x2.detach().set_requires_grad(), wi = w.detach().set_requires_grad();
    const Tensor y = conv2d(xi, wi, Tensor(), 1, 0);
    kernels::cuda::cudnn_inject_failures(false);
    sum(y).backward();
    return std::vector<Tensor>{y.detach(), xi.grad(), wi.grad()};
  };
  const std::vector<Tensor> failed = run2(true);
  EXPECT_FALSE(kernels::cuda::cudnn_conv_supported(cp2));
  set_cudnn_convolutions(false);
  const std::vector<Tensor> unfold_path = run2(false);
  for (size_t i = 0; i < failed.size(); ++i)
    EXPECT_EQ(failed[i].to_vector(), unfold_path[i].to_vector()) << names[i] << ": a failed forward runs the unfold path";
}

// The fused AdamW update: three steps on the GPU against the same three on the CPU,
// in every dtype, at lengths around the 16-byte packs, and from a misaligned start
// (a view at element offset 1: the scalar path).
// The multi-tensor plan on the host, with caps small enough to reach: every chunk of
// every tensor is given to exactly one block, in order; no launch passes its caps; a
// tensor cut by a full launch carries on in the next one's slot 0.
TEST(MultiTensor, EveryChunkGoesToOneBlockWithinTheLaunchCaps) {
  using Small = kernels::cuda::TensorChunks<1, 3, 4, char>;
  const std::vector<int64_t> lengths = {5, 0, 25, 1, 10, 10, 3, 0, 41, 2};  // chunks of 10: 1, -, 3, 1, 1, 1, 1, -, 5, 1
  std::vector<std::pair<int32_t, int32_t>> seen;                          // (tensor, chunk) as the blocks get them
  int launches = 0;
  kernels::cuda::launch_over_chunks<Small>(
      lengths.size(), 10,
      [&](Small& c, int slot, size_t i) {
        c.ptr[0][slot] = reinterpret_cast<void*>(i + 1);
        return lengths[i];
      },
      [&](const Small& c, int blocks) {
        ++launches;
        ASSERT_GE(blocks, 1);
        ASSERT_LE(blocks, Small::blocks);
        for (int b = 0; b < blocks; ++b) {
          const int t = c.tensor_of_block[b];
          ASSERT_LT(t, Small::tensors);
          EXPECT_EQ(c.ptr[0][t], reinterpret_cast<void*>(size_t(c.index[t]) + 1)) << "slot " << t << " names another tensor";
          EXPECT_EQ(c.n[t], lengths[size_t(c.index[t])]);
          seen.emplace_back(c.index[t], c.chunk_of_block[b]);
        }
      });
  std::vector<std::pair<int32_t, int32_t>> want;
  for (size_t i = 0; i < lengths.size(); ++i)
    for (int32_t k = 0; k * 10 < lengths[i]; ++k) want.emplace_back(int32_t(i), k);
  EXPECT_EQ(seen, want);
  EXPECT_EQ(launches, 4);  // 15 blocks, 4 a launch at most; the second launch ends at 3 blocks, its 3 slots full
}

// A list that needs several launches (more tensors than one launch holds), with chunked
// and empty tensors and decay-exempt ones, against the CPU; all 16-byte aligned (the
// packed kernel), then with misaligned starts (the scalar one).
TEST(Cuda, AdamWUpdateOfAListMatchesTheCpu) {
  REQUIRE_GPU();
  std::vector<int64_t> sizes = {1, 7, 1003, 70001, 0};
  sizes.resize(45, 33);
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    for (int64_t offset : {0, 1}) {
      const std::string what = detail::concat(dtype_name(t), " offset=", offset);
      Generator gen(uint64_t(offset + 3));
      std::vector<std::vector<Tensor>> cpu(sizes.size()), gpu(sizes.size());  // p, m, v of each parameter on each side
      for (size_t k = 0; k < sizes.size(); ++k) {
        const int64_t n = sizes[k];
        for (int i = 0; i < 3; ++i) {
          const Tensor x = i == 0 ? randn({n + offset}, gen, 0, 1, t) : Tensor::zeros({n + offset}, t);
          cpu[k].push_back(x.slice(0, offset, n + offset).clone());
          gpu[k].push_back(x.to(kGpu).slice(0, offset, n + offset));
        }
      }
      for (int step = 1; step <= 3; ++step) {
        std::vector<Tensor> g_cpu, g_gpu;
        for (int64_t n : sizes) {
          g_cpu.push_back(randn({n}, gen, 0, 0.5, t));
          g_gpu.push_back(g_cpu.back().to(kGpu));
        }
        std::vector<AdamWParam> on_cpu, on_gpu;
        for (size_t k = 0; k < sizes.size(); ++k) {
          on_cpu.push_back({&cpu[k][0], &g_cpu[k], &cpu[k][1], &cpu[k][2], k % 3 != 1});
          on_gpu.push_back({&gpu[k][0], &g_gpu[k], &gpu[k][1], &gpu[k][2], k % 3 != 1});
        }
        const AdamWHyper h{1e-2, 0.9, 0.999, 1e-8, 0.05, step, 0.7};
        adamw_update_(on_cpu, h);
        adamw_update_(on_gpu, h);
      }
      const char* names[] = {"param", "exp_avg", "exp_avg_sq"};
      for (size_t k = 0; k < sizes.size(); ++k)
        for (size_t i = 0; i < 3; ++i)
          expect_close(gpu[k][i], cpu[k][i], tolerance(t), what + " parameter " + std::to_string(k) + " " + names[i]);
    }
  }
}

// The gradient norm's parts of a list longer than one launch holds: one chunk,
// several with partials, empty tensors; packed, then misaligned starts (the scalar
// kernel); the same bits on a second run.
TEST(Cuda, SumSquaresMatchesTheCpu) {
  REQUIRE_GPU();
  Generator gen(12);
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    for (int64_t offset : {0, 1}) {
      std::vector<int64_t> sizes = {1, 7, 8192, 8193, 100003, 0};
      sizes.resize(110, 5);
      std::vector<Tensor> cpu, gpu;
      for (int64_t n : sizes) {
        const Tensor x = randn({n + offset}, gen, 0, 1, t);
        cpu.push_back(x.slice(0, offset, n + offset).clone());
        gpu.push_back(x.to(kGpu).slice(0, offset, n + offset));
      }
      const std::string what = detail::concat("sum_squares ", dtype_name(t), " offset=", offset);
      const Tensor got = sum_squares(gpu);
      EXPECT_EQ(got.device(), kGpu);
      expect_close(got, sum_squares(cpu), t == DType::F64 ? 1e-12 : 1e-5, what);
      EXPECT_EQ(got.to_vector()[5], 0.0) << what << ": the empty tensor";
      EXPECT_EQ(sum_squares(gpu).to_vector(), got.to_vector()) << what;
      // Without the empty tensor the partials' unused slots are not zeroed in advance.
      cpu.erase(cpu.begin() + 5);
      gpu.erase(gpu.begin() + 5);
      expect_close(sum_squares(gpu), sum_squares(cpu), t == DType::F64 ? 1e-12 : 1e-5, what + ", no empty tensor");
    }
  }
}

// NCCL's calls as a data-parallel run on GPUs makes them, on one rank (the GPU machines
// lent to this project have one GPU, and NCCL refuses two ranks on one device): the
// communicator from an id, in-place sums of f32 and f64 on NCCL's stream behind the work
// the device's stream queued before them, the device's stream going on beside a sum
// (held back here by a host function on NCCL's stream: the device's work queued after
// the start must finish while the sum cannot; with a wait per sum it could not), then
// waiting for it at the join, and the polled wait. One rank's sum is its own values:
// what this shows is that the calls, their streams and their events work on a GPU, not
// the arithmetic across ranks.
TEST(Cuda, NcclsSumRunsOnItsStreamWithOneRank) {
#if !EMONEXT_WITH_NCCL || EMONEXT_CUDA_EMULATION
  GTEST_SKIP() << "this build has no NCCL (CMake did not find it beside the CUDA toolkit, or the emulation build)";
#else
  REQUIRE_GPU();
  namespace kc = kernels::cuda;
  char id[kc::kNcclIdBytes] = {};
  kc::nccl_unique_id(id);
  ASSERT_FALSE(kc::nccl_ready());
  kc::nccl_init(id, 0, 1, 0);
  ASSERT_TRUE(kc::nccl_ready());
  Generator gen(31);
  for (DType t : {DType::F32, DType::F64}) {
    SCOPED_TRACE(dtype_name(t));
    const Tensor x = randn({3, 1 << 20}, gen, 0, 1, t);
    Tensor summed = x.to(kGpu) * 2.0;  // written by the device's stream just before the sum reads it
    const Tensor xg = x.to(kGpu);  // the copy from pageable memory waits for the device: before the hold
    kc::nccl_all_reduce_sum_start(summed.data_ptr(), 1, t == DType::F64, 0);  // NCCL's stream exists from here
    kc::nccl_join(0);
    std::atomic<bool> release{false};
    const auto hold = [](void* flag) {
      while (!static_cast<std::atomic<bool>*>(flag)->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    ASSERT_EQ(cudaLaunchHostFunc(static_cast<cudaStream_t>(kc::nccl_stream()), hold, &release), cudaSuccess);
    const uint64_t before = kc::launches();
    kc::nccl_all_reduce_sum_start(summed.data_ptr(), summed.numel(), t == DType::F64, 0);
    EXPECT_EQ(kc::launches(), before + 1);
    const Tensor beside = xg * 5.0;  // on the device's stream while the sum is held
    bool went_on = false;
    for (int i = 0; i < 5000 && !went_on; ++i) {
      went_on = cudaStreamQuery(static_cast<cudaStream_t>(kc::stream(0))) == cudaSuccess;
      if (!went_on) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(went_on) << "the device's stream waited for a sum before the join";
    release = true;
    kc::nccl_join(0);
    const Tensor after = summed * 3.0;  // queued behind the sum
    ASSERT_TRUE(kc::nccl_wait(0, 60.0));
    EXPECT_EQ(beside.to_vector(), (x * 5.0).to_vector());
    EXPECT_EQ(summed.to_vector(), (x * 2.0).to_vector());
    EXPECT_EQ(after.to_vector(), (x * 2.0 * 3.0).to_vector());
  }
#endif
}

// The training input's staging (core/staging.h): each batch arrives whole; a batch's
// tensors stay as they were through the next put (two slots), and a new shape (a short
// last batch) gets new device memory. In the steady state a put makes the host wait for
// nothing (here every event has completed; on a GPU the host waits only when it is two
// batches ahead). On the CPU the tensors pass through as they are.
TEST(Cuda, InputStagingDeliversEveryBatchWithoutAHostWait) {
  REQUIRE_GPU();
  InputStaging staging(kGpu);
  Generator gen(3);
  std::vector<Tensor> previous_host, previous_device;
  for (int k = 0; k < 6; ++k) {
    const int64_t n = k == 4 ? 3 : 4;  // batch 4 is short
    const std::vector<Tensor> host{randn({n, 5, 5, 3}, gen), Tensor::from_ints(std::vector<int64_t>(size_t(n), k), {n})};
    const uint64_t before = gpu_host_waits();
    const std::vector<Tensor> got = staging.put(host);
    const uint64_t waits = gpu_host_waits() - before;
    if (k == 4) {
      EXPECT_GT(waits, 0u) << "a new shape waits for the device before it allocates";
    } else if (k >= 2) {
      EXPECT_EQ(waits, 0u) << "batch " << k << ": the slot's buffers are there already";
    }
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].device(), kGpu);
    EXPECT_EQ(got[0].to_vector(), host[0].to_vector()) << "batch " << k;
    EXPECT_EQ(got[1].to_int_vector(), host[1].to_int_vector()) << "batch " << k;
    if (k > 0) {
      EXPECT_EQ(previous_device[0].to_vector(), previous_host[0].to_vector()) << "batch " << k - 1 << " overwritten";
    }
    previous_host = host;
    previous_device = got;
  }
  InputStaging on_cpu(Device::cpu());
  const Tensor t = Tensor::ones({2, 2});
  EXPECT_EQ(on_cpu.put({t})[0].data_ptr(), t.data_ptr());
}

// The optimiser's work per step on a GPU is a few launches for the whole model (the
// norm's sums of squares, the AdamW update), not one or more per parameter: with
// ~150 parameters, launches are what an optimiser step costs.
TEST(Cuda, AnOptimiserStepIsAFewLaunchesForTheWholeModel) {
  REQUIRE_GPU();
  EmoNeXt model(convnext_size("atto"), 7, 48);
  model.to(kGpu);
  Generator gen(6);
  const int64_t params = int64_t(model.named_parameters().size());
  for (const Module::Named& p : model.named_parameters())
    p.tensor->set_grad(randn(p.tensor->shape(), gen, 0, 1, DType::F32, kGpu));
  AdamW opt(model, {});
  const uint64_t start = gpu_launches();
  const double norm = grad_norm(model);
  const uint64_t after_norm = gpu_launches();
  opt.step(1e-3, clip_factor(norm, 1.0));
  const uint64_t after_step = gpu_launches();
  EXPECT_GT(norm, 1.0);
  EXPECT_GE(after_norm - start, 2u);  // at least the chunks' sums and their partials
  EXPECT_LE(after_norm - start, 6u);
  EXPECT_GE(after_step - after_norm, uint64_t((params + 35) / 36));  // 36 parameters a launch at most
  EXPECT_LE(after_step - after_norm, 8u);
  std::cout << params << " parameters: " << after_norm - start << " launches for the norm, " << after_step - after_norm
            << " for the AdamW step\n";
}

// Training-mode BatchNorm is one op each way on CUDA (3 launches forward, 3 backward) and
// moves the running statistics as the CPU does, in every dtype; the spatial transformer's
// shape, an offset mean (|mean| = 40 std) where unshifted sums of squares would cancel,
// and 6 values per channel, where the running variance's unbiasing (x 6/5) shows.
TEST(Cuda, BatchNormTrainingMatchesTheCpuInFewLaunches) {
  REQUIRE_GPU();
  Generator gen(12);
  for (const Shape& s : {Shape{2, 42, 42, 8}, Shape{3, 5, 7, 41}, Shape{2, 3, 1, 5}})
    for (DType t : {DType::F32, DType::BF16, DType::F16}) {
      const int64_t c = s[3];
      const Tensor x = add(mul(randn(s, gen, 0, 1, t), 0.25), 10.0).to(DType::F64).to(t);
      const Tensor w = randn({c}, gen, 1, 0.2, t), b = randn({c}, gen, 0, 0.2, t);
      Tensor rm = randn({c}, gen, 0, 1, t), rv = rand({c}, gen, 0.5, 1.5, t);
      Tensor rm_gpu = rm.to(kGpu), rv_gpu = rv.to(kGpu);
      Tensor rm_cpu = rm.to(DType::F64), rv_cpu = rv.to(DType::F64);
      const Tensor xg = x.to(kGpu).detach().set_requires_grad();
      const uint64_t start = gpu_launches();
      const Tensor y = batch_norm(xg, w.to(kGpu), b.to(kGpu), rm_gpu, rv_gpu, true, 0.1, 1e-5);
      const uint64_t forward = gpu_launches() - start;
      const Tensor want = batch_norm(x.to(DType::F64), w.to(DType::F64), b.to(DType::F64), rm_cpu, rv_cpu, true, 0.1, 1e-5);
      const double tol = t == DType::F32 ? 1e-4 : 2e-2;
      const std::string what = shape_str(s) + " " + dtype_name(t);
      expect_close(y, want, tol, "y " + what);
      expect_close(rm_gpu, rm_cpu, tol, "running mean " + what);
      expect_close(rv_gpu, rv_cpu, tol, "running var " + what);
      EXPECT_EQ(forward, 3u) << what;
    }
}

// As Tensor.SixteenBitMeansDoNotOverflowWhereTheirSumsWould, on each CUDA reduction path.
TEST(Cuda, SixteenBitMeansDoNotOverflowWhereTheirSumsWould) {
  REQUIRE_GPU();
  for (DType t : {DType::F16, DType::BF16}) {
    const std::string name = dtype_name(t);
    EXPECT_EQ(mean(Tensor::full({2, 3136}, 30.0, t, kGpu), {1}).to_vector(), (std::vector<double>{30, 30})) << name;
    EXPECT_EQ(global_avg_pool(Tensor::full({1, 56, 56, 4}, 30.0, t, kGpu)).to_vector(), std::vector<double>(4, 30.0)) << name;
    EXPECT_EQ(mean(Tensor::full({1, 64, 3}, 2000.0, t, kGpu), {1}).to_vector(), std::vector<double>(3, 2000.0)) << name;
  }
}

TEST(Cuda, RandomMatchesCpu) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::BF16}) {
    Generator g1(11), g2(11);
    EXPECT_EQ(rand({1001}, g1, 0, 1, t).to_vector(), rand({1001}, g2, 0, 1, t, kGpu).to_vector());  // bit for bit
    expect_close(randn({1001}, g1, 0, 1, t, kGpu), randn({1001}, g2, 0, 1, t), 1e-6, "randn");
  }
}

TEST(Cuda, TransfersEveryDtype) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I64, DType::U8}) {
    const Tensor x = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3}, t);
    EXPECT_EQ(x.to(kGpu).transpose(0, 1).contiguous().to(Device::cpu()).to_vector(),
              x.transpose(0, 1).contiguous().to_vector()) << dtype_name(t);
  }
}

TEST(Cuda, LargeAndAwkwardReductions) {
  REQUIRE_GPU();
  Generator gen(3);
  for (const Shape& s : {Shape{3, 1000}, Shape{1, 70001}, Shape{257, 33}, Shape{5, 7, 129}}) {
    const Tensor x = randn(s, gen);
    expect_close(sum(x.to(kGpu), {-1}), sum(x, {-1}), 1e-4, "sum " + shape_str(s));
    expect_close(sum(x.to(kGpu), {0}), sum(x, {0}), 1e-4, "sum dim 0 " + shape_str(s));
    expect_close(max(x.to(kGpu), {-1}), max(x, {-1}), 0, "max " + shape_str(s));
    expect_close(softmax(x.to(kGpu)), softmax(x), 1e-5, "softmax " + shape_str(s));
  }
}

TEST(Cuda, WrongDeviceIsAClearError) {
  REQUIRE_GPU();
  try {
    add(Tensor::zeros({2}), Tensor::zeros({2}, DType::F32, kGpu));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different devices"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tensor::zeros({2}, DType::F32, Device::cuda(cuda_device_count())), Error);
}

// The 16-bit depthwise kernels with two channels per thread (DwConv::packed) against the
// one-channel kernels, at ConvNeXt's channel counts and at ones that leave a group of 64
// partly empty (40, 96) or that the pairs cannot take (41: odd, so both settings run the
// one-channel kernels); the maps are not multiples of the 8 x 8 tile. The forward and the
// input gradient give the same bits; the weight and bias gradients sum in another order,
// so they agree to a rounding of the 16-bit result. The op tests check the packed kernels
// (the default) against the CPU.
TEST(Cuda, PackedSixteenBitDepthwiseMatchesTheOneChannelKernels) {
  REQUIRE_GPU();
#if !EMONEXT_WITH_CUDA
  GTEST_SKIP() << "this build has no CUDA kernels to compare";
#else
  Generator gen(7);
  struct Case { int64_t n, h, w, c, k; };
  for (DType t : {DType::BF16, DType::F16}) {
    for (const Case& cs : {Case{2, 9, 11, 96, 7}, Case{1, 8, 8, 40, 7}, Case{1, 7, 7, 768, 7}, Case{2, 6, 5, 42, 5},
                           Case{1, 4, 9, 64, 3}, Case{1, 5, 6, 41, 7}, Case{3, 17, 16, 64, 7}}) {
      const std::string what = detail::concat(dtype_name(t), " ", cs.n, "x", cs.h, "x", cs.w, "x", cs.c, " k", cs.k);
      const Tensor x = randn({cs.n, cs.h, cs.w, cs.c}, gen, 0, 1, t, kGpu), dy = randn(x.shape(), gen, 0, 1, t, kGpu);
      const Tensor w = randn({cs.c, cs.k * cs.k}, gen, 0, 0.2, t, kGpu), b = randn({cs.c}, gen, 0, 1, t, kGpu);
      kernels::DwConv p{t, cs.n, cs.h, cs.w, cs.c, cs.k};
      const kernels::Stream s = kernels::cuda::stream(0);
      struct Out { Tensor y, dx, dw, db; };
      auto run = [&](bool packed) {
        p.packed = packed;
        Out o{Tensor::empty(x.shape(), t, kGpu), Tensor::empty(x.shape(), t, kGpu), Tensor::empty(w.shape(), t, kGpu),
              Tensor::empty(b.shape(), t, kGpu)};
#if EMONEXT_CUDA_EMULATION
        const uint64_t correlate = emu::launches_named("dwconv_correlate_pairs_kernel");
        const uint64_t weight = emu::launches_named("dwconv_weight_pairs_kernel");
#endif
        kernels::cuda::dwconv_forward(p, o.y.data_ptr(), x.data_ptr(), w.data_ptr(), b.data_ptr(), s);
        kernels::cuda::dwconv_backward_input(p, o.dx.data_ptr(), dy.data_ptr(), w.data_ptr(), s);
        kernels::cuda::dwconv_backward_weight(p, o.dw.data_ptr(), o.db.data_ptr(), dy.data_ptr(), x.data_ptr(), s);
#if EMONEXT_CUDA_EMULATION
        const bool pairs = packed && cs.c % 2 == 0;
        EXPECT_EQ(emu::launches_named("dwconv_correlate_pairs_kernel") - correlate, pairs ? 2u : 0u) << what << " packed=" << packed;
        EXPECT_EQ(emu::launches_named("dwconv_weight_pairs_kernel") - weight, pairs ? 1u : 0u) << what << " packed=" << packed;
#endif
        return o;
      };
      const Out one = run(false), two = run(true);
      EXPECT_EQ(two.y.to_vector(), one.y.to_vector()) << what << ": forward";
      EXPECT_EQ(two.dx.to_vector(), one.dx.to_vector()) << what << ": input gradient";
      const double tol = t == DType::BF16 ? 1.0 / 128 : 1.0 / 1024;  // two 16-bit roundings of nearly equal f32 sums
      expect_rel(two.dw, one.dw, tol, what + ": weight gradient");
      expect_rel(two.db, one.db, tol, what + ": bias gradient");
    }
  }
#endif
}

// gelu_mlp with the tanh GELU on the GPU: cuBLASLt's GELU_AUX_BIAS and DGELU_BGRAD
// epilogues against the unfused cuBLAS GEMMs and bias_gelu kernels, at ConvNeXt-T's
// stage 1 and 4 widths (C 96 and 768, hidden 4C) in f32, bf16 and f16: forward and the
// four gradients. In emulation the epilogues run on the CPU twin, so f32 gives the unfused
// bits but for b1's gradient (the twin sums its columns in the CPU's order, bias_gelu's
// backward kernel in the GPU's), and the test also sees that the fused path ran no
// bias_gelu kernel; on a GPU (the GPU check runs this test) the bound allows for
// cuBLASLt's own GEMM and GELU.
TEST(Cuda, TheGemmEpiloguesMatchTheUnfusedBlockMlp) {
  REQUIRE_GPU();
  Generator gen(11);
  struct Case { int64_t rows, c; };
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    for (const Case& cs : {Case{130, 96}, Case{18, 768}}) {
      const std::string what = detail::concat(dtype_name(t), " rows ", cs.rows, " C ", cs.c);
      const std::vector<Tensor> in = {randn({cs.rows, cs.c}, gen, 0, 1, t, kGpu), randn({4 * cs.c, cs.c}, gen, 0, 0.1, t, kGpu),
                                      randn({4 * cs.c}, gen, 0, 0.5, t, kGpu), randn({cs.c, 4 * cs.c}, gen, 0, 0.05, t, kGpu)};
      const Tensor dy = randn({cs.rows, cs.c}, gen, 0, 1, t, kGpu);
#if EMONEXT_CUDA_EMULATION
      const uint64_t before = emu::launches_named("bias_gelu_backward");
#endif
      const GeluMlpRun fused = run_gelu_mlp(in, dy, true);
#if EMONEXT_CUDA_EMULATION
      EXPECT_EQ(emu::launches_named("bias_gelu_backward"), before) << what << ": the fused path ran bias_gelu's backward";
#endif
      const GeluMlpRun unfused = run_gelu_mlp(in, dy, false);
#if EMONEXT_CUDA_EMULATION
      EXPECT_GT(emu::launches_named("bias_gelu_backward"), before) << what;
#endif
      EXPECT_EQ(fused.op, "gelu_mlp");
      const char* names[] = {"y", "dx", "dw1", "db1", "dw2"};
      for (size_t i = 0; i < fused.values.size(); ++i) {
        ASSERT_EQ(fused.values[i].device(), kGpu);
#if EMONEXT_CUDA_EMULATION
        if (t == DType::F32 && i != 3) {
          EXPECT_EQ(fused.values[i].to_vector(), unfused.values[i].to_vector()) << what << ": " << names[i];
          continue;
        }
        if (t == DType::F32) {
          expect_rel(fused.values[i], unfused.values[i], 1e-5, what + ": " + names[i]);
          continue;
        }
#endif
        expect_rel(fused.values[i], unfused.values[i], t == DType::F32 ? 2e-3 : 3e-2, what + ": " + names[i]);
      }
    }
  }
}

// Where cuBLASLt offers no algorithm for an epilogue (a real cuBLASLt may, for a shape or a
// GPU; the emulation's EMONEXT_EMU_NO_LT_ALGORITHM forces it), gelu_mlp computes that
// direction unfused and goes on. With the forward refused the op is the unfused path
// itself (its bits, and "linear" made the output); with only the backward refused the
// output is the fused op's and the gradients come from a plain GEMM and bias_gelu's
// backward kernel: in f32 the unfused path's bits (the same kernels in the same order),
// in bf16 close to them.
TEST(Cuda, AGemmEpilogueWithoutAnAlgorithmRunsUnfused) {
#if !EMONEXT_CUDA_EMULATION
  GTEST_SKIP() << "only the emulation build can make cuBLASLt's heuristic offer nothing (EMONEXT_EMU_NO_LT_ALGORITHM)";
#else
  REQUIRE_GPU();
  Generator gen(12);
  const char* names[] = {"y", "dx", "dw1", "db1", "dw2"};
  for (DType t : {DType::F32, DType::BF16}) {
    const std::vector<Tensor> in = {randn({40, 96}, gen, 0, 1, t, kGpu), randn({384, 96}, gen, 0, 0.1, t, kGpu),
                                    randn({384}, gen, 0, 0.5, t, kGpu), randn({96, 384}, gen, 0, 0.05, t, kGpu)};
    const Tensor dy = randn({40, 96}, gen, 0, 1, t, kGpu);
    const GeluMlpRun unfused = run_gelu_mlp(in, dy, false);
    for (const char* which : {"forward", "both", "backward"}) {
      const std::string what = detail::concat(dtype_name(t), ", no algorithm for the ", which);
      const uint64_t before = emu::launches_named("bias_gelu_backward");
      GeluMlpRun r;
      {
        const ScopedEnv refuse("EMONEXT_EMU_NO_LT_ALGORITHM", which);
        r = run_gelu_mlp(in, dy, true);
      }
      EXPECT_EQ(r.op, std::string(which) == "backward" ? "gelu_mlp" : "linear") << what;
      EXPECT_EQ(emu::launches_named("bias_gelu_backward"), before + 1) << what << ": the backward ran unfused";
      for (size_t i = 0; i < r.values.size(); ++i) {
        if (t == DType::F32)
          EXPECT_EQ(r.values[i].to_vector(), unfused.values[i].to_vector()) << what << ": " << names[i];
        else
          expect_rel(r.values[i], unfused.values[i], 3e-2, what + ": " + names[i]);
      }
    }
  }
#endif
}

// A GPU graph (core/graph.h) replays the work it captured: a small training step
// (forward, loss, backward, an in-place update of the weights) captured once and replayed
// four times gives the bits of four eager steps, each replay reading the input the host
// put in the same buffers before it. Capturing runs nothing. The step's temporaries, its
// gradients among them, are the graph's own memory; the weights and buffers outlive it.
// The work runs once before the capture, as it must (core/graph.h).
TEST(Cuda, AGraphReplaysItsCapturedStepWithTheEagerBits) {
  REQUIRE_GPU();
  Generator gen(5);
  const Tensor w0 = randn({6, 12}, gen, 0, 0.3), b0 = randn({6}, gen, 0, 0.1);
  std::vector<Tensor> xs, ys;
  for (int64_t i = 0; i < 4; ++i) {
    xs.push_back(randn({8, 12}, gen));
    ys.push_back(Tensor::from_ints({i % 6, 1, 2, 3, 4, 5, (i + 2) % 6, 0}, {8}));
  }
  struct Net {
    Tensor w, b, x, y, loss;
  };
  auto make = [&] {
    return Net{w0.to(kGpu).set_requires_grad(), b0.to(kGpu).set_requires_grad(), Tensor::zeros({8, 12}, DType::F32, kGpu),
               Tensor::from_ints(std::vector<int64_t>(8, 0), {8}, kGpu), Tensor::zeros({}, DType::F32, kGpu)};
  };
  auto step = [](Net& n) {
    const Tensor loss = cross_entropy(gelu(linear(n.x, n.w, n.b)), n.y, 0.1);
    loss.backward();
    for (const Tensor* p : {&n.w, &n.b}) {
      p->detach().copy_(sub(p->detach(), mul(p->grad(), 0.5)));
      p->set_grad(Tensor());
    }
    n.loss.copy_(loss.detach());
  };
  Net eager = make(), graphed = make(), warm_up = make();
  step(warm_up);  // cuBLAS makes its handle at the first product, which a capture refuses
  const GpuGraph graph(kGpu, [&] { step(graphed); });
  EXPECT_EQ(graphed.w.to_vector(), w0.to_vector()) << "capturing ran the step";
  for (size_t i = 0; i < xs.size(); ++i) {
    for (Net* n : {&eager, &graphed}) {
      n->x.copy_(xs[i]);
      n->y.copy_(ys[i]);
    }
    step(eager);
    graph.replay();
    EXPECT_EQ(graphed.loss.to_vector(), eager.loss.to_vector()) << "step " << i;
    EXPECT_EQ(graphed.w.to_vector(), eager.w.to_vector()) << "step " << i;
    EXPECT_EQ(graphed.b.to_vector(), eager.b.to_vector()) << "step " << i;
  }
  EXPECT_NE(eager.w.to_vector(), w0.to_vector());
}

// What a graph cannot hold is refused at the capture, naming it, and the device works on:
// a host wait (a copy to the host), and memory allocated inside that outlives the capture.
TEST(Cuda, AGraphRefusesAHostWaitAndMemoryThatOutlivesIt) {
  REQUIRE_GPU();
  const Tensor x = Tensor::from_vector({1.0, 2.0, 3.0}, {3}, DType::F32).to(kGpu);
  expect_error([&] { GpuGraph g(kGpu, [&] { (void)mul(x, 2.0).to_vector(); }); },
               "a copy to host memory while the stream is captured as a graph");
  Tensor kept;
  expect_error([&] { GpuGraph g(kGpu, [&] { kept = mul(x, 3.0); }); }, "allocated while capturing a graph are still held");
  kept = Tensor();
  EXPECT_EQ(mul(x, 2.0).to_vector(), (std::vector<double>{2, 4, 6})) << "the stream after the refused captures";
}

// EmoNeXt's forward, loss and backward (spatial transformer, BatchNorm's running
// statistics, SE, attention) and an in-place update of every parameter, captured after a
// warm-up step and replayed, give the eager steps' bits: nothing in them waits for the
// host or keeps memory past the step. Drop path is off: its draws' Philox offset is
// passed by value, so a replay would repeat the captured draws (the training step's
// graph needs it read from the device first; docs/ARCHITECTURE.md).
TEST(Cuda, EmoNeXtsStepReplaysAsAGraphWithTheEagerBits) {
  REQUIRE_GPU();
  Generator gen(8);
  const int64_t n = 2, size = EmoNeXt::kMinImageSize;
  std::vector<Tensor> xs, ys;
  for (int64_t i = 0; i < 3; ++i) {
    xs.push_back(rand({n, size, size, 3}, gen, 0, 1));
    ys.push_back(Tensor::from_ints({i % 7, (i + 3) % 7}, {n}));
  }
  struct Run {
    EmoNeXt model{convnext_size("atto"), 7, EmoNeXt::kMinImageSize, 0.0};
    Tensor x = Tensor::zeros({2, EmoNeXt::kMinImageSize, EmoNeXt::kMinImageSize, 3}, DType::F32, kGpu);
    Tensor y = Tensor::from_ints({0, 0}, {2}, kGpu), loss = Tensor::zeros({}, DType::F32, kGpu);
    Run() {
      Generator init(3);
      init_weights(model, init);
      model.to(kGpu);
    }
    void step() {
      const Tensor l = emonext_loss(model.forward(x), y, 0.2);
      l.backward();
      for (const Module::Named& p : model.named_parameters())
        if (p.tensor->grad().defined()) p.tensor->detach().copy_(sub(p.tensor->detach(), mul(p.tensor->grad(), 0.01)));
      model.zero_grad();
      loss.copy_(l.detach());
    }
  };
  Run eager, graphed;
  graphed.x.copy_(xs[0]);
  graphed.y.copy_(ys[0]);
  graphed.step();  // the warm-up: cuBLAS's handle, the affine grid's base; also the eager run's first step
  eager.x.copy_(xs[0]);
  eager.y.copy_(ys[0]);
  eager.step();
  const GpuGraph graph(kGpu, [&] { graphed.step(); });
  for (size_t i = 1; i < xs.size(); ++i) {
    for (Run* r : {&eager, &graphed}) {
      r->x.copy_(xs[i]);
      r->y.copy_(ys[i]);
    }
    eager.step();
    graph.replay();
    EXPECT_EQ(graphed.loss.to_vector(), eager.loss.to_vector()) << "step " << i;
    const auto ge = graphed.model.named_parameters(), ee = eager.model.named_parameters();
    for (size_t k = 0; k < ee.size(); ++k)
      ASSERT_EQ(ge[k].tensor->to_vector(), ee[k].tensor->to_vector()) << ee[k].name << " after step " << i;
  }
}

TEST(Cuda, StepsReuseThePooledMemory) {
  REQUIRE_GPU();
  Generator gen(1);
  const Tensor w = randn({256, 256}, gen, 0, 0.05, DType::F32, kGpu).set_requires_grad();
  auto step = [&] {
    const Tensor x = randn({64, 256}, gen, 0, 1, DType::F32, kGpu);
    const Tensor labels = Tensor::from_ints(std::vector<int64_t>(64, 3), {64}, kGpu);
    cross_entropy(relu(linear(x, w)), labels, 0.1).backward();
  };
  step();
  const size_t in_use = memory_stats(kGpu).in_use;
  for (int i = 0; i < 3; ++i) step();
  synchronize(kGpu);
  // Every step's temporaries are returned (only w.grad persists, already there after step 1).
  EXPECT_EQ(memory_stats(kGpu).in_use, in_use);
  EXPECT_GE(memory_stats(kGpu).peak, in_use);
}

}  // namespace
}  // namespace emonext::test
