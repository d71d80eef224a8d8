// emonext_train: EmoNeXt on FER2013, the recipe of ../shared/docs/REFERENCE.md.
// Run with --help for the options; README.md has the main job's command.
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "core/base/error.h"
#include "core/storage.h"
#include "models/checkpoint.h"
#include "models/emonext.h"
#include "tools/cli.h"
#include "train/trainer.h"

namespace {

const char* kUsage = R"(usage: emonext_train (--data DIR | --csv FILE | --synthetic N) [options]
data
  --data DIR            FER2013 image folders DIR/train, DIR/val and (if present) DIR/test
  --csv FILE            the original fer2013.csv (Training / PublicTest / PrivateTest rows)
  --synthetic N         N random images (smoke runs)
  --workers K           loader threads (default: the machine's cores)
  --no-hflip --no-vflip --rotate DEG (20; 0 off) --no-random-crop
  --val-random-crop     the reference's random crop for validation (default: centre crop)
model
  --model SIZE          atto femto pico nano tiny (default) small base large xlarge
  --img-size S          224 (the reference); smaller for CPU runs, e.g. 48
  --classes N           7
  --init CKPT           start from a checkpoint (e.g. convnext_import's output); its size, classes
                        and image size are the defaults of the three options above
  --drop-path P         0.1 (the rate of the last block)
training
  --device auto|cpu|cuda   (auto: the GPU when one answers)
  --epochs N (300)  --batch B (64)  --lr PEAK (1e-3)  --wd W (0.01)  --exempt-norms
  --schedule restarts|cosine|constant (restarts: warmup 128, cycle 1024)  --warmup N  --cycle N
  --clip C (1.0; 0 off)  --label-smoothing E (0.2)  --no-ema  --patience N (12)  --max-steps N
  --amp off|bf16|fp16   mixed precision: the backbone in bf16/f16, f32 master weights; fp16 with a
                        dynamic loss scale (--loss-scale S, 65536) that skips steps with inf/NaN gradients
  --seed N (0)  --out DIR (runs/emonext)  --log-every N (50)
  --resume DIR          continue the run in DIR exactly, with its settings (options given override them)
  --overwrite           replace the run already in --out (without it, a folder holding a run is refused)
modes
  --overfit-batch FILE --steps K --dump-state OUT   K steps on one batch (images [N,3,H,W], labels [N])
  --benchmark STEPS     synthetic data: steady-state images/s and time per step (the steps after the
                        first 3), data wait, peak memory; STEPS at least 4
  --backbone            with --benchmark: the bare ConvNeXt (no spatial transformer, SE or attention;
                        cross-entropy alone), as timm's convnext_* trains
)";

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "emonext_train: " << why << "\n" << kUsage;
  std::exit(2);
}

// Every number an option takes, checked before anything is read or trained: a value
// out of range is a usage error naming the option, not a crash or a silent default.
void check_ranges(const emonext::TrainConfig& c, bool loss_scale_given) {
  if (loss_scale_given && !(c.loss_scale > 0)) usage("--loss-scale must be positive");
  if (const std::string why = emonext::invalid_setting(c); !why.empty()) usage(why);
}

// The value given to `flag` on the command line (the last, when repeated), or "". For
// --resume and --init, which are read before the other options: those apply on top.
std::string flag_value(int argc, char** argv, const std::string& flag) {
  std::string value;
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == flag) value = argv[i + 1];
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  emonext::keep_freed_host_memory();
  emonext::TrainConfig c;
  // --resume DIR continues the run with its own settings, and --init CKPT makes the
  // model the checkpoint holds (size, classes, image size); options given beside either
  // override them (the trainer prints each resumed setting that differs).
  const std::string resume = flag_value(argc, argv, "--resume"), init = flag_value(argc, argv, "--init");
  try {
    if (!resume.empty()) {
      if (const std::optional<emonext::TrainConfig> saved = emonext::saved_config(resume)) c = *saved;
      else std::printf("note: %s/last.state.safetensors predates saved settings; the options given are used as they are\n", resume.c_str());
    } else if (!init.empty()) {
      const emonext::CheckpointInfo info = emonext::read_checkpoint_info(emonext::load_safetensors_metadata(init), init);
      c.model = info.model;
      c.classes = info.classes;
      c.image_size = info.image_size;
    }
  } catch (const emonext::Error& e) {
    std::fprintf(stderr, "emonext_train: %s: %s\n", resume.empty() ? "--init" : "--resume", e.what());
    return 1;
  }
  emonext::cli::Args args(argc, argv, usage);
  bool loss_scale_given = false;
  int data_sources = 0;  // --data, --csv, --synthetic: one, which replaces a resumed run's
  const auto data_source = [&]() {
    if (++data_sources > 1) usage("give one of --data, --csv and --synthetic");
    c.data_dir.clear();
    c.csv.clear();
    c.synthetic = 0;
  };
  for (std::string a; args.next(a);) {
    if (a == "--data") {
      data_source();
      c.data_dir = args.value();
    } else if (a == "--csv") {
      data_source();
      c.csv = args.value();
    } else if (a == "--synthetic") {
      data_source();
      c.synthetic = args.integer();
    }
    else if (a == "--workers") c.workers = int(args.integer());
    else if (a == "--no-hflip") c.augment.hflip = false;
    else if (a == "--no-vflip") c.augment.vflip = false;
    else if (a == "--rotate") c.augment.rotate_degrees = args.real();
    else if (a == "--no-random-crop") c.augment.random_crop = false;
    else if (a == "--val-random-crop") c.val_random_crop = true;
    else if (a == "--model") c.model = args.value();
    else if (a == "--img-size") c.image_size = args.integer();
    else if (a == "--classes") c.classes = args.integer();
    else if (a == "--init") c.init = args.value();
    else if (a == "--drop-path") c.drop_path = args.real();
    else if (a == "--device") c.device = args.value();
    else if (a == "--epochs") c.epochs = args.integer();
    else if (a == "--batch") c.batch = args.integer();
    else if (a == "--lr") c.lr = args.real();
    else if (a == "--wd") c.weight_decay = args.real();
    else if (a == "--exempt-norms") c.exempt_norms = true;
    else if (a == "--schedule") c.schedule = args.value();
    else if (a == "--warmup") c.warmup = args.integer();
    else if (a == "--cycle") c.cycle = args.integer();
    else if (a == "--clip") c.clip = args.real();
    else if (a == "--label-smoothing") c.label_smoothing = args.real();
    else if (a == "--no-ema") c.ema = false;
    else if (a == "--patience") c.patience = args.integer();
    else if (a == "--max-steps") c.max_steps = args.integer();
    else if (a == "--amp") c.amp = args.value();
    else if (a == "--loss-scale") {
      c.loss_scale = args.real();
      loss_scale_given = true;
    }
    else if (a == "--seed") c.seed = args.unsigned_integer();
    else if (a == "--out") c.out = args.value();
    else if (a == "--resume") c.resume = args.value();
    else if (a == "--overwrite") c.overwrite = true;
    else if (a == "--log-every") c.log_every = std::max<int64_t>(1, args.integer());
    else if (a == "--overfit-batch") c.overfit_batch = args.value();
    else if (a == "--steps") c.steps = args.integer();
    else if (a == "--dump-state") c.dump_state = args.value();
    else if (a == "--benchmark") c.benchmark = args.integer();
    else if (a == "--backbone") c.backbone = true;
    else if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else usage("unknown argument " + a);
  }
  check_ranges(c, loss_scale_given);
  if (!c.resume.empty() && c.out == "runs/emonext") c.out = c.resume;  // continue in the same folder
  return emonext::run_training(c);
}
