#include "train/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>
#include <type_traits>

#include "core/base/error.h"
#include "core/base/json.h"
#include "core/base/limits.h"
#include "models/checkpoint.h"

namespace emonext {

namespace {

// One row per setting that defines a run: its name in config.json and in the training
// state's metadata ("setting.<key>"), and whether --resume restores it from there (the
// device, the loader threads and --init belong to the machine or the start, not to the
// run). A value as text: strings as they are, bools true/false, numbers in their
// shortest round-trip form.
template <class T>
std::string setting_text(const T& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    return v;
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
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
    EMONEXT_CHECK(text == "true" || text == "false", "not true or false: '", text, "'");
    v = text == "true";
  } else {
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    EMONEXT_CHECK(r.ec == std::errc() && r.ptr == text.data() + text.size(), "not a number: '", text, "'");
  }
}

struct Setting {
  const char* key;
  bool restored;  // by --resume
  bool quoted;    // a string in config.json
  std::string (*get)(const TrainConfig&);
  void (*set)(TrainConfig&, const std::string&);
};

#define EMONEXT_SETTING(key, restored, field)                                                                        \
  Setting {                                                                                                          \
    key, restored, std::is_same_v<decltype(TrainConfig::field), std::string>,                                        \
        [](const TrainConfig& c) { return setting_text(c.field); },                                                  \
        [](TrainConfig& c, const std::string& t) { parse_setting(t, c.field); }                                      \
  }

const Setting kSettings[] = {
    EMONEXT_SETTING("data_dir", true, data_dir),
    EMONEXT_SETTING("csv", true, csv),
    EMONEXT_SETTING("synthetic", true, synthetic),
    EMONEXT_SETTING("model", true, model),
    EMONEXT_SETTING("classes", true, classes),
    EMONEXT_SETTING("image_size", true, image_size),
    EMONEXT_SETTING("init", false, init),
    EMONEXT_SETTING("epochs", true, epochs),
    EMONEXT_SETTING("batch", true, batch),
    EMONEXT_SETTING("patience", true, patience),
    EMONEXT_SETTING("max_steps", true, max_steps),
    EMONEXT_SETTING("lr", true, lr),
    EMONEXT_SETTING("weight_decay", true, weight_decay),
    EMONEXT_SETTING("exempt_norms", true, exempt_norms),
    EMONEXT_SETTING("drop_path", true, drop_path),
    EMONEXT_SETTING("clip", true, clip),
    EMONEXT_SETTING("label_smoothing", true, label_smoothing),
    EMONEXT_SETTING("schedule", true, schedule),
    EMONEXT_SETTING("warmup", true, warmup),
    EMONEXT_SETTING("cycle", true, cycle),
    EMONEXT_SETTING("ema", true, ema),
    EMONEXT_SETTING("ema_every", true, ema_every),
    EMONEXT_SETTING("amp", true, amp),
    EMONEXT_SETTING("loss_scale", true, loss_scale),
    EMONEXT_SETTING("seed", true, seed),
    EMONEXT_SETTING("workers", false, workers),
    EMONEXT_SETTING("hflip", true, augment.hflip),
    EMONEXT_SETTING("vflip", true, augment.vflip),
    EMONEXT_SETTING("rotate", true, augment.rotate_degrees),
    EMONEXT_SETTING("random_crop", true, augment.random_crop),
    EMONEXT_SETTING("val_random_crop", true, val_random_crop),
    EMONEXT_SETTING("log_every", true, log_every),
};
#undef EMONEXT_SETTING

}  // namespace

std::string invalid_setting(const TrainConfig& c) {
  const auto sizes = convnext_sizes();
  if (std::none_of(sizes.begin(), sizes.end(), [&](const ConvNeXtSize& s) { return s.name == c.model; }))
    return "--model '" + c.model + "' is not a ConvNeXt size (atto femto pico nano tiny small base large xlarge)";
  if (c.batch < 1 || c.batch > limits::kMaxBatch || c.epochs < 1)
    return "--batch must be in [1, " + std::to_string(limits::kMaxBatch) + "] and --epochs positive";
  if (c.image_size < EmoNeXt::kMinImageSize || c.image_size > limits::kMaxModelImageSize)
    return "--img-size must be in [" + std::to_string(EmoNeXt::kMinImageSize) + ", " + std::to_string(limits::kMaxModelImageSize) +
           "] (at 32 the stem and three downsamplings leave one pixel)";
  if (c.classes < 1 || c.classes > limits::kMaxClasses) return "--classes must be in [1, " + std::to_string(limits::kMaxClasses) + "]";
  if (c.synthetic < 0 || c.workers < 0 || c.workers > 1024 || c.max_steps < 0 || c.steps < 0)
    return "--synthetic, --max-steps and --steps cannot be negative, and --workers must be in [0, 1024]";
  if (!(c.lr > 0) || !std::isfinite(c.lr)) return "--lr must be positive";
  if (!(c.weight_decay >= 0 && c.clip >= 0)) return "--wd and --clip cannot be negative (--clip 0 turns clipping off)";
  if (!(c.drop_path >= 0 && c.drop_path < 1)) return "--drop-path must be in [0, 1)";
  if (!(c.label_smoothing >= 0 && c.label_smoothing <= 1)) return "--label-smoothing must be in [0, 1]";
  if (!(c.augment.rotate_degrees >= 0 && c.augment.rotate_degrees <= 180)) return "--rotate must be in [0, 180] degrees";
  if (c.patience < 1) return "--patience must be at least 1 (epochs without a better validation accuracy)";
  if (c.warmup < 0) return "--warmup cannot be negative";
  if (c.schedule != "restarts" && c.schedule != "cosine" && c.schedule != "constant")
    return "--schedule is restarts, cosine or constant, got '" + c.schedule + "'";
  if (c.schedule == "restarts" && c.cycle <= c.warmup) return "--cycle must be longer than --warmup (the warm-up is part of each cycle)";
  if (c.amp != "off" && c.amp != "bf16" && c.amp != "fp16") return "--amp is off, bf16 or fp16, got '" + c.amp + "'";
  if (c.loss_scale < 0 || !std::isfinite(c.loss_scale)) return "--loss-scale must be positive";
  if (c.log_every < 1 || c.ema_every < 1) return "--log-every (and the EMA's interval) must be at least 1";
  if (c.benchmark != 0 && c.benchmark < 4) return "--benchmark times the steps after the first 3: give it at least 4";
  if (c.backbone && c.benchmark == 0) return "--backbone is a --benchmark mode (the bare ConvNeXt trains nothing worth keeping)";
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
    if (s.quoted) str(s.key, s.get(c));
    else j << "  \"" << s.key << "\": " << s.get(c) << ",\n";
  }
  std::string labels;
  for (const std::string& l : fer2013_labels()) labels += (labels.empty() ? "" : ",") + l;
  j << "  \"labels\": \"" << json_escape(labels) << "\"\n}\n";
  return j.str();
}

std::map<std::string, std::string> setting_metadata(const TrainConfig& c) {
  std::map<std::string, std::string> m;
  for (const Setting& s : kSettings) m["setting." + std::string(s.key)] = s.get(c);
  return m;
}

std::optional<TrainConfig> config_from_metadata(const std::map<std::string, std::string>& metadata, const std::string& where) {
  if (!metadata.contains("setting.model")) return std::nullopt;
  TrainConfig c;
  for (const Setting& s : kSettings) {
    const auto it = metadata.find("setting." + std::string(s.key));
    if (!s.restored || it == metadata.end()) continue;
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
    const auto it = metadata.find("setting." + std::string(s.key));
    if (!s.restored || it == metadata.end() || it->second == s.get(c)) continue;
    changed += (changed.empty() ? "" : ", ") + std::string(s.key) + " " + s.get(c) + " (the run: " + it->second + ")";
  }
  return changed;
}

}  // namespace emonext
