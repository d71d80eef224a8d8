#include "models/emonext.h"

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/dist.h"

namespace emonext {

const std::vector<ConvNeXtSize>& convnext_sizes() {
  static const std::vector<ConvNeXtSize> sizes = {
      {"atto", {2, 2, 6, 2}, {40, 80, 160, 320}},       {"femto", {2, 2, 6, 2}, {48, 96, 192, 384}},
      {"pico", {2, 2, 6, 2}, {64, 128, 256, 512}},      {"nano", {2, 2, 8, 2}, {80, 160, 320, 640}},
      {"tiny", {3, 3, 9, 3}, {96, 192, 384, 768}},      {"small", {3, 3, 27, 3}, {96, 192, 384, 768}},
      {"base", {3, 3, 27, 3}, {128, 256, 512, 1024}},   {"large", {3, 3, 27, 3}, {192, 384, 768, 1536}},
      {"xlarge", {3, 3, 27, 3}, {256, 512, 1024, 2048}},
  };
  return sizes;
}

const ConvNeXtSize& convnext_size(const std::string& name) {
  std::string known;
  for (const ConvNeXtSize& s : convnext_sizes()) {
    if (s.name == name) return s;
    known += (known.empty() ? "" : ", ") + s.name;
  }
  throw Error("unknown ConvNeXt size '" + name + "'; known sizes: " + known);
}

Downsample::Downsample(int64_t in, int64_t out, bool stem_, bool with_se) : stem(stem_) {
  if (stem) {
    conv = add_at(0, std::make_unique<Conv2d>(in, out, 4, 4));
    norm = add_at(1, std::make_unique<LayerNorm>(out, 1e-6));
  } else {
    norm = add_at(0, std::make_unique<LayerNorm>(in, 1e-6));
    conv = add_at(1, std::make_unique<Conv2d>(in, out, 2, 2));
    if (with_se) se = add_at(2, std::make_unique<SqueezeExcite>(out));
  }
}

Tensor Downsample::forward(const Tensor& x) const {
  if (stem) return norm->forward(conv->forward(x));
  const Tensor y = conv->forward(norm->forward(x));
  return se ? se->forward(y) : y;
}

ConvNeXt::ConvNeXt(const ConvNeXtSize& size_, int64_t classes, double drop_path, bool se)
    : size(size_), norm(size_.dims[3], 1e-6), head(size_.dims[3], classes) {
  int64_t total = 0;
  for (int64_t d : size.depths) total += d;
  int64_t b = 0;
  for (int i = 0; i < 4; ++i) {
    const int64_t in = i == 0 ? 3 : size.dims[size_t(i) - 1];
    auto ds = std::make_unique<Downsample>(in, size.dims[size_t(i)], i == 0, se);
    downsample.push_back(ds.get());
    downsample_layers.add(std::move(ds));
    auto stage = std::make_unique<ModuleList>();
    blocks.emplace_back();
    for (int64_t j = 0; j < size.depths[size_t(i)]; ++j, ++b) {
      const double rate = total > 1 ? drop_path * double(b) / double(total - 1) : 0.0;
      blocks.back().push_back(stage->add(std::make_unique<ConvNeXtBlock>(size.dims[size_t(i)], rate, &gen_)));
      blocks.back().back()->shard = &shard;
    }
    stages.add(std::move(stage));
  }
  register_module("downsample_layers", &downsample_layers);
  register_module("stages", &stages);
  register_module("norm", &norm);
  register_module("head", &head);
}

void ConvNeXt::set_gelu(GeluApprox form, bool gemm_epilogue) {
  gelu_ = form;
  for (auto& stage : blocks)
    for (ConvNeXtBlock* b : stage) {
      b->gelu = form;
      b->gemm_epilogue = gemm_epilogue;
    }
}

Tensor ConvNeXt::forward_features(const Tensor& x) const {
  EMONEXT_CHECK(x.dim() == 4 && x.size(3) == 3, "ConvNeXt: expected images [N, H, W, 3] (channels-last), got ", x.str());
  Tensor h = x;
  for (size_t i = 0; i < 4; ++i) h = stage_forward(h, i);
  return head_features(h);
}

Tensor ConvNeXt::stage_forward(const Tensor& h, size_t i) const {
  Tensor out = downsample.at(i)->forward(h);
  for (const ConvNeXtBlock* block : blocks.at(i)) out = block->forward(out);
  return out;
}

Tensor ConvNeXt::head_features(const Tensor& h) const { return norm.forward(global_avg_pool(h)); }

namespace {
int64_t checked_image_size(int64_t s) {
  EMONEXT_CHECK(s >= EmoNeXt::kMinImageSize, "EmoNeXt: image size ", s, " is below ", EmoNeXt::kMinImageSize,
                ", where the stem and three downsamplings leave one pixel");
  return s;
}
}  // namespace

EmoNeXt::EmoNeXt(const ConvNeXtSize& size_, int64_t classes, int64_t image_size_, double drop_path, bool bare_)
    : ConvNeXt(size_, classes, drop_path, !bare_), image_size(checked_image_size(image_size_)), bare(bare_),
      stn(image_size_), attention(size_.dims[3]) {
  stn.bn1->shard = stn.bn2->shard = attention.shard = &shard;
  if (bare) return;
  // Flat names, as the reference: localization.* and fc_loc.* at the top level.
  register_module("localization", &stn.localization);
  register_module("fc_loc", &stn.fc_loc);
  register_module("attention", &attention);
}

EmoNeXtOutput EmoNeXt::forward(const Tensor& images) {
  EMONEXT_CHECK(images.dim() == 4 && images.size(1) == image_size && images.size(2) == image_size && images.size(3) == 3,
                "EmoNeXt: expected images [N, ", image_size, ", ", image_size, ", 3] (channels-last, the model's image size), got ",
                images.str());
  if (bare) return {head.forward(forward_features(images)), Tensor()};
  const Tensor f = forward_features(stn.forward(images));
  return {head.forward(f), attention.forward(f)};
}

void init_weights(ConvNeXt& model, Generator& gen) {
  NoGradGuard no_grad;
  for (const Module::Named& p : model.named_parameters()) {
    Tensor& t = *p.tensor;
    const std::string& n = p.name;
    const bool is_bias = n.size() >= 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
    if (n.size() >= 6 && n.compare(n.size() - 6, 6, ".gamma") == 0) t.fill_(1e-6);
    else if (t.dim() >= 2) t.copy_(randn(t.shape(), gen, 0.0, 0.02, t.dtype(), t.device()));  // conv and Linear weights
    else if (is_bias) t.zero_();
    else t.fill_(1.0);  // LayerNorm and BatchNorm weights
  }
  if (auto* emo = dynamic_cast<EmoNeXt*>(&model)) {
    emo->stn.fc2->weight.zero_();
    emo->stn.fc2->bias.copy_(Tensor::from_vector({1, 0, 0, 0, 1, 0}, {6}, emo->stn.fc2->bias.dtype()));
  }
}

Tensor emonext_loss(const EmoNeXtOutput& out, const Tensor& labels, double label_smoothing) {
  const Tensor ce = cross_entropy(out.logits, labels, label_smoothing);
  if (!out.attention.defined()) return ce;
  const Tensor d = out.attention - mean(out.attention);
  return ce + mean(d * d);
}

Tensor emonext_loss_part(const EmoNeXtOutput& out, const Tensor& labels, double label_smoothing) {
  if (dist::size() == 1) return emonext_loss(out, labels, label_smoothing);
  const double n = double(out.logits.size(0));
  double total = n;
  dist::all_reduce_sum(&total, 1, "the loss: the global batch's size");
  const Tensor ce = cross_entropy(out.logits, labels, label_smoothing) * (n / total);
  if (!out.attention.defined()) return ce;
  const double cells = double(out.attention.size(1)) * total;
  const Tensor d = out.attention - all_reduce_sum(sum(out.attention)) / cells;
  return ce + sum(d * d) / cells;
}

}  // namespace emonext
