// A model's accuracy, loss and confusion matrix on a labelled dataset: emonext_train's
// validation and test passes, and emonext_predict --evaluate.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/device.h"
#include "models/emonext.h"
#include "train/data.h"

namespace emonext {

// How each image is seen: the centre crop (the default), the ten crops with their
// logits averaged, or the reference's random crop (its stream from seed and epoch).
struct EvalView {
  bool tencrop = false, random_crop = false;
  uint64_t seed = 0;
  int64_t epoch = 0;
};

struct Evaluation {
  int64_t images = 0;                   // those that could be read
  std::vector<std::string> unreadable;  // "path: reason" for each image that could not
  double accuracy = 0, loss = 0;  // loss: mean cross-entropy, no smoothing
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
};

// Runs the model in eval mode (its mode is restored after) on `data`, `batch` crops at
// a time on `device`. Images that cannot be read are left out and listed in `unreadable`.
// sharded: the ranks of a data-parallel run (every rank calls it) evaluate a batch each
// in turn, and each returns the figures of the whole set, equal to one process's.
Evaluation evaluate(EmoNeXt& model, const Dataset& data, int64_t batch, Device device, const EvalView& view = {},
                    bool sharded = false);

// Per class: accuracy and the row of the confusion matrix, printed under a header line.
void print_confusion(const Evaluation& e, const std::vector<std::string>& labels);
// The same as CSV: "true\predicted,<labels>,accuracy", then one row per true class.
void write_confusion_csv(const std::string& path, const Evaluation& e, const std::vector<std::string>& labels);

}  // namespace emonext
