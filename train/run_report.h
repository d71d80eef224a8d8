// report.html in a run's folder: one self-contained page (inline SVG and PNG, no script
// or font fetched, nothing run) that the trainer rewrites, atomically, at the end of each
// epoch and of the run:
//   - the curves: train and validation loss and accuracy per epoch, each step's loss (and
//     a smoothed line), the learning rate, the gradient norm, images/s;
//   - the confusion matrix as a heat map with each emotion's accuracy (the ten-crop
//     test's when there is one, else the best epoch's validation);
//   - a fixed set of validation faces (two per emotion, chosen by the seed): the input,
//     the spatial transformer's output (what the backbone sees), and Grad-CAM over it,
//     with the true and predicted label and the seven probabilities;
//   - the run's settings and the machine.
// Its figures are the run's own files' (metrics.csv, steps.csv), which it reads back; a
// JSON block (<script type="application/json" id="emonext-data">, data, not code) holds
// them for other programs.
#pragma once
#include <string>
#include <vector>

#include "models/emonext.h"
#include "train/config.h"
#include "train/data.h"
#include "train/evaluate.h"

namespace emonext {

class RunReport {
 public:
  // Picks the faces from the validation set (two per emotion, by the seed).
  RunReport(const TrainConfig& c, std::string device, const Dataset& val);
  // Rewrites <out>/report.html: the curves from the run's CSV files, `confusion` (may
  // be null) under `confusion_title`, and the faces explained by `model` as it is now.
  void write(EmoNeXt& model, Device device, const Evaluation* confusion, const std::string& confusion_title) const;
  // The validation faces shown: their indices in the validation set.
  const std::vector<size_t>& faces() const { return faces_; }

 private:
  const TrainConfig& c_;
  std::string device_;
  const Dataset& val_;
  std::vector<size_t> faces_;
};

}  // namespace emonext
