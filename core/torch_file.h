// Reading PyTorch's torch.save files (the zip format, PyTorch >= 1.6) without
// Python: the zip archive (stored entries, zip64 too), and the subset of pickle
// that torch.save writes for dicts of tensors. The file's object tree comes back as
// PyObject values: dicts, lists, tuples, strings, numbers and tensors; any other
// class (an optimizer's state, a Namespace of arguments) is an opaque object that
// can be skipped over. Tensors are materialised contiguous, on the CPU, in their
// stored dtype (f32, f64, f16, bf16, i64, u8; others refuse when reached).
//
// Refuses, naming the file: a file that is not a zip (an old pre-1.6 torch file, a
// bare pickle), a compressed entry, a truncated or corrupt archive, an unknown opcode,
// a storage that lies outside its entry.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace emonext {

struct PyObject;
using PyRef = std::shared_ptr<PyObject>;

struct PyObject {
  enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Tensor, Global, Storage, Opaque };
  Kind kind = Kind::None;
  int64_t i = 0;                              // Int, Bool; Storage: element count
  double f = 0;                               // Float
  std::string s;                              // String (str or bytes); Global: "module.name"; Storage: key; Opaque: its class
  std::vector<PyRef> items;                   // Tuple, List
  std::vector<std::pair<PyRef, PyRef>> dict;  // Dict, in insertion order
  Tensor tensor;                              // Tensor
  DType dtype = DType::F32;                   // Storage

  // The value at a string key of a Dict, or null.
  PyRef get(const std::string& key) const;
};

// The object torch.save stored in `path`.
PyRef load_torch_file(const std::string& path);
// The same from the file's bytes in memory; `name` names them in errors.
PyRef parse_torch_file(std::vector<char> bytes, const std::string& name);

// Every (name, tensor) of a Dict whose values are tensors, in order (string keys only).
std::vector<std::pair<std::string, Tensor>> tensor_dict(const PyObject& dict);

}  // namespace emonext
