// Dense and grouped 2-D convolution through cuDNN, channels-last: x [n, h, w, c],
// weight [cout, kh, kw, c / groups] (cuDNN's NHWC filter layout), y [n, ho, wo, cout],
// zero padding, f32 accumulation. The CUDA backend's conv2d_forward/backward (kernels.h)
// run through it; kernel_bench uses it, grouped, as the depthwise convolution's baseline. No CUDA header
// here, so core/ can include it in every build; the functions exist in CUDA builds.
#pragma once
#include <cstdint>
#include <string>

#include "kernels/view.h"

namespace emonext::kernels::cuda {

struct CudnnConv {
  DType dtype = DType::F32;
  int64_t n = 0, h = 0, w = 0, c = 0, cout = 0, kh = 1, kw = 1, stride = 1, pad = 0, groups = 1;
  // Only algorithms that give the same bits run after run (what the engine uses); the
  // benchmark's baseline turns this off to get cuDNN's first choice, as PyTorch does.
  bool deterministic = true;
  int64_t ho() const { return (h + 2 * pad - kh) / stride + 1; }
  int64_t wo() const { return (w + 2 * pad - kw) / stride + 1; }
};

// Whether cuDNN runs p on the current device: the build has cuDNN and is not the
// emulation build, the dtype is f32, bf16 or f16, and cuDNN's heuristics offer an
// algorithm for each of the three passes (deterministic ones when asked) within a
// 256 MiB workspace. The choice is made once per shape and device, then cached.
bool cudnn_conv_supported(const CudnnConv& p);
// The chosen algorithms in words ("fwd 1, bwd data 1, bwd filter 1"), for the benchmark.
std::string cudnn_conv_algorithms(const CudnnConv& p);

// y = conv(x, w) (+ b[cout] when b is not null); dx and dw are written, not accumulated.
// Each returns false when cuDNN's call fails as it runs (an algorithm its heuristics
// offered that cannot run here, a status error): the output is then undefined, the
// failure is printed once per process, and cudnn_conv_supported(p) is false from then
// on, so the caller computes this convolution another way (conv2d: unfold + GEMM).
[[nodiscard]] bool cudnn_conv_forward(const CudnnConv& p, void* y, const void* x, const void* w, const void* b, Stream s);
[[nodiscard]] bool cudnn_conv_backward_data(const CudnnConv& p, void* dx, const void* dy, const void* w, Stream s);
[[nodiscard]] bool cudnn_conv_backward_filter(const CudnnConv& p, void* dw, const void* dy, const void* x, Stream s);

// Tests only: while on, every cuDNN call reports a failure (the fallback's test on a GPU).
void cudnn_inject_failures(bool on);

// Whether conv2d_forward/backward (kernels.h) may use cuDNN: on unless EMONEXT_CUDNN=0 is in
// the environment or set_cudnn_enabled(false) was called (core's set_cudnn_convolutions).
void set_cudnn_enabled(bool on);
bool cudnn_enabled();

}  // namespace emonext::kernels::cuda
