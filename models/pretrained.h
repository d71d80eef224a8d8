// Pretrained ConvNeXt weights into EmoNeXt: the three naming schemes of
// REFERENCE.md (Facebook's .pth, timm's safetensors / pytorch_model.bin,
// torchvision's .pth) and EmoNeXt's own PyTorch checkpoints, mapped onto the
// engine's (= Facebook's) names; what the file lacks is initialised as the
// reference does. Used by tools/convnext_import.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/emonext.h"

namespace emonext {

enum class WeightSource { Auto, Facebook, Timm, Torchvision, EmoNeXt };
const std::vector<std::pair<std::string, WeightSource>>& weight_sources();  // auto, facebook, timm, torchvision, emonext
const char* weight_source_name(WeightSource s);

// The tensors of a weight file: safetensors, or a torch.save zip whose top level is a
// state dict or a dict holding one under "model", "state_dict" or "ema" (EmoNeXt's
// EMA checkpoints, whose keys start with "ema_model.", which is removed).
std::vector<std::pair<std::string, Tensor>> read_weight_file(const std::string& path);

// The scheme the names follow, from telltale keys; throws when none matches.
WeightSource detect_weight_source(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path);

struct ImportReport {
  WeightSource source = WeightSource::Auto;
  bool source_detected = false, size_detected = false;
  std::string size;
  std::vector<std::string> loaded;       // engine names taken from the file
  std::vector<std::string> initialised;  // engine names the file did not provide
  std::vector<std::string> ignored;      // file names not used (the ImageNet head)
  int64_t loaded_values = 0, initialised_values = 0;
};

// Builds EmoNeXt(size, classes, image_size) from the file: size "" detects it from
// the tensors' shapes (and a given size must agree with them). Convnext sources fill
// the backbone (stem, downsampling convs and norms, blocks, final norm) and drop the
// 1000- or 21841-class head; the rest is initialised from `seed` as the reference
// does (STN identity, SE and attention truncated normal 0.02, the new head with
// PyTorch's default Linear init). An emonext source must provide every tensor.
// Throws, having built nothing, on a missing, unexpected or mis-shaped tensor.
std::unique_ptr<EmoNeXt> import_pretrained(const std::string& path, WeightSource source, const std::string& size,
                                           int64_t classes, int64_t image_size, uint64_t seed, ImportReport& report);
// The same from tensors already read (read_weight_file's); `path` names them in errors.
std::unique_ptr<EmoNeXt> import_pretrained(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path,
                                           WeightSource source, const std::string& size, int64_t classes, int64_t image_size,
                                           uint64_t seed, ImportReport& report);

}  // namespace emonext
