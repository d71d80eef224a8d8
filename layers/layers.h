// The layers EmoNeXt is made of, each a Module whose tensor names are the
// reference's. Activations are channels-last: images and maps [N, H, W, C],
// features [N, C]. Parameters are stored in PyTorch's layouts (conv [out, in, kh, kw],
// depthwise [C, 1, K, K], Linear [out, in]) so checkpoints need no conversion.
//
// Constructors create tensors of the right shapes with PyTorch's constant
// initialisations (ones, zeros); random initialisation is the model's job
// (models/emonext.h: init_weights), as in the reference.
#pragma once
#include <cstdint>
#include <memory>

#include "core/ops.h"
#include "layers/module.h"

namespace emonext {

class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias = true);
  Tensor forward(const Tensor& x) const;  // x [..., in] -> [..., out]
  Tensor weight, bias;                     // [out, in], [out] (undefined without bias)
};

// LayerNorm over the last dim (ConvNeXt's "channels_first" LayerNorm too: channels
// are the last dim here).
class LayerNorm : public Module {
 public:
  LayerNorm(int64_t c, double eps);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
  double eps;
};

// Dense convolution, zero padding, on [N, H, W, Cin].
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t padding = 0, bool bias = true);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;  // [out, in, k, k], [out]
  int64_t stride, padding;
};

// Depthwise KxK convolution, stride 1, padding K/2, with bias (ConvNeXt's dwconv).
class DepthwiseConv : public Module {
 public:
  DepthwiseConv(int64_t c, int64_t k = 7);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;  // [C, 1, K, K], [C]
};

// One rank's part of a data-parallel run's global batch: its samples are rows
// [offset, offset + n) of `total` (total 0: the batch is whole, one process). Drop path
// draws for the global batch and takes this rank's rows, so its draws are a one-process
// run's. With `sync`, the layers that couple the samples of a batch compute over the
// global batch in training mode, through collectives (core/dist.h): BatchNorm's
// statistics are all-reduced and the attention's keys all-gathered (--sync-batch).
struct BatchShard {
  int64_t offset = 0, total = 0;
  bool sync = false;
};

// BatchNorm over N, H, W (momentum 0.1, unbiased running variance, eps 1e-5).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t c, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x);  // train mode updates the running statistics
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double eps, momentum;
  const BatchShard* shard = nullptr;  // the model's; with shard->sync, the statistics are the global batch's

 private:
  Tensor synced_forward(const Tensor& x);
};

// Per-sample stochastic depth: in train mode with rate p > 0, each sample's residual
// branch is zeroed with probability p and the others scaled by 1 / (1 - p), drawing
// one uniform per sample from gen (timm's drop_path). Identity otherwise.
Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen);
// The draws drop_path makes for n samples: f32 uniforms [n] on `device` (sample i is
// kept when its draw is below 1 - p), or undefined when it would be the identity.
// With a shard of a global batch, the draws are the global batch's and these are this
// rank's n of them.
Tensor drop_path_draws(int64_t n, double p, bool training, Generator& gen, Device device, const BatchShard* shard = nullptr);

// Squeeze-and-excitation: pool -> fc.0 (C -> C/r, no bias) -> ReLU -> fc.2 (C/r -> C,
// no bias) -> sigmoid -> gate the map.
class SqueezeExcite : public Module {
 public:
  explicit SqueezeExcite(int64_t c, int64_t reduction = 16);
  Tensor forward(const Tensor& x) const;
  ModuleList fc;
  Linear* fc0;
  Linear* fc2;
};

// The spatial transformer: a localisation network on the image predicts an affine
// theta, and the image is resampled through it (bilinear, zeros, align_corners).
// localization: conv 3->8 k7, BN, maxpool 2, ReLU, conv 8->10 k5, BN, maxpool 2, ReLU;
// fc_loc: Linear(10 s s, 32), ReLU, Linear(32, 6), where s is derived from the image size.
class SpatialTransformer : public Module {
 public:
  explicit SpatialTransformer(int64_t image_size);
  static int64_t feature_size(int64_t image_size);  // s: 224 -> 52, 48 -> 8
  Tensor theta(const Tensor& x);                     // [N, H, W, 3] -> [N, 2, 3]
  Tensor forward(const Tensor& x);                   // [N, H, W, 3] -> [N, H, W, 3]
  bool deterministic = false;                        // the CUDA input gradient of grid_sample
  ModuleList localization, fc_loc;
  Tensor grid_base;  // affine_grid's base grid for the last input's size, made once (not a buffer)
  Conv2d *conv1, *conv2;
  BatchNorm2d *bn1, *bn2;
  Linear *fc1, *fc2;
};

// The attention regulariser: LayerNorm (eps 1e-5), query and key projections, and
// w = softmax(q k^T * C^(-1/4)) over the batch: [N, C] -> [N, N]. `value` exists for
// the reference's state dict; the reference discards its output, so it is not computed.
class BatchAttention : public Module {
 public:
  explicit BatchAttention(int64_t c);
  // With shard->sync in training mode, f is this rank's rows and the keys are the global
  // batch's: the result is this rank's rows of the global [N, N] matrix.
  Tensor forward(const Tensor& f) const;
  LayerNorm norm;
  Linear query, key, value;
  const BatchShard* shard = nullptr;
};

// ConvNeXt block: dwconv 7x7 -> LayerNorm -> pwconv1 (C -> 4C) -> GELU -> pwconv2
// (4C -> C) -> times gamma -> drop path -> plus the input.
class ConvNeXtBlock : public Module {
 public:
  ConvNeXtBlock(int64_t c, double drop_path_rate, Generator* gen, double layer_scale_init = 1e-6);
  Tensor forward(const Tensor& x) const;
  DepthwiseConv dwconv;
  LayerNorm norm;
  Linear pwconv1, pwconv2;
  Tensor gamma;  // [C]
  double drop_path_rate;
  Generator* gen;  // the model's, for drop path
  const BatchShard* shard = nullptr;  // the model's
  // The GELU's form: ConvNeXt's exact erf unless the model is made with the tanh form;
  // with tanh, `gemm_epilogue` runs pwconv1 + bias + GELU (and its backward) in the
  // GEMMs' epilogues (gelu_mlp).
  GeluApprox gelu = GeluApprox::None;
  bool gemm_epilogue = true;
};

}  // namespace emonext
