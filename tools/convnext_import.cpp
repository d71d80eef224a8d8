// convnext_import: pretrained ConvNeXt weights (Facebook, timm, torchvision) or an
// EmoNeXt PyTorch checkpoint -> an engine checkpoint (safetensors) that
// emonext_train --init and emonext_predict read.
//
//   convnext_import --in FILE --model SIZE --out CKPT [--source auto|facebook|timm|torchvision|emonext]
//                   [--classes 7] [--img-size 224] [--seed N]
//
// Nothing is written unless every tensor found its place.
#include <cstdio>
#include <iostream>
#include <string>

#include "core/base/error.h"
#include "core/base/limits.h"
#include "core/base/options.h"
#include "models/checkpoint.h"
#include "models/emonext.h"
#include "models/pretrained.h"

namespace {

std::string summary(const std::vector<std::string>& names, size_t show = 4) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < show; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > show) out += ", ...";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace emonext;
  std::string in, out, size;
  WeightSource source = WeightSource::Auto;
  int64_t classes = 7, image_size = 224;
  uint64_t seed = 0;
  cli::Options options("convnext_import",
                       "convnext_import --in FILE --out CKPT [--model SIZE] [--source ...] [--classes N] [--img-size S] [--seed N]");
  options.text("--in", "FILE", "Facebook .pth, timm model.safetensors or pytorch_model.bin, torchvision .pth, or an EmoNeXt checkpoint", &in)
      .text("--out", "CKPT", "the engine checkpoint to write (nothing is written unless every tensor found its place)", &out)
      .text("--model", "SIZE", "atto femto pico nano tiny small base large xlarge (detected from the file when left out)", &size)
      .choice("--source", "the file's naming (detected from the tensors with auto)", &source, weight_sources())
      .integer("--classes", "N", "the new head's classes", &classes, 1, limits::kMaxClasses)
      .integer("--img-size", "S", "the model's image size (the stem and three downsamplings need 32)", &image_size,
               EmoNeXt::kMinImageSize, limits::kMaxModelImageSize)
      .integer("--seed", "N", "the seed of the initialised tensors", &seed, 0);
  options.parse(argc, argv);
  if (in.empty() || out.empty()) options.usage_error("--in and --out are required");
  try {
    ImportReport r;
    auto model = import_pretrained(in, source, size, classes, image_size, seed, r);
    std::printf("source: %s%s\n", weight_source_name(r.source), r.source_detected ? " (detected from the tensor names)" : "");
    std::printf("model:  EmoNeXt-%s%s, %lld classes, %lld x %lld images\n", r.size.c_str(),
                r.size_detected ? " (detected from the tensor shapes)" : "", (long long)classes, (long long)image_size,
                (long long)image_size);
    std::printf("loaded      %4zu tensors, %11lld values\n", r.loaded.size(), (long long)r.loaded_values);
    std::printf("initialised %4zu tensors, %11lld values (seed %llu): %s\n", r.initialised.size(), (long long)r.initialised_values,
                (unsigned long long)seed, summary(r.initialised).c_str());
    std::printf("ignored     %4zu tensors: %s\n", r.ignored.size(), summary(r.ignored).c_str());
    std::vector<std::string> labels = fer2013_labels();
    if (classes != 7) {
      labels.clear();
      for (int64_t c = 0; c < classes; ++c) labels.push_back("class" + std::to_string(c));
    }
    save_checkpoint(out, *model, labels,
                             {{"imported_from", in}, {"source", weight_source_name(r.source)}, {"seed", std::to_string(seed)}});
    std::printf("wrote %s\n", out.c_str());
    return 0;
  } catch (const std::exception& e) {  // Error, and the standard library's (a filesystem error)
    std::fprintf(stderr, "convnext_import: %s\nnothing was written\n", e.what());
    return 1;
  }
}
