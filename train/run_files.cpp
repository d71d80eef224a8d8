#include "train/run_files.h"

#include <cmath>
#include <cstdio>
#include <cstring>
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
  if (!c.overwrite)  // --overwrite removes them (a link is unlinked, its target untouched)
    for (const char* f : kRunFiles) {
      std::error_code ec;
      const fs::file_status st = fs::symlink_status(fs::path(c.out) / f, ec);
      if (ec || !fs::exists(st) || fs::is_regular_file(st)) continue;
      fail(detail::concat("--out ", c.out, ": ", f, " is ", fs::is_symlink(st) ? "a symbolic link" : "not a regular file",
                          "; a run's files must be its own (remove it, or replace the run with --overwrite)"));
    }
  make_writable_folder(c.out, "--out");
}

namespace {

// Why a checkpoint's metadata does not describe the configured model ("" when it does).
std::string checkpoint_mismatch(const CheckpointInfo& info, const std::string& path, const TrainConfig& c) {
  if (info.model == c.model && info.classes == c.classes && info.image_size == c.image_size) return "";
  return detail::concat(path, ": holds EmoNeXt-", info.model, " for ", info.classes, " classes at ", info.image_size, ", not ",
                        c.model, " / ", c.classes, " / ", c.image_size, " (--model, --classes and --img-size must be the checkpoint's)");
}

// A value of a run file's metadata, which must be there.
const std::string& metadata_value(const std::map<std::string, std::string>& metadata, const std::string& path, const char* key) {
  const auto it = metadata.find(key);
  EMONEXT_CHECK(it != metadata.end(), path, ": no '", key, "' in its metadata");
  return it->second;
}

// A counter of a run file: a whole number in [0, hi].
int64_t counter(const std::map<std::string, std::string>& metadata, const std::string& path, const char* key, int64_t hi) {
  return limits::parse_int(metadata_value(metadata, path, key), path + ": '" + key + "'", 0, hi);
}

// A restored tensor into dst: exactly dst's shape and dtype (copy_ would broadcast a
// scalar into a moment), every value finite and, for a second moment, not negative (a
// state whose exp_avg_sq held -1 trained to NaN weights, which the next resume then took
// for the last good checkpoint).
void restore(Tensor& dst, const SafeTensors& f, const std::string& name, const std::string& path, bool non_negative) {
  const Tensor& src = f.at(name);
  EMONEXT_CHECK(src.shape() == dst.shape() && src.dtype() == dst.dtype(), path, ": '", name, "' is ", dtype_name(src.dtype()),
                shape_str(src.shape()), ", not the run's ", dtype_name(dst.dtype()), shape_str(dst.shape()));
  if (src.dtype() == DType::F32) {
    const float* v = src.data<float>();
    for (int64_t i = 0; i < src.numel(); ++i)
      EMONEXT_CHECK(std::isfinite(v[i]) && !(non_negative && v[i] < 0), path, ": '", name, "' holds ", v[i], " at element ", i,
                    non_negative ? " (a second moment is finite and not negative)" : " (it must be finite)");
  }
  dst.copy_(src);
}

}  // namespace

void check_checkpoint_fits(const std::string& path, const TrainConfig& c) {
  const std::string why = checkpoint_mismatch(read_checkpoint_info(load_safetensors_metadata(path), path), path, c);
  EMONEXT_CHECK(why.empty(), why);
}

CheckpointInfo load_weights(EmoNeXt& model, const std::string& path, const TrainConfig& c) {
  const SafeTensors f = load_safetensors(path);
  const CheckpointInfo info = read_checkpoint_info(f, path);
  const std::string why = checkpoint_mismatch(info, path, c);
  EMONEXT_CHECK(why.empty(), why);
  load_state(model, f.tensors, path);
  return info;
}

SafeTensors run_state_of(const TrainConfig& c, AdamW& opt, Ema* ema, const RunState& s, const LossScaler& scaler) {
  SafeTensors out;
  for (auto& [name, t] : opt.state()) out.tensors.emplace_back(name, t->to(Device::cpu()));
  if (ema)
    for (auto& [name, t] : ema->state()) out.tensors.emplace_back(name, t->to(Device::cpu()));
  out.metadata = setting_metadata(c);
  out.metadata.insert({{"epoch", std::to_string(s.epoch)}, {"batch_in_epoch", std::to_string(s.batch_in_epoch)},
                       {"step", std::to_string(s.step)}, {"bad_epochs", std::to_string(s.bad_epochs)},
                       {"best_accuracy", fmt("%.17g", s.best_accuracy)}, {"drop_path_counter", std::to_string(s.drop_path_counter)},
                       {"adam_steps", std::to_string(opt.steps())}, {"loss_scale", fmt("%.17g", scaler.scale)},
                       {"loss_scale_good_steps", std::to_string(scaler.good)}});
  return out;
}

void save_pair(const std::string& weights_path, const SafeTensors& weights, const std::string& state_path, const SafeTensors& state) {
  write_files_atomically({{weights_path, safetensors_writer(weights.tensors, weights.metadata)},
                          {state_path, safetensors_writer(state.tensors, state.metadata)}});
}

RunState load_pair(EmoNeXt& model, const std::string& weights_path, const std::string& state_path, const TrainConfig& c, AdamW& opt,
                   Ema* ema, LossScaler& scaler) {
  const CheckpointInfo weights = load_weights(model, weights_path, c);
  const SafeTensors f = load_safetensors(state_path);
  const std::map<std::string, std::string>& m = f.metadata;
  const std::string& path = state_path;
  // Which samples each rank's share of a batch holds, and (without --sync-batch) the
  // samples its BatchNorm and attention see, follow from the number of ranks.
  const auto ranks_it = m.find("setting.ranks");
  const int64_t ranks = ranks_it == m.end() ? 1 : limits::parse_int(ranks_it->second, path + ": 'setting.ranks'", 1);
  EMONEXT_CHECK(ranks == c.ranks, "the run was trained on ", ranks, " process(es) and this is ", c.ranks, ": resume it on ", ranks,
                ranks > 1 ? " (mpirun -np " + std::to_string(ranks) + " emonext_train --resume ...)" : " (without mpirun)",
                ", since the samples of each rank's share of a batch depend on the number");
  // Counters from the file: whole numbers in ranges a later resume accepts again (the
  // device's control block holds step counts as f64, exact to 2^53).
  RunState s;
  s.step = counter(m, path, "step", limits::kMaxRunSteps);
  if (weights.metadata.contains("step")) {
    const int64_t weights_step = counter(weights.metadata, weights_path, "step", limits::kMaxRunSteps);
    EMONEXT_CHECK(weights_step == s.step, path, " is the training state of step ", s.step, " but the weights beside it are of step ",
                  weights_step, ": not one pair (a write that failed between them?); the pair in best.* is another start");
  }
  s.epoch = counter(m, path, "epoch", limits::kMaxRunSteps);
  s.batch_in_epoch = counter(m, path, "batch_in_epoch", limits::kMaxRunSteps);
  s.bad_epochs = counter(m, path, "bad_epochs", limits::kMaxRunSteps);
  s.drop_path_counter = uint64_t(counter(m, path, "drop_path_counter", std::numeric_limits<int64_t>::max() / 2));
  opt.set_steps(counter(m, path, "adam_steps", limits::kMaxRunSteps));
  scaler.good = counter(m, path, "loss_scale_good_steps", limits::kMaxRunSteps);
  const auto real = [&](const char* k) { return limits::parse_real(metadata_value(m, path, k), path + ": '" + k + "'"); };
  s.best_accuracy = real("best_accuracy");
  EMONEXT_CHECK(s.best_accuracy >= -1 && s.best_accuracy <= 1, path, ": 'best_accuracy' must be in [-1, 1], got ", s.best_accuracy);
  scaler.scale = real("loss_scale");
  EMONEXT_CHECK(scaler.scale > 0, path, ": 'loss_scale' must be positive, got ", scaler.scale);
  for (auto& [name, t] : opt.state()) restore(*t, f, name, path, name.starts_with("exp_avg_sq."));
  if (ema) {
    EMONEXT_CHECK(f.contains(ema->state().front().first), path,
                  ": the run kept no EMA of the weights (it was trained with --no-ema); give --no-ema to continue it");
    for (auto& [name, t] : ema->state()) restore(*t, f, name, path, false);
  }
  const std::string changed = changed_settings(c, f.metadata);
  if (!changed.empty()) std::printf("resuming with settings other than the run's: %s\n", changed.c_str());
  return s;
}

namespace {

// A resumed run's log at `path`, its header and its rows up to `step` (the number in
// column `column`) kept, and the rows after it dropped: they are of steps the run trains
// again. Rewritten beside its name and renamed; a row that does not parse goes too.
void keep_rows_up_to(const std::string& path, size_t column, int64_t step) {
  const std::vector<char> bytes = read_file(path, limits::kMaxLogBytes);
  std::string kept;
  size_t line = 0;
  for (size_t at = 0; at < bytes.size(); ++line) {
    const char* nl = static_cast<const char*>(std::memchr(bytes.data() + at, '\n', bytes.size() - at));
    const size_t end = nl ? size_t(nl - bytes.data()) : bytes.size();
    const std::string row(bytes.data() + at, end - at);
    at = end + 1;
    std::vector<std::string> cells(1);
    for (char ch : row) {
      if (ch == ',') cells.emplace_back();
      else cells.back().push_back(ch);
    }
    bool keep = line == 0;
    if (!keep && cells.size() > column) {
      try {
        keep = limits::parse_int(cells[column], path) <= step;
      } catch (const Error&) {
      }
    }
    if (keep) kept += row + "\n";
  }
  write_file_atomically(path, [&](std::ostream& out) { out << kept; });
}

// A log opened for appending, never through a link: `header` written when it is new, the
// rows past `resumed_step` dropped when a resumed run already has it.
FdOutput open_log(const std::string& path, const char* header, size_t step_column, bool resumed, int64_t resumed_step) {
  if (resumed && fs::exists(fs::symlink_status(path))) keep_rows_up_to(path, step_column, resumed_step);
  else write_file_atomically(path, [&](std::ostream& out) { out << header; });
  return open_output(path, O_APPEND);
}

}  // namespace

RunLogs::RunLogs(const TrainConfig& c, const std::string& device, int64_t resumed_step) : out_(c.out) {
  if (c.overwrite)  // the old run's files go now, so none of them is mistaken for the new run's
    for (const char* f : kRunFiles) fs::remove(fs::path(c.out) / f);
  const std::string config = json_config(c, device);
  write_file_atomically(c.out + "/config.json", [&](std::ostream& out) { out << config; });
  const bool resumed = !c.resume.empty();
  metrics_ = open_log(c.out + "/metrics.csv", "epoch,step,train_loss,train_accuracy,val_loss,val_accuracy,lr,images_per_s,data_wait_s\n", 1,
                      resumed, resumed_step);
  steps_ = open_log(c.out + "/steps.csv", "step,loss,lr,grad_norm\n", 0, resumed, resumed_step);
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
