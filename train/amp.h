// Mixed precision (--amp bf16|fp16): the f32 model is the master (weights, optimizer
// state, EMA, checkpoints) and runs the spatial transformer, whose BatchNorm statistics
// so stay f32; a copy of the model in bf16 or f16, refreshed from the master before each
// step, runs the backbone, the head and the attention; the logits and attention come
// back in f32 for the loss, as autocast does for softmax and losses. fp16 adds a dynamic
// loss scale. With --amp off the master runs everything and the scale is 1.
#pragma once
#include <memory>

#include "models/emonext.h"
#include "train/config.h"

namespace emonext {

// fp16's dynamic loss scale: the loss is multiplied by `scale` before the backward
// pass, and the gradient norm and AdamW's reading of the gradients divide by it; a
// step whose gradients hold inf or NaN is skipped and the scale halved; 2000 good
// steps in a row double it (PyTorch's GradScaler defaults). The rule runs on the device
// with the step's other checks (kernels::step_check_apply); these are the host's copies,
// for checkpoints and resume (StepChecks in train/optim.h moves them).
struct LossScaler {
  // A scale below 1 means some gradients exceed f16's range unscaled, and shrinking them
  // all flushes the small ones to zero. It happens at the start of training: with zero
  // biases a one-colour patch (black rotation corners, FER2013's blank images) is 0 in
  // every channel after the stem, the LayerNorm's variance is 0 and its input gradient is
  // multiplied by 1/sqrt(eps) = 1000 per LayerNorm, past f16's range (PyTorch's autocast
  // too: the stem's output is f16 there). EmoNeXt-tiny at 224 settles near 1/256 (see
  // tools/reference/fp16_range.py). Below kFloor, 2^-24 (f16's smallest value), nothing fits.
  static constexpr double kFloor = 1.0 / 16777216;
  bool on = false;
  double scale = 65536;
  int64_t good = 0;
  // What multiplies the loss before the backward pass (1 when off).
  double factor() const { return on ? scale : 1.0; }
};

class MixedPrecision {
 public:
  // The 16-bit copy (none with --amp off), on dev, in training mode.
  MixedPrecision(const TrainConfig& c, EmoNeXt& master, Device dev);
  bool on() const { return low_ != nullptr; }
  // The model whose blocks run (and whose generator drop path draws from).
  EmoNeXt& runner() { return low_ ? *low_ : master_; }
  // The step's forward pass: the master's weights copied into the 16-bit model first.
  EmoNeXtOutput forward(const Tensor& x);
  // After the backward pass: the 16-bit model's gradients in f32 onto the master's
  // parameters (the STN's are there already). They stay multiplied by the loss scale:
  // the step divides the norm by it and hands 1 / scale to AdamW with clipping's factor,
  // rather than rescaling every gradient.
  void gradients_to_master();
  LossScaler scaler;

 private:
  EmoNeXt& master_;
  DType dtype_;
  std::unique_ptr<EmoNeXt> low_;
};

}  // namespace emonext
