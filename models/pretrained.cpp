#include "models/pretrained.h"

#include <cmath>
#include <fstream>
#include <map>
#include <algorithm>
#include <array>
#include <set>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/base/file.h"
#include "core/base/limits.h"
#include "core/safetensors.h"
#include "core/torch_file.h"
#include "models/checkpoint.h"

namespace emonext {

const std::vector<std::pair<std::string, WeightSource>>& weight_sources() {
  static const std::vector<std::pair<std::string, WeightSource>> n = {{"auto", WeightSource::Auto},
                                                                      {"facebook", WeightSource::Facebook},
                                                                      {"timm", WeightSource::Timm},
                                                                      {"torchvision", WeightSource::Torchvision},
                                                                      {"emonext", WeightSource::EmoNeXt}};
  return n;
}

const char* weight_source_name(WeightSource s) {
  for (const auto& [name, v] : weight_sources())
    if (v == s) return name.c_str();
  return "?";
}

namespace {

bool is_safetensors(const std::string& path) {
  std::ifstream f = open_regular_file(path);  // a FIFO is refused, not waited on
  unsigned char b[9] = {};
  f.read(reinterpret_cast<char*>(b), 9);
  return f.gcount() == 9 && b[8] == '{';
}

}  // namespace

std::vector<std::pair<std::string, Tensor>> read_weight_file(const std::string& path) {
  if (is_safetensors(path)) return load_safetensors(path).tensors;
  const PyRef top = load_torch_file(path);
  EMONEXT_CHECK(top->kind == PyObject::Kind::Dict, path, ": the file holds no dict of tensors");
  for (const char* key : {"model", "state_dict"})
    if (const PyRef sd = top->get(key); sd && sd->kind == PyObject::Kind::Dict) return tensor_dict(*sd);
  if (const PyRef ema = top->get("ema"); ema && ema->kind == PyObject::Kind::Dict) {
    std::vector<std::pair<std::string, Tensor>> out;
    for (auto& [name, t] : tensor_dict(*ema))
      if (name.starts_with("ema_model.")) out.emplace_back(name.substr(10), t);
    return out;
  }
  return tensor_dict(*top);
}

WeightSource detect_weight_source(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path) {
  std::set<std::string> names;
  for (const auto& [n, t] : tensors) names.insert(n);
  if (names.count("localization.0.weight")) return WeightSource::EmoNeXt;
  if (names.count("downsample_layers.0.0.weight")) return WeightSource::Facebook;
  if (names.count("stem.0.weight")) return WeightSource::Timm;
  if (names.count("features.0.0.weight")) return WeightSource::Torchvision;
  std::string some;
  for (auto it = names.begin(); it != names.end() && some.size() < 200; ++it) some += (some.empty() ? "" : ", ") + *it;
  throw Error(path + ": not a ConvNeXt or EmoNeXt state dict this tool knows (no stem tensor under Facebook's, timm's, "
                     "torchvision's or EmoNeXt's name); its tensors start: " + some);
}

namespace {

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> out(1);
  for (char ch : s) {
    if (ch == '.') out.emplace_back();
    else out.back() += ch;
  }
  return out;
}

bool is_number(const std::string& s) { return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; }); }

// The parts from index `from` on, joined with dots.
std::string rest_of(const std::vector<std::string>& p, size_t from) {
  std::string out;
  for (size_t i = from; i < p.size(); ++i) out += (i > from ? "." : "") + p[i];
  return out;
}

// A file name in the given scheme -> the engine's name, or "" for a tensor to ignore
// (the classifier), or "?" for one that has no place in ConvNeXt.
std::string map_name(WeightSource s, const std::string& n) {
  const std::vector<std::string> p = split_dots(n);
  switch (s) {
    case WeightSource::Facebook:
      return n.starts_with("head.") ? "" : n;
    case WeightSource::EmoNeXt:
      return n;
    case WeightSource::Timm: {
      // stem.{0,1}.* | stages.i.downsample.{0,1}.* | stages.i.blocks.j.<part>[.*] | head.norm.* | head.fc.*
      if (p.size() >= 3 && p[0] == "stem" && (p[1] == "0" || p[1] == "1")) return "downsample_layers.0." + rest_of(p, 1);
      if (p.size() >= 5 && p[0] == "stages" && is_number(p[1]) && p[2] == "downsample" && (p[3] == "0" || p[3] == "1"))
        return "downsample_layers." + p[1] + "." + rest_of(p, 3);
      if (p.size() >= 5 && p[0] == "stages" && is_number(p[1]) && p[2] == "blocks" && is_number(p[3])) {
        const std::string stage = "stages." + p[1] + "." + p[3] + ".";
        if (p[4] == "gamma" && p.size() == 5) return stage + "gamma";
        if (p[4] == "conv_dw" && p.size() == 6) return stage + "dwconv." + p[5];
        if (p[4] == "norm" && p.size() == 6) return stage + "norm." + p[5];
        if (p[4] == "mlp" && p.size() == 7 && (p[5] == "fc1" || p[5] == "fc2")) return stage + (p[5] == "fc1" ? "pwconv1." : "pwconv2.") + p[6];
        return "?";
      }
      if (p.size() == 3 && p[0] == "head" && p[1] == "norm") return "norm." + p[2];
      if (p.size() >= 2 && p[0] == "head" && p[1] == "fc") return "";
      return "?";
    }
    case WeightSource::Torchvision: {
      // features.{2i}.{0,1}.* | features.{2i+1}.j.block.{0,2,3,5}.* | features.{2i+1}.j.layer_scale | classifier.{0,2}.*
      if (p.size() >= 4 && p[0] == "features" && is_number(p[1]) && is_number(p[2])) {
        const int64_t f = limits::parse_int(p[1], "tensor " + n, 0, 1 << 20);
        if (f % 2 == 0) return "downsample_layers." + std::to_string(f / 2) + "." + rest_of(p, 2);
        const std::string stage = "stages." + std::to_string(f / 2) + "." + p[2] + ".";
        if (p[3] == "layer_scale" && p.size() == 4) return stage + "gamma";
        if (p[3] == "block" && p.size() == 6) {
          if (p[4] == "0") return stage + "dwconv." + p[5];
          if (p[4] == "2") return stage + "norm." + p[5];
          if (p[4] == "3") return stage + "pwconv1." + p[5];
          if (p[4] == "5") return stage + "pwconv2." + p[5];
        }
        return "?";
      }
      if (n.starts_with("classifier.0.")) return "norm." + n.substr(13);
      if (n.starts_with("classifier.2.")) return "";
      return "?";
    }
    default: return "?";
  }
}

// Depths and dims from the mapped names and shapes.
std::string detect_size(const std::map<std::string, Tensor>& mapped, const std::string& path) {
  std::array<int64_t, 4> depths{}, dims{};
  for (const auto& [name, t] : mapped) {
    const std::vector<std::string> p = split_dots(name);  // stages.i.j.dwconv.weight
    if (p.size() == 5 && p[0] == "stages" && is_number(p[1]) && is_number(p[2]) && p[3] == "dwconv" && p[4] == "weight") {
      const int64_t i = limits::parse_int(p[1], path + ": tensor " + name), j = limits::parse_int(p[2], path + ": tensor " + name);
      if (i < 4) depths[size_t(i)] = std::max(depths[size_t(i)], std::min<int64_t>(j, 1 << 20) + 1);
    }
  }
  for (int i = 0; i < 4; ++i) {
    const std::string conv = i == 0 ? "downsample_layers.0.0.weight" : "downsample_layers." + std::to_string(i) + ".1.weight";
    const auto it = mapped.find(conv);
    EMONEXT_CHECK(it != mapped.end(), path, ": missing tensor ", conv, i == 0 ? " (the stem convolution)" : " (a downsampling convolution)");
    EMONEXT_CHECK(it->second.dim() == 4, path, ": ", conv, " is ", shape_str(it->second.shape()), ", not a convolution weight");
    dims[size_t(i)] = it->second.size(0);
  }
  for (const ConvNeXtSize& s : convnext_sizes())
    if (s.depths == depths && s.dims == dims) return s.name;
  throw Error(path + ": no known ConvNeXt size has depths " + std::to_string(depths[0]) + "," + std::to_string(depths[1]) + "," +
              std::to_string(depths[2]) + "," + std::to_string(depths[3]) + " and dims " + std::to_string(dims[0]) + "," +
              std::to_string(dims[1]) + "," + std::to_string(dims[2]) + "," + std::to_string(dims[3]));
}

}  // namespace

std::unique_ptr<EmoNeXt> import_pretrained(const std::string& path, WeightSource source, const std::string& size,
                                           int64_t classes, int64_t image_size, uint64_t seed, ImportReport& report) {
  return import_pretrained(read_weight_file(path), path, source, size, classes, image_size, seed, report);
}

std::unique_ptr<EmoNeXt> import_pretrained(const std::vector<std::pair<std::string, Tensor>>& file, const std::string& path,
                                           WeightSource source, const std::string& size, int64_t classes, int64_t image_size,
                                           uint64_t seed, ImportReport& report) {
  EMONEXT_CHECK(!file.empty(), path, ": no tensors found");
  report = ImportReport{};
  report.source_detected = source == WeightSource::Auto;
  report.source = report.source_detected ? detect_weight_source(file, path) : source;
  std::map<std::string, Tensor> mapped;
  std::vector<std::string> alien;
  for (const auto& [name, t] : file) {
    std::string to = map_name(report.source, name);
    if (to.empty()) {
      report.ignored.push_back(name);
    } else if (to == "?") {
      alien.push_back(name);
    } else {
      Tensor v = t;
      if (report.source == WeightSource::Torchvision && to.ends_with(".gamma")) v = v.reshape({-1});  // [C,1,1] -> [C]
      // timm's smaller ConvNeXts (atto to nano: conv_mlp) hold the MLP as 1x1 convolutions.
      const bool pointwise = to.ends_with(".pwconv1.weight") || to.ends_with(".pwconv2.weight");
      if (report.source == WeightSource::Timm && pointwise && v.dim() == 4 && v.size(2) == 1 && v.size(3) == 1)
        v = v.reshape({v.size(0), v.size(1)});  // [O, I, 1, 1] -> [O, I]
      mapped[to] = v;
    }
  }
  EMONEXT_CHECK(alien.empty(), path, ": unexpected tensor(s) for a ", weight_source_name(report.source), " ConvNeXt: ",
                alien[0], alien.size() > 1 ? " and " + std::to_string(alien.size() - 1) + " more" : "");
  const std::string found = detect_size(mapped, path);
  report.size_detected = size.empty();
  EMONEXT_CHECK(size.empty() || size == found, path, ": holds ConvNeXt-", found, " weights, not ", size,
                " (leave --model out to take the file's size)");
  report.size = found;
  if (report.source == WeightSource::EmoNeXt) {
    const auto head = mapped.find("head.weight");
    const int64_t found_classes = head != mapped.end() && head->second.dim() == 2 ? head->second.size(0) : 0;
    EMONEXT_CHECK(found_classes == classes, path, ": an EmoNeXt checkpoint with ", found_classes, " classes, not ", classes);
  }
  auto model = std::make_unique<EmoNeXt>(convnext_size(found), classes, image_size);
  Generator gen(seed);
  init_weights(*model, gen);
  {
    // The new head: PyTorch's default Linear init, U(-1/sqrt(in), 1/sqrt(in)) for both.
    NoGradGuard no_grad;
    const double b = 1.0 / std::sqrt(double(model->head.weight.size(1)));
    model->head.weight.copy_(rand(model->head.weight.shape(), gen, -b, b));
    model->head.bias.copy_(rand(model->head.bias.shape(), gen, -b, b));
  }
  // Everything the model has and the file lacks keeps its initial value: the whole
  // state goes through load_state, which checks shapes and unexpected names.
  std::vector<std::pair<std::string, Tensor>> state;
  std::set<std::string> from_file;
  for (const Module::Named& t : model->named_tensors()) {
    const auto it = mapped.find(t.name);
    if (it != mapped.end()) {
      state.emplace_back(t.name, it->second);
      from_file.insert(t.name);
      report.loaded.push_back(t.name);
      report.loaded_values += t.tensor->numel();
    } else {
      state.emplace_back(t.name, *t.tensor);
      report.initialised.push_back(t.name);
      report.initialised_values += t.tensor->numel();
    }
  }
  for (const auto& [name, t] : mapped)
    if (!from_file.count(name)) state.emplace_back(name, t);  // load_state names these as unexpected
  // What the file must provide: everything for an EmoNeXt checkpoint; for a ConvNeXt
  // the backbone, i.e. all but the STN, the SE blocks, the attention and the head.
  auto backbone = [](const std::string& name) {
    for (const char* prefix : {"localization.", "fc_loc.", "attention.", "head."})
      if (name.starts_with(prefix)) return false;
    const std::vector<std::string> p = split_dots(name);
    return !(p.size() > 2 && p[0] == "downsample_layers" && p[2] == "2");  // the SE blocks
  };
  std::vector<std::string> missing;
  for (const std::string& name : report.initialised)
    if (report.source == WeightSource::EmoNeXt || backbone(name)) missing.push_back(name);
  if (!missing.empty())
    throw Error(path + ": missing tensor(s) for a " + weight_source_name(report.source) + " " + found + " checkpoint: " + missing[0] +
                (missing.size() > 1 ? " and " + std::to_string(missing.size() - 1) + " more" : "") + " (engine names)");
  load_state(*model, state, path);
  return model;
}

}  // namespace emonext
