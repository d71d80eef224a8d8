#include "train/config.h"

#include <charconv>
#include <sstream>
#include <type_traits>

#include "core/base/error.h"
#include "core/base/json.h"
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
