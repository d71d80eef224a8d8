#include "train/explain.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "train/report_html.h"

namespace emonext {

namespace {

}  // namespace

// The deepest stage whose output is larger than 1 x 1 for this image size.
size_t cam_stage_of(int64_t image_size) {
  int64_t side = image_size / 4;  // after the stem
  size_t stage = 0;
  for (size_t i = 1; i < 4; ++i) {
    side /= 2;
    if (side > 1) stage = i;
  }
  return stage;
}

namespace {

GrayImage channel0(const Tensor& nhwc, int64_t n) {  // [N, H, W, 3] in [0, 1] -> image n, 0..255
  const int64_t h = nhwc.size(1), w = nhwc.size(2);
  const std::vector<double> v = nhwc.slice(0, n, n + 1).contiguous().to_vector();
  GrayImage img{h, w, std::vector<float>(size_t(h * w))};
  for (int64_t i = 0; i < h * w; ++i) img.px[size_t(i)] = float(v[size_t(i * 3)] * 255.0);
  return img;
}

}  // namespace

std::vector<Explanation> explain(EmoNeXt& model, const std::vector<GrayImage>& views, Device device) {
  if (views.empty()) return {};
  const bool was_training = model.training();
  model.eval();
  const Tensor x = to_batch(views).to(device);
  const size_t stage = cam_stage_of(model.image_size);
  Tensor transformed, a;
  {
    NoGradGuard no_grad;
    transformed = model.bare ? x : model.stn.forward(x);
    Tensor h = transformed;
    for (size_t i = 0; i <= stage; ++i) h = model.stage_forward(h, i);
    a = h;
  }
  // Grad-CAM: the rest of the model from the stage's output, which is a leaf here, so its
  // gradient is all that backward needs to keep.
  const Tensor leaf = a.detach().set_requires_grad();
  Tensor h = leaf;
  for (size_t i = stage + 1; i < 4; ++i) h = model.stage_forward(h, i);
  const Tensor logits = model.head.forward(model.head_features(h));
  const int64_t n = int64_t(views.size()), classes = logits.size(1);
  const std::vector<double> l = logits.detach().to(Device::cpu()).to_vector();
  std::vector<int64_t> predicted;
  for (int64_t k = 0; k < n; ++k)
    predicted.push_back(int64_t(std::max_element(l.begin() + k * classes, l.begin() + (k + 1) * classes) - (l.begin() + k * classes)));
  // Each image's predicted logit depends on that image alone: one backward gives all.
  sum(mul(logits, one_hot(Tensor::from_ints(predicted, {n}, device), classes, logits.dtype()))).backward();
  const Tensor grad = leaf.grad().to(Device::cpu()).to(DType::F64), act = a.to(Device::cpu()).to(DType::F64);
  model.zero_grad();
  if (was_training) model.train();

  const int64_t ch = act.size(1), cw = act.size(2), c = act.size(3);
  const std::vector<double> g = grad.contiguous().to_vector(), v = act.contiguous().to_vector();
  const Tensor probs = softmax(logits.detach()).to(Device::cpu());
  const std::vector<double> p = probs.to_vector();
  const Tensor transformed_cpu = transformed.to(Device::cpu());
  std::vector<Explanation> out;
  for (int64_t k = 0; k < n; ++k) {
    Explanation e;
    e.view = views[size_t(k)];
    e.transformed = channel0(transformed_cpu, k);
    e.cam_stage = stage;
    e.predicted = predicted[size_t(k)];
    e.probabilities.assign(p.begin() + k * classes, p.begin() + (k + 1) * classes);
    const size_t base = size_t(k * ch * cw * c);
    std::vector<double> weight(size_t(c), 0.0);
    for (int64_t y = 0; y < ch * cw; ++y)
      for (int64_t j = 0; j < c; ++j) weight[size_t(j)] += g[base + size_t(y * c + j)] / double(ch * cw);
    e.cam = GrayImage{ch, cw, std::vector<float>(size_t(ch * cw))};
    double top = 0;
    std::vector<double> m(size_t(ch * cw));
    for (int64_t y = 0; y < ch * cw; ++y) {
      double s = 0;
      for (int64_t j = 0; j < c; ++j) s += weight[size_t(j)] * v[base + size_t(y * c + j)];
      m[size_t(y)] = std::max(0.0, s);
      top = std::max(top, m[size_t(y)]);
    }
    for (int64_t y = 0; y < ch * cw; ++y) e.cam.px[size_t(y)] = float(top > 0 ? m[size_t(y)] / top : 0.0);
    out.push_back(std::move(e));
  }
  return out;
}

std::string gray_png(const GrayImage& img) {
  std::vector<uint8_t> px(img.px.size());
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(std::clamp(std::lround(img.px[i]), 0L, 255L));
  return html::png(px.data(), int(img.w), int(img.h), 1);
}

std::string cam_png(const GrayImage& img, const GrayImage& cam) {
  // The map bilinearly over the image (pixel centres aligned), coloured blue -> red, half
  // over the image.
  std::vector<uint8_t> px(size_t(img.h * img.w * 3));
  for (int64_t y = 0; y < img.h; ++y)
    for (int64_t x = 0; x < img.w; ++x) {
      const double sy = std::clamp((double(y) + 0.5) * double(cam.h) / double(img.h) - 0.5, 0.0, double(cam.h - 1));
      const double sx = std::clamp((double(x) + 0.5) * double(cam.w) / double(img.w) - 0.5, 0.0, double(cam.w - 1));
      const int64_t y0 = int64_t(sy), x0 = int64_t(sx), y1 = std::min(y0 + 1, cam.h - 1), x1 = std::min(x0 + 1, cam.w - 1);
      const double fy = sy - double(y0), fx = sx - double(x0);
      const double heat = (1 - fy) * ((1 - fx) * cam.at(y0, x0) + fx * cam.at(y0, x1)) + fy * ((1 - fx) * cam.at(y1, x0) + fx * cam.at(y1, x1));
      const double gray = std::clamp(double(img.at(y, x)), 0.0, 255.0);
      const double rgb[3] = {255 * std::clamp(2 * heat - 0.5, 0.0, 1.0), 255 * (1 - std::fabs(2 * heat - 1)),
                             255 * std::clamp(1.5 - 2 * heat, 0.0, 1.0)};
      for (int k = 0; k < 3; ++k) px[size_t((y * img.w + x) * 3 + k)] = uint8_t(std::lround(0.5 * gray + 0.5 * rgb[k]));
    }
  return html::png(px.data(), int(img.w), int(img.h), 3);
}

}  // namespace emonext
