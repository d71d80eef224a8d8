#include "layers/layers.h"

#include <cmath>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/dist.h"

namespace emonext {

Linear::Linear(int64_t in, int64_t out, bool with_bias) {
  weight = Tensor::zeros({out, in});
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = Tensor::zeros({out});
    register_parameter("bias", &bias);
  }
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

LayerNorm::LayerNorm(int64_t c, double eps_) : eps(eps_) {
  weight = Tensor::ones({c});
  bias = Tensor::zeros({c});
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

Conv2d::Conv2d(int64_t in, int64_t out, int64_t k, int64_t stride_, int64_t padding_, bool with_bias)
    : stride(stride_), padding(padding_) {
  weight = Tensor::zeros({out, in, k, k});
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = Tensor::zeros({out});
    register_parameter("bias", &bias);
  }
}

Tensor Conv2d::forward(const Tensor& x) const { return conv2d(x, weight, bias, stride, padding); }

DepthwiseConv::DepthwiseConv(int64_t c, int64_t k) {
  weight = Tensor::zeros({c, 1, k, k});
  bias = Tensor::zeros({c});
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
}

Tensor DepthwiseConv::forward(const Tensor& x) const { return depthwise_conv2d(x, weight, bias); }

BatchNorm2d::BatchNorm2d(int64_t c, double eps_, double momentum_) : eps(eps_), momentum(momentum_) {
  weight = Tensor::ones({c});
  bias = Tensor::zeros({c});
  running_mean = Tensor::zeros({c});
  running_var = Tensor::ones({c});
  num_batches_tracked = Tensor::zeros({}, DType::I64);
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
  register_buffer("running_mean", &running_mean);
  register_buffer("running_var", &running_var);
  register_buffer("num_batches_tracked", &num_batches_tracked);
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  if (training()) {
    NoGradGuard no_grad;
    // In place, as the running statistics are: the count keeps its memory from step to
    // step, so a captured step (core/graph.h) adds to the same counter at each replay.
    num_batches_tracked.copy_(num_batches_tracked.to(DType::F64) + 1.0);
  }
  if (training() && shard && shard->sync && dist::size() > 1) return synced_forward(x);
  return batch_norm(x, weight, bias, running_mean, running_var, training(), momentum, eps);
}

// The statistics of the global batch: each rank's sums over its rows all-reduced (two
// passes: the mean, then the squared deviations from it), written with differentiable
// ops, so the backward all-reduces the statistics' gradients as PyTorch's SyncBatchNorm
// does. The same running-statistics update as batch_norm's.
Tensor BatchNorm2d::synced_forward(const Tensor& x) {
  const int64_t c = x.size(-1);
  const Tensor rows = x.contiguous().reshape({-1, c});
  double count = double(rows.size(0));
  dist::all_reduce_sum(&count, 1, "BatchNorm2d (--sync-batch): the batch's rows");
  EMONEXT_CHECK(count > 1, "BatchNorm2d: training needs more than one value per channel, got ", count);
  const Tensor mu = all_reduce_sum(sum(rows, {0})) / count;
  const Tensor d = rows - mu;
  const Tensor var = all_reduce_sum(sum(d * d, {0})) / count;
  const Tensor y = d / sqrt(var + eps) * weight + bias;
  {
    NoGradGuard no_grad;
    running_mean.copy_(running_mean * (1 - momentum) + mu.detach() * momentum);
    running_var.copy_(running_var * (1 - momentum) + var.detach() * (momentum * count / (count - 1)));
  }
  return y.reshape(x.shape());
}

Tensor drop_path_draws(int64_t n, double p, bool training, Generator& gen, Device device, const BatchShard* shard) {
  if (!training || p <= 0.0) return Tensor();
  EMONEXT_CHECK(p < 1.0, "drop_path: rate must be below 1, got ", p);
  NoGradGuard no_grad;
  if (!shard || shard->total == 0) return rand({n}, gen, 0.0, 1.0, DType::F32, device);
  EMONEXT_CHECK(shard->offset + n <= shard->total, "drop_path: rows [", shard->offset, ", ", shard->offset + n,
                ") are outside the global batch of ", shard->total);
  return rand({shard->total}, gen, 0.0, 1.0, DType::F32, device).slice(0, shard->offset, shard->offset + n).contiguous();
}

Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen) {
  const Tensor u = drop_path_draws(x.size(0), p, training, gen, x.device());
  if (!u.defined()) return x;
  const double keep = 1.0 - p;
  Shape mask_shape(size_t(x.dim()), 1);
  mask_shape[0] = x.size(0);
  // u < keep has probability keep, as timm's floor(keep + u); the mask is a constant.
  Tensor mask;
  {
    NoGradGuard no_grad;
    mask = lt(u, Tensor::full({}, keep, DType::F32, x.device())).to(x.dtype()).reshape(mask_shape) * (1.0 / keep);
  }
  return x * mask;
}

SqueezeExcite::SqueezeExcite(int64_t c, int64_t reduction) {
  fc0 = fc.add_at(0, std::make_unique<Linear>(c, c / reduction, false));
  fc2 = fc.add_at(2, std::make_unique<Linear>(c / reduction, c, false));
  register_module("fc", &fc);
}

Tensor SqueezeExcite::forward(const Tensor& x) const {
  const Tensor g = sigmoid(fc2->forward(relu(fc0->forward(global_avg_pool(x)))));
  return se_gate(x, g);
}

int64_t SpatialTransformer::feature_size(int64_t image_size) {
  const int64_t s = ((image_size - 6) / 2 - 4) / 2;
  EMONEXT_CHECK(image_size >= 18 && s >= 1, "SpatialTransformer: image size ", image_size,
                " is too small for the localisation network (at least 18)");
  return s;
}

SpatialTransformer::SpatialTransformer(int64_t image_size) {
  const int64_t s = feature_size(image_size);
  conv1 = localization.add_at(0, std::make_unique<Conv2d>(3, 8, 7));
  bn1 = localization.add_at(1, std::make_unique<BatchNorm2d>(8));
  conv2 = localization.add_at(4, std::make_unique<Conv2d>(8, 10, 5));
  bn2 = localization.add_at(5, std::make_unique<BatchNorm2d>(10));
  fc1 = fc_loc.add_at(0, std::make_unique<Linear>(10 * s * s, 32));
  fc2 = fc_loc.add_at(2, std::make_unique<Linear>(32, 6));
  register_module("localization", &localization);
  register_module("fc_loc", &fc_loc);
}

Tensor SpatialTransformer::theta(const Tensor& x) {
  Tensor h = relu(max_pool2d(bn1->forward(conv1->forward(x)), 2));
  h = relu(max_pool2d(bn2->forward(conv2->forward(h)), 2));
  // The reference flattens an NCHW map: channel-major order.
  h = h.permute({0, 3, 1, 2}).contiguous().reshape({h.size(0), -1});
  return fc2->forward(relu(fc1->forward(h))).reshape({x.size(0), 2, 3});
}

Tensor SpatialTransformer::forward(const Tensor& x) {
  EMONEXT_CHECK(x.dim() == 4 && x.size(3) == 3, "SpatialTransformer: expected images [N, H, W, 3], got ", x.str());
  const Tensor t = theta(x);
  const int64_t h = x.size(1), w = x.size(2);
  if (!grid_base.defined() || grid_base.size(1) != h * w || grid_base.dtype() != t.dtype() || grid_base.device() != t.device())
    grid_base = affine_grid_base(h, w, true, t.dtype(), t.device());
  const Tensor grid = affine_grid(t, grid_base, h, w);
  return grid_sample(x, grid, true, deterministic);
}

BatchAttention::BatchAttention(int64_t c) : norm(c, 1e-5), query(c, c), key(c, c), value(c, c) {
  register_module("norm", &norm);
  register_module("query", &query);
  register_module("key", &key);
  register_module("value", &value);
}

Tensor BatchAttention::forward(const Tensor& f) const {
  const Tensor h = norm.forward(f);
  const Tensor q = query.forward(h);
  const Tensor k = training() && shard && shard->sync && dist::size() > 1 ? all_gather(key.forward(h)) : key.forward(h);
  const double scale = std::pow(double(f.size(1)), -0.25);
  return softmax(matmul(q, k.transpose(0, 1)) * scale);
}

ConvNeXtBlock::ConvNeXtBlock(int64_t c, double rate, Generator* gen_, double layer_scale_init)
    : dwconv(c), norm(c, 1e-6), pwconv1(c, 4 * c), pwconv2(4 * c, c), drop_path_rate(rate), gen(gen_) {
  gamma = Tensor::full({c}, layer_scale_init);
  register_parameter("gamma", &gamma);
  register_module("dwconv", &dwconv);
  register_module("norm", &norm);
  register_module("pwconv1", &pwconv1);
  register_module("pwconv2", &pwconv2);
}

Tensor ConvNeXtBlock::forward(const Tensor& x) const {
  Tensor h = norm.forward(dwconv.forward(x));
  // pwconv2(gelu(pwconv1(h))) but for pwconv2's bias; pwconv1's bias fused into the GELU.
  h = gelu_mlp(h, pwconv1.weight, pwconv1.bias, pwconv2.weight, gelu, gemm_epilogue);
  // x + drop_path(gamma * (h + pwconv2's bias)): the bias, the layer scale, drop path and
  // the residual add in one op.
  const Tensor draws = drop_path_draws(x.size(0), drop_path_rate, training(), *gen, x.device(), shard);
  return layer_scale_residual(x, h, pwconv2.bias, gamma, draws, 1.0 - drop_path_rate);
}

}  // namespace emonext
