// What the model does with a face, as pictures: the spatial transformer's view of it
// (the image the backbone sees), a Grad-CAM heat map, and the class probabilities. The
// run report and emonext_predict --explain show them.
//
// Grad-CAM (Selvaraju et al.): for the predicted class c, the gradient of its logit with
// respect to a stage's output A [h, w, C], averaged over h and w, weights A's channels;
// the map is ReLU(sum_k weight_k A_k), divided by its maximum. The stage is the last
// whose map is larger than one pixel: the last stage at 224 x 224 (7 x 7), the third at
// 48 x 48 (3 x 3; the last is 1 x 1 there, a map with nothing to show).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/device.h"
#include "models/emonext.h"
#include "train/image.h"

namespace emonext {

struct Explanation {
  GrayImage view;                     // the evaluation view the model saw, 0..255
  GrayImage transformed;              // the spatial transformer's output of it, 0..255 (the image if bare)
  GrayImage cam;                      // Grad-CAM at its stage's resolution, in [0, 1]
  size_t cam_stage = 0;               // which stage's output (0..3)
  std::vector<double> probabilities;  // softmax of the logits
  int64_t predicted = 0;
};

// The stage Grad-CAM uses at this image size (0..3).
size_t cam_stage_of(int64_t image_size);

// The model (in eval mode, its mode and gradients restored after) on the evaluation
// views of images, on `device`.
std::vector<Explanation> explain(EmoNeXt& model, const std::vector<GrayImage>& views, Device device);

// The pictures as PNG files: a gray image (rounded, clamped to 0..255), and a heat map
// (Grad-CAM upsampled to the image, blue to red) laid over it.
std::string gray_png(const GrayImage& img);
std::string cam_png(const GrayImage& img, const GrayImage& cam);

}  // namespace emonext
