// EmoNeXt checkpoints: safetensors files whose tensor names are the reference's
// state_dict keys, in PyTorch's layouts, f32 (i64 for num_batches_tracked), so
// that PyTorch's EmoNeXt loads them with load_state_dict(strict=True). The
// __metadata__ says what model the tensors make:
//   format "emonext", model (size name), classes, image_size, labels (comma-separated,
//   in logit order), gelu (erf or tanh; files without it are erf), engine (version),
//   and whatever else the writer adds.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "models/emonext.h"

namespace emonext {

// The engine's label order (FER2013's folders sorted, as the reference trained):
// angry, disgust, fear, happy, neutral, sad, surprise.
const std::vector<std::string>& fer2013_labels();

struct CheckpointInfo {
  std::string model;  // size name
  int64_t classes = 7, image_size = 224;
  std::vector<std::string> labels;
  GeluApprox gelu = GeluApprox::None;  // metadata 'gelu': erf (or absent) or tanh
  std::map<std::string, std::string> metadata;  // everything in the file's __metadata__
};

// The model's tensors (copied to the CPU as f32; the counter as i64) and the metadata,
// as a checkpoint file's content (for save_safetensors, or safetensors_writer where a
// checkpoint is written together with another file).
SafeTensors checkpoint_of(EmoNeXt& model, const std::vector<std::string>& labels, std::map<std::string, std::string> extra = {});
// Writes checkpoint_of's content; the file appears whole or not at all (save_safetensors
// writes and renames).
void save_checkpoint(const std::string& path, EmoNeXt& model, const std::vector<std::string>& labels,
                     std::map<std::string, std::string> extra = {});

// What a checkpoint's metadata says it holds; throws naming the file when it is not an
// EmoNeXt checkpoint. load_safetensors_metadata gives the metadata without the tensors.
CheckpointInfo read_checkpoint_info(const std::map<std::string, std::string>& metadata, const std::string& path);
CheckpointInfo read_checkpoint_info(const SafeTensors& file, const std::string& path);

// Copies the named tensors into the model, converting dtype and device to the model's.
// Strict: every model tensor must be in the file with its shape, and the file must hold
// no other tensor (names listed in the error); nothing is changed when that fails.
void load_state(Module& model, const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& source);

// Builds the EmoNeXt that a checkpoint describes and loads it (on the CPU, f32, eval mode).
std::unique_ptr<EmoNeXt> load_emonext(const std::string& path, CheckpointInfo* info = nullptr);

}  // namespace emonext
