// emonext_train: EmoNeXt on FER2013, the recipe of ../shared/docs/REFERENCE.md.
// Run with --help for the options (one table, train/config.cpp); README.md has the main
// job's command.
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "core/base/error.h"
#include "core/base/options.h"
#include "core/device.h"
#include "core/dist.h"
#include "core/storage.h"
#include "models/checkpoint.h"
#include "models/emonext.h"
#include "train/trainer.h"

namespace {

const char* kSynopsis =
    "emonext_train (--data DIR | --csv FILE | --synthetic N) [options]\n"
    "       emonext_train --resume DIR [options]\n"
    "       emonext_train --benchmark STEPS [--backbone] [options]\n"
    "With no GPU and no --model, --img-size, --init or --resume, the CPU-sized recipe: EmoNeXt-atto at 48 x 48,\n"
    "25 epochs, no vertical flips (the defaults below are the GPU recipe's, the reference's).";

// The value given to `flag` on the command line (the last, when repeated), or "": read
// before the table parses the rest, since --resume and --init supply the defaults the
// other options then override, and --device decides the machine's recipe.
std::string flag_value(int argc, char** argv, const std::string& flag) {
  std::string value;
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == flag) value = argv[i + 1];
  return value;
}

bool has_flag(int argc, char** argv, const std::string& flag) {
  for (int i = 1; i < argc; ++i)
    if (argv[i] == flag) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace emonext;
  keep_freed_host_memory();
  // Under mpirun every rank runs this; rank 0 alone prints (errors still reach stderr
  // from any rank) and writes the run's files.
  dist::init(&argc, &argv);
  if (dist::rank() != 0 && !std::freopen("/dev/null", "w", stdout)) dist::abort_all("cannot silence stdout");
  TrainConfig c;
  const std::string resume = flag_value(argc, argv, "--resume"), init = flag_value(argc, argv, "--init"),
                    device = flag_value(argc, argv, "--device");
  bool cpu_recipe = false;
  try {
    if (!resume.empty()) {
      // --resume DIR continues the run with its own settings; options given override them
      // (the trainer prints each resumed setting that differs).
      if (const std::optional<TrainConfig> saved = saved_config(resume)) c = *saved;
      else std::printf("note: %s/last.state.safetensors predates saved settings; the options given are used as they are\n", resume.c_str());
    } else if (!init.empty()) {
      // --init CKPT makes the model the checkpoint holds (size, classes, image size, GELU
      // form); --gelu given too overrides the form, the others must agree with it.
      const CheckpointInfo info = read_checkpoint_info(load_safetensors_metadata(init), init);
      c.model = info.model;
      c.classes = info.classes;
      c.image_size = info.image_size;
      c.gelu = info.gelu;
    } else if (!has_flag(argc, argv, "--model") && !has_flag(argc, argv, "--img-size") && !has_flag(argc, argv, "--help") &&
               !has_flag(argc, argv, "-h") && (device == "cpu" || (device != "cuda" && !cuda_available()))) {
      // No GPU: the recipe a CPU finishes (REFERENCE.md's is for 224 x 224 on a GPU).
      cpu_recipe = true;
      c.model = "atto";
      c.image_size = 48;
      c.epochs = 25;
      c.augment.vflip = false;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "emonext_train: %s: %s\n", resume.empty() ? "--init" : "--resume", e.what());
    return 1;
  }
  cli::Options options("emonext_train", kSynopsis);
  add_train_options(options, c);
  options.on_help([] { dist::finalize(); });  // under mpirun a rank that exits without it fails the job
  options.parse(argc, argv);
  c.ranks = dist::size();
  dist::set_timeout(c.timeout);
  // One data source, which replaces a resumed run's.
  const int sources = int(options.given("--data")) + int(options.given("--csv")) + int(options.given("--synthetic"));
  if (sources > 1) options.usage_error("give one of --data, --csv and --synthetic");
  if (sources == 1) {
    if (!options.given("--data")) c.data_dir.clear();
    if (!options.given("--csv")) c.csv.clear();
    if (!options.given("--synthetic")) c.synthetic = 0;
  }
  if (const std::string why = invalid_setting(c); !why.empty()) options.usage_error(why);
  if (!resume.empty() && !options.given("--out")) c.out = resume;  // continue in the same folder
  if (cpu_recipe && c.benchmark == 0 && c.overfit_batch.empty())
    std::printf("emonext_train: no GPU, so the CPU-sized recipe: EmoNeXt-atto at 48 x 48, %lld epochs%s (--model and --img-size "
                "choose another; README.md says what to expect)\n",
                (long long)c.epochs, c.augment.vflip ? "" : ", no vertical flips");
  const int code = run_training(c);
  dist::finalize();
  return code;
}
