// A training run's folder (--out): the files it writes, the guard that keeps a new run
// from writing over an old one, the training state beside the weights (what --resume
// reads), and the two logs (metrics.csv, a row an epoch; steps.csv, a row a step).
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

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
// in place, --overwrite replaces it), and the folder is made and a file written into
// it, so that a path that cannot be a folder or cannot be written is said now, not
// after the data and the model.
void check_out_folder(const TrainConfig& c);

// A checkpoint's weights into the model, after checking that it describes the
// configured model (--init, --resume).
void load_weights(EmoNeXt& model, const std::string& path, const TrainConfig& c);

// The run's counters, saved beside the optimizer moments, the EMA and the loss scale.
struct RunState {
  int64_t epoch = 0, batch_in_epoch = 0, step = 0, bad_epochs = 0;
  double best_accuracy = -1;
  uint64_t drop_path_counter = 0;
};

void save_run_state(const std::string& path, const TrainConfig& c, AdamW& opt, Ema* ema, const RunState& s,
                    const LossScaler& scaler);
// The state into the optimizer, the EMA and the scaler; the settings that differ from
// the run's are printed, since the run then does not continue as it would have. Every
// number is the file's: parsed whole and range-checked.
RunState load_run_state(const std::string& path, const TrainConfig& c, AdamW& opt, Ema* ema, LossScaler& scaler);

// config.json written, metrics.csv and steps.csv opened (appended to when a resumed run
// already has them); --overwrite's removal of the old run's files first.
class RunLogs {
 public:
  RunLogs(const TrainConfig& c, const std::string& device);
  void step(int64_t step, double loss, double lr, double grad_norm);
  void epoch(int64_t epoch, int64_t step, double train_loss, double train_accuracy, double val_loss, double val_accuracy,
             double lr, double images_per_s, double data_wait_s);

 private:
  std::string out_;
  std::ofstream metrics_, steps_;
};

}  // namespace emonext
