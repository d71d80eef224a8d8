#include "core/tensor.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) { return std::accumulate(s.begin(), s.end(), int64_t(1), std::multiplies<>()); }

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    EMONEXT_CHECK(!__builtin_mul_overflow(acc, s[i], &acc), "shape ", shape_str(s), ": its strides overflow 64 bits");
  }
  return st;
}

int wrap_dim(const char* op, int dim, int ndim) {
  const int d = dim < 0 ? dim + ndim : dim;
  EMONEXT_CHECK(d >= 0 && d < std::max(ndim, 1), op, ": dim ", dim, " is out of range for a tensor of ", ndim, " dims");
  return d;
}

TensorImpl& Tensor::impl() const {
  EMONEXT_CHECK(impl_, "use of an undefined Tensor (default-constructed, or a gradient that was never computed)");
  return *impl_;
}

// ---- factories ----

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t s : shape) EMONEXT_CHECK(s >= 0, "empty: negative size in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor Tensor::from_bytes(const void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  const size_t bytes = size_t(t.numel()) * dtype_size(dtype);
  if (bytes > 0) copy_bytes(t.data_ptr(), device, data, Device::cpu(), bytes);  // data may be null when empty
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  EMONEXT_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
                " values do not fill shape ", shape_str(shape));
  Tensor host = from_bytes(values.data(), shape, DType::F64, Device::cpu());
  return host.to(dtype).to(device);
}

Tensor Tensor::from_ints(const std::vector<int64_t>& values, const Shape& shape, Device device) {
  EMONEXT_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
                " values do not fill shape ", shape_str(shape));
  return from_bytes(values.data(), shape, DType::I64, device);
}

// ---- metadata ----

int64_t Tensor::size(int d) const {
  EMONEXT_CHECK(dim() > 0, "size(", d, ") of a tensor with no dimensions (a scalar)");
  return shape()[size_t(wrap_dim("size", d, dim()))];
}

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int d = dim() - 1; d >= 0; --d) {
    if (shape()[size_t(d)] != 1 && strides()[size_t(d)] != expect) return false;
    expect *= shape()[size_t(d)];
  }
  return true;
}

void* Tensor::data_ptr() const {
  return static_cast<char*>(impl().storage->data()) + impl().offset * int64_t(dtype_size(impl().dtype));
}

std::string Tensor::str() const {
  return detail::concat("Tensor", shape_str(shape()), " ", dtype_name(dtype()), " ", device().str());
}

// ---- views ----

Tensor make_view(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage();
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = t.dtype();
  return Tensor(impl);
}

Tensor Tensor::reshape(const Shape& requested) const {
  Shape shape = requested;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      EMONEXT_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(requested));
      infer = int(i);
    } else {
      EMONEXT_CHECK(shape[i] >= 0, "reshape: negative size in ", shape_str(requested));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    EMONEXT_CHECK(known != 0 && numel() % known == 0, "reshape: cannot reshape ", shape_str(this->shape()), " into ",
                  shape_str(requested));
    shape[size_t(infer)] = numel() / known;
  }
  EMONEXT_CHECK(shape_numel(shape) == numel(), "reshape: cannot reshape ", shape_str(this->shape()), " (", numel(),
                " elements) into ", shape_str(requested));
  const Tensor src = is_contiguous() ? *this : contiguous();
  Tensor out = make_view(src, shape, contiguous_strides(shape), src.offset());
  const Shape in_shape = this->shape();
  return record(out, "reshape", {src}, [in_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(in_shape)}; });
}

Tensor Tensor::permute(const std::vector<int>& dims) const {
  EMONEXT_CHECK(int(dims.size()) == dim(), "permute: ", dims.size(), " dims given for a tensor of ", dim(), " dims");
  Shape shape(dims.size()), st(dims.size());
  std::vector<int> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int d = wrap_dim("permute", dims[i], dim());
    EMONEXT_CHECK(inverse[size_t(d)] < 0, "permute: dim ", d, " repeated");
    inverse[size_t(d)] = int(i);
    shape[i] = this->shape()[size_t(d)];
    st[i] = strides()[size_t(d)];
  }
  Tensor out = make_view(*this, shape, st, offset());
  return record(out, "permute", {*this}, [inverse](const Tensor& g) { return std::vector<Tensor>{g.permute(inverse)}; });
}

Tensor Tensor::transpose(int a, int b) const {
  std::vector<int> dims(static_cast<size_t>(this->dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[size_t(wrap_dim("transpose", a, dim()))], dims[size_t(wrap_dim("transpose", b, dim()))]);
  return permute(dims);
}

Tensor Tensor::slice(int d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim("slice", d, dim());
  const int64_t n = shape()[size_t(d)];
  EMONEXT_CHECK(step > 0, "slice: step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = this->shape(), st = strides();
  shape[size_t(d)] = (end - start + step - 1) / step;
  st[size_t(d)] *= step;
  Tensor out = make_view(*this, shape, st, offset() + start * strides()[size_t(d)]);
  const Shape in_shape = this->shape();
  return record(out, "slice", {*this}, [=](const Tensor& g) {
    Tensor full = Tensor::zeros(in_shape, g.dtype(), g.device());
    full.slice(d, start, end, step).copy_(g);
    return std::vector<Tensor>{full};
  });
}

Tensor Tensor::expand(const Shape& shape) const {
  EMONEXT_CHECK(shape.size() >= size_t(dim()), "expand: cannot expand ", shape_str(this->shape()), " to ",
                shape_str(shape), " (fewer dims)");
  const size_t lead = shape.size() - size_t(dim());
  Shape st(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) continue;
    const int64_t have = this->shape()[i - lead];
    EMONEXT_CHECK(have == shape[i] || have == 1, "expand: cannot expand ", shape_str(this->shape()), " to ",
                  shape_str(shape), " (dim ", i, ": ", have, " vs ", shape[i], ")");
    st[i] = have == 1 && shape[i] != 1 ? 0 : strides()[i - lead];
  }
  Tensor out = make_view(*this, shape, st, offset());
  const Shape in_shape = this->shape();
  return record(out, "expand", {*this}, [in_shape](const Tensor& g) { return std::vector<Tensor>{sum_to(g, in_shape)}; });
}

Tensor Tensor::unsqueeze(int d) const {
  d = wrap_dim("unsqueeze", d, dim() + 1);
  Shape shape = this->shape();
  shape.insert(shape.begin() + d, 1);
  return reshape(shape);
}

Tensor Tensor::squeeze(int d) const {
  d = wrap_dim("squeeze", d, dim());
  EMONEXT_CHECK(shape()[size_t(d)] == 1, "squeeze: dim ", d, " of ", shape_str(shape()), " has size ",
                shape()[size_t(d)], ", not 1");
  Shape shape = this->shape();
  shape.erase(shape.begin() + d);
  return reshape(shape);
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

// ---- copies ----

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  {
    NoGradGuard no_grad;
    out.copy_(*this);
  }
  return record(out, "clone", {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = empty(shape(), target, device());
  {
    NoGradGuard no_grad;
    out.copy_(*this);
  }
  if (!is_floating(target) || !is_floating(dtype())) return out;  // integer results carry no gradient
  const DType source = dtype();
  return record(out, "to_dtype", {*this}, [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  const Tensor src = contiguous();
  Tensor out = empty(shape(), dtype(), target);
  copy_bytes(out.data_ptr(), target, src.data_ptr(), src.device(), size_t(numel()) * dtype_size(dtype()));
  const Device source = device();
  return record(out, "to_device", {src}, [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
}

// ---- host access ----

std::vector<double> Tensor::to_vector() const {
  NoGradGuard no_grad;
  const Tensor host = to(Device::cpu()).to(DType::F64).contiguous();
  const double* p = host.data<double>();
  return std::vector<double>(p, p + numel());
}

std::vector<int64_t> Tensor::to_int_vector() const {
  NoGradGuard no_grad;
  const Tensor host = to(Device::cpu()).to(DType::I64).contiguous();
  const int64_t* p = host.data<int64_t>();
  return std::vector<int64_t>(p, p + numel());
}

double Tensor::item() const {
  EMONEXT_CHECK(numel() == 1, "item: tensor ", shape_str(shape()), " has ", numel(), " elements, not 1");
  return to_vector()[0];
}

// ---- in place ----

void check_inplace(const char* op, const Tensor& t) {
  EMONEXT_CHECK(!(grad_enabled() && t.requires_grad()), op, ": in-place change of a tensor that requires grad ",
                t.str(), "; wrap it in NoGradGuard (as optimizers do) or work on a copy");
}

Tensor& Tensor::fill_(double value) {
  check_inplace("fill_", *this);
  EMONEXT_KERNEL(device(), fill, view_of(*this), value);
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace("copy_", *this);
  Tensor s = src;
  if (s.device() != device()) s = s.detach().to(device());
  // Reject shapes that cannot broadcast; view_as gives stride 0 to broadcast dims.
  EMONEXT_CHECK(s.dim() <= dim(), "copy_: cannot copy ", shape_str(s.shape()), " into ", shape_str(shape()));
  for (int i = 0; i < s.dim(); ++i) {
    const int64_t have = s.shape()[size_t(i)], want = shape()[size_t(dim() - s.dim() + i)];
    EMONEXT_CHECK(have == want || have == 1, "copy_: cannot copy ", shape_str(s.shape()), " into ", shape_str(shape()));
  }
  EMONEXT_KERNEL(device(), copy, view_of(*this), view_as(s, shape()));
  return *this;
}

// ---- autograd ----

Tensor& Tensor::set_requires_grad(bool on) {
  EMONEXT_CHECK(!on || is_floating(dtype()), "set_requires_grad: only floating tensors can require grad, this one is ",
                dtype_name(dtype()));
  EMONEXT_CHECK(is_leaf(), "set_requires_grad: only leaf tensors can change requires_grad; use detach() first");
  impl().requires_grad = on;
  return *this;
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

void Tensor::backward(const Tensor& grad) const {
  EMONEXT_CHECK(requires_grad(), "backward: the tensor does not require grad (no input of its graph requires grad)");
  Tensor g = grad;
  if (!g.defined()) {
    EMONEXT_CHECK(numel() == 1, "backward: a gradient must be given for a non-scalar tensor ", shape_str(shape()));
    g = Tensor::ones(shape(), dtype(), device());
  }
  EMONEXT_CHECK(g.shape() == shape(), "backward: gradient shape ", shape_str(g.shape()), " != tensor shape ",
                shape_str(shape()));
  run_backward(*this, g);
}

}  // namespace emonext
