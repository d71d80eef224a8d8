// cuDNN's convolution, channels-last, with its algorithms chosen once per shape.
// Each pass (forward, backward data, backward filter) keeps its own convolution
// descriptor, set to the math type its algorithm was chosen with: f32 uses FMA
// kernels only (no TF32, the precision of the CPU and of cuBLAS's COMPUTE_32F),
// bf16 and f16 may use tensor cores, all accumulate in f32.
#include "kernels/cuda/cudnn_conv.h"

#if EMONEXT_WITH_CUDNN && !EMONEXT_CUDA_EMULATION

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/workspace.cuh"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr size_t kWorkspaceLimit = size_t(256) << 20;

struct Plan {
  std::atomic<bool> ok{false};  // false when it could not be built, or a call of it failed
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv_fwd = nullptr, conv_data = nullptr, conv_filter = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t ws_fwd = 0, ws_data = 0, ws_filter = 0;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    for (cudnnConvolutionDescriptor_t d : {conv_fwd, conv_data, conv_filter})
      if (d) EMONEXT_CUDNN_WARN(cudnnDestroyConvolutionDescriptor(d));
    if (w) EMONEXT_CUDNN_WARN(cudnnDestroyFilterDescriptor(w));
    for (cudnnTensorDescriptor_t d : {x, y, bias})
      if (d) EMONEXT_CUDNN_WARN(cudnnDestroyTensorDescriptor(d));
  }
};

cudnnDataType_t data_type(DType t) {
  return t == DType::BF16 ? CUDNN_DATA_BFLOAT16 : t == DType::F16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
}

cudnnConvolutionDescriptor_t make_conv(const CudnnConv& p) {
  cudnnConvolutionDescriptor_t d = nullptr;
  EMONEXT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
  EMONEXT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d, int(p.pad), int(p.pad), int(p.stride), int(p.stride), 1, 1,
                                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  EMONEXT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(d, int(p.groups)));
  EMONEXT_CUDNN_CHECK(cudnnSetConvolutionMathType(d, p.dtype == DType::F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
  return d;
}

// One pass's algorithm: cuDNN's ranked candidates (`ranked(count, &found, out)`, up to
// `max_count`), then the first that is supported, deterministic when asked, and whose
// workspace (`workspace(algo, &bytes)`, asked under that candidate's math type) fits the
// limit. f32 keeps the descriptor's FMA math whatever the candidate says (DEFAULT_MATH
// would allow TF32 on Ampere and later); 16-bit takes the candidate's.
template <class Perf, class Algo, class Ranked, class WorkspaceFn>
bool pick(const CudnnConv& p, cudnnConvolutionDescriptor_t conv, int max_count, Ranked ranked, WorkspaceFn workspace,
          Algo& algo, size_t& bytes) {
  std::vector<Perf> candidates(size_t(std::max(max_count, 1)));
  int found = 0;
  if (ranked(max_count, &found, candidates.data()) != CUDNN_STATUS_SUCCESS) return false;
  for (int i = 0; i < found; ++i) {
    const Perf& r = candidates[size_t(i)];
    if (r.status != CUDNN_STATUS_SUCCESS) continue;
    if (p.deterministic && r.determinism != CUDNN_DETERMINISTIC) continue;
    if (p.dtype != DType::F32 && cudnnSetConvolutionMathType(conv, r.mathType) != CUDNN_STATUS_SUCCESS) continue;
    size_t need = 0;
    if (workspace(r.algo, &need) != CUDNN_STATUS_SUCCESS || need > kWorkspaceLimit) continue;
    algo = r.algo;
    bytes = need;
    return true;
  }
  return false;
}

void build(Plan& plan, const CudnnConv& p) {
  const cudnnDataType_t type = data_type(p.dtype);
  EMONEXT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan.x));
  EMONEXT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan.x, CUDNN_TENSOR_NHWC, type, int(p.n), int(p.c), int(p.h), int(p.w)));
  EMONEXT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan.y));
  EMONEXT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan.y, CUDNN_TENSOR_NHWC, type, int(p.n), int(p.cout), int(p.ho()), int(p.wo())));
  EMONEXT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan.bias));
  EMONEXT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan.bias, CUDNN_TENSOR_NHWC, type, 1, int(p.cout), 1, 1));
  EMONEXT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan.w));
  EMONEXT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan.w, type, CUDNN_TENSOR_NHWC, int(p.cout), int(p.c / p.groups),
                                                 int(p.kh), int(p.kw)));
  plan.conv_fwd = make_conv(p);
  plan.conv_data = make_conv(p);
  plan.conv_filter = make_conv(p);
  cudnnHandle_t h = cudnn_handle();
  const Plan& q = plan;
  int n_fwd = 0, n_data = 0, n_filter = 0;
  EMONEXT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &n_fwd));
  EMONEXT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &n_data));
  EMONEXT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &n_filter));
  const bool fwd_ok = pick<cudnnConvolutionFwdAlgoPerf_t>(
      p, q.conv_fwd, n_fwd,
      [&](int n, int* found, auto* out) { return cudnnGetConvolutionForwardAlgorithm_v7(h, q.x, q.w, q.conv_fwd, q.y, n, found, out); },
      [&](auto a, size_t* b) { return cudnnGetConvolutionForwardWorkspaceSize(h, q.x, q.w, q.conv_fwd, q.y, a, b); },
      plan.fwd, plan.ws_fwd);
  const bool data_ok = pick<cudnnConvolutionBwdDataAlgoPerf_t>(
      p, q.conv_data, n_data,
      [&](int n, int* found, auto* out) { return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, q.w, q.y, q.conv_data, q.x, n, found, out); },
      [&](auto a, size_t* b) { return cudnnGetConvolutionBackwardDataWorkspaceSize(h, q.w, q.y, q.conv_data, q.x, a, b); },
      plan.bwd_data, plan.ws_data);
  const bool filter_ok = pick<cudnnConvolutionBwdFilterAlgoPerf_t>(
      p, q.conv_filter, n_filter,
      [&](int n, int* found, auto* out) { return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, q.x, q.y, q.conv_filter, q.w, n, found, out); },
      [&](auto a, size_t* b) { return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, q.x, q.y, q.conv_filter, q.w, a, b); },
      plan.bwd_filter, plan.ws_filter);
  plan.ok = fwd_ok && data_ok && filter_ok;
}

// Plans by (device, every field of p); built on first use, kept for the process. A
// plan that cannot be built (cuDNN that does not start, a status error) is kept as
// not ok, so conv2d falls back to unfold + GEMM; the first such failure is reported.
Plan& plan_for(const CudnnConv& p) {
  static std::mutex mu;
  static std::map<std::array<int64_t, 13>, std::unique_ptr<Plan>> plans;
  const std::array<int64_t, 13> key{current_device(), int64_t(p.dtype), p.n, p.h, p.w, p.c, p.cout, p.kh, p.kw,
                                    p.stride, p.pad, p.groups, p.deterministic};
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Plan>& slot = plans[key];
  if (!slot) {
    auto plan = std::make_unique<Plan>();
    try {
      build(*plan, p);
    } catch (const Error& e) {  // the caller takes its other path
      static std::once_flag warned;
      std::call_once(warned, [&] { std::fprintf(stderr, "emonext: cuDNN unusable, convolutions fall back: %s\n", e.what()); });
      plan->ok = false;
    }
    slot = std::move(plan);
  }
  return *slot;
}

Plan& ready_plan(const CudnnConv& p, const char* what) {
  Plan& plan = plan_for(p);
  if (!plan.ok) fail(detail::concat(what, ": cuDNN offers no algorithm for this convolution (ask cudnn_conv_supported first)"));
  return plan;
}

std::atomic<bool> g_inject_failure{false};

// A call's status: true when it ran. A failure (an algorithm cuDNN chose but cannot run
// here, a status error) marks the plan unusable, so this shape takes the unfold path from
// now on, and is said once per process; the caller then takes that path for this call.
bool ran(Plan& plan, cudnnStatus_t status, const char* what) {
  if (g_inject_failure.load()) status = CUDNN_STATUS_EXECUTION_FAILED;
  if (status == CUDNN_STATUS_SUCCESS) {
    count_launch(what);
    return true;
  }
  plan.ok = false;
  static std::once_flag warned;
  std::call_once(warned, [&] {
    std::fprintf(stderr, "emonext: %s failed (%s); this convolution and any other that fails take the unfold path\n", what,
                 cudnnGetErrorString(status));
  });
  return false;
}

}  // namespace

bool cudnn_conv_supported(const CudnnConv& p) {
  if (p.dtype != DType::F32 && p.dtype != DType::BF16 && p.dtype != DType::F16) return false;
  if (p.groups < 1 || p.c % p.groups != 0 || p.cout % p.groups != 0 || p.ho() < 1 || p.wo() < 1) return false;
  return plan_for(p).ok;
}

std::string cudnn_conv_algorithms(const CudnnConv& p) {
  const Plan& plan = ready_plan(p, "cudnn_conv_algorithms");
  return detail::concat("fwd ", int(plan.fwd), ", bwd data ", int(plan.bwd_data), ", bwd filter ", int(plan.bwd_filter));
}

bool cudnn_conv_forward(const CudnnConv& p, void* y, const void* x, const void* w, const void* b, Stream) {
  Plan& plan = ready_plan(p, "cudnn_conv_forward");
  const float one = 1.0f, zero = 0.0f;
  cudnnHandle_t h = cudnn_handle();
  Workspace ws(plan.ws_fwd);
  if (!ran(plan, cudnnConvolutionForward(h, &one, plan.x, x, plan.w, w, plan.conv_fwd, plan.fwd, ws.as<void>(), plan.ws_fwd,
                                         &zero, plan.y, y),
           "cudnnConvolutionForward"))
    return false;
  return !b || ran(plan, cudnnAddTensor(h, &one, plan.bias, b, &one, plan.y, y), "cudnnAddTensor");
}

bool cudnn_conv_backward_data(const CudnnConv& p, void* dx, const void* dy, const void* w, Stream) {
  Plan& plan = ready_plan(p, "cudnn_conv_backward_data");
  const float one = 1.0f, zero = 0.0f;
  Workspace ws(plan.ws_data);
  return ran(plan,
             cudnnConvolutionBackwardData(cudnn_handle(), &one, plan.w, w, plan.y, dy, plan.conv_data, plan.bwd_data,
                                          ws.as<void>(), plan.ws_data, &zero, plan.x, dx),
             "cudnnConvolutionBackwardData");
}

bool cudnn_conv_backward_filter(const CudnnConv& p, void* dw, const void* dy, const void* x, Stream) {
  Plan& plan = ready_plan(p, "cudnn_conv_backward_filter");
  const float one = 1.0f, zero = 0.0f;
  Workspace ws(plan.ws_filter);
  return ran(plan,
             cudnnConvolutionBackwardFilter(cudnn_handle(), &one, plan.x, x, plan.y, dy, plan.conv_filter, plan.bwd_filter,
                                            ws.as<void>(), plan.ws_filter, &zero, plan.w, dw),
             "cudnnConvolutionBackwardFilter");
}

void cudnn_inject_failures(bool on) { g_inject_failure = on; }

namespace {
std::atomic<bool>& cudnn_switch() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("EMONEXT_CUDNN");
    return !(v && std::strcmp(v, "0") == 0);
  }()};
  return on;
}
CudnnConv conv_of(const Unfold& p, int64_t cout) {
  return {p.dtype, p.n, p.h, p.w, p.c, cout, p.kh, p.kw, p.stride, p.pad, 1, true};
}
}  // namespace

void set_cudnn_enabled(bool on) { cudnn_switch() = on; }
bool cudnn_enabled() { return cudnn_switch(); }

bool conv2d_forward(const Unfold& p, int64_t cout, void* y, const void* x, const void* w, Stream s) {
  const CudnnConv cp = conv_of(p, cout);
  return cudnn_switch() && cudnn_conv_supported(cp) && cudnn_conv_forward(cp, y, x, w, nullptr, s);
}

bool conv2d_backward(const Unfold& p, int64_t cout, void* dx, void* dw, const void* dy, const void* x, const void* w, Stream s) {
  const CudnnConv cp = conv_of(p, cout);
  if (!cudnn_conv_supported(cp)) return false;
  return (!dx || cudnn_conv_backward_data(cp, dx, dy, w, s)) && cudnn_conv_backward_filter(cp, dw, dy, x, s);
}

}  // namespace emonext::kernels::cuda

#else  // no cuDNN in this build, or the emulation build (cuDNN needs a real GPU)

#include "core/base/error.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {
[[noreturn]] void no_cudnn(const char* what) {
  fail(detail::concat(what, ": this build has no cuDNN",
#if EMONEXT_CUDA_EMULATION
                      " (the emulation build never has: cuDNN needs a real GPU)"
#else
                      " (cmake did not find it; set CUDNN_ROOT)"
#endif
                      ));
}
}  // namespace

bool cudnn_conv_supported(const CudnnConv&) { return false; }
std::string cudnn_conv_algorithms(const CudnnConv&) { no_cudnn("cudnn_conv_algorithms"); }
bool cudnn_conv_forward(const CudnnConv&, void*, const void*, const void*, const void*, Stream) { no_cudnn("cudnn_conv_forward"); }
bool cudnn_conv_backward_data(const CudnnConv&, void*, const void*, const void*, Stream) { no_cudnn("cudnn_conv_backward_data"); }
bool cudnn_conv_backward_filter(const CudnnConv&, void*, const void*, const void*, Stream) { no_cudnn("cudnn_conv_backward_filter"); }
void cudnn_inject_failures(bool) {}
void set_cudnn_enabled(bool) {}
bool cudnn_enabled() { return false; }
bool conv2d_forward(const Unfold&, int64_t, void*, const void*, const void*, Stream) { return false; }
bool conv2d_backward(const Unfold&, int64_t, void*, void*, const void*, const void*, const void*, Stream) { return false; }

}  // namespace emonext::kernels::cuda

#endif
