// concat, index_select, and the random fills.
#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

Tensor concat(const std::vector<Tensor>& tensors, int dim) {
  EMONEXT_CHECK(!tensors.empty(), "concat: no tensors given");
  const Tensor& first = tensors[0];
  dim = wrap_dim("concat", dim, first.dim());
  Shape shape = first.shape();
  shape[size_t(dim)] = 0;
  for (const Tensor& t : tensors) {
    check_same("concat", first, t);
    bool match = t.dim() == first.dim();
    for (int d = 0; match && d < t.dim(); ++d) match = d == dim || t.size(d) == first.size(d);
    EMONEXT_CHECK(match, "concat: ", shape_str(t.shape()), " does not match ", shape_str(first.shape()),
                  " outside dim ", dim);
    shape[size_t(dim)] += t.size(dim);
  }
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  std::vector<int64_t> starts;
  int64_t at = 0;
  {
    NoGradGuard no_grad;
    for (const Tensor& t : tensors) {
      starts.push_back(at);
      out.slice(dim, at, at + t.size(dim)).copy_(t);
      at += t.size(dim);
    }
  }
  return record(out, "concat", tensors, [=](const Tensor& g) {
    std::vector<Tensor> grads;
    for (size_t i = 0; i < starts.size(); ++i) {
      const int64_t end = i + 1 < starts.size() ? starts[i + 1] : g.size(dim);
      grads.push_back(g.slice(dim, starts[i], end));
    }
    return grads;
  });
}

Tensor index_select(const Tensor& a, int dim, const Tensor& index) {
  dim = wrap_dim("index_select", dim, a.dim());
  EMONEXT_CHECK(index.dtype() == DType::I64 && index.dim() == 1, "index_select: index must be a 1-D i64 tensor, got ",
                index.str());
  EMONEXT_CHECK(index.device() == a.device(), "index_select: index on ", index.device().str(), ", input on ",
                a.device().str(), "; move the index with .to(", a.device().str(), ")");
  const int64_t n = a.size(dim);
  for (int64_t v : index.to_int_vector())
    EMONEXT_CHECK(v >= 0 && v < n, "index_select: index ", v, " is out of range for dim ", dim, " of size ", n, " in ",
                  shape_str(a.shape()));
  const Tensor x = a.contiguous(), idx = index.contiguous();
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= a.size(d);
  for (int d = dim + 1; d < a.dim(); ++d) inner *= a.size(d);
  Shape shape = a.shape();
  shape[size_t(dim)] = index.size(0);
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  if (out.numel() > 0)
    EMONEXT_KERNEL(out.device(), index_select, out.data_ptr(), x.data_ptr(), a.dtype(), idx.data<int64_t>(), outer, n,
                   index.size(0), inner);
  const Shape in_shape = a.shape();
  return record(out, "index_select", {a}, [=](const Tensor& g) {
    const Tensor dy = g.contiguous();
    Tensor dx = Tensor::zeros(in_shape, dy.dtype(), dy.device());
    if (dy.numel() > 0)
      EMONEXT_KERNEL(dx.device(), index_add, dx.data_ptr(), dy.data_ptr(), dy.dtype(), idx.data<int64_t>(), outer, n,
                     idx.size(0), inner);
    return std::vector<Tensor>{dx};
  });
}

namespace {
Tensor random_fill(kernels::RandomKind kind, const Shape& shape, Generator& gen, double a, double b, DType dtype, Device device) {
  EMONEXT_CHECK(is_floating(dtype), "rand/randn: dtype must be floating, got ", dtype_name(dtype));
  Tensor out = Tensor::empty(shape, dtype, device);
  const uint64_t counter = gen.take(out.numel());
  const Tensor* base = gen.counter_base();
  if (base)
    EMONEXT_CHECK(base->dtype() == DType::I64 && base->numel() == 1 && base->device() == device, "rand/randn: the generator's ",
                  "counter base must be an i64 scalar on ", device.str(), ", got ", base->str());
  const auto* base_ptr = base ? static_cast<const uint64_t*>(base->data_ptr()) : nullptr;
  if (out.numel() > 0) EMONEXT_KERNEL(device, random, view_of(out), kind, gen.seed(), counter, base_ptr, a, b);
  return out;
}
}  // namespace

Tensor rand(const Shape& shape, Generator& gen, double low, double high, DType dtype, Device device) {
  return random_fill(kernels::RandomKind::Uniform, shape, gen, low, high, dtype, device);
}

Tensor randn(const Shape& shape, Generator& gen, double mean, double std, DType dtype, Device device) {
  return random_fill(kernels::RandomKind::Normal, shape, gen, mean, std, dtype, device);
}

}  // namespace emonext
