// Tensor: a handle to shape, strides and offset over a shared Storage, plus
// the autograd state (requires_grad, grad, the Node that made it).
//
// Copying a Tensor copies the handle, not the data. Views (reshape of a
// contiguous tensor, permute, transpose, slice, expand, squeeze, unsqueeze)
// share storage with their base and are differentiable.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/base/dtype.h"
#include "core/device.h"
#include "core/storage.h"

namespace emonext {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

struct Node;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape, strides;
  DType dtype = DType::F32;
  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;     // the op that produced this tensor (null for leaves)
  std::shared_ptr<Node> accumulate;  // for leaves that require grad: where their gradients land
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = Device::cpu());
  // From host values (converted to dtype), placed on device.
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::F32,
                            Device device = Device::cpu());
  static Tensor from_ints(const std::vector<int64_t>& values, const Shape& shape, Device device = Device::cpu());
  // A tensor over existing host memory, copied (the caller keeps its buffer).
  static Tensor from_bytes(const void* data, const Shape& shape, DType dtype, Device device = Device::cpu());

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t size(int dim) const;  // negative dims count from the end
  int dim() const { return int(impl().shape.size()); }
  int64_t numel() const { return shape_numel(impl().shape); }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  void* data_ptr() const;  // first element (storage base + offset)
  template <class T> T* data() const { return static_cast<T*>(data_ptr()); }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  std::string str() const;  // "Tensor[2, 3] f32 cpu"

  // ---- views (share storage; differentiable) ----
  Tensor reshape(const Shape& shape) const;  // a view when contiguous, else a copy; one dim may be -1
  Tensor permute(const std::vector<int>& dims) const;
  Tensor transpose(int a, int b) const;
  Tensor slice(int dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor expand(const Shape& shape) const;
  Tensor unsqueeze(int dim) const;
  Tensor squeeze(int dim) const;
  Tensor contiguous() const;

  // ---- copies (differentiable) ----
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;

  // ---- host access ----
  std::vector<double> to_vector() const;  // any dtype, as double, row-major
  std::vector<int64_t> to_int_vector() const;
  double item() const;  // a one-element tensor's value

  // ---- in place (not recorded by autograd; refused on tensors that require grad in grad mode) ----
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // src broadcasts to this shape; any dtype and device

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool on = true);
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) const { impl().grad = g.impl_; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  bool is_leaf() const { return !impl().grad_fn; }
  Tensor detach() const;  // same storage, no history
  // Backpropagates from this tensor; with no argument it must hold one element.
  void backward(const Tensor& grad = Tensor()) const;

  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// A view of t's storage with another shape, strides and offset; not recorded by autograd.
Tensor make_view(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset);
// Normalises a possibly negative dim against ndim, naming op in the error.
int wrap_dim(const char* op, int dim, int ndim);

}  // namespace emonext
