// The differentiable ops. Each checks its inputs (throwing emonext::Error
// naming the op, the shapes and the fix), runs the kernel of the inputs'
// backend, and records its backward for autograd.
//
// Binary element-wise ops broadcast as NumPy/PyTorch do; both inputs must have
// the same dtype and device (convert with .to()).
#pragma once
#include <vector>

#include "core/base/schedule.h"
#include "core/tensor.h"

namespace emonext {

// ---- element-wise ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor pow(const Tensor& a, double exponent);
Tensor neg(const Tensor& a);
// A differentiable dtype conversion between floating types (mixed precision): the
// gradient converts back. Tensor::to(DType) is the same without autograd.
Tensor cast(const Tensor& a, DType dtype);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor relu(const Tensor& a);
Tensor sigmoid(const Tensor& a);
// cond is a u8 mask (from the comparisons below); a and b broadcast with it.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// ---- comparisons (not differentiable): u8 masks ----
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }

// ---- reductions; dims may be negative; an empty dims list means all dims ----
Tensor sum(const Tensor& a, std::vector<int> dims = {}, bool keepdim = false);
Tensor mean(const Tensor& a, std::vector<int> dims = {}, bool keepdim = false);
Tensor max(const Tensor& a, std::vector<int> dims = {}, bool keepdim = false);  // gradient shared among ties, as torch.amax
// The sum of the squares of each tensor's elements, as a [count] tensor of f32 (f64 when
// the tensors are f64), in one pass over each and a fixed order (the same bits every
// run); the tensors share a dtype and device. Not differentiable: the parts of a
// gradient norm, brought to the host with one transfer.
Tensor sum_squares(const std::vector<Tensor>& tensors);
// Sums g over the dims that broadcasting added or stretched, giving `shape`.
Tensor sum_to(const Tensor& g, const Shape& shape);

// ---- linear algebra ----
// [..., m, k] @ [..., k, n]; batch dims broadcast; 1-D operands are not accepted.
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in] @ weight[out, in]^T + bias[out] (bias may be undefined).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- over the last dim ----
Tensor softmax(const Tensor& a);
Tensor log_softmax(const Tensor& a);
// logits [N, C], target i64 [N] with values in [0, C); mean over the batch of
// -sum_c q_c log p_c with q = (1 - smoothing) * onehot + smoothing / C.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, double label_smoothing = 0.0);
// [N] i64 labels -> [N, classes] with `on` at the label and `off` elsewhere (not differentiable).
// Labels on the CPU outside [0, classes) are an error; on a GPU they are not read back (a
// wait for the device) and give a row of `off` (the kernels never index by a label).
Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype, double on = 1.0, double off = 0.0);
// The check one_hot and cross_entropy make: labels a 1-D i64 tensor and, on the CPU, within
// [0, classes), else an error naming `op`. A caller about to move labels to a GPU checks them
// here first.
void check_labels(const char* op, const Tensor& labels, int64_t classes);

// ---- across the ranks of a data-parallel run (core/dist.h; alone, each is the identity) ----
// x summed over the ranks, every rank receiving the same bits; the gradient is the sum
// of the ranks' gradients (each rank's loss reads the sum).
Tensor all_reduce_sum(const Tensor& x);
// The ranks' x concatenated along dim 0 in rank order (their sizes along dim 0 may
// differ); x's gradient is this rank's rows of the ranks' gradients summed.
Tensor all_gather(const Tensor& x);
// In place, not recorded: a contiguous f32/f64 tensor summed over the ranks (the
// gradient buckets). `what` names it in a timeout's message.
void all_reduce_sum_(Tensor& t, const char* what);
// The same in parts, so that the sum can run beside the caller's next work: start
// issues it (on a GPU with NCCL, on a stream of NCCL's own, ordered after the work queued
// so far, and t must not be read until the join; elsewhere the whole sum, at once); join
// makes the device's later work wait for every sum started on `device` (a wait on the
// GPU); wait returns once every one of them is complete (the host's bounded wait: a rank
// that stopped answering ends the run).
void all_reduce_sum_start(Tensor& t, const char* what);
void all_reduce_sum_join(Device device);
void all_reduce_sum_wait(Device device, const char* what);

// ---- joining and indexing ----
Tensor concat(const std::vector<Tensor>& tensors, int dim);
// index: i64 1-D tensor of positions along dim (on the same device as a).
Tensor index_select(const Tensor& a, int dim, const Tensor& index);

// ---- the ConvNeXt / EmoNeXt kernels (activations channels-last: [N, H, W, C]) ----
// LayerNorm over the last dim: x [..., C], weight and bias [C].
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);
enum class GeluApprox { None, Tanh };  // None: the exact erf form (ConvNeXt's)
// "erf" or "tanh": the form's name in checkpoints' metadata and emonext_train's --gelu.
const char* gelu_name(GeluApprox approx);
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::None);
// gelu(x + bias) in one pass, bias [C] along the last dim of x.
Tensor bias_gelu(const Tensor& x, const Tensor& bias, GeluApprox approx = GeluApprox::None);
// The block's inverted bottleneck but for the second Linear's bias:
// gelu(x w1^T + b1) w2^T, x [..., C], w1 [H, C], b1 [H], w2 [C2, H]. With the tanh GELU
// and `epilogue`, the first product ends in bias + GELU (keeping the pre-activation for
// the backward) and the backward's product into the GELU ends in its derivative and
// b1's gradient: cuBLASLt's epilogues on a GPU, the same steps after the product on the
// CPU (kernels::GemmEpilogue), which saves two passes over the [..., H] activations.
// Otherwise (erf, f64, H not a multiple of 8, `epilogue` off, or, in either direction, a
// GPU whose cuBLASLt offers no algorithm for the epilogue: reported once) it is linear,
// bias_gelu and linear: the reference the fused path is held to.
Tensor gelu_mlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, GeluApprox approx, bool epilogue);
// Depthwise convolution, stride 1, padding K/2: x [N, H, W, C], weight [C, 1, K, K]
// (PyTorch's layout; K odd), bias [C] or undefined. Matches
// F.conv2d(x.permute(0,3,1,2), weight, bias, padding=K//2, groups=C).permute(0,2,3,1).
Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// The end of a ConvNeXt block, x + drop_path(gamma * (h + bias)), one kernel each way
// (op by op: four passes forward, as many backward): x and h [N, H, W, C], bias and gamma
// [C]. drop_u: drop path's f32 uniform draws [N] (undefined: no drop path); image i is
// kept, scaled by 1 / keep, when drop_u[i] < keep, and zeroed otherwise.
Tensor layer_scale_residual(const Tensor& x, const Tensor& h, const Tensor& bias, const Tensor& gamma,
                            const Tensor& drop_u = Tensor(), double keep = 1);
// Squeeze-and-excitation: the pool x [N, H, W, C] -> [N, C] (mean over H, W), and the
// gate y[n,h,w,c] = x[n,h,w,c] * gate[n,c] with a one-pass fused backward.
Tensor global_avg_pool(const Tensor& x);
Tensor se_gate(const Tensor& x, const Tensor& gate);
// The spatial transformer's sampling. affine_grid: theta [N, 2, 3] -> grid [N, H, W, 2], as
// F.affine_grid(theta, (N, C, H, W), align_corners). grid_sample: input [N, H, W, C]
// (channels-last), grid [N, Ho, Wo, 2] -> [N, Ho, Wo, C], bilinear with zeros padding, as
// F.grid_sample. deterministic: the CUDA input gradient avoids order-dependent float atomics.
Tensor affine_grid(const Tensor& theta, int64_t h, int64_t w, bool align_corners);
// The same with affine_grid's base grid given (affine_grid_base's [1, h*w, 3] of (x, y, 1) per
// output pixel), which affine_grid otherwise makes on the host and copies up each call: a
// wait for a GPU that a layer calling it every step makes once.
Tensor affine_grid_base(int64_t h, int64_t w, bool align_corners, DType dtype, Device device);
Tensor affine_grid(const Tensor& theta, const Tensor& base, int64_t h, int64_t w);
Tensor grid_sample(const Tensor& input, const Tensor& grid, bool align_corners, bool deterministic = false);

// Dense 2-D convolution on channels-last x [N, H, W, Cin] with PyTorch's weight
// [Cout, Cin, KH, KW], bias [Cout] or undefined, zero padding: F.conv2d(x.permute(0,3,1,2),
// weight, bias, stride, padding).permute(0,2,3,1). Patches (im2col) then one GEMM, except
// on CUDA for convolutions that are not patchify ones (kernel = stride, no padding): those
// go to cuDNN, with deterministic algorithms, where the build has it and it offers them for
// the shape and dtype (f32, bf16, f16).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), int64_t stride = 1, int64_t padding = 0);
// Whether conv2d may use cuDNN on CUDA: on by default, off when the environment sets
// EMONEXT_CUDNN=0; tests turn it off to hold cuDNN against the unfold path.
void set_cudnn_convolutions(bool on);
bool cudnn_convolutions();

// Max pooling over k x k windows (stride defaults to k), no padding, floor mode, on
// channels-last x [N, H, W, C]; the gradient goes to the first maximum of each window.
Tensor max_pool2d(const Tensor& x, int64_t k, int64_t stride = 0);
// BatchNorm over N, H, W of channels-last x [N, H, W, C], as F.batch_norm. Training: batch
// statistics (biased variance to normalise), and running_mean/var (buffers, [C]) move by
// momentum toward the batch mean and the unbiased variance (kernels/*/batchnorm; the running
// statistics must be contiguous). Eval: the running statistics.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean, Tensor& running_var,
                  bool training, double momentum = 0.1, double eps = 1e-5);

// ---- optimizer updates: in place, not recorded ----
// One AdamW step on a list of parameters, each with its gradient and moments (of its
// shape; all of one dtype and device; params and moments contiguous): one pass over
// each, a few kernel launches for the whole list. torch.optim.AdamW's formula and
// order (kernels/formulas.h, adamw_apply) for optimiser step t >= 1, on the gradient times
// grad_scale (gradient clipping's factor, applied here rather than in a pass of its
// own). Parameters with decay false skip the weight decay. Checked before anything
// changes; refused while grad mode is on and a param requires grad.
// With `control` (step_check_'s state, on the parameters' device), lr, t and grad_scale
// are read from it on the device instead, and a step it marks skipped changes nothing.
struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  int64_t t = 1;
  double grad_scale = 1;
  const Tensor* control = nullptr;
};
struct AdamWParam {
  Tensor* param;
  const Tensor* grad;
  Tensor *exp_avg, *exp_avg_sq;
  bool decay = true;
};
void adamw_update_(const std::vector<AdamWParam>& params, const AdamWHyper& h);
// The same for one parameter.
void adamw_update_(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWHyper& h);

// The EMA of a model's tensors (kernels::ema_step): each `average` moves toward its
// `model` tensor (same shape, dtype and device; the averages contiguous) after the steps
// that are multiples of `every`, with the reference's decay at that step; a few
// launches for the whole list. With `control` (step_check_'s state) the step is read
// there on the device (the run's step count after the step's check).
struct EmaHyper {
  int64_t every = 16;
  int64_t step = 0;  // the optimiser step just taken, 1-based
  const Tensor* control = nullptr;
};
void ema_update_(const std::vector<Tensor*>& averages, const std::vector<const Tensor*>& model, const EmaHyper& h);

// The training step's checks on the device, so that the host need not wait for them
// (kernels::step_check_apply): from the gradients' sum_squares parts (f32), the loss (f32
// [] or [1]), the logits (f32 [N, classes]) and the labels (i64 [N]), it updates `state`
// (f64, kernels::kStateSize values: the loss scale, fp16's good steps, AdamW's t, the
// halt, the clip factor, the skip, the run's step count and the schedule's learning rate
// at it, which adamw_update_'s control reads) and writes the step's figures into row
// (step count mod rows) of `records` (f64 [rows, kernels::kRecordSize]). One launch, every
// tensor on one device, and nothing passed by value that changes from step to step: a
// CUDA graph can replay it.
struct StepCheckHyper {
  double clip = 0;             // the maximum gradient norm; 0: none
  bool scaler = false;         // fp16's dynamic loss scale
  double scale_floor = 0;      // the scale below which fp16 halts
  LrSchedule schedule;          // the learning rate at each step
};
void step_check_(Tensor& state, Tensor& records, const Tensor& parts, const Tensor& loss, const Tensor& logits, const Tensor& labels,
                 const StepCheckHyper& h);

// ---- random fills from a counter-based generator: the same numbers on every backend ----
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t counter() const { return counter_; }
  void set_state(uint64_t seed, uint64_t counter) { seed_ = seed; counter_ = counter; }
  // Reserves the Philox counters for n values and returns the first.
  uint64_t take(int64_t n) { const uint64_t c = counter_; counter_ += uint64_t((n + 3) / 4); return c; }
  // A CUDA graph's draws (train/step_graph.h): while a base is set (an i64 scalar on the
  // draws' device), each draw's kernel adds the value it finds there when it runs to the
  // counter take() gave it, so that a replay draws new numbers once the base is moved on.
  void set_counter_base(const Tensor* base) { counter_base_ = base; }
  const Tensor* counter_base() const { return counter_base_; }

 private:
  uint64_t seed_ = 0, counter_ = 0;
  const Tensor* counter_base_ = nullptr;
};
Tensor rand(const Shape& shape, Generator& gen, double low = 0.0, double high = 1.0, DType dtype = DType::F32,
            Device device = Device::cpu());
Tensor randn(const Shape& shape, Generator& gen, double mean = 0.0, double std = 1.0, DType dtype = DType::F32,
             Device device = Device::cpu());

}  // namespace emonext
