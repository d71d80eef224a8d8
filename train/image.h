// Images for EmoNeXt: decoding (JPEG through libjpeg-turbo, PNG through stb_image; no
// other format), the grayscale conversion the recipe starts with, and the geometric
// transforms of the training recipe (REFERENCE.md), on single-channel float images with
// values 0..255.
// A batch is channels-last [N, S, S, 3] in [0, 1]: the gray value in all three channels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace emonext {

struct GrayImage {
  int64_t h = 0, w = 0;
  std::vector<float> px;  // row-major, 0..255
  float at(int64_t y, int64_t x) const { return px[size_t(y * w + x)]; }
};

// A JPEG or PNG file (told by its first bytes, not its name) decoded into gray: a colour
// JPEG's luma channel, a PNG's luma by stb's weights. Files are untrusted: at most
// kMaxImageFileBytes, the header's size checked against limits::kMaxImagePixels and
// kMaxImageAspect before any pixel is decoded, a JPEG the decoder warns about refused.
// Throws emonext::Error naming the file and the reason.
inline constexpr int64_t kMaxImageFileBytes = int64_t(256) << 20;
GrayImage load_gray_image(const std::string& path);
// The same from bytes in memory; `name` names them in errors.
GrayImage decode_gray_image(const uint8_t* data, size_t n, const std::string& name);
// From raw 8-bit gray pixels (the FER2013 CSV's).
GrayImage gray_from_bytes(const uint8_t* px, int64_t h, int64_t w);

// Resizes so that the shorter side is `size` (the longer one scaled and truncated, as
// torchvision's Resize(int)); bilinear with a triangle filter widened when shrinking
// (PIL's antialiased bilinear), in float.
GrayImage resize_shorter(const GrayImage& img, int64_t size);
GrayImage crop(const GrayImage& img, int64_t top, int64_t left, int64_t h, int64_t w);  // zero outside
GrayImage center_crop(const GrayImage& img, int64_t size);                               // torchvision's rounding
GrayImage hflip(const GrayImage& img);
GrayImage vflip(const GrayImage& img);
// Rotation by `degrees` counter-clockwise about the centre, nearest neighbour, 0 outside
// (torchvision's RandomRotation with its defaults).
GrayImage rotate(const GrayImage& img, double degrees);

// The resize the recipe does before cropping: 236 for 224-pixel crops, scaled alike.
int64_t resize_for(int64_t image_size);
// The evaluation view: resize shorter side to resize_for(size), centre crop size.
GrayImage eval_view(const GrayImage& img, int64_t image_size);
// The ten crops of the test transform: 4 corners and centre, then their mirror images.
std::vector<GrayImage> ten_crop(const GrayImage& img, int64_t image_size);

// Images of one size as a batch [N, H, W, 3] f32 on the CPU: the gray value / 255 in
// all three channels.
Tensor to_batch(const std::vector<GrayImage>& images);

}  // namespace emonext
