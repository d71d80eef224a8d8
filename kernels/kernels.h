// Every kernel entry point of both backends. The two namespaces declare the
// same functions: kernels::cpu runs on host memory, kernels::cuda on device
// memory and enqueues on the given stream. Callers (core/) validate shapes,
// dtypes and devices first; kernels assume valid arguments.
#pragma once
#include <cstdint>
#include <vector>

#include "core/base/schedule.h"
#include "kernels/formulas.h"
#include "kernels/view.h"

namespace emonext::kernels {

// What a GEMM does to its f32 result before it is rounded and stored. The CUDA backend
// runs these as cuBLASLt epilogues (CUBLASLT_EPILOGUE_GELU_AUX_BIAS and
// CUBLASLT_EPILOGUE_DGELU_BGRAD, whose GELU is the tanh form), the CPU backend after
// its own product; both need batch 1, alpha 1, beta 0.
enum class GemmEpilogue {
  None,
  // aux = acc + bias[col] (the pre-activation, for the backward), c = gelu_tanh(aux).
  BiasGeluTanh,
  // c = acc * gelu_tanh'(aux), bias_grad[col] = the column sums of c as stored.
  GeluTanhBackward,
};

// Row-major batched matrix product: C = alpha * op(A) @ op(B) + beta * C, with
// op(X) = X or X^T, for `batch` matrices at the given element strides.
struct Gemm {
  DType dtype = DType::F32;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr; int64_t lda = 0, stride_a = 0;
  const void* b = nullptr; int64_t ldb = 0, stride_b = 0;
  void* c = nullptr; int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  float alpha = 1.0f, beta = 0.0f;
  GemmEpilogue epilogue = GemmEpilogue::None;
  const void* bias = nullptr;  // [n], BiasGeluTanh
  void* bias_grad = nullptr;   // [n], GeluTanhBackward
  void* aux = nullptr;         // [m, ldaux]: written by BiasGeluTanh, read by GeluTanhBackward
  int64_t ldaux = 0;
};

// Depthwise KxK convolution, stride 1, padding K/2, on channels-last x [n, h, w, c]
// with weight [c, k*k]: PyTorch's [c, 1, k, k] as it is stored, so neither the weight
// nor its gradient is copied on the way in or out (the kernels rearrange it themselves).
struct DwConv {
  DType dtype = DType::F32;
  int64_t n = 0, h = 0, w = 0, c = 0, k = 7;
  // bf16/f16 on a GPU: the kernels move two channels per thread as one 32-bit load
  // (kernels/cuda/dwconv.cu); false keeps one channel per thread, the kernels the packed
  // ones are checked and timed against (the same bits but for the weight gradient's
  // order of summation).
  bool packed = true;
};

// Bilinear grid sampling, zeros padding: input [n, h, w, c] channels-last, grid
// [n, ho, wo, 2] of (x, y) in [-1, 1], output [n, ho, wo, c] (kernels/grid_sample_math.h).
struct GridSample {
  DType dtype = DType::F32;
  int64_t n = 0, h = 0, w = 0, c = 0, ho = 0, wo = 0;
  bool align_corners = false;
};

// Patches of a channels-last image for a dense convolution: x [n, h, w, c] ->
// cols [n, ho, wo, kh, kw, c] (zeros where the window leaves the image).
struct Unfold {
  DType dtype = DType::F32;
  int64_t n = 0, h = 0, w = 0, c = 0, kh = 1, kw = 1, stride = 1, pad = 0, ho = 0, wo = 0;
};

// Max pooling over k x k windows at a stride, no padding, floor mode, channels-last.
struct Pool {
  DType dtype = DType::F32;
  int64_t n = 0, h = 0, w = 0, c = 0, k = 2, stride = 2, ho = 0, wo = 0;
};

// The end of a ConvNeXt block, x + drop_path(gamma * (h + b)), in one pass, on
// contiguous [n, hw, c] maps: y = x + (h + b[c]) * gamma[c] * m, where m is image i's
// drop-path scale (kernels/formulas.h, drop_path_scale: 1 / keep when its uniform draw
// u[i] < keep, else 0; 1 for every image when u is null).
struct LayerScaleResidual {
  DType dtype = DType::F32;
  int64_t n = 0, hw = 0, c = 0;
  double keep = 1;
};

// Multi-tensor kernels take a list of tensors and do them all in as few launches as
// they can (a few for a whole model's parameters, where one per tensor took ~150):
// each tensor is n contiguous elements of the list's one dtype.
struct TensorSpan {
  const void* data = nullptr;
  int64_t n = 0;
};

// One AdamW step (kernels/formulas.h, adamw_apply) on a list of parameters: p, m and v are
// updated in place from g; weight_decay is the parameter's own (0 where it is exempt).
struct AdamWTensor {
  void *p = nullptr, *m = nullptr, *v = nullptr;
  const void* g = nullptr;
  int64_t n = 0;
  double weight_decay = 0;
};
// The training step's bookkeeping on the device (step_check below), so that the host
// need not wait for the gradient norm: a block of f64 values kept from step to step ...
enum StepState : int {
  kLossScale,   // what the step's loss was multiplied by: fp16's dynamic scale, else 1
  kGoodSteps,   // fp16: steps in a row without inf/NaN gradients (2000 double the scale)
  kAdamSteps,   // AdamW's step count t
  kHalted,      // 0, or why every later update is skipped: a StepHalt
  kGradScale,   // what AdamW multiplies the gradients by: clipping's factor / the loss scale
  kSkip,        // 1: AdamW leaves this step's parameters, moments and t as they are
  kRunSteps,    // the run's steps so far, skipped ones too: the schedule's step and the ring's row
  kLearningRate,  // the step's learning rate, from the schedule at kRunSteps
  kStateSize
};
enum StepHalt : int { kRunning = 0, kNonFiniteLoss, kNonFiniteGradients, kScaleUnderflow };
// ... and a record per step, a row of a ring the host reads once per logging interval.
enum StepRecordField : int { kRecLoss, kRecCorrect, kRecNorm, kRecScale, kRecSkipped, kRecHalted, kRecordSize };
inline constexpr int64_t kScaleGrowthInterval = 2000;  // PyTorch's GradScaler default

struct StepCheck {
  double* state = nullptr;           // [kStateSize]
  double* records = nullptr;         // [ring_rows, kRecordSize]: step s writes row s mod ring_rows
  int64_t ring_rows = 1;
  const float* parts = nullptr;      // [n_parts]: sum_squares of the (loss-scaled) gradients
  int64_t n_parts = 0;
  const float* loss = nullptr;       // the step's loss, unscaled
  const float* logits = nullptr;     // [rows, classes]
  const int64_t* labels = nullptr;   // [rows]
  int64_t rows = 0, classes = 0;
  double clip = 0;                   // the maximum gradient norm; 0: no clipping
  bool scaler = false;               // fp16's dynamic loss scale is on
  double scale_floor = 0;            // fp16 halts when the scale falls below this
  LrSchedule schedule;               // the learning rate's, at kRunSteps
};
// The whole check, one thread's work (both backends run it as written): the norm in
// f64 in the parts' order, divided by the loss scale; then either a step (the clip
// factor, t + 1, fp16's good count) or a skip (inf/NaN gradients: fp16 halves its scale;
// without fp16, or a non-finite loss, the run halts and every later update is skipped).
// Everything that changes from step to step is read from and written to the state, so
// that a CUDA graph replaying the launch takes a new step each time.
EMONEXT_HD void step_check_apply(const StepCheck& a) {
  double* st = a.state;
  const int64_t step = int64_t(st[kRunSteps]);
  st[kRunSteps] = double(step + 1);
  st[kLearningRate] = scheduled_lr(a.schedule, step);
  double total = 0;
  for (int64_t i = 0; i < a.n_parts; ++i) total += double(a.parts[i]);
  const double scale = st[kLossScale], norm = m_sqrt(total) / scale;
  const double loss = double(*a.loss);
  int64_t correct = 0;  // the rows whose first largest logit is their label's
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* row = a.logits + r * a.classes;
    int64_t best = 0;
    for (int64_t c = 1; c < a.classes; ++c)
      if (row[c] > row[best]) best = c;
    correct += best == a.labels[r];
  }
  bool skip = true;
  if (st[kHalted] != 0) {
  } else if (!(loss - loss == 0)) {  // inf or NaN
    st[kHalted] = double(kNonFiniteLoss);
  } else if (norm - norm == 0) {
    skip = false;
    st[kGradScale] = (a.clip > 0 ? clip_factor(norm, a.clip) : 1.0) / scale;
    st[kAdamSteps] += 1;
    if (a.scaler && (st[kGoodSteps] += 1) == double(kScaleGrowthInterval)) {
      st[kLossScale] = scale * 2;
      st[kGoodSteps] = 0;
    }
  } else if (!a.scaler) {
    st[kHalted] = double(kNonFiniteGradients);
  } else {
    st[kLossScale] = scale / 2;
    st[kGoodSteps] = 0;
    if (scale / 2 < a.scale_floor) st[kHalted] = double(kScaleUnderflow);
  }
  st[kSkip] = skip ? 1 : 0;
  double* rec = a.records + (step % a.ring_rows) * kRecordSize;
  rec[kRecLoss] = loss;
  rec[kRecCorrect] = double(correct);
  rec[kRecNorm] = norm;
  rec[kRecScale] = scale;
  rec[kRecSkipped] = skip ? 1 : 0;
  rec[kRecHalted] = st[kHalted];
}

// The scalars of an AdamW step that the whole list shares. The learning rate, t and
// grad_scale are the host's unless `control` points at step_check's state, on the
// tensors' device: then they are read from there, and a step it marks skipped changes
// nothing.
struct AdamWStep {
  DType dtype = DType::F32;
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double t = 1, grad_scale = 1;
  const double* control = nullptr;
};
EMONEXT_HD bool adamw_skips(const AdamWStep& a) { return a.control != nullptr && a.control[kSkip] != 0; }
// The step's scalars for one parameter (weight_decay: its own, 0 where exempt) in the
// accumulation type A, as both backends hand them to adamw_apply: the decay 1 - lr *
// weight_decay and torch's bias corrections, in f64, from t.
template <class A>
EMONEXT_HD AdamWScalars<A> adamw_scalars(const AdamWStep& a, double weight_decay) {
  const double lr = a.control ? a.control[kLearningRate] : a.lr;
  const double t = a.control ? a.control[kAdamSteps] : a.t;
  const double grad_scale = a.control ? a.control[kGradScale] : a.grad_scale;
  return {A(grad_scale), A(1 - lr * weight_decay), A(a.beta1), A(1 - a.beta1), A(a.beta2), A(1 - a.beta2), A(a.eps),
          A(m_sqrt(1 - m_pow(a.beta2, t))), A(-lr / (1 - m_pow(a.beta1, t)))};
}

// The EMA of the weights (train/optim.h, Ema) on a list of tensors of one dtype: after
// the steps that are multiples of `every`, each average v moves toward the model's x,
// v = v d + x (1 - d) with the reference's decay d = min(0.99, 1 - (1 + s - 100)^(-2/3)),
// or v = x while s <= 100 (d = 0) and for integral tensors (counters). The step s is the
// host's unless `control` points at step_check's state: then it is read there (its run
// step count, the step just checked), so that a CUDA graph's replay takes its own.
struct EmaTensor {
  void* v = nullptr;
  const void* x = nullptr;
  int64_t n = 0;
};
struct EmaStep {
  DType dtype = DType::F32;
  int64_t every = 16;
  int64_t step = 0;                 // the optimiser step just taken (1-based)
  const double* control = nullptr;
};
// The decay after the step, or -1 when the step leaves the averages as they are.
EMONEXT_HD double ema_decay(const EmaStep& a) {
  const int64_t s = a.control ? int64_t(a.control[kRunSteps]) : a.step;
  if (s % a.every != 0) return -1;
  if (s <= 100) return 0;
  const double d = 1 - m_pow(double(1 + s - 100), -2.0 / 3.0);
  return d < 0.99 ? d : 0.99;
}
// One value of the average, in the accumulation type A: the op-by-op form's
// v * d + x * (1 - d).
template <class A>
EMONEXT_HD A ema_apply(A v, A x, double d) {
  if (d == 0) return x;
  const A kept = v * A(d), moved = x * A(1 - d);
  return kept + moved;
}

#define EMONEXT_KERNEL_DECLARATIONS                                                                   \
  /* elementwise.{cpp,cu}: every view has the output's shape (broadcast inputs have stride 0) */   \
  void copy(const View& dst, const View& src, Stream s); /* any dtype to any dtype */               \
  void fill(const View& dst, double value, Stream s);                                              \
  /* contiguous floating dst; uniform in [a, b) or normal(mean a, std b) */                        \
  /* counter_base: null, or a device u64 added to counter (a CUDA graph's draws, core/ops.h) */  \
  void random(const View& dst, RandomKind kind, uint64_t seed, uint64_t counter,                  \
              const uint64_t* counter_base, double a, double b, Stream s);                         \
  void unary(UnaryOp op, const View& out, const View& in, double scalar, Stream s);                \
  void binary(BinaryOp op, const View& out, const View& a, const View& b, Stream s);               \
  void compare(CompareOp op, const View& out_u8, const View& a, const View& b, Stream s);          \
  void where(const View& out, const View& cond_u8, const View& a, const View& b, Stream s);        \
  /* reduce.{cpp,cu}: contiguous [outer, r, inner] -> [outer, inner]; sum, max or mean */        \
  void reduce(ReduceOp op, void* out, const void* in, DType dtype, int64_t outer, int64_t r,      \
              int64_t inner, Stream s);                                                            \
  /* out[i] = the sum of squares of tensor i of the list, in the accumulation type (f32 for */     \
  /* f32, bf16 and f16; f64 for f64): the gradients' parts of the norm. Fixed order */              \
  void sum_squares(void* out, const std::vector<TensorSpan>& in, DType dtype, Stream s);           \
  /* softmax.{cpp,cu}: over the last dim of contiguous [rows, cols] */                             \
  void softmax_forward(bool log, void* out, const void* in, DType dtype, int64_t rows,            \
                       int64_t cols, Stream s);                                                    \
  void softmax_backward(bool log, void* dx, const void* y, const void* dy, DType dtype,           \
                        int64_t rows, int64_t cols, Stream s);                                     \
  /* gemm.{cpp,cu}. gemm_epilogue: a product with an epilogue (batch 1), false where the */     \
  /* backend has no algorithm for it (cuBLASLt's heuristic offers none for the shape): */          \
  /* nothing is written and the caller computes it unfused. gemm with an epilogue fails there */   \
  void gemm(const Gemm& g, Stream s);                                                              \
  bool gemm_epilogue(const Gemm& g, Stream s);                                                     \
  /* index.{cpp,cu}: contiguous [outer, dim, inner]; idx are valid (checked by the caller) */      \
  void index_select(void* out, const void* in, DType dtype, const int64_t* idx, int64_t outer,    \
                    int64_t in_dim, int64_t n_idx, int64_t inner, Stream s);                       \
  void index_add(void* out, const void* src, DType dtype, const int64_t* idx, int64_t outer,      \
                 int64_t out_dim, int64_t n_idx, int64_t inner, Stream s);                         \
  void one_hot(void* out, DType dtype, const int64_t* labels, int64_t n, int64_t classes,         \
               double on, double off, Stream s);                                                   \
  /* layernorm.{cpp,cu}: over the last dim of contiguous [rows, cols]; mean and rstd are */        \
  /* [rows] of f64 for f64 input, else f32; dw and db are written, not accumulated */              \
  void layer_norm_forward(void* y, void* mean, void* rstd, const void* x, const void* w,          \
                          const void* b, DType dtype, int64_t rows, int64_t cols, double eps,      \
                          Stream s);                                                               \
  void layer_norm_backward(void* dx, void* dw, void* db, const void* dy, const void* x,           \
                           const void* mean, const void* rstd, const void* w, DType dtype,        \
                           int64_t rows, int64_t cols, Stream s);                                  \
  /* batchnorm.{cpp,cu}: training-mode BatchNorm over the rows of contiguous x [rows, c]: */      \
  /* y, and the batch mean and rstd = 1/sqrt(var + eps) (biased var) saved as [c] of the */        \
  /* accumulation type; running_mean/var (T, may both be null) move by momentum with the */        \
  /* unbiased var. backward: dx, dw = sum dy * xhat, db = sum dy (written). Fixed order */          \
  void batch_norm_forward(void* y, void* mean, void* rstd, void* running_mean, void* running_var, \
                          const void* x, const void* w, const void* b, DType dtype, int64_t rows,  \
                          int64_t c, double eps, double momentum, Stream s);                       \
  void batch_norm_backward(void* dx, void* dw, void* db, const void* dy, const void* x,            \
                           const void* mean, const void* rstd, const void* w, DType dtype,        \
                           int64_t rows, int64_t c, Stream s);                                     \
  /* dwconv.{cpp,cu}; b and db may be null; dw [c, k*k] and db [c] (the column sums of dy, */     \
  /* taken in the same pass) are written, not accumulated. Fixed order */                          \
  void dwconv_forward(const DwConv& p, void* y, const void* x, const void* w, const void* b,      \
                      Stream s);                                                                   \
  void dwconv_backward_input(const DwConv& p, void* dx, const void* dy, const void* w, Stream s); \
  void dwconv_backward_weight(const DwConv& p, void* dw, void* db, const void* dy, const void* x, \
                              Stream s);                                                           \
  /* bias_gelu.{cpp,cu}: bias_gelu's backward on contiguous [rows, c]: dx = g * gelu'(x + b), and */    \
  /* db = the column sums of dx, in one pass over g and x. Fixed order */                          \
  void bias_gelu_backward(DType dtype, bool tanh, void* dx, void* db, const void* g, const void* x,\
                          const void* b, int64_t rows, int64_t c, Stream s);                      \
  /* residual.{cpp,cu}: the block's end (dx is g itself: no kernel). Backward: dh = g m gamma, */ \
  /* db = the column sums of dh, dgamma = the column sums of g m (h + b). Fixed order */           \
  void layer_scale_residual_forward(const LayerScaleResidual& p, void* y, const void* x,           \
                                    const void* h, const void* b, const void* gamma,              \
                                    const float* u, Stream s);                                    \
  void layer_scale_residual_backward(const LayerScaleResidual& p, void* dh, void* db,             \
                                     void* dgamma, const void* g, const void* h, const void* b,   \
                                     const void* gamma, const float* u, Stream s);                \
  /* se.{cpp,cu}: gate y = x * g[n, c] on x [n, hw, c]; backward in one pass over dy and x: */     \
  /* dx = dy * g, dg[n, c] = sum over hw of dy * x */                                              \
  void se_gate_backward(void* dx, void* dg, const void* dy, const void* x, const void* g,         \
                        DType dtype, int64_t n, int64_t hw, int64_t c, Stream s);                  \
  /* grid_sample.{cpp,cu}: dinput (written, may be null) and dgrid (may be null); the CUDA */     \
  /* input gradient uses float atomics, or 64-bit fixed-point ones when deterministic */          \
  void grid_sample_forward(const GridSample& p, void* out, const void* in, const void* grid,      \
                           Stream s);                                                              \
  void grid_sample_backward(const GridSample& p, void* dinput, void* dgrid, const void* dout,     \
                            const void* in, const void* grid, bool deterministic, Stream s);        \
  /* unfold.{cpp,cu}: im2col and its adjoint; fold gathers (one writer per input element) */     \
  void unfold(const Unfold& p, void* cols, const void* x, Stream s);                               \
  void fold(const Unfold& p, void* dx, const void* dcols, Stream s);                               \
  /* conv.cpp, cudnn_conv.cu: dense convolution of x [n, h, w, c] with w [cout, kh, kw, c] */     \
  /* into y [n, ho, wo, cout], no bias, by the backend's own path: the CPU's banded kernels */      \
  /* (f32, f64), cuDNN on CUDA. Each returns false where the backend has no such path for p */      \
  /* (or, on CUDA, its call failed as it ran): the caller then takes unfold + GEMM. The */           \
  /* backward writes dx (unless null) and dw */                                                     \
  bool conv2d_forward(const Unfold& p, int64_t cout, void* y, const void* x, const void* w,        \
                      Stream s);                                                                   \
  bool conv2d_backward(const Unfold& p, int64_t cout, void* dx, void* dw, const void* dy,          \
                       const void* x, const void* w, Stream s);                                    \
  /* pool.{cpp,cu}: argmax holds, per output, the input's y * w + x (first maximum; NaN wins); */ \
  /* the backward gathers, so overlapping windows need no atomics */                              \
  void max_pool_forward(const Pool& p, void* out, int64_t* argmax, const void* x, Stream s);      \
  void max_pool_backward(const Pool& p, void* dx, const void* dy, const int64_t* argmax, Stream s);\
  /* optim.{cpp,cu}: one read of p, m, v and g, one write of p, m and v */                        \
  void adamw_step(const AdamWStep& a, const std::vector<AdamWTensor>& tensors, Stream s);         \
  void ema_step(const EmaStep& a, const std::vector<EmaTensor>& tensors, Stream s);               \
  void step_check(const StepCheck& a, Stream s); /* one launch of one thread */

namespace cpu {
EMONEXT_KERNEL_DECLARATIONS
}
namespace cuda {
EMONEXT_KERNEL_DECLARATIONS
}
#undef EMONEXT_KERNEL_DECLARATIONS

}  // namespace emonext::kernels
