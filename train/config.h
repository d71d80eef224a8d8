// What a training run is: its settings (TrainConfig), and the one table of them
// (train/config.cpp): for each, its key in config.json and in a training state, its
// emonext_train option, help text, default, range or choices, and whether --resume
// restores it. The table writes config.json and the state's metadata, reads them back
// for --resume, builds emonext_train's command line and --help, and checks every value.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "core/base/options.h"
#include "core/device.h"
#include "train/data.h"
#include "train/optim.h"

namespace emonext {

enum class Amp { Off, BF16, F16 };                 // --amp off|bf16|f16 (f16 with a dynamic loss scale)
const char* amp_name(Amp a);
enum class Switch { Off, On };                     // an option's on|off

struct TrainConfig {
  // data: one of data_dir (train/ val/ [test/] folders), csv (fer2013.csv), synthetic > 0
  std::string data_dir, csv;
  int64_t synthetic = 0;
  std::string out = "runs/emonext";
  DeviceChoice device = DeviceChoice::Auto;
  std::string model = "tiny";
  int64_t classes = 7, image_size = 224;
  std::string init;        // a checkpoint to start from (e.g. convnext_import's)
  std::string resume;      // a run folder to continue
  bool overwrite = false;  // replace a run already in out (refused otherwise)
  int64_t epochs = 300, batch = 64, patience = 12, max_steps = 0;  // max_steps 0: no limit
  double lr = 1e-3, weight_decay = 0.01, drop_path = 0.1, clip = 1.0, label_smoothing = 0.2;
  bool exempt_norms = false;  // no weight decay on norms, biases and layer scales
  Schedule schedule = Schedule::Restarts;
  int64_t warmup = 128, cycle = 1024;
  bool ema = true;
  int64_t ema_every = 16;
  Amp amp = Amp::Off;
  double loss_scale = 0;  // f16's initial scale; 0: 65536
  uint64_t seed = 0;
  int64_t workers = 0;  // loader threads; 0: the machine's cores
  Augment augment;
  bool val_random_crop = false;  // the reference's validation view (a random crop); default: centre
  int64_t log_every = 50;        // plain-output progress lines; on a GPU, the reads of the steps' figures
  bool pinned_input = true;      // on a GPU: batches up through pinned buffers on a copy stream (core/staging.h)
  Switch cuda_graph = Switch::On;  // on one GPU: the step captured and replayed as a CUDA graph (train/step_graph.h)
  GeluApprox gelu = GeluApprox::None;  // the blocks' GELU: erf (ConvNeXt's) or tanh
  Switch gemm_epilogue = Switch::On;   // with the tanh GELU: pwconv1 + bias + GELU in one GEMM (core/ops.h gelu_mlp)
  // Data parallelism (mpirun -np N emonext_train): ranks is the run's number of
  // processes (MPI's, not an option; --resume refuses another number).
  int64_t ranks = 1;
  bool sync_batch = false;  // BatchNorm statistics and the attention over the global batch
  double timeout = 300;     // seconds a rank waits for the others at a collective
  bool overlap = true;      // sum each gradient bucket during the backward pass, as soon as it is written
  // Modes.
  std::string overfit_batch, dump_state;
  int64_t steps = 0;      // --overfit-batch steps
  int64_t benchmark = 0;  // --benchmark STEPS
  bool backbone = false;  // --benchmark of the bare ConvNeXt (EmoNeXt's `bare`)
};

// emonext_train's options, from the table, bound to c (the values c holds are the
// defaults --help shows). Each value is parsed and range-checked as it is read.
void add_train_options(cli::Options& options, TrainConfig& c);

// Why c cannot be run (naming the option: "--cycle must be longer than --warmup"), or ""
// when every setting is in its range and they agree with each other: emonext_train
// checks its command line with it, and config_from_metadata a training state's settings
// (so a hostile state cannot ask for a 4-billion-pixel model).
std::string invalid_setting(const TrainConfig& c);

// config.json: the engine, the device the run chose, and every saved setting.
std::string json_config(const TrainConfig& c, const std::string& device);
// The settings as metadata for a training state ("setting.<key>" -> value).
std::map<std::string, std::string> setting_metadata(const TrainConfig& c);
// The settings --resume restores from such metadata onto the defaults; nullopt when it
// has none (a state written before settings were saved). `where` names the file in errors.
std::optional<TrainConfig> config_from_metadata(const std::map<std::string, std::string>& metadata, const std::string& where);
// The restored settings of c that differ from those in the metadata, as
// "key NEW (the run: OLD), ..."; empty when none do or the metadata has none.
std::string changed_settings(const TrainConfig& c, const std::map<std::string, std::string>& metadata);

}  // namespace emonext
