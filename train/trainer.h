// The training job: the recipe of REFERENCE.md end to end (data, model, AdamW,
// schedule, EMA, evaluation, checkpoints, resume), as emonext_train runs it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "train/data.h"

namespace emonext {

struct TrainConfig {
  // data: one of data_dir (train/ val/ [test/] folders), csv (fer2013.csv), synthetic > 0
  std::string data_dir, csv;
  int64_t synthetic = 0;
  std::string out = "runs/emonext";
  std::string device = "auto";  // auto, cpu, cuda
  std::string model = "tiny";
  int64_t classes = 7, image_size = 224;
  std::string init;    // a checkpoint to start from (e.g. convnext_import's)
  std::string resume;  // a run folder to continue
  bool overwrite = false;  // replace a run already in out (refused otherwise)
  int64_t epochs = 300, batch = 64, patience = 12, max_steps = 0;  // max_steps 0: no limit
  double lr = 1e-3, weight_decay = 0.01, drop_path = 0.1, clip = 1.0, label_smoothing = 0.2;
  bool exempt_norms = false;  // no weight decay on norms, biases and layer scales
  std::string schedule = "restarts";
  int64_t warmup = 128, cycle = 1024;
  bool ema = true;
  int64_t ema_every = 16;
  std::string amp = "off";  // off, bf16, fp16 (with a dynamic loss scale)
  double loss_scale = 0;    // fp16's initial scale; 0: 65536
  uint64_t seed = 0;
  int workers = 0;  // loader threads; 0: the machine's cores
  Augment augment;
  bool val_random_crop = false;  // the reference's validation view (a random crop); default: centre
  int64_t log_every = 50;        // plain-output progress lines
  // Modes.
  std::string overfit_batch, dump_state;
  int64_t steps = 0;      // --overfit-batch steps
  int64_t benchmark = 0;  // --benchmark STEPS
};

// The settings a run was started with, as its last training state records them:
// --resume DIR starts from these, and the options given beside it override them. Throws
// when DIR has no readable state; nullopt for a state written before settings were saved.
std::optional<TrainConfig> saved_config(const std::string& run_dir);

// Runs the configured job; returns the process exit code (0 done, 1 error reported,
// 130 interrupted with a checkpoint saved).
int run_training(const TrainConfig& config);

}  // namespace emonext
