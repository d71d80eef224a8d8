// The training job: the recipe of REFERENCE.md end to end (data, model, AdamW,
// schedule, EMA, evaluation, checkpoints, resume), as emonext_train runs it.
#pragma once
#include <optional>
#include <string>

#include "train/config.h"

namespace emonext {

// The settings a run was started with, as its last training state records them:
// --resume DIR starts from these, and the options given beside it override them. Throws
// when DIR has no readable state; nullopt for a state written before settings were saved.
std::optional<TrainConfig> saved_config(const std::string& run_dir);

// Runs the configured job; returns the process exit code (0 done, 1 error reported,
// 130 interrupted with a checkpoint saved).
int run_training(const TrainConfig& config);

}  // namespace emonext
