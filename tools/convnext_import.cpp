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
#include "models/checkpoint.h"
#include "models/emonext.h"
#include "models/pretrained.h"
#include "tools/cli.h"

namespace {

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "convnext_import: " << why << "\n"
            << "usage: convnext_import --in FILE --out CKPT [--model SIZE] [--source auto|facebook|timm|torchvision|emonext]\n"
            << "                       [--classes 7] [--img-size 224] [--seed 0]\n"
            << "  FILE: Facebook .pth, timm model.safetensors or pytorch_model.bin, torchvision .pth, or an EmoNeXt checkpoint\n"
            << "  SIZE: atto femto pico nano tiny small base large xlarge (detected from the file when left out)\n";
  std::exit(2);
}

std::string summary(const std::vector<std::string>& names, size_t show = 4) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < show; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > show) out += ", ...";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string in, out, size, source = "auto";
  int64_t classes = 7, image_size = 224;
  uint64_t seed = 0;
  emonext::cli::Args args(argc, argv, usage);
  for (std::string a; args.next(a);) {
    if (a == "--in") in = args.value();
    else if (a == "--out") out = args.value();
    else if (a == "--model") size = args.value();
    else if (a == "--source") source = args.value();
    else if (a == "--classes") classes = args.integer();
    else if (a == "--img-size") image_size = args.integer();
    else if (a == "--seed") seed = args.unsigned_integer();
    else if (a == "--help" || a == "-h") usage("help");
    else usage("unknown argument " + a);
  }
  if (in.empty() || out.empty()) usage("--in and --out are required");
  if (classes < 1) usage("--classes must be at least 1");
  if (image_size < emonext::EmoNeXt::kMinImageSize)
    usage("--img-size must be at least " + std::to_string(emonext::EmoNeXt::kMinImageSize) +
          " (the stem and three downsamplings leave one pixel there)");
  try {
    emonext::ImportReport r;
    auto model = emonext::import_pretrained(in, emonext::weight_source_from_name(source), size, classes, image_size, seed, r);
    std::printf("source: %s%s\n", emonext::weight_source_name(r.source), r.source_detected ? " (detected from the tensor names)" : "");
    std::printf("model:  EmoNeXt-%s%s, %lld classes, %lld x %lld images\n", r.size.c_str(),
                r.size_detected ? " (detected from the tensor shapes)" : "", (long long)classes, (long long)image_size,
                (long long)image_size);
    std::printf("loaded      %4zu tensors, %11lld values\n", r.loaded.size(), (long long)r.loaded_values);
    std::printf("initialised %4zu tensors, %11lld values (seed %llu): %s\n", r.initialised.size(), (long long)r.initialised_values,
                (unsigned long long)seed, summary(r.initialised).c_str());
    std::printf("ignored     %4zu tensors: %s\n", r.ignored.size(), summary(r.ignored).c_str());
    std::vector<std::string> labels = emonext::fer2013_labels();
    if (classes != 7) {
      labels.clear();
      for (int64_t c = 0; c < classes; ++c) labels.push_back("class" + std::to_string(c));
    }
    emonext::save_checkpoint(out, *model, labels,
                             {{"imported_from", in}, {"source", emonext::weight_source_name(r.source)}, {"seed", std::to_string(seed)}});
    std::printf("wrote %s\n", out.c_str());
    return 0;
  } catch (const std::exception& e) {  // emonext::Error, and the standard library's (a filesystem error)
    std::fprintf(stderr, "convnext_import: %s\nnothing was written\n", e.what());
    return 1;
  }
}
