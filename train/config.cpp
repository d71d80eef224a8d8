#include "train/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>
#include <vector>

#include "core/base/error.h"
#include "core/base/escape.h"
#include "core/base/limits.h"
#include "models/checkpoint.h"

namespace emonext {

namespace {

// ---- a value as text: strings as they are, bools true/false, enums by name, numbers in
// their shortest round-trip form -------------------------------------------------------------
template <class E>
const std::vector<std::pair<std::string, E>>& names_of();
// The first name of each value is the one written; later ones are read too (aliases).
template <>
const std::vector<std::pair<std::string, Amp>>& names_of<Amp>() {
  static const std::vector<std::pair<std::string, Amp>> n = {{"off", Amp::Off}, {"bf16", Amp::BF16}, {"f16", Amp::F16},
                                                             {"fp16", Amp::F16}};  // fp16: the name before f16 (old runs)
  return n;
}
template <>
const std::vector<std::pair<std::string, Schedule>>& names_of<Schedule>() {
  static const std::vector<std::pair<std::string, Schedule>> n = {
      {"restarts", Schedule::Restarts}, {"cosine", Schedule::Cosine}, {"constant", Schedule::Constant}};
  return n;
}
template <>
const std::vector<std::pair<std::string, Switch>>& names_of<Switch>() {
  static const std::vector<std::pair<std::string, Switch>> n = {{"on", Switch::On}, {"off", Switch::Off}};
  return n;
}
template <>
const std::vector<std::pair<std::string, GeluApprox>>& names_of<GeluApprox>() {
  static const std::vector<std::pair<std::string, GeluApprox>> n = {{gelu_name(GeluApprox::None), GeluApprox::None},
                                                                    {gelu_name(GeluApprox::Tanh), GeluApprox::Tanh}};
  return n;
}
template <>
const std::vector<std::pair<std::string, DeviceChoice>>& names_of<DeviceChoice>() {
  return device_choices();
}

template <class E>
std::string choices_text() {  // "off|bf16|f16": each value's written name
  std::string out;
  std::vector<E> seen;
  for (const auto& [n, e] : names_of<E>())
    if (std::find(seen.begin(), seen.end(), e) == seen.end()) {
      seen.push_back(e);
      out += (out.empty() ? "" : "|") + n;
    }
  return out;
}

template <class T>
std::string setting_text(const T& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    return v;
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_enum_v<T>) {
    for (const auto& [n, e] : names_of<T>())
      if (e == v) return n;
    return "?";
  } else {
    char b[40];
    const auto r = std::to_chars(b, b + sizeof b, v);
    return std::string(b, r.ptr);
  }
}

template <class T>
void parse_setting(const std::string& text, T& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    v = text;
  } else if constexpr (std::is_same_v<T, bool>) {
    EMONEXT_CHECK(text == "true" || text == "false", "'", text, "' is not true or false");
    v = text == "true";
  } else if constexpr (std::is_enum_v<T>) {
    for (const auto& [n, e] : names_of<T>())
      if (n == text) {
        v = e;
        return;
      }
    fail(detail::concat("is ", choices_text<T>(), ", got '", text, "'"));
  } else {
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    EMONEXT_CHECK(r.ec == std::errc() && r.ptr == text.data() + text.size() && !text.empty(), "'", text, "' is not a number");
    if constexpr (std::is_floating_point_v<T>) EMONEXT_CHECK(std::isfinite(v), "'", text, "' is not a finite number");
  }
}

// ---- the table ------------------------------------------------------------------------------------
// A numeric setting's allowed values: [lo, hi], either end open.
struct Range {
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
  bool holds(double v) const { return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi); }
  std::string text() const {
    const auto num = [](double v) {  // whole numbers without an exponent (100000, not 1e+05)
      return v == std::floor(v) && std::fabs(v) < 1e15 ? std::to_string(int64_t(v)) : setting_text(v);
    };
    if (std::isinf(hi)) return lo == 0 && lo_open ? "positive" : "at least " + num(lo);
    return std::string("in ") + (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + (hi_open ? ")" : "]");
  }
};
constexpr Range kAny{};
constexpr Range at_least(double lo) { return {lo}; }
constexpr Range positive() { return {0, std::numeric_limits<double>::infinity(), true}; }
constexpr Range between(double lo, double hi) { return {lo, hi}; }

// One row per setting of a run and per option of emonext_train.
struct Setting {
  const char* section;  // --help's group
  const char* key;      // in config.json and in a training state ("setting.<key>"); nullptr: per command, not saved
  const char* option;   // emonext_train's option; nullptr: none
  const char* meta;     // the option's value placeholder; "" for a flag; nullptr: the choices (an enum)
  const char* flag;     // a flag's value as text ("false" for --no-ema); nullptr when the option takes a value
  bool restored;        // --resume restores it (the device, the loader threads and --init belong to the machine or the start)
  Range range;
  const char* help;
  bool quoted;  // a string in config.json
  std::string (*get)(const TrainConfig&);
  void (*set)(TrainConfig&, const std::string&);  // parses; the range is checked by check_range
  std::string (*choices)();                       // an enum's names, else nullptr
};

template <class T>
std::string (*choices_of())() {
  if constexpr (std::is_enum_v<T>) return &choices_text<T>;
  else return nullptr;
}

#define EMONEXT_ROW(section, key, option, meta, flag, restored, field, range, help)                                        \
  Setting {                                                                                                                \
    section, key, option, meta, flag, restored, range, help, std::is_same_v<decltype(TrainConfig::field), std::string>,    \
        [](const TrainConfig& c) { return setting_text(c.field); },                                                        \
        [](TrainConfig& c, const std::string& t) { parse_setting(t, c.field); }, choices_of<decltype(TrainConfig::field)>() \
  }
// A setting with an option that takes a value; a flag; a setting with no option; an option with no setting.
#define EMONEXT_SETTING(section, key, option, meta, field, range, help) \
  EMONEXT_ROW(section, key, option, meta, nullptr, true, field, range, help)
#define EMONEXT_FLAG(section, key, option, value, field, help) EMONEXT_ROW(section, key, option, "", value, true, field, kAny, help)
#define EMONEXT_HIDDEN(key, field, range) EMONEXT_ROW("", key, nullptr, "", nullptr, true, field, range, "")
#define EMONEXT_COMMAND(section, option, meta, flag, field, range, help) \
  EMONEXT_ROW(section, nullptr, option, meta, flag, false, field, range, help)

const Setting kSettings[] = {
    EMONEXT_SETTING("data", "data_dir", "--data", "DIR", data_dir, kAny,
                    "FER2013 image folders DIR/train, DIR/val and (if present) DIR/test"),
    EMONEXT_SETTING("data", "csv", "--csv", "FILE", csv, kAny, "the original fer2013.csv (Training / PublicTest / PrivateTest rows)"),
    EMONEXT_SETTING("data", "synthetic", "--synthetic", "N", synthetic, between(0, double(limits::kMaxSynthetic)), "N random images (smoke runs)"),
    EMONEXT_ROW("data", "workers", "--workers", "K", nullptr, false, workers, between(0, 1024), "loader threads (0: the machine's cores)"),
    EMONEXT_FLAG("data", "hflip", "--no-hflip", "false", augment.hflip, "no random horizontal flips"),
    EMONEXT_FLAG("data", "vflip", "--no-vflip", "false", augment.vflip, "no random vertical flips"),
    EMONEXT_SETTING("data", "rotate", "--rotate", "DEG", augment.rotate_degrees, between(0, 180), "random rotation within +-DEG degrees (0: none)"),
    EMONEXT_FLAG("data", "random_crop", "--no-random-crop", "false", augment.random_crop, "the centre crop for training, not a random one"),
    EMONEXT_FLAG("data", "val_random_crop", "--val-random-crop", "true", val_random_crop,
                 "the reference's random crop for validation (default: the centre crop)"),
    EMONEXT_SETTING("model", "model", "--model", "SIZE", model, kAny, "atto femto pico nano tiny small base large xlarge"),
    EMONEXT_SETTING("model", "classes", "--classes", "N", classes, between(1, double(limits::kMaxClasses)), "output classes"),
    EMONEXT_SETTING("model", "image_size", "--img-size", "S", image_size, between(double(EmoNeXt::kMinImageSize), double(limits::kMaxModelImageSize)),
                    "image size: 224 (the reference); smaller for CPU runs, e.g. 48"),
    EMONEXT_ROW("model", "init", "--init", "CKPT", nullptr, false, init, kAny,
                "start from a checkpoint (convnext_import's); its size, classes, image size and GELU form are the defaults of "
                "--model, --classes, --img-size and --gelu"),
    EMONEXT_SETTING("model", "drop_path", "--drop-path", "P", drop_path, (Range{0, 1, false, true}), "the last block's drop-path rate"),
    EMONEXT_SETTING("model", "gelu", "--gelu", nullptr, gelu, kAny,
                    "the blocks' GELU: erf (ConvNeXt's, which pretrained weights learnt) or tanh (PyTorch's approximate='tanh', "
                    "within 4.7e-4 of erf), the form --gemm-epilogue fuses"),
    EMONEXT_COMMAND("training", "--device", nullptr, nullptr, device, kAny, "auto takes the GPU when one answers"),
    EMONEXT_SETTING("training", "epochs", "--epochs", "N", epochs, between(1, 1e9), "epochs"),
    EMONEXT_SETTING("training", "batch", "--batch", "B", batch, between(1, double(limits::kMaxBatch)), "images per step"),
    EMONEXT_SETTING("training", "max_steps", "--max-steps", "N", max_steps, at_least(0), "stop after N steps (0: no limit)"),
    EMONEXT_SETTING("training", "lr", "--lr", "PEAK", lr, positive(), "AdamW's peak learning rate"),
    EMONEXT_SETTING("training", "weight_decay", "--wd", "W", weight_decay, at_least(0), "AdamW's weight decay"),
    EMONEXT_FLAG("training", "exempt_norms", "--exempt-norms", "true", exempt_norms, "no weight decay on norms, biases and layer scales"),
    EMONEXT_SETTING("training", "schedule", "--schedule", nullptr, schedule, kAny, "learning-rate schedule (restarts: cosine with warm restarts)"),
    EMONEXT_SETTING("training", "warmup", "--warmup", "N", warmup, at_least(0), "warm-up steps"),
    EMONEXT_SETTING("training", "cycle", "--cycle", "N", cycle, at_least(1), "steps per restart cycle (restarts), the warm-up included"),
    EMONEXT_SETTING("training", "clip", "--clip", "C", clip, at_least(0), "clip the gradient norm at C (0: no clipping)"),
    EMONEXT_SETTING("training", "label_smoothing", "--label-smoothing", "E", label_smoothing, between(0, 1), "label smoothing"),
    EMONEXT_FLAG("training", "ema", "--no-ema", "false", ema, "no EMA of the weights (validation and best then use the weights)"),
    EMONEXT_HIDDEN("ema_every", ema_every, at_least(1)),
    EMONEXT_SETTING("training", "patience", "--patience", "N", patience, at_least(1), "stop after N epochs without a better validation accuracy"),
    EMONEXT_SETTING("training", "amp", "--amp", nullptr, amp, kAny,
                    "mixed precision: the backbone in bf16 or f16, f32 master weights; f16 with a dynamic loss scale that skips "
                    "steps with inf/NaN gradients"),
    EMONEXT_SETTING("training", "loss_scale", "--loss-scale", "S", loss_scale, at_least(0), "f16's first loss scale (0: 65536)"),
    EMONEXT_SETTING("training", "seed", "--seed", "N", seed, kAny, "the seed of the weights, the batch order and every random draw"),
    EMONEXT_SETTING("training", "log_every", "--log-every", "N", log_every, at_least(1),
                    "a progress line every N steps (without a terminal); on a GPU the host reads the steps' figures (and so waits "
                    "for the device) every N steps, at most 1000"),
    EMONEXT_COMMAND("training", "--pageable-input", "", "false", pinned_input, kAny,
                    "on a GPU: copy each batch up from pageable memory, a wait for the device per step (default: pinned buffers "
                    "on a copy stream; to time them)"),
    EMONEXT_COMMAND("training", "--cuda-graph", nullptr, nullptr, cuda_graph, kAny,
                    "on one GPU: capture the training step as a CUDA graph at its second step and replay it, one launch a step "
                    "(off: its kernels launched one by one, to time it; the same bits either way)"),
    EMONEXT_COMMAND("training", "--gemm-epilogue", nullptr, nullptr, gemm_epilogue, kAny,
                    "with --gelu tanh: pwconv1's bias and GELU, and their backward, end the blocks' GEMMs (cuBLASLt's "
                    "epilogues on a GPU) rather than a pass of their own (off: the separate pass, to time or check it)"),
    EMONEXT_ROW("parallel", "ranks", nullptr, "", nullptr, false, ranks, between(1, 1 << 16), ""),
    EMONEXT_FLAG("parallel", "sync_batch", "--sync-batch", "true", sync_batch,
                 "under mpirun: BatchNorm's statistics and the attention over the global batch, as one process computes them "
                 "(default: each over its rank's samples, as PyTorch's DDP)"),
    EMONEXT_COMMAND("parallel", "--no-overlap", "", "false", overlap, kAny,
                    "under mpirun: sum the gradients over the ranks after the backward pass, not each bucket as the backward "
                    "pass writes it (the same bits; to time the overlap)"),
    EMONEXT_COMMAND("parallel", "--timeout", "SECONDS", nullptr, timeout, positive(),
                    "under mpirun: how long a rank waits for the others at a collective before it stops every rank"),
    EMONEXT_COMMAND("output", "--out", "DIR", nullptr, out, kAny, "the run's folder"),
    EMONEXT_COMMAND("output", "--resume", "DIR", nullptr, resume, kAny,
                    "continue the run in DIR exactly, with its settings (options given override them)"),
    EMONEXT_COMMAND("output", "--overwrite", "", "true", overwrite, kAny, "replace the run already in --out (without it, a folder holding a run is refused)"),
    EMONEXT_COMMAND("modes", "--overfit-batch", "FILE", nullptr, overfit_batch, kAny,
                    "train --steps K steps on one batch (images [N,3,H,W], labels [N]) and write --dump-state OUT"),
    EMONEXT_COMMAND("modes", "--steps", "K", nullptr, steps, at_least(0), "--overfit-batch's steps"),
    EMONEXT_COMMAND("modes", "--dump-state", "OUT", nullptr, dump_state, kAny, "--overfit-batch's losses, first logits and gradients"),
    EMONEXT_COMMAND("modes", "--benchmark", "STEPS", nullptr, benchmark, at_least(0),
                    "synthetic data: steady-state images/s, time per step (after the first 3), data wait, peak memory"),
    EMONEXT_COMMAND("modes", "--backbone", "", "true", backbone, kAny,
                    "with --benchmark: the bare ConvNeXt (no spatial transformer, SE or attention), as timm's convnext_* trains"),
};
#undef EMONEXT_ROW
#undef EMONEXT_SETTING
#undef EMONEXT_FLAG
#undef EMONEXT_HIDDEN
#undef EMONEXT_COMMAND

const char* name_of(const Setting& s) { return s.option ? s.option : s.key; }

// The setting's value in c against its range ("" when it holds).
std::string range_error(const Setting& s, const TrainConfig& c) {
  if (s.quoted || s.flag || s.choices || (s.range.lo == kAny.lo && s.range.hi == kAny.hi)) return "";
  const std::string text = s.get(c);
  double v = 0;
  std::from_chars(text.data(), text.data() + text.size(), v);
  if (s.range.holds(v)) return "";
  return detail::concat(name_of(s), " must be ", s.range.text(), ", got ", text);
}

// A value into c through its row: parsed, then its range checked.
void set_checked(const Setting& s, TrainConfig& c, const std::string& text) {
  s.set(c, text);
  if (const std::string why = range_error(s, c); !why.empty()) fail(why);
}

}  // namespace

const char* amp_name(Amp a) {
  static const std::string names[] = {setting_text(Amp::Off), setting_text(Amp::BF16), setting_text(Amp::F16)};
  return names[int(a)].c_str();
}

void add_train_options(cli::Options& options, TrainConfig& c) {
  for (const Setting& s : kSettings) {
    if (!s.option) continue;
    const std::string name = s.option;
    std::string meta = s.meta ? s.meta : s.choices();
    std::string default_text = s.flag ? "" : s.get(c);
    if (s.range.lo != kAny.lo || s.range.hi != kAny.hi) default_text += default_text.empty() ? "" : "; " + s.range.text();
    options.add({name, meta, s.help, default_text, s.section, [&s, &c, name](const std::string& text) {
                   try {
                     set_checked(s, c, s.flag ? std::string(s.flag) : text);
                   } catch (const Error& e) {
                     const std::string why = e.what();
                     fail(why.rfind(name, 0) == 0 ? why : name + ": " + why);
                   }
                 }});
  }
}

std::string invalid_setting(const TrainConfig& c) {
  for (const Setting& s : kSettings)
    if (std::string why = range_error(s, c); !why.empty()) return why;
  const auto sizes = convnext_sizes();
  if (std::none_of(sizes.begin(), sizes.end(), [&](const ConvNeXtSize& s) { return s.name == c.model; }))
    return "--model '" + c.model + "' is not a ConvNeXt size (atto femto pico nano tiny small base large xlarge)";
  if (c.schedule == Schedule::Restarts && c.cycle <= c.warmup)
    return "--cycle must be longer than --warmup (the warm-up is part of each cycle)";
  if (c.benchmark != 0 && c.benchmark < 4) return "--benchmark times the steps after the first 3: give it at least 4";
  if (c.backbone && c.benchmark == 0) return "--backbone is a --benchmark mode (the bare ConvNeXt trains nothing worth keeping)";
  if (!c.overfit_batch.empty() && c.amp != Amp::Off) return "--overfit-batch runs in f32 (leave --amp off)";
  if (c.batch % c.ranks != 0)
    return "--batch " + std::to_string(c.batch) + " is the global batch and must split evenly over the " + std::to_string(c.ranks) +
           " ranks";
  return "";
}

std::string json_config(const TrainConfig& c, const std::string& device) {
  std::ostringstream j;
  const auto str = [&](const char* k, const std::string& v) { j << "  \"" << k << "\": \"" << json_escape(v) << "\",\n"; };
  j << "{\n";
  str("engine", "emonext-engine 0.1.0");
  str("device", device);
  str("resume", c.resume);
  for (const Setting& s : kSettings) {
    if (!s.key) continue;
    if (s.quoted || s.choices) str(s.key, s.get(c));
    else j << "  \"" << s.key << "\": " << s.get(c) << ",\n";
  }
  std::string labels;
  for (const std::string& l : fer2013_labels()) labels += (labels.empty() ? "" : ",") + l;
  j << "  \"labels\": \"" << json_escape(labels) << "\"\n}\n";
  return j.str();
}

std::map<std::string, std::string> setting_metadata(const TrainConfig& c) {
  std::map<std::string, std::string> m;
  for (const Setting& s : kSettings)
    if (s.key) m["setting." + std::string(s.key)] = s.get(c);
  return m;
}

std::optional<TrainConfig> config_from_metadata(const std::map<std::string, std::string>& metadata, const std::string& where) {
  if (!metadata.contains("setting.model")) return std::nullopt;
  TrainConfig c;
  for (const Setting& s : kSettings) {
    if (!s.key || !s.restored) continue;
    const auto it = metadata.find("setting." + std::string(s.key));
    if (it == metadata.end()) continue;
    try {
      s.set(c, it->second);
    } catch (const Error& e) {
      fail(detail::concat(where, ": setting ", s.key, ": ", e.what()));
    }
  }
  if (const std::string why = invalid_setting(c); !why.empty()) fail(detail::concat(where, ": a saved setting is out of range: ", why));
  return c;
}

std::string changed_settings(const TrainConfig& c, const std::map<std::string, std::string>& metadata) {
  std::string changed;
  for (const Setting& s : kSettings) {
    if (!s.key || !s.restored) continue;
    const auto it = metadata.find("setting." + std::string(s.key));
    if (it == metadata.end()) continue;
    TrainConfig saved;  // the saved text as this version writes it (an alias such as amp's fp16 is not a change)
    try {
      s.set(saved, it->second);
    } catch (const Error&) {
    }
    if (s.get(saved) == s.get(c)) continue;
    changed += (changed.empty() ? "" : ", ") + std::string(s.key) + " " + s.get(c) + " (the run: " + it->second + ")";
  }
  return changed;
}

}  // namespace emonext
