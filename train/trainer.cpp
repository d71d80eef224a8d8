#include "train/trainer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <thread>
#include <unordered_set>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/device.h"
#include "core/safetensors.h"
#include "core/storage.h"
#include "models/checkpoint.h"
#include "train/evaluate.h"
#include "train/optim.h"

namespace emonext {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_interrupted{false};

// The first Ctrl-C asks the loop to finish its step, save and stop (a step of tiny at 224
// on a CPU takes seconds); a second quits at once. Quitting mid-save loses only that save:
// checkpoints are renamed into place whole. Only async-signal-safe calls in here.
void on_sigint(int) {
  if (g_interrupted.exchange(true)) {
    constexpr char kQuit[] = "\nemonext_train: second Ctrl-C: quitting without saving\n";
    (void)!write(STDERR_FILENO, kQuit, sizeof kQuit - 1);
    _exit(130);
  }
  constexpr char kSaving[] = "\nemonext_train: Ctrl-C: saving after this step (Ctrl-C again quits without saving)\n";
  (void)!write(STDERR_FILENO, kSaving, sizeof kSaving - 1);
}

// While it lives, Ctrl-C only sets g_interrupted (the loop then saves and stops); the
// previous handler comes back however the training loop is left.
class SigintToFlag {
 public:
  SigintToFlag() {
    g_interrupted = false;
    previous_ = std::signal(SIGINT, on_sigint);
  }
  ~SigintToFlag() { std::signal(SIGINT, previous_); }
  SigintToFlag(const SigintToFlag&) = delete;
  SigintToFlag& operator=(const SigintToFlag&) = delete;

 private:
  void (*previous_)(int) = nullptr;
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string duration(double s) {
  char b[32];
  const int64_t t = int64_t(s);
  std::snprintf(b, sizeof b, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
  return b;
}

// Progress: a redrawn bar on a terminal, a plain line every `every` steps otherwise.
class Progress {
 public:
  explicit Progress(int64_t every) : tty_(isatty(fileno(stdout)) != 0), every_(every) {}
  void step(int64_t epoch, int64_t b, int64_t batches, double loss, double lr, double ips, double eta_s, int64_t step) {
    if (tty_) {
      const int width = 24, done = int(double(width) * double(b) / double(std::max<int64_t>(1, batches)));
      std::printf("\repoch %lld [%s%s] %lld/%lld loss %.4f lr %.2e %.1f img/s ETA %s   ", (long long)epoch,
                  std::string(size_t(done), '#').c_str(), std::string(size_t(width - done), '.').c_str(), (long long)b,
                  (long long)batches, loss, lr, ips, duration(eta_s).c_str());
      std::fflush(stdout);
    } else if (step % every_ == 0) {
      std::printf("step %lld epoch %lld batch %lld/%lld loss %.4f lr %.3e %.1f img/s ETA %s\n", (long long)step, (long long)epoch,
                  (long long)b, (long long)batches, loss, lr, ips, duration(eta_s).c_str());
      std::fflush(stdout);
    }
  }
  void end_line() {
    if (tty_) std::printf("\n");
  }

 private:
  bool tty_;
  int64_t every_;
};

Device pick_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  if (name == "cuda") {
    EMONEXT_CHECK(cuda_available(), "--device cuda: ", cuda_unavailable_reason());
    return Device::cuda(0);
  }
  EMONEXT_CHECK(name == "auto", "--device is auto, cpu or cuda, got '", name, "'");
  return cuda_available() ? Device::cuda(0) : Device::cpu();
}

void print_counts(const Dataset& d) {
  const std::vector<int64_t> counts = d.class_counts();
  std::printf("%-9s %6zu images:", d.name.c_str(), d.samples.size());
  for (size_t c = 0; c < counts.size(); ++c) std::printf(" %s %lld", fer2013_labels()[c].c_str(), (long long)counts[c]);
  std::printf("\n");
}

// The training state beside a weights file: optimizer moments, EMA, counters.
struct RunState {
  int64_t epoch = 0, batch_in_epoch = 0, step = 0, bad_epochs = 0;
  double best_accuracy = -1;
  uint64_t drop_path_counter = 0;
};

// fp16's dynamic loss scale: the loss is multiplied by `scale` before the backward
// pass, and the gradient norm and AdamW's reading of the gradients divide by it; a
// step whose gradients hold inf or NaN is skipped and the scale halved; 2000 good
// steps in a row double it (PyTorch's GradScaler defaults).
struct LossScaler {
  // A scale below 1 means some gradients exceed f16's range unscaled, and shrinking them
  // all flushes the small ones to zero. It happens at the start of training: with zero
  // biases a one-colour patch (black rotation corners, FER2013's blank images) is 0 in
  // every channel after the stem, the LayerNorm's variance is 0 and its input gradient is
  // multiplied by 1/sqrt(eps) = 1000 per LayerNorm, past f16's range (PyTorch's autocast
  // too: the stem's output is f16 there). EmoNeXt-tiny at 224 settles near 1/256 (see
  // tools/reference/fp16_range.py). Below kFloor, 2^-24 (f16's smallest value), nothing fits.
  static constexpr double kFloor = 1.0 / 16777216;
  bool on = false;
  double scale = 65536;
  int64_t good = 0;
  void update(bool found_inf) {
    if (found_inf) {
      scale /= 2;
      good = 0;
    } else if (++good == 2000) {
      scale *= 2;
      good = 0;
    }
  }
};

void save_run_state(const std::string& path, const TrainConfig& c, AdamW& opt, Ema* ema, const RunState& s,
                    const LossScaler& scaler) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, t] : opt.state()) tensors.emplace_back(name, t->to(Device::cpu()));
  if (ema)
    for (auto& [name, t] : ema->state()) tensors.emplace_back(name, t->to(Device::cpu()));
  std::map<std::string, std::string> metadata = setting_metadata(c);
  metadata.insert({{"epoch", std::to_string(s.epoch)}, {"batch_in_epoch", std::to_string(s.batch_in_epoch)},
                   {"step", std::to_string(s.step)}, {"bad_epochs", std::to_string(s.bad_epochs)},
                   {"best_accuracy", fmt("%.17g", s.best_accuracy)}, {"drop_path_counter", std::to_string(s.drop_path_counter)},
                   {"adam_steps", std::to_string(opt.steps())}, {"loss_scale", fmt("%.17g", scaler.scale)},
                   {"loss_scale_good_steps", std::to_string(scaler.good)}});
  save_safetensors(path, tensors, metadata);
}

// The state into the optimizer, the EMA and the scaler; the settings that differ from
// the run's are printed, since the run then does not continue as it would have.
RunState load_run_state(const std::string& path, const TrainConfig& c, AdamW& opt, Ema* ema, LossScaler& scaler) {
  const SafeTensors f = load_safetensors(path);
  for (auto& [name, t] : opt.state()) t->copy_(f.at(name));
  if (ema) {
    EMONEXT_CHECK(f.contains(ema->state().front().first), path,
                  ": the run kept no EMA of the weights (it was trained with --no-ema); give --no-ema to continue it");
    for (auto& [name, t] : ema->state()) t->copy_(f.at(name));
  }
  const std::string changed = changed_settings(c, f.metadata);
  if (!changed.empty()) std::printf("resuming with settings other than the run's: %s\n", changed.c_str());
  RunState s;
  auto get = [&](const char* k) -> const std::string& {
    const auto it = f.metadata.find(k);
    EMONEXT_CHECK(it != f.metadata.end(), path, ": no '", k, "' in the training state");
    return it->second;
  };
  s.epoch = std::stoll(get("epoch"));
  s.batch_in_epoch = std::stoll(get("batch_in_epoch"));
  s.step = std::stoll(get("step"));
  s.bad_epochs = std::stoll(get("bad_epochs"));
  s.best_accuracy = std::stod(get("best_accuracy"));
  s.drop_path_counter = std::stoull(get("drop_path_counter"));
  opt.set_steps(std::stoll(get("adam_steps")));
  scaler.scale = std::stod(get("loss_scale"));
  scaler.good = std::stoll(get("loss_scale_good_steps"));
  return s;
}

// Mixed precision: the master model (f32) keeps the weights, the optimizer state and
// runs the spatial transformer, whose BatchNorm statistics so stay f32; a copy of the
// model in bf16 or f16 runs the backbone, the head and the attention; the logits and
// attention come back in f32 for the loss, as autocast does for softmax and losses.
EmoNeXtOutput amp_forward(EmoNeXt& master, EmoNeXt& low, const Tensor& x, DType dtype) {
  const Tensor f = low.forward_features(cast(master.stn.forward(x), dtype));
  return {cast(low.head.forward(f), DType::F32), cast(low.attention.forward(f), DType::F32)};
}

bool is_stn(const std::string& name) { return name.starts_with("localization.") || name.starts_with("fc_loc."); }

// The master's weights (all but the STN's, which the master runs) into the low copy.
void copy_to_low(EmoNeXt& master, EmoNeXt& low) {
  NoGradGuard no_grad;
  const std::vector<Module::Named> from = master.named_tensors(), to = low.named_tensors();
  for (size_t i = 0; i < from.size(); ++i)
    if (!is_stn(from[i].name)) to[i].tensor->copy_(*from[i].tensor);
}

// The low copy's gradients, in f32, onto the master's parameters (the STN's are there
// already). They stay multiplied by the loss scale: the step divides the norm by it and
// hands 1 / scale to AdamW with clipping's factor, rather than rescaling every gradient.
void gradients_to_master(EmoNeXt& master, EmoNeXt& low) {
  NoGradGuard no_grad;
  const std::vector<Module::Named> to = master.named_parameters(), from = low.named_parameters();
  for (size_t i = 0; i < to.size(); ++i)
    if (!is_stn(to[i].name) && from[i].tensor->grad().defined()) to[i].tensor->set_grad(from[i].tensor->grad().to(DType::F32));
  low.zero_grad();
}

// A checkpoint's weights into the model, after checking that it describes the
// configured model (--init, --resume).
void load_weights(EmoNeXt& model, const std::string& path, const TrainConfig& c) {
  const SafeTensors f = load_safetensors(path);
  const CheckpointInfo info = read_checkpoint_info(f, path);
  EMONEXT_CHECK(info.model == c.model && info.classes == c.classes && info.image_size == c.image_size, path, ": holds EmoNeXt-",
                info.model, " for ", info.classes, " classes at ", info.image_size, ", not ", c.model, " / ", c.classes, " / ",
                c.image_size, " (--model, --classes and --img-size must be the checkpoint's)");
  load_state(model, f.tensors, path);
}

int64_t peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_maxrss / 1024);
}

// What a run writes in its --out folder (--overwrite removes these, and nothing else).
const char* const kRunFiles[] = {"config.json",           "metrics.csv",      "steps.csv",
                                 "last.safetensors",      "last.state.safetensors",
                                 "best.safetensors",      "best.state.safetensors",
                                 "confusion.csv"};

bool resumes_in_place(const TrainConfig& c) {
  std::error_code ec;  // false when either folder does not exist
  return !c.resume.empty() && fs::equivalent(c.resume, c.out, ec);
}

// Before the data is read: a folder that holds a run's checkpoints is not written over
// by a new run (a repeated command would lose hours of training; --resume continues it
// in place, --overwrite replaces it), and the folder is made and a file written into
// it, so that a path that cannot be a folder or cannot be written is said now, not
// after the data and the model.
void check_out_folder(const TrainConfig& c) {
  EMONEXT_CHECK(!(c.overwrite && resumes_in_place(c)), "--overwrite would delete the run that --resume ", c.resume,
                " continues; leave it out, or give another --out");
  if (!c.overwrite && !resumes_in_place(c)) {
    std::string found;
    for (const char* f : {"last.safetensors", "best.safetensors"})
      if (fs::exists(fs::path(c.out) / f)) found += (found.empty() ? "" : ", ") + std::string(f);
    EMONEXT_CHECK(found.empty(), "--out ", c.out, " already holds a run (", found, "); continue it with --resume ", c.out,
                  ", choose another --out, or replace it with --overwrite");
  }
  std::error_code ec;
  fs::create_directories(c.out, ec);
  EMONEXT_CHECK(!ec && fs::is_directory(c.out), "--out ", c.out, ": cannot make that folder (",
                ec ? ec.message() : "a file has that name", ")");
  const fs::path probe = fs::path(c.out) / ".emonext_write_test";
  const bool writable = static_cast<bool>(std::ofstream(probe) << "ok\n");
  fs::remove(probe, ec);
  EMONEXT_CHECK(writable, "--out ", c.out, ": cannot write files there");
}

}  // namespace

std::optional<TrainConfig> saved_config(const std::string& run_dir) {
  const std::string path = run_dir + "/last.state.safetensors";
  return config_from_metadata(load_safetensors_metadata(path), path);
}

int run_training(const TrainConfig& c) {
  try {
    const bool overfit = !c.overfit_batch.empty();
    EMONEXT_CHECK(c.amp == "off" || c.amp == "bf16" || c.amp == "fp16", "--amp is off, bf16 or fp16, got '", c.amp, "'");
    EMONEXT_CHECK(c.amp == "off" || c.overfit_batch.empty(), "--overfit-batch runs in f32 (leave --amp off)");
    convnext_size(c.model);  // an unknown size stops here, before the data is read
    if (!overfit) check_out_folder(c);
    const Device dev = pick_device(c.device);
    const int workers = c.workers > 0 ? c.workers : int(std::max(1u, std::thread::hardware_concurrency()));
    std::printf("emonext_train: EmoNeXt-%s, %lld x %lld images, batch %lld, device %s, %d loader thread(s)\n", c.model.c_str(),
                (long long)c.image_size, (long long)c.image_size, (long long)c.batch, dev.str().c_str(), workers);
    if (c.device == "auto" && dev.is_cpu())  // say why: a GPU whose driver fails would otherwise look like none
      std::printf("note: on the CPU because no CUDA device answers (%s)%s\n", cuda_unavailable_reason().c_str(),
                  c.image_size > 64 ? "; at this image size a step takes seconds here: README has a CPU-sized run (--model atto "
                                      "--img-size 48)"
                                    : "");

    // ---- data ----
    Dataset train, val, test;
    bool have_test = false;
    if (overfit) {
      // no datasets: one fixed batch
    } else if (c.benchmark > 0 || c.synthetic > 0) {
      train = synthetic_dataset(c.benchmark > 0 ? c.batch * std::min<int64_t>(c.benchmark, 64) : c.synthetic, c.seed);
      val = synthetic_dataset(std::max<int64_t>(c.batch, 64), c.seed + 1);
      val.name = "val";
    } else if (!c.csv.empty()) {
      train = read_fer2013_csv(c.csv, "Training");
      train.name = "train";
      val = read_fer2013_csv(c.csv, "PublicTest");
      val.name = "val";
      try {
        test = read_fer2013_csv(c.csv, "PrivateTest");
        test.name = "test";
        have_test = true;
      } catch (const Error&) {
      }
    } else {
      EMONEXT_CHECK(!c.data_dir.empty(), "no data: give --data DIR (train/ val/ [test/] folders), --csv FILE or --synthetic N");
      train = read_image_folders(c.data_dir, "train");
      val = read_image_folders(c.data_dir, "val");
      if (fs::is_directory(fs::path(c.data_dir) / "test")) {
        test = read_image_folders(c.data_dir, "test");
        have_test = true;
      }
    }
    if (!overfit) {
      int64_t top = 0;  // the largest label: the model needs an output for each
      for (const Dataset* d : {&train, &val, &test})
        for (const Sample& s : d->samples) top = std::max(top, s.label);
      EMONEXT_CHECK(top < c.classes, "--classes ", c.classes, " is fewer than the data's labels (0 to ", top, ")");
      print_counts(train);
      print_counts(val);
      if (have_test) print_counts(test);
    }

    // ---- model, optimizer, EMA ----
    EmoNeXt model(convnext_size(c.model), c.classes, c.image_size, c.drop_path);
    Generator init_gen(c.seed);
    init_weights(model, init_gen);
    if (!c.init.empty()) {
      load_weights(model, c.init, c);
      std::printf("initialised from %s\n", c.init.c_str());
    }
    model.to(dev);
    model.train();
    AdamW::Options oo;
    oo.weight_decay = c.weight_decay;
    oo.decay_norms_and_biases = !c.exempt_norms;
    AdamW opt(model, oo);
    std::unique_ptr<Ema> ema = c.ema ? std::make_unique<Ema>(model, c.ema_every) : nullptr;
    const Schedule schedule = schedule_from_name(c.schedule);
    const DType amp_dtype = c.amp == "bf16" ? DType::BF16 : c.amp == "fp16" ? DType::F16 : DType::F32;
    std::unique_ptr<EmoNeXt> low;
    if (c.amp != "off") {
      low = std::make_unique<EmoNeXt>(convnext_size(c.model), c.classes, c.image_size, c.drop_path);
      low->to(dev);
      low->to(amp_dtype);
      low->train();
      std::printf("mixed precision: %s backbone, f32 master weights and spatial transformer\n", c.amp.c_str());
      if (dev.is_cpu())
        std::printf("note: the CPU converts 16-bit values in software, so --amp trains about 5x slower than f32 here; "
                    "it is meant for GPUs\n");
    }
    LossScaler scaler;
    bool warned_small_scale = false;
    scaler.on = c.amp == "fp16";
    if (c.loss_scale > 0) scaler.scale = c.loss_scale;
    Generator& dp_gen = low ? low->generator() : model.generator();  // drop path draws from the model that runs the blocks
    dp_gen.set_state(c.seed + 1, 0);

    // ---- overfit-batch mode ----
    if (overfit) {
      EMONEXT_CHECK(c.steps > 0 && !c.dump_state.empty(), "--overfit-batch needs --steps K and --dump-state OUT");
      const SafeTensors b = load_safetensors(c.overfit_batch);
      const Tensor x = b.at("images").to(DType::F32).permute({0, 2, 3, 1}).contiguous().to(dev), y = b.at("labels").to(dev);
      std::vector<double> losses;
      std::vector<std::pair<std::string, Tensor>> dump;
      for (int64_t s = 0; s < c.steps; ++s) {
        const EmoNeXtOutput out = model.forward(x);
        const Tensor loss = emonext_loss(out, y, c.label_smoothing);
        loss.backward();
        losses.push_back(loss.item());
        if (s == 0) {
          dump.emplace_back("logits", out.logits.detach().to(Device::cpu()));
          for (const Module::Named& p : model.named_parameters())
            if (p.tensor->grad().defined()) dump.emplace_back("grad." + p.name, p.tensor->grad().to(Device::cpu()));
        }
        const double clip = c.clip > 0 ? clip_factor(grad_norm(model), c.clip) : 1.0;
        opt.step(learning_rate(schedule, c.lr, s, c.warmup, c.cycle, c.steps), clip);
        model.zero_grad();
        std::printf("step %lld loss %.6f\n", (long long)(s + 1), losses.back());
      }
      dump.emplace_back("loss", Tensor::from_vector(losses, {int64_t(losses.size())}));
      save_safetensors(c.dump_state, dump);
      std::printf("wrote %s\n", c.dump_state.c_str());
      return 0;
    }

    // ---- output folder (made by check_out_folder), resume ----
    if (c.overwrite)  // the old run's files go now, so none of them is mistaken for the new run's
      for (const char* f : kRunFiles) fs::remove(fs::path(c.out) / f);
    const std::string last = c.out + "/last.safetensors", last_state = c.out + "/last.state.safetensors",
                      best = c.out + "/best.safetensors";
    RunState st;
    if (!c.resume.empty()) {
      load_weights(model, c.resume + "/last.safetensors", c);
      st = load_run_state(c.resume + "/last.state.safetensors", c, opt, ema.get(), scaler);
      dp_gen.set_state(c.seed + 1, st.drop_path_counter);
      std::printf("resumed from %s at step %lld (epoch %lld, batch %lld)\n", c.resume.c_str(), (long long)st.step,
                  (long long)st.epoch, (long long)st.batch_in_epoch);
    }
    EMONEXT_CHECK(std::ofstream(c.out + "/config.json") << json_config(c, dev.str()), c.out, "/config.json: write failed");
    const bool append = !c.resume.empty() && fs::exists(c.out + "/metrics.csv");
    std::ofstream metrics(c.out + "/metrics.csv", append ? std::ios::app : std::ios::trunc);
    if (!append) metrics << "epoch,step,train_loss,train_accuracy,val_loss,val_accuracy,lr,images_per_s,data_wait_s\n";
    std::ofstream steps_log(c.out + "/steps.csv", append ? std::ios::app : std::ios::trunc);
    if (!append) steps_log << "step,loss,lr,grad_norm\n";

    auto save_state = [&](const std::string& path) {
      st.drop_path_counter = dp_gen.counter();
      save_run_state(path, c, opt, ema.get(), st, scaler);
    };
    auto save_last = [&]() {
      save_checkpoint(last, model, fer2013_labels(), {{"step", std::to_string(st.step)}});
      save_state(last_state);
    };
    std::optional<SigintToFlag> sigint(std::in_place);
    Progress progress(c.log_every);
    // A non-finite loss or gradient: stop, naming the step and the last good checkpoint.
    auto stop_non_finite = [&](const std::string& what) {
      progress.end_line();
      std::fprintf(stderr, "emonext_train: %s at step %lld; stopping. The last good checkpoint is %s\n", what.c_str(),
                   (long long)st.step + 1, fs::exists(last) ? last.c_str() : "(none yet)");
      return 1;
    };
    const int64_t steps_per_epoch = int64_t(train.samples.size()) / c.batch;
    EMONEXT_CHECK(steps_per_epoch > 0, "the training set (", train.samples.size(), " images) is smaller than one batch (", c.batch, ")");
    // --benchmark STEPS runs that many steps over as many passes of its synthetic set as
    // they take, whatever --epochs and --max-steps say.
    const int64_t total_steps = c.benchmark > 0   ? c.benchmark
                                : c.max_steps > 0 ? std::min(c.max_steps, c.epochs * steps_per_epoch)
                                                  : c.epochs * steps_per_epoch;
    // A resumed run that has done what its limits allow: said, nothing trained, exit 0
    // (the step limit is checked after each step, so the loop would have run one more).
    if (!c.resume.empty() && c.benchmark == 0) {
      if (st.step >= total_steps) {
        std::printf("the run in %s is complete (%lld steps; --epochs %lld%s): give a larger --epochs or --max-steps to train on\n",
                    c.resume.c_str(), (long long)st.step, (long long)c.epochs,
                    c.max_steps > 0 ? (", --max-steps " + std::to_string(c.max_steps)).c_str() : "");
        return 0;
      }
      if (st.bad_epochs >= c.patience) {
        std::printf("the run in %s stopped early (no better validation accuracy for %lld epochs): give a larger --patience to "
                    "train on\n", c.resume.c_str(), (long long)st.bad_epochs);
        return 0;
      }
    }
    // Images that cannot be decoded: named once each (training meets them every epoch,
    // evaluation too) and counted at the end.
    std::unordered_set<std::string> unreadable;
    const auto report_unreadable = [&](const std::vector<std::string>& whys) {
      for (const std::string& why : whys)
        if (unreadable.insert(why).second) std::fprintf(stderr, "skipped unreadable image %s\n", why.c_str());
    };
    bool stop = false;
    const auto t_start = Clock::now();
    double bench_time = 0, bench_wait = 0;
    int64_t bench_images = 0;
    uint64_t bench_launches = 0;  // GPU launches so far when the steady state begins

    for (; (st.epoch < c.epochs || c.benchmark > 0) && !stop; ++st.epoch) {
      Loader loader(train, c.batch, c.image_size, true, c.augment, c.seed, st.epoch, workers, st.batch_in_epoch);
      double loss_sum = 0;
      int64_t seen = 0, correct = 0;
      const auto t_epoch = Clock::now();
      int64_t epoch_images = 0;
      for (Batch b = loader.next(); b.index >= 0; b = loader.next()) {
        report_unreadable(b.unreadable);
        if (b.labels.numel() == 0) continue;
        const auto t_step = Clock::now();
        const double lr = learning_rate(schedule, c.lr, st.step, c.warmup, c.cycle, total_steps);
        if (low) copy_to_low(model, *low);
        const Tensor x = b.images.to(dev);
        const EmoNeXtOutput out = low ? amp_forward(model, *low, x, amp_dtype) : model.forward(x);
        const Tensor y = b.labels.to(dev);
        const Tensor loss = emonext_loss(out, y, c.label_smoothing);
        const double l = loss.item();
        if (!std::isfinite(l)) return stop_non_finite(fmt("the loss is %f", l));
        const double loss_scale = scaler.on ? scaler.scale : 1.0;
        (scaler.on ? loss * loss_scale : loss).backward();
        if (low) gradients_to_master(model, *low);
        const double norm = grad_norm(model) / loss_scale;
        if (!std::isfinite(norm)) {
          model.zero_grad();
          if (!scaler.on) return stop_non_finite("non-finite gradients");
          progress.end_line();
          std::printf("step %lld skipped: inf/NaN gradients at loss scale %g; the scale is now %g\n", (long long)st.step + 1,
                      scaler.scale, scaler.scale / 2);
          scaler.update(true);
          if (scaler.scale < 1 && !warned_small_scale) {
            warned_small_scale = true;
            std::printf("warning: the fp16 loss scale is below 1: some gradients are past f16's range even unscaled, and "
                        "small ones now round to zero. --amp bf16 has f32's range\n");
          }
          if (scaler.scale < LossScaler::kFloor)
            return stop_non_finite("fp16 gradients overflow at every loss scale down to " + fmt("%g", scaler.scale * 2) +
                                   "; train with --amp bf16 (f32's range) or --amp off");
        } else {
          // AdamW unscales and clips the gradients as it reads them
          opt.step(lr, (c.clip > 0 ? clip_factor(norm, c.clip) : 1.0) / loss_scale);
          model.zero_grad();
          scaler.update(false);
        }
        ++st.step;
        st.batch_in_epoch = b.index + 1;
        if (ema) ema->update(model, st.step);
        {
          NoGradGuard no_grad;
          const std::vector<double> lg = out.logits.detach().to_vector();
          const std::vector<int64_t> lab = b.labels.to_int_vector();
          for (size_t k = 0; k < lab.size(); ++k) {
            const double* row = lg.data() + k * size_t(c.classes);
            correct += int64_t(std::max_element(row, row + c.classes) - row) == lab[k];
          }
        }
        loss_sum += l * double(b.labels.numel());
        seen += b.labels.numel();
        epoch_images += b.labels.numel();
        steps_log << st.step << ',' << fmt("%.17g", l) << ',' << fmt("%.6g", lr) << ',' << fmt("%.6g", norm) << std::endl;
        const double elapsed = seconds_since(t_start);
        if (c.benchmark > 0 && st.step > 3) {  // steady state: after the first steps
          bench_time += seconds_since(t_step);
          bench_images += b.labels.numel();
        }
        if (c.benchmark > 0 && st.step == 3) bench_launches = gpu_launches();
        const double ips = double(epoch_images) / std::max(1e-9, seconds_since(t_epoch));
        const double eta = elapsed / double(std::max<int64_t>(1, st.step)) * double(std::max<int64_t>(0, total_steps - st.step));
        progress.step(st.epoch, b.index + 1, loader.batches(), l, lr, ips, eta, st.step);
        if (g_interrupted) {
          progress.end_line();
          save_last();
          std::printf("interrupted at step %lld: saved %s (resume with --resume %s)\n", (long long)st.step, last.c_str(), c.out.c_str());
          return 130;
        }
        if (c.benchmark > 0 ? st.step >= c.benchmark : c.max_steps > 0 && st.step >= c.max_steps) {
          stop = true;
          break;
        }
      }
      progress.end_line();
      bench_wait += loader.wait_seconds();
      if (c.benchmark > 0) {  // no evaluation: the next pass, until the steps are done
        st.batch_in_epoch = 0;
        continue;
      }
      // A run that stops on the epoch's last batch has finished the epoch: "last" then
      // resumes at the next one, not at an empty remainder of this one.
      if (!stop || st.batch_in_epoch >= loader.batches()) st.batch_in_epoch = 0;
      // ---- evaluation ----
      if (ema) ema->swap(model);
      const Evaluation ev = evaluate(model, val, c.batch, dev, {false, c.val_random_crop, c.seed, st.epoch});
      report_unreadable(ev.unreadable);
      if (ema) ema->swap(model);
      const double ips = double(epoch_images) / std::max(1e-9, seconds_since(t_epoch));
      std::printf("epoch %lld step %lld: train loss %.4f acc %.4f | val loss %.4f acc %.4f%s | %.1f img/s, data wait %.1f s\n",
                  (long long)st.epoch, (long long)st.step, seen ? loss_sum / double(seen) : 0.0,
                  seen ? double(correct) / double(seen) : 0.0, ev.loss, ev.accuracy, ema ? " (EMA)" : "", ips, loader.wait_seconds());
      std::fflush(stdout);
      metrics << st.epoch << ',' << st.step << ',' << (seen ? loss_sum / double(seen) : 0.0) << ','
              << (seen ? double(correct) / double(seen) : 0.0) << ',' << ev.loss << ',' << ev.accuracy << ','
              << learning_rate(schedule, c.lr, st.step, c.warmup, c.cycle, total_steps) << ',' << ips << ',' << loader.wait_seconds()
              << std::endl;
      EMONEXT_CHECK(metrics && steps_log, c.out, ": writing metrics.csv or steps.csv failed (disk full?)");
      if (ev.accuracy > st.best_accuracy) {
        st.best_accuracy = ev.accuracy;
        st.bad_epochs = 0;
        if (ema) ema->swap(model);
        save_checkpoint(best, model, fer2013_labels(),
                        {{"epoch", std::to_string(st.epoch)}, {"val_accuracy", fmt("%.6f", ev.accuracy)}, {"ema", ema ? "1" : "0"}});
        if (ema) ema->swap(model);
        save_state(c.out + "/best.state.safetensors");  // the training state at that epoch
      } else if (++st.bad_epochs >= c.patience) {
        std::printf("early stop: no better validation accuracy for %lld epochs\n", (long long)c.patience);
        stop = true;
      }
      if (stop && st.batch_in_epoch > 0) {
        save_last();  // mid-epoch: resume continues this epoch
        break;
      }
      const int64_t keep = st.epoch;
      ++st.epoch;  // "last" resumes at the next epoch
      save_last();
      st.epoch = keep;
    }
    sigint.reset();  // Ctrl-C stops the final test evaluation the usual way

    if (c.benchmark > 0) {
      const double ips = double(bench_images) / std::max(1e-9, bench_time);
      const int64_t steady_steps = std::max<int64_t>(1, st.step - 3);
      const std::string launches =
          dev.is_cuda() ? fmt(", %.0f GPU launches per step (kernels and cuBLAS/cuDNN calls)",
                              double(gpu_launches() - bench_launches) / double(steady_steps))
                        : "";
      std::printf("benchmark: %lld steps of batch %lld at %lld x %lld on %s: %.1f images/s, %.1f ms/step (steady state, after 3 "
                  "steps), data wait %.3f s in all, peak tensor memory on %s %.1f MB, peak process memory %lld MB%s\n",
                  (long long)st.step, (long long)c.batch, (long long)c.image_size, (long long)c.image_size, dev.str().c_str(), ips,
                  1000.0 * bench_time / double(steady_steps), bench_wait, dev.str().c_str(), double(memory_stats(dev).peak) / 1e6,
                  (long long)peak_rss_mb(), launches.c_str());
      return 0;
    }
    if (have_test) {
      if (ema) ema->swap(model);
      const Evaluation ev = evaluate(model, test, c.batch, dev, {.tencrop = true});
      report_unreadable(ev.unreadable);
      if (ema) ema->swap(model);
      std::printf("test (ten-crop%s): accuracy %.4f, loss %.4f\n", ema ? ", EMA" : "", ev.accuracy, ev.loss);
      print_confusion(ev, fer2013_labels());
      write_confusion_csv(c.out + "/confusion.csv", ev, fer2013_labels());
      std::printf("wrote %s/confusion.csv\n", c.out.c_str());
    }
    if (!unreadable.empty()) std::printf("%zu unreadable image(s) were skipped\n", unreadable.size());
    std::printf("done: %lld steps in %s; best val accuracy %.4f; checkpoints in %s\n", (long long)st.step,
                duration(seconds_since(t_start)).c_str(), st.best_accuracy, c.out.c_str());
    return 0;
  } catch (const std::exception& e) {  // emonext::Error, and the standard library's (a filesystem error): said, not an abort
    std::fprintf(stderr, "emonext_train: %s\n", e.what());
    return 1;
  }
}

}  // namespace emonext
