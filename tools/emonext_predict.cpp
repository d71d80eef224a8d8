// emonext_predict: a trained EmoNeXt on images.
//
//   emonext_predict --weights CKPT [--device auto|cpu|cuda] [--tencrop] [--json] IMAGE_OR_DIR...
//       per image: the predicted emotion and every class's probability (one JSON
//       object per line with --json). Evaluation transforms of the recipe: grayscale,
//       resize, centre crop (or the ten crops, logits averaged), gray in 3 channels.
//   emonext_predict --weights CKPT --input-tensors IN.safetensors --output OUT.safetensors
//       `images` [N, 3, H, W] f32 in [0, 1] -> `logits` [N, classes] f32, eval mode.
//   emonext_predict --weights CKPT --evaluate DIR|fer2013.csv [--usage U] [--tencrop] [--confusion FILE.csv]
//       DIR holds one folder per emotion (as FER2013's val/ or test/); from the CSV,
//       the rows of Usage U (PrivateTest, the test set, by default): accuracy, loss,
//       per-class accuracy and the confusion matrix, as emonext_train's test pass.
//   emonext_predict --weights CKPT --explain DIR IMAGE_OR_DIR...
//       per image: its view, the spatial transformer's output and Grad-CAM as PNG files in
//       DIR, and DIR/index.html that shows them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/base/file.h"
#include "core/base/escape.h"
#include "core/base/options.h"
#include "core/device.h"
#include "core/dist.h"
#include "core/safetensors.h"
#include "core/storage.h"
#include "models/checkpoint.h"
#include "train/data.h"
#include "train/evaluate.h"
#include "train/explain.h"
#include "train/image.h"
#include "train/report_html.h"

namespace fs = std::filesystem;
using namespace emonext;

namespace {

const char* kSynopsis =
    "emonext_predict --weights CKPT [--device auto|cpu|cuda] [--tencrop] [--json] IMAGE_OR_DIR...\n"
    "       emonext_predict --weights CKPT [--device ...] --input-tensors IN.safetensors --output OUT.safetensors\n"
    "       emonext_predict --weights CKPT [--device ...] --evaluate DIR|fer2013.csv [--usage U] [--tencrop] [--confusion FILE.csv]";

bool is_image(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  for (const char* x : {".jpg", ".jpeg", ".png"})  // what load_gray_image decodes
    if (e == x) return true;
  return false;
}

// Logits for a batch of NHWC images, on the model's device, back on the CPU.
Tensor run(EmoNeXt& model, const Tensor& images, Device device) {
  NoGradGuard no_grad;
  return model.forward(images.to(device)).logits.to(Device::cpu());
}

// --evaluate: the labelled folders of DIR, or the CSV's rows of one Usage, through the
// model; 1 when an image could not be read (the figures then leave it out).
int evaluate_labelled(EmoNeXt& model, const CheckpointInfo& info, const std::string& path, const std::string& csv_usage,
                      Device device, bool tencrop, const std::string& confusion) {
  EMONEXT_CHECK(info.labels == fer2013_labels(), "--evaluate: the checkpoint's classes are not FER2013's seven emotions in the ",
                "engine's order, so the labels cannot be matched to its outputs");
  fs::path root = fs::path(path).lexically_normal();
  if (root.filename().empty()) root = root.parent_path();  // "val/" -> "val"
  const bool csv = fs::is_regular_file(root);
  const std::string rows = csv_usage.empty() ? "PrivateTest" : csv_usage;
  const Dataset data = csv ? read_fer2013_csv(root.string(), rows)
                           : read_image_folders(root.parent_path().string(), root.filename().string());
  const auto t0 = std::chrono::steady_clock::now();
  // Under mpirun the ranks evaluate a batch each in turn; every figure is one process's.
  const Evaluation e = evaluate(model, data, 64, device, {.tencrop = tencrop}, /*sharded=*/true);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s%s (%s): %lld images, accuracy %.4f, loss %.4f; %.1f images/s on %s\n", root.string().c_str(),
              csv ? (", " + rows + " rows").c_str() : "",
              tencrop ? "ten-crop" : "centre crop", (long long)e.images, e.accuracy, e.loss, double(e.images) / s,
              device.str().c_str());
  print_confusion(e, info.labels);
  if (!confusion.empty() && dist::rank() == 0) {
    write_confusion_csv(confusion, e, info.labels);
    std::printf("wrote %s\n", confusion.c_str());
  }
  const int64_t unread = int64_t(e.unreadable.size());
  if (dist::rank() != 0) return unread ? 1 : 0;  // rank 0 names them
  for (const std::string& why : e.unreadable) std::fprintf(stderr, "emonext_predict: skipped %s\n", why.c_str());
  if (unread) std::fprintf(stderr, "emonext_predict: %lld of %zu image(s) could not be read\n", (long long)unread, data.samples.size());
  return unread ? 1 : 0;
}

// --input-tensors: `images` [N, 3, H, W] f32 in [0, 1] -> `logits` [N, classes] in OUT.
int predict_tensors(EmoNeXt& model, const std::string& input_tensors, const std::string& output, const std::string& weights,
                    Device device) {
  const SafeTensors in = load_safetensors(input_tensors);
  const Tensor& images = in.at("images");
  EMONEXT_CHECK(images.dim() == 4 && images.size(1) == 3, input_tensors, ": images must be [N, 3, H, W], got ", images.str());
  const Tensor x = images.to(DType::F32).permute({0, 2, 3, 1}).contiguous();
  const auto t0 = std::chrono::steady_clock::now();
  const Tensor logits = run(model, x, device);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  save_safetensors(output, {{"logits", logits.contiguous()}}, {{"weights", weights}});
  std::fprintf(stderr, "wrote logits [%lld, %lld] to %s; forward %.3f s, %.1f images/s on %s\n", (long long)logits.size(0),
               (long long)logits.size(1), output.c_str(), s, double(logits.size(0)) / s, device.str().c_str());
  return 0;
}

// The images named on the command line: files as given, folders searched for image
// files (sorted, so the output's order does not depend on the file system).
std::vector<std::string> image_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    if (fs::is_directory(in)) {
      std::vector<std::string> found;
      std::error_code ec;  // an entry whose type cannot be told (a link to itself) is skipped, as other non-images are
      for (const auto& e : fs::recursive_directory_iterator(in))
        if (e.is_regular_file(ec) && is_image(e.path())) found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(in);
    }
  }
  return files;
}

// Per image: the predicted emotion and each class's probability, a line of text or of
// JSON; 1 when an image could not be read (it is named, the others are still predicted).
int predict_images(EmoNeXt& model, const CheckpointInfo& info, const std::vector<std::string>& files, Device device, bool tencrop,
                   bool json) {
  const int64_t s = info.image_size, views = tencrop ? 10 : 1, per_batch = std::max<int64_t>(1, 32 / views);
  int64_t failed = 0;
  for (size_t first = 0; first < files.size(); first += size_t(per_batch)) {
    std::vector<std::string> names;
    std::vector<GrayImage> crops;  // `views` crops per image, image by image
    for (size_t k = first; k < files.size() && k < first + size_t(per_batch); ++k) {
      try {
        const GrayImage img = load_gray_image(files[k]);
        if (tencrop) {
          for (GrayImage& v : ten_crop(img, s)) crops.push_back(std::move(v));
        } else {
          crops.push_back(eval_view(img, s));
        }
        names.push_back(files[k]);
      } catch (const Error& e) {
        std::fprintf(stderr, "emonext_predict: skipped %s\n", e.what());
        ++failed;
      }
    }
    if (names.empty()) continue;
    const Tensor logits = run(model, to_batch(crops), device).reshape({int64_t(names.size()), views, info.classes});
    const std::vector<double> probs = softmax(mean(logits, {1})).to_vector();
    for (size_t k = 0; k < names.size(); ++k) {
      const double* p = probs.data() + k * size_t(info.classes);
      const size_t best = size_t(std::max_element(p, p + info.classes) - p);
      if (json) {
        // The labels are the checkpoint's text: escaped as the file names are.
        std::printf("{\"image\": \"%s\", \"label\": \"%s\", \"probabilities\": {", json_escape(names[k]).c_str(),
                    json_escape(info.labels[best]).c_str());
        for (int64_t c = 0; c < info.classes; ++c)
          std::printf("%s\"%s\": %.6f", c ? ", " : "", json_escape(info.labels[size_t(c)]).c_str(), p[c]);
        std::printf("}}\n");
      } else {
        std::printf("%s: %s (%.3f) ", names[k].c_str(), info.labels[best].c_str(), p[best]);
        for (int64_t c = 0; c < info.classes; ++c) std::printf(" %s %.3f", info.labels[size_t(c)].c_str(), p[c]);
        std::printf("\n");
      }
    }
  }
  if (failed) std::fprintf(stderr, "emonext_predict: %lld of %zu image(s) could not be read\n", (long long)failed, files.size());
  return failed ? 1 : 0;
}

// --explain DIR: per image the evaluation view, the spatial transformer's output and
// Grad-CAM over it as PNG files (k_name.input.png, .stn.png, .gradcam.png), and DIR/index.html
// that shows them with the prediction; 1 when an image could not be read.
int explain_images(EmoNeXt& model, const CheckpointInfo& info, const std::vector<std::string>& files, Device device,
                   const std::string& dir) {
  int64_t failed = 0;
  std::string rows;
  for (size_t first = 0; first < files.size(); first += 32) {
    std::vector<std::string> names;
    std::vector<GrayImage> views;
    for (size_t k = first; k < files.size() && k < first + 32; ++k) {
      try {
        views.push_back(eval_view(load_gray_image(files[k]), info.image_size));
        names.push_back(files[k]);
      } catch (const Error& e) {
        std::fprintf(stderr, "emonext_predict: skipped %s\n", e.what());
        ++failed;
      }
    }
    const std::vector<Explanation> ex = explain(model, views, device);
    for (size_t k = 0; k < ex.size(); ++k) {
      const Explanation& e = ex[k];
      // The image's name, cut to 64 bytes (at a UTF-8 character's start): a 250-byte name
      // plus ".gradcam.png" would pass the file system's 255.
      std::string name = fs::path(names[k]).stem().string();
      if (name.size() > 64) {
        size_t cut = 64;
        while (cut > 0 && (uint8_t(name[cut]) & 0xC0) == 0x80) --cut;
        name.resize(cut);
      }
      const std::string stem = std::to_string(first + k) + "_" + name;
      const std::vector<std::pair<std::string, std::string>> pictures = {
          {stem + ".input.png", gray_png(e.view)}, {stem + ".stn.png", gray_png(e.transformed)}, {stem + ".gradcam.png", cam_png(e.transformed, e.cam)}};
      rows += "<div class=\"face\">";
      for (const auto& [file, png] : pictures) {
        html::write_atomically(dir + "/" + file, png);
        rows += "<img src=\"" + html_escape(file) + "\">";
      }
      const std::string& label = info.labels[size_t(e.predicted)];
      rows += "<br>" + html_escape(names[k]) + ": <b>" + html_escape(label) + "</b><br>";
      for (size_t c = 0; c < e.probabilities.size(); ++c)
        rows.append(c ? ", " : "").append(html_escape(info.labels[c])).append(" ").append(std::to_string(int(std::lround(100 * e.probabilities[c])))).append("%");
      rows += "</div>\n";
      std::printf("%s: %s (%.3f) -> %s/%s.*.png\n", names[k].c_str(), label.c_str(), e.probabilities[size_t(e.predicted)], dir.c_str(),
                  stem.c_str());
    }
  }
  html::write_atomically(dir + "/index.html",
                         "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>EmoNeXt: what it sees</title><style>"
                         "body{font-family:sans-serif;margin:20px}.face{display:inline-block;width:320px;margin:6px 14px 12px 0;"
                         "vertical-align:top;font-size:12px}img{width:96px;height:96px;image-rendering:pixelated;margin-right:2px}"
                         "</style></head><body><h1>What the model sees</h1><p>Each image: the evaluation view, the spatial "
                         "transformer's output (what the backbone sees), and Grad-CAM of stage " +
                             std::to_string(cam_stage_of(info.image_size) + 1) +
                             " for the predicted emotion over it (red: what raised that logit most).</p>\n" + rows + "</body></html>\n");
  std::printf("wrote %s/index.html\n", dir.c_str());
  if (failed) std::fprintf(stderr, "emonext_predict: %lld of %zu image(s) could not be read\n", (long long)failed, files.size());
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_host_memory();
  // --evaluate runs under mpirun too (the ranks share the images); rank 0 prints.
  dist::init(&argc, &argv);
  if (dist::rank() != 0 && !std::freopen("/dev/null", "w", stdout)) dist::abort_all("cannot silence stdout");
  std::string weights, input_tensors, output, evaluate_dir, confusion, csv_usage, explain_dir;
  DeviceChoice device_choice = DeviceChoice::Auto;
  bool tencrop = false, json = false;
  std::vector<std::string> inputs;
  cli::Options options("emonext_predict", kSynopsis);
  options.text("--weights", "CKPT", "an EmoNeXt checkpoint (emonext_train's best.safetensors, convnext_import's output)", &weights)
      .choice("--device", "auto takes the GPU when one answers", &device_choice, device_choices())
      .flag("--tencrop", "the ten-crop test view, logits averaged (default: the centre crop)", &tencrop)
      .flag("--json", "one JSON object per image and line", &json)
      .text("--input-tensors", "IN", "`images` [N, 3, H, W] f32 in [0, 1] -> `logits` [N, classes] into --output", &input_tensors)
      .text("--output", "OUT", "the logits' file (with --input-tensors)", &output)
      .text("--evaluate", "DIR|CSV", "accuracy, loss, per-class accuracy and the confusion matrix on a labelled folder or the CSV",
            &evaluate_dir)
      .text("--usage", "U", "the CSV's rows to evaluate (PrivateTest, the test set, when left out)", &csv_usage)
      .text("--confusion", "FILE", "the confusion matrix as CSV (with --evaluate)", &confusion)
      .text("--explain", "DIR", "with images: each one's view, the spatial transformer's output and Grad-CAM as PNGs, and DIR/index.html",
            &explain_dir)
      .positional(&inputs);
  options.parse(argc, argv);
  const auto usage = [&](const std::string& why) { options.usage_error(why); };
  if (weights.empty()) usage("--weights is required");
  if (int(!inputs.empty()) + int(!input_tensors.empty()) + int(!evaluate_dir.empty()) != 1)
    usage("give images or folders, --input-tensors with --output, or --evaluate DIR");
  if ((!confusion.empty() || !csv_usage.empty()) && evaluate_dir.empty()) usage("--confusion and --usage go with --evaluate");
  if (json && inputs.empty()) usage("--json goes with images or folders");
  if (!input_tensors.empty() && output.empty()) usage("--input-tensors needs --output");
  if (!csv_usage.empty() && !fs::is_regular_file(evaluate_dir)) usage("--usage picks rows of a CSV file; " + evaluate_dir + " is not one");
  if (!explain_dir.empty() && (inputs.empty() || json || tencrop)) usage("--explain goes with images or folders (not --json or --tencrop)");
  if (dist::size() > 1 && evaluate_dir.empty()) usage("under mpirun only --evaluate runs (its ranks share the images)");
  const int code = [&] {
    try {
      if (!explain_dir.empty()) make_writable_folder(explain_dir, "--explain");  // before any work
      const Device device = pick_device(device_choice);
      CheckpointInfo info;
      std::unique_ptr<EmoNeXt> model = load_emonext(weights, &info);
      model->to(device);
      model->eval();

      if (!input_tensors.empty()) return predict_tensors(*model, input_tensors, output, weights, device);
      if (!evaluate_dir.empty()) return evaluate_labelled(*model, info, evaluate_dir, csv_usage, device, tencrop, confusion);
      if (!explain_dir.empty()) return explain_images(*model, info, image_files(inputs), device, explain_dir);
      return predict_images(*model, info, image_files(inputs), device, tencrop, json);
    } catch (const std::exception& e) {  // emonext::Error, and the standard library's (an unreadable folder)
      if (dist::size() > 1) dist::abort_all(std::string("emonext_predict: ") + e.what());
      std::fprintf(stderr, "emonext_predict: %s\n", e.what());
      return 1;
    }
  }();
  dist::finalize();
  return code;
}
