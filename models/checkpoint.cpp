#include "models/checkpoint.h"

#include <set>
#include <sstream>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/base/limits.h"

namespace emonext {

const std::vector<std::string>& fer2013_labels() {
  static const std::vector<std::string> labels = {"angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"};
  return labels;
}

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, ',');) out.push_back(part);
  return out;
}

}  // namespace

SafeTensors checkpoint_of(EmoNeXt& model, const std::vector<std::string>& labels, std::map<std::string, std::string> extra) {
  EMONEXT_CHECK(int64_t(labels.size()) == model.head.weight.size(0), "checkpoint_of: ", labels.size(),
                " labels for a model with ", model.head.weight.size(0), " classes");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const Module::Named& t : model.named_tensors()) {
    Tensor v = t.tensor->detach().to(Device::cpu());
    if (v.dtype() != DType::I64) v = v.to(DType::F32);
    v = v.contiguous();
    // A copy, not the model's own memory (an f32 CPU model's tensor converts to itself):
    // the content outlives changes to the model (the EMA's weights swapped back out).
    tensors.emplace_back(t.name, v.data_ptr() == t.tensor->data_ptr() ? v.clone() : v);
  }
  extra["format"] = "emonext";
  extra["model"] = model.size.name;
  extra["classes"] = std::to_string(model.head.weight.size(0));
  extra["image_size"] = std::to_string(model.image_size);
  extra["labels"] = join(labels);
  extra["gelu"] = gelu_name(model.gelu());
  extra["engine"] = "emonext-engine 0.1.0";
  return {std::move(tensors), std::move(extra)};
}

void save_checkpoint(const std::string& path, EmoNeXt& model, const std::vector<std::string>& labels,
                     std::map<std::string, std::string> extra) {
  const SafeTensors c = checkpoint_of(model, labels, std::move(extra));
  save_safetensors(path, c.tensors, c.metadata);
}

CheckpointInfo read_checkpoint_info(const SafeTensors& file, const std::string& path) {
  return read_checkpoint_info(file.metadata, path);
}

CheckpointInfo read_checkpoint_info(const std::map<std::string, std::string>& metadata, const std::string& path) {
  auto need = [&](const char* key) -> const std::string& {
    const auto it = metadata.find(key);
    EMONEXT_CHECK(it != metadata.end(), path, ": not an EmoNeXt checkpoint of this engine (its __metadata__ has no '", key,
                  "'); convert pretrained weights with convnext_import");
    return it->second;
  };
  CheckpointInfo info;
  info.model = need("model");
  info.classes = limits::parse_int(need("classes"), path + ": metadata 'classes'", 1, limits::kMaxClasses);
  info.image_size = limits::parse_int(need("image_size"), path + ": metadata 'image_size'", EmoNeXt::kMinImageSize,
                                      limits::kMaxModelImageSize);
  info.labels = split(need("labels"));
  if (const auto it = metadata.find("gelu"); it != metadata.end()) {
    const GeluApprox none = GeluApprox::None, tanh = GeluApprox::Tanh;
    EMONEXT_CHECK(it->second == gelu_name(none) || it->second == gelu_name(tanh), path, ": metadata 'gelu' is '",
                  it->second.substr(0, 40), "'; expected ", gelu_name(none), " or ", gelu_name(tanh));
    info.gelu = it->second == gelu_name(tanh) ? tanh : none;
  }
  info.metadata = metadata;
  EMONEXT_CHECK(int64_t(info.labels.size()) == info.classes, path, ": ", info.labels.size(), " labels for ", info.classes,
                " classes in its metadata");
  return info;
}

void load_state(Module& model, const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& source) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, t] : tensors) given[name] = &t;
  std::vector<std::string> missing, mismatched;
  std::set<std::string> used;
  const std::vector<Module::Named> mine = model.named_tensors();
  for (const Module::Named& t : mine) {
    const auto it = given.find(t.name);
    if (it == given.end()) {
      missing.push_back(t.name);
      continue;
    }
    used.insert(t.name);
    if (it->second->shape() != t.tensor->shape())
      mismatched.push_back(t.name + " " + shape_str(it->second->shape()) + " (the model's is " + shape_str(t.tensor->shape()) + ")");
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, t] : given)
    if (!used.count(name)) unexpected.push_back(name);
  auto list = [](const std::vector<std::string>& v) {
    std::string out;
    for (size_t i = 0; i < v.size() && i < 8; ++i) out += (i ? ", " : "") + v[i];
    if (v.size() > 8) out += ", ... (" + std::to_string(v.size()) + " in all)";
    return out;
  };
  EMONEXT_CHECK(missing.empty(), source, ": missing tensor(s): ", list(missing));
  EMONEXT_CHECK(mismatched.empty(), source, ": shape mismatch: ", list(mismatched));
  EMONEXT_CHECK(unexpected.empty(), source, ": unexpected tensor(s): ", list(unexpected));
  NoGradGuard no_grad;
  for (const Module::Named& t : mine) {
    const Tensor& src = *given.at(t.name);
    const bool grad = t.tensor->requires_grad();
    Tensor dst = Tensor::empty(t.tensor->shape(), t.tensor->dtype(), t.tensor->device());
    dst.copy_(src);
    *t.tensor = dst;
    if (grad) t.tensor->set_requires_grad(true);
  }
}

std::unique_ptr<EmoNeXt> load_emonext(const std::string& path, CheckpointInfo* info_out) {
  const SafeTensors file = load_safetensors(path);
  const CheckpointInfo info = read_checkpoint_info(file, path);
  auto model = std::make_unique<EmoNeXt>(convnext_size(info.model), info.classes, info.image_size);
  model->set_gelu(info.gelu);
  load_state(*model, file.tensors, path);
  model->eval();
  if (info_out) *info_out = info;
  return model;
}

}  // namespace emonext
