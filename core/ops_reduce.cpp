// sum, mean and max over dims. A reduction over several dims runs as one
// kernel call per run of adjacent dims (innermost first) on a contiguous
// [outer, r, inner] block.
// sum_squares: one pass over each tensor of a list, a few launches for the list,
// for gradient norms.
#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

namespace {

// Sorted, unique, non-negative dims; empty means all.
std::vector<int> normalise_dims(const char* op, const Tensor& a, std::vector<int> dims) {
  if (dims.empty())
    for (int d = 0; d < a.dim(); ++d) dims.push_back(d);
  for (int& d : dims) d = wrap_dim(op, d, a.dim());
  std::sort(dims.begin(), dims.end());
  EMONEXT_CHECK(std::adjacent_find(dims.begin(), dims.end()) == dims.end(), op, ": a dim is repeated");
  return dims;
}

Shape dropped_shape(const Shape& s, const std::vector<int>& dims) {
  Shape out;
  for (size_t i = 0; i < s.size(); ++i)
    if (std::find(dims.begin(), dims.end(), int(i)) == dims.end()) out.push_back(s[i]);
  return out;
}

// Reduces dims (sorted) of a; the result has size 1 in each of them. Each run of
// adjacent dims is one kernel call over their product ([N, H, W, C] over {1, 2}
// is [N, H*W, C] over the middle), so long reductions get the kernels' chunked
// paths rather than several short passes.
Tensor reduce_keepdim(kernels::ReduceOp op, const char* name, const Tensor& a, const std::vector<int>& dims) {
  check_floating(name, a);
  Tensor cur = a.contiguous();
  for (size_t end = dims.size(); end > 0;) {
    size_t begin = end - 1;  // the run is dims[begin, end)
    while (begin > 0 && dims[begin - 1] + 1 == dims[begin]) --begin;
    const int first = dims[begin], last = dims[end - 1];
    const Shape& s = cur.shape();
    int64_t outer = 1, r = 1, inner = 1;
    for (int i = 0; i < first; ++i) outer *= s[size_t(i)];
    for (int i = first; i <= last; ++i) r *= s[size_t(i)];
    for (size_t i = size_t(last) + 1; i < s.size(); ++i) inner *= s[i];
    Shape out_shape = s;
    for (int i = first; i <= last; ++i) out_shape[size_t(i)] = 1;
    Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
    if (r == 0) {
      EMONEXT_CHECK(op != kernels::ReduceOp::Max, name, ": cannot take the max over an empty dim ", first, " of ", a.str());
      out.fill_(op == kernels::ReduceOp::Mean ? std::nan("") : 0.0);  // as torch: the mean of nothing is NaN
    } else {
      EMONEXT_KERNEL(out.device(), reduce, op, out.data_ptr(), cur.data_ptr(), a.dtype(), outer, r, inner);
    }
    cur = out;
    end = begin;
  }
  return cur;
}

// keepdim's result as returned: itself, or a view without the reduced dims.
Tensor unkept(const Tensor& kept_out, const std::vector<int>& dims, bool keepdim) {
  if (keepdim) return kept_out;
  const Shape s = dropped_shape(kept_out.shape(), dims);
  return make_view(kept_out, s, contiguous_strides(s), 0);
}

// sum and mean: the backward spreads g over the reduced dims, divided by their count for
// a mean. The kernels divide a mean's sum before rounding it to a's dtype: an f16 sum can
// overflow where the mean does not (the SE pool over 56 x 56 positions under --amp fp16).
Tensor sum_or_mean(kernels::ReduceOp op, const char* name, const Tensor& a, std::vector<int> dims, bool keepdim) {
  dims = normalise_dims(name, a, dims);
  const Tensor out = reduce_keepdim(op, name, a, dims);
  const Shape kept = out.shape(), in_shape = a.shape();
  int64_t count = 1;
  for (int d : dims) count *= in_shape[size_t(d)];
  const double scale = op == kernels::ReduceOp::Mean ? 1.0 / double(count) : 1.0;
  return record(unkept(out, dims, keepdim), name, {a}, [=](const Tensor& g) {
    const Tensor gk = g.reshape(kept);
    return std::vector<Tensor>{(scale == 1.0 ? gk : mul(gk, scale)).expand(in_shape)};
  });
}

}  // namespace

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const size_t lead = g.shape().size() - shape.size();
  std::vector<int> dims;
  for (size_t i = 0; i < g.shape().size(); ++i)
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(int(i));
  Tensor r = dims.empty() ? g : sum(g, dims, true);
  return r.reshape(shape);
}

Tensor sum(const Tensor& a, std::vector<int> dims, bool keepdim) {
  return sum_or_mean(kernels::ReduceOp::Sum, "sum", a, std::move(dims), keepdim);
}

Tensor mean(const Tensor& a, std::vector<int> dims, bool keepdim) {
  return sum_or_mean(kernels::ReduceOp::Mean, "mean", a, std::move(dims), keepdim);
}

Tensor max(const Tensor& a, std::vector<int> dims, bool keepdim) {
  dims = normalise_dims("max", a, dims);
  const Tensor kept_out = reduce_keepdim(kernels::ReduceOp::Max, "max", a, dims);
  const Shape kept = kept_out.shape();
  return record(unkept(kept_out, dims, keepdim), "max", {a}, [=](const Tensor& g) {
    // Ties share the gradient equally (torch.amax).
    const Tensor mask = eq(a, kept_out);
    const Tensor count = sum(mask.to(g.dtype()), dims, true);
    const Tensor zero = Tensor::zeros({}, g.dtype(), g.device());
    return std::vector<Tensor>{where(mask, div(g.reshape(kept), count), zero)};
  });
}

Tensor sum_squares(const std::vector<Tensor>& tensors) {
  EMONEXT_CHECK(!tensors.empty(), "sum_squares: no tensors");
  const Tensor& first = tensors.front();
  check_floating("sum_squares", first);
  for (const Tensor& t : tensors) check_same("sum_squares", first, t);
  const DType acc = first.dtype() == DType::F64 ? DType::F64 : DType::F32;
  std::vector<Tensor> alive;  // contiguous copies where needed, until the kernels have read them
  std::vector<kernels::TensorSpan> spans;
  for (const Tensor& t : tensors) {
    alive.push_back(t.contiguous());
    spans.push_back({alive.back().data_ptr(), t.numel()});
  }
  Tensor out = Tensor::empty({int64_t(tensors.size())}, acc, first.device());
  EMONEXT_KERNEL(first.device(), sum_squares, out.data_ptr(), spans, first.dtype());
  return out;
}

}  // namespace emonext
