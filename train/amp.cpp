#include "train/amp.h"

#include <cstdio>

#include "core/autograd.h"
#include "core/ops.h"

namespace emonext {

namespace {

bool is_stn(const std::string& name) { return name.starts_with("localization.") || name.starts_with("fc_loc."); }

}  // namespace

MixedPrecision::MixedPrecision(const TrainConfig& c, EmoNeXt& master, Device dev)
    : master_(master), dtype_(c.amp == Amp::BF16 ? DType::BF16 : c.amp == Amp::F16 ? DType::F16 : DType::F32) {
  scaler.on = c.amp == Amp::F16;
  if (c.loss_scale > 0) scaler.scale = c.loss_scale;
  if (c.amp == Amp::Off) return;
  low_ = std::make_unique<EmoNeXt>(convnext_size(c.model), c.classes, c.image_size, c.drop_path, c.backbone);
  low_->set_gelu(c.gelu, c.gemm_epilogue == Switch::On);
  low_->to(dev);
  low_->to(dtype_);
  low_->train();
  std::printf("mixed precision: %s backbone, f32 master weights and spatial transformer\n", amp_name(c.amp));
  if (dev.is_cpu())
    std::printf("note: the CPU converts 16-bit values in software, so --amp trains about 5x slower than f32 here; "
                "it is meant for GPUs\n");
}

EmoNeXtOutput MixedPrecision::forward(const Tensor& x) {
  if (!low_) return master_.forward(x);
  {  // the master's weights (all but the STN's, which the master runs) into the low copy
    NoGradGuard no_grad;
    const std::vector<Module::Named> from = master_.named_tensors(), to = low_->named_tensors();
    for (size_t i = 0; i < from.size(); ++i)
      if (!is_stn(from[i].name)) to[i].tensor->copy_(*from[i].tensor);
  }
  const Tensor f = low_->forward_features(cast(master_.bare ? x : master_.stn.forward(x), dtype_));
  const Tensor logits = cast(low_->head.forward(f), DType::F32);
  return {logits, master_.bare ? Tensor() : cast(low_->attention.forward(f), DType::F32)};
}

void MixedPrecision::gradients_to_master() {
  if (!low_) return;
  NoGradGuard no_grad;
  const std::vector<Module::Named> to = master_.named_parameters(), from = low_->named_parameters();
  for (size_t i = 0; i < to.size(); ++i)
    if (!is_stn(to[i].name) && from[i].tensor->grad().defined()) to[i].tensor->set_grad(from[i].tensor->grad().to(DType::F32));
  low_->zero_grad();
}

}  // namespace emonext
