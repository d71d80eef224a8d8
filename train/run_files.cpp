#include "train/run_files.h"

#include <cstdio>
#include <filesystem>
#include <map>

#include "core/base/error.h"
#include "core/base/file.h"
#include "core/base/limits.h"
#include "core/safetensors.h"
#include "models/checkpoint.h"
#include "train/progress.h"

namespace emonext {

namespace fs = std::filesystem;

namespace {

bool resumes_in_place(const TrainConfig& c) {
  std::error_code ec;  // false when either folder does not exist
  return !c.resume.empty() && fs::equivalent(c.resume, c.out, ec);
}

}  // namespace

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
  make_writable_folder(c.out, "--out");
}

void load_weights(EmoNeXt& model, const std::string& path, const TrainConfig& c) {
  const SafeTensors f = load_safetensors(path);
  const CheckpointInfo info = read_checkpoint_info(f, path);
  EMONEXT_CHECK(info.model == c.model && info.classes == c.classes && info.image_size == c.image_size, path, ": holds EmoNeXt-",
                info.model, " for ", info.classes, " classes at ", info.image_size, ", not ", c.model, " / ", c.classes, " / ",
                c.image_size, " (--model, --classes and --img-size must be the checkpoint's)");
  load_state(model, f.tensors, path);
}

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

RunState load_run_state(const std::string& path, const TrainConfig& c, AdamW& opt, Ema* ema, LossScaler& scaler) {
  const SafeTensors f = load_safetensors(path);
  // Which samples each rank's share of a batch holds, and (without --sync-batch) the
  // samples its BatchNorm and attention see, follow from the number of ranks.
  const auto ranks_it = f.metadata.find("setting.ranks");
  const int64_t ranks = ranks_it == f.metadata.end() ? 1 : limits::parse_int(ranks_it->second, path + ": 'setting.ranks'", 1);
  EMONEXT_CHECK(ranks == c.ranks, "the run was trained on ", ranks, " process(es) and this is ", c.ranks, ": resume it on ", ranks,
                ranks > 1 ? " (mpirun -np " + std::to_string(ranks) + " emonext_train --resume ...)" : " (without mpirun)",
                ", since the samples of each rank's share of a batch depend on the number");
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
  // Counters from the file: whole numbers, none negative (the scale positive).
  const auto count = [&](const char* k) { return limits::parse_int(get(k), path + ": '" + k + "'", 0); };
  s.epoch = count("epoch");
  s.batch_in_epoch = count("batch_in_epoch");
  s.step = count("step");
  s.bad_epochs = count("bad_epochs");
  s.best_accuracy = limits::parse_real(get("best_accuracy"), path + ": 'best_accuracy'");
  s.drop_path_counter = uint64_t(count("drop_path_counter"));
  opt.set_steps(count("adam_steps"));
  scaler.scale = limits::parse_real(get("loss_scale"), path + ": 'loss_scale'");
  EMONEXT_CHECK(scaler.scale > 0, path, ": 'loss_scale' must be positive, got ", scaler.scale);
  scaler.good = count("loss_scale_good_steps");
  return s;
}

RunLogs::RunLogs(const TrainConfig& c, const std::string& device) : out_(c.out) {
  if (c.overwrite)  // the old run's files go now, so none of them is mistaken for the new run's
    for (const char* f : kRunFiles) fs::remove(fs::path(c.out) / f);
  EMONEXT_CHECK(std::ofstream(c.out + "/config.json") << json_config(c, device), c.out, "/config.json: write failed");
  const bool append = !c.resume.empty() && fs::exists(c.out + "/metrics.csv");
  metrics_.open(c.out + "/metrics.csv", append ? std::ios::app : std::ios::trunc);
  if (!append) metrics_ << "epoch,step,train_loss,train_accuracy,val_loss,val_accuracy,lr,images_per_s,data_wait_s\n";
  steps_.open(c.out + "/steps.csv", append ? std::ios::app : std::ios::trunc);
  if (!append) steps_ << "step,loss,lr,grad_norm\n";
}

void RunLogs::step(int64_t step, double loss, double lr, double grad_norm) {
  steps_ << step << ',' << fmt("%.17g", loss) << ',' << fmt("%.6g", lr) << ',' << fmt("%.6g", grad_norm) << std::endl;
}

void RunLogs::epoch(int64_t epoch, int64_t step, double train_loss, double train_accuracy, double val_loss, double val_accuracy,
                    double lr, double images_per_s, double data_wait_s) {
  metrics_ << epoch << ',' << step << ',' << train_loss << ',' << train_accuracy << ',' << val_loss << ',' << val_accuracy << ','
           << lr << ',' << images_per_s << ',' << data_wait_s << std::endl;
  EMONEXT_CHECK(metrics_ && steps_, out_, ": writing metrics.csv or steps.csv failed (disk full?)");
}

}  // namespace emonext
