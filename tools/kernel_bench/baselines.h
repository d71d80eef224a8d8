// The baselines kernel_bench times the engine's kernels against, in the same
// process: naive loops on the CPU; on the GPU, naive one-thread-per-output
// kernels (cuDNN's grouped convolution, the depthwise one's baseline, is the
// engine's own kernels/cuda/cudnn_conv.h).
#pragma once
#include <cstdint>
#include <functional>

#include "kernels/kernels.h"

namespace emonext::bench {

// ---- CPU: plain single-threaded loops, written for clarity, not speed ----
namespace naive_cpu {
void dwconv_forward(const kernels::DwConv& p, float* y, const float* x, const float* w, const float* b);
void dwconv_backward_input(const kernels::DwConv& p, float* dx, const float* dy, const float* w);
void dwconv_backward_weight(const kernels::DwConv& p, float* dw, const float* dy, const float* x);
void layer_norm_forward(float* y, const float* x, const float* w, const float* b, int64_t rows, int64_t cols, double eps);
void layer_norm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t rows,
                         int64_t cols, double eps);
void bias_gelu_forward(float* y, const float* x, const float* b, int64_t rows, int64_t cols);
void gelu_backward(float* dx, const float* dy, const float* x, int64_t n);
void se_gate_forward(float* y, const float* x, const float* g, int64_t n, int64_t hw, int64_t c);
void se_gate_backward(float* dx, float* dg, const float* dy, const float* x, const float* g, int64_t n, int64_t hw, int64_t c);
void se_pool(float* out, const float* x, int64_t n, int64_t hw, int64_t c);
void grid_sample_forward(const kernels::GridSample& p, float* out, const float* in, const float* grid);
void grid_sample_backward(const kernels::GridSample& p, float* din, float* dgrid, const float* dout, const float* in, const float* grid);
}  // namespace naive_cpu

#if EMONEXT_WITH_CUDA && !EMONEXT_CUDA_EMULATION && !EMONEXT_BENCH_NO_CUDNN
#define EMONEXT_BENCH_GPU 1
// ---- GPU ----
// Device-to-device copy bandwidth, counting bytes read and written, in GB/s.
double gpu_copy_bandwidth_gbs(int device);
// Median milliseconds of fn over `iters` runs after warm-up, timed with CUDA events.
double gpu_time_ms(const std::function<void()>& fn, int iters);

namespace naive_gpu {
void layer_norm_forward(DType t, void* y, const void* x, const void* w, const void* b, int64_t rows, int64_t cols, double eps);
void layer_norm_backward(DType t, void* dx, void* dw, void* db, const void* dy, const void* x, const void* w,
                         int64_t rows, int64_t cols, double eps);
void bias_gelu_forward(DType t, void* y, const void* x, const void* b, int64_t rows, int64_t cols);
void gelu_backward(DType t, void* dx, const void* dy, const void* x, int64_t n);
void se_gate_forward(DType t, void* y, const void* x, const void* g, int64_t n, int64_t hw, int64_t c);
void se_gate_backward(DType t, void* dx, void* dg, const void* dy, const void* x, const void* g, int64_t n,
                      int64_t hw, int64_t c);
void se_pool(DType t, void* out, const void* x, int64_t n, int64_t hw, int64_t c);
// One thread per output element; the input gradient scatters with float atomics into an f32 buffer.
void grid_sample_forward(const kernels::GridSample& p, void* out, const void* in, const void* grid);
void grid_sample_backward(const kernels::GridSample& p, float* din_f32, void* dgrid, const void* dout, const void* in, const void* grid);
}  // namespace naive_gpu

#else
#define EMONEXT_BENCH_GPU 0
#endif

}  // namespace emonext::bench
