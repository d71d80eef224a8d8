// ConvNeXt (Facebook's, with its parameter names) and EmoNeXt (ConvNeXt with a
// spatial transformer in front, squeeze-and-excitation after downsampling layers
// 1..3, and the attention regulariser), as ../shared/docs/REFERENCE.md defines them.
// Images are channels-last [N, H, W, 3] with values in [0, 1].
#pragma once
#include <array>
#include <string>
#include <vector>

#include "layers/layers.h"

namespace emonext {

struct ConvNeXtSize {
  std::string name;
  std::array<int64_t, 4> depths, dims;
};
// atto, femto, pico, nano, tiny, small, base, large, xlarge; throws listing them on an unknown name.
const ConvNeXtSize& convnext_size(const std::string& name);
const std::vector<ConvNeXtSize>& convnext_sizes();

// The stem ([0] Conv2d(3, d0, 4, stride 4), [1] LayerNorm) and downsampling layers
// ([0] LayerNorm, [1] Conv2d(k 2, stride 2), and [2] SqueezeExcite when se is on).
class Downsample : public ModuleList {  // children "0", "1", "2", as the reference's nn.Sequential
 public:
  Downsample(int64_t in, int64_t out, bool stem, bool se);
  Tensor forward(const Tensor& x) const;
  Conv2d* conv;
  LayerNorm* norm;
  SqueezeExcite* se = nullptr;
  bool stem;
};

class ConvNeXt : public Module {
 public:
  // drop_path: the last block's rate; block b of B gets drop_path * b / (B - 1).
  ConvNeXt(const ConvNeXtSize& size, int64_t classes, double drop_path = 0.0, bool se = false);
  // [N, H, W, 3] -> features [N, d3] (after the final LayerNorm): the four stages, then
  // head_features.
  Tensor forward_features(const Tensor& x) const;
  // Stage i (its downsampling layer, then its blocks) on stage i - 1's output (the image
  // for i = 0), and the features from the last stage's output (pooled, normalised): the
  // pieces of forward_features, for Grad-CAM on a stage's output.
  Tensor stage_forward(const Tensor& h, size_t i) const;
  Tensor head_features(const Tensor& h) const;
  Tensor forward(const Tensor& x) const { return head.forward(forward_features(x)); }
  // Drop path draws from this generator (seed it for reproducible training).
  Generator& generator() { return gen_; }
  // A data-parallel rank's part of the global batch (layers/layers.h), which the
  // trainer sets before each step; the default is a whole batch in one process.
  BatchShard shard;
  // The blocks' GELU: ConvNeXt's exact erf (the default, what pretrained weights were
  // trained with) or the tanh form, which lets `gemm_epilogue` fuse pwconv1's bias and
  // GELU into its GEMM (ConvNeXtBlock). A checkpoint records the form.
  void set_gelu(GeluApprox form, bool gemm_epilogue = true);
  GeluApprox gelu() const { return gelu_; }

  ConvNeXtSize size;
  ModuleList downsample_layers, stages;
  std::vector<Downsample*> downsample;
  std::vector<std::vector<ConvNeXtBlock*>> blocks;
  LayerNorm norm;
  Linear head;

 private:
  Generator gen_;
  GeluApprox gelu_ = GeluApprox::None;
};

struct EmoNeXtOutput {
  Tensor logits;     // [N, classes]
  Tensor attention;  // [N, N], rows summing to 1; undefined for a bare model
};

class EmoNeXt : public ConvNeXt {
 public:
  // The smallest image the model runs on: the stem (/4) and three downsamplings (/2)
  // leave one pixel at 32. Smaller sizes are refused here, not at the first forward.
  static constexpr int64_t kMinImageSize = 32;
  // bare: ConvNeXt alone, without the spatial transformer, SE and attention (none of
  // their tensors registered; forward's attention undefined, so emonext_loss is the
  // cross-entropy alone): what timm's convnext_* trains, for `emonext_train --benchmark
  // --backbone` beside it. Checkpoints, import and predict know only the full model.
  EmoNeXt(const ConvNeXtSize& size, int64_t classes, int64_t image_size, double drop_path = 0.1, bool bare = false);
  EmoNeXtOutput forward(const Tensor& images);
  int64_t image_size;
  bool bare;
  SpatialTransformer stn;  // its tensors are registered flat: localization.*, fc_loc.*
  BatchAttention attention;
};

// The reference's initialisation: every Conv2d and Linear weight (including the
// depthwise ones) from a normal with std 0.02 (PyTorch's trunc_normal_ with bounds
// +-2, which at std 0.02 never truncate), biases 0, norms 1 and 0, layer scale 1e-6,
// and the STN's last layer the identity transform (weight 0, bias 1 0 0 0 1 0).
void init_weights(ConvNeXt& model, Generator& gen);

// The EmoNeXt loss: cross-entropy with label smoothing plus the attention term
// mean((w - mean(w))^2) over the N x N matrix (lambda 1); the cross-entropy alone when
// the attention is undefined (a bare model).
Tensor emonext_loss(const EmoNeXtOutput& out, const Tensor& labels, double label_smoothing = 0.2);
// One rank's part of the global batch's loss under --sync-batch, out holding its n rows
// (the attention's: [n, N], the global matrix's rows): its cross-entropy times n / N,
// plus its rows' share of the attention term, whose mean is the global matrix's
// (all-reduced). The ranks' parts add up to emonext_loss of the global batch, and so do
// their gradients. Alone, emonext_loss.
Tensor emonext_loss_part(const EmoNeXtOutput& out, const Tensor& labels, double label_smoothing = 0.2);

}  // namespace emonext
