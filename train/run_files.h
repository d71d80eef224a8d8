// A training run's folder (--out): the files it writes, the guard that keeps a new run
// from writing over an old one, the training state beside the weights (what --resume
// reads), and the two logs (metrics.csv, a row an epoch; steps.csv, a row a step).
#pragma once
#include <cstdint>
#include <string>

#include "core/base/file.h"
#include "models/checkpoint.h"
#include "models/emonext.h"
#include "train/amp.h"
#include "train/config.h"
#include "train/optim.h"

namespace emonext {

// What a run writes in its --out folder (--overwrite removes these, and nothing else).
inline constexpr const char* kRunFiles[] = {"config.json",      "metrics.csv",            "steps.csv",
                                            "last.safetensors", "last.state.safetensors", "best.safetensors",
                                            "best.state.safetensors", "confusion.csv", "report.html"};

// Before the data is read: a folder that holds a run's checkpoints is not written over
// by a new run (a repeated command would lose hours of training; --resume continues it
// in place, --overwrite replaces it); a run's file that is a link or not a regular file
// is refused (writes through a planted link would land outside the folder; --overwrite
// removes it); and the folder is made and a file written into it, so that a path that
// cannot be a folder or cannot be written is said now, not after the data and the model.
void check_out_folder(const TrainConfig& c);

// Before any model is built: a checkpoint given to --init, or --resume's
// last.safetensors, must hold the configured model (its metadata alone is read), so that
// a setting that disagrees with the file is refused before it allocates (an xlarge model
// and its optimiser, 5.6 GB, for an atto checkpoint).
void check_checkpoint_fits(const std::string& path, const TrainConfig& c);

// A checkpoint's weights into the model, after checking that it describes the
// configured model (--init, --resume); what its metadata says.
CheckpointInfo load_weights(EmoNeXt& model, const std::string& path, const TrainConfig& c);

// The run's counters, saved beside the optimizer moments, the EMA and the loss scale.
struct RunState {
  int64_t epoch = 0, batch_in_epoch = 0, step = 0, bad_epochs = 0;
  double best_accuracy = -1;
  uint64_t drop_path_counter = 0;
};

// The training state's content: the moments, the EMA, the counters and the settings.
SafeTensors run_state_of(const TrainConfig& c, AdamW& opt, Ema* ema, const RunState& s, const LossScaler& scaler);
// A checkpoint and its training state as one unit (write_files_atomically): both written
// in full beside their names before either is renamed into place, so a failed write (a
// full disk) leaves the previous pair whole.
void save_pair(const std::string& weights_path, const SafeTensors& weights, const std::string& state_path, const SafeTensors& state);
// --resume's pair: the weights into the model (load_weights) and the training state into
// the optimizer, the EMA and the scaler; the settings that differ from the run's are
// printed, since the run then does not continue as it would have. Every number is the
// files': parsed whole and range-checked; every tensor of the state must have exactly the
// shape and dtype of the one it restores and finite values (second moments >= 0); and the
// step the weights record must be the state's (a pair from two steps is refused).
RunState load_pair(EmoNeXt& model, const std::string& weights_path, const std::string& state_path, const TrainConfig& c, AdamW& opt,
                   Ema* ema, LossScaler& scaler);

// config.json written, metrics.csv and steps.csv opened: new files, or, when a resumed
// run already has them, their rows past the resumed step dropped (a step trained after
// the last checkpoint is trained again) and appended to; --overwrite's removal of the old
// run's files first. No file is written through a link.
class RunLogs {
 public:
  RunLogs(const TrainConfig& c, const std::string& device, int64_t resumed_step = 0);
  void step(int64_t step, double loss, double lr, double grad_norm);
  void epoch(int64_t epoch, int64_t step, double train_loss, double train_accuracy, double val_loss, double val_accuracy,
             double lr, double images_per_s, double data_wait_s);

 private:
  std::string out_;
  FdOutput metrics_, steps_;
};

}  // namespace emonext
