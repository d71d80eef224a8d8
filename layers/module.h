// Module: a tree of named parameters, buffers and child modules, as PyTorch's
// nn.Module is for the purposes the engine needs: the dotted names of the tree are
// the reference implementation's state_dict keys ("stages.1.0.dwconv.weight"), so a
// checkpoint is a flat name -> tensor map in either direction.
//
// A module's tensors are its own members; it registers their addresses once, in its
// constructor. Modules are neither copied nor moved (the addresses must stay put):
// hold them as members or through std::unique_ptr.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace emonext {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  struct Named {
    std::string name;
    Tensor* tensor;
  };
  // This module's and its descendants' tensors with dotted names, in the order
  // PyTorch's state_dict lists them: own parameters, own buffers, then each child.
  std::vector<Named> named_parameters();
  std::vector<Named> named_buffers();
  std::vector<Named> named_tensors();  // parameters and buffers together (the state dict)
  int64_t num_parameters();

  // Train mode (the default) or eval mode, for this module and every descendant.
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  // Moves every parameter and buffer; floating tensors only change dtype (the
  // i64 BatchNorm counter stays i64). Parameters keep requiring gradients.
  void to(Device device);
  void to(DType dtype);
  void zero_grad();  // drops every parameter's .grad

 protected:
  void register_parameter(const std::string& name, Tensor* t);  // also turns on requires_grad
  void register_buffer(const std::string& name, Tensor* t);
  void register_module(const std::string& name, Module* m);     // owned by the caller (a member)
  template <class M>
  M* own_module(const std::string& name, std::unique_ptr<M> m) {  // owned by this module
    M* raw = m.get();
    owned_.push_back(std::move(m));
    register_module(name, raw);
    return raw;
  }

 private:
  void collect(const std::string& prefix, bool params, bool buffers, std::vector<Named>& out);
  std::vector<std::pair<std::string, Tensor*>> params_, buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
  std::vector<std::unique_ptr<Module>> owned_;
  bool training_ = true;
};

// A module that only names its children "0", "1", ... (nn.Sequential's names; the
// forward pass is written by whoever holds it).
class ModuleList : public Module {
 public:
  template <class M>
  M* add(std::unique_ptr<M> m) {
    M* raw = own_module(std::to_string(size_), std::move(m));
    ++size_;
    return raw;
  }
  // A child at a given index, leaving gaps where the reference has modules without
  // tensors (ReLU, MaxPool) so the indices stay the reference's.
  template <class M>
  M* add_at(int64_t index, std::unique_ptr<M> m) {
    size_ = index + 1;
    return own_module(std::to_string(index), std::move(m));
  }

 private:
  int64_t size_ = 0;
};

}  // namespace emonext
