// matmul and linear on the BLAS of the backend (CBLAS on the CPU, cuBLAS on
// CUDA). Operands whose last two dims are row- or column-major are passed as
// they lie, with a transpose flag: the backward's transposed views cost no copy.
#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

namespace {

struct GemmOperand {
  Tensor t;  // keeps the memory alive
  bool trans = false;
  int64_t ld = 0, batch_stride = 0;
};

// x viewed as `batch` matrices of rows x cols (x broadcasts to batch + [rows, cols]).
GemmOperand gemm_operand(const Tensor& x, const Shape& batch) {
  NoGradGuard no_grad;
  const int64_t rows = x.size(-2), cols = x.size(-1);
  Shape full = batch;
  full.push_back(rows);
  full.push_back(cols);
  Tensor m = x.detach().expand(full);
  const int nb = int(batch.size());
  // The batch dims must flatten into one stride; otherwise copy.
  bool uniform = true;
  for (int i = 0; i + 1 < nb; ++i)
    if (batch[size_t(i)] != 1 && m.strides()[size_t(i)] != m.strides()[size_t(i + 1)] * batch[size_t(i + 1)]) uniform = false;
  const int64_t s0 = m.strides()[size_t(nb)], s1 = m.strides()[size_t(nb + 1)];
  const int64_t bstride = nb == 0 ? 0 : m.strides()[size_t(nb - 1)];
  if (uniform) {
    if ((cols == 1 || s1 == 1) && (rows == 1 || s0 >= cols)) return {m, false, std::max<int64_t>({rows == 1 ? cols : s0, cols, 1}), bstride};
    if ((rows == 1 || s0 == 1) && (cols == 1 || s1 >= rows)) return {m, true, std::max<int64_t>({cols == 1 ? rows : s1, rows, 1}), bstride};
  }
  m = m.contiguous();
  return {m, false, std::max<int64_t>(cols, 1), rows * cols};
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_same("matmul", a, b);
  check_floating("matmul", a);
  EMONEXT_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: both operands need at least 2 dims, got ", a.str(), " and ",
                b.str(), "; unsqueeze a vector first");
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  EMONEXT_CHECK(b.size(-2) == k, "matmul: inner dims differ: ", shape_str(a.shape()), " @ ", shape_str(b.shape()), " (",
                k, " vs ", b.size(-2), ")");
  const Shape batch = broadcast_shapes("matmul", Shape(a.shape().begin(), a.shape().end() - 2),
                                       Shape(b.shape().begin(), b.shape().end() - 2));
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  if (k == 0) {
    out.zero_();
  } else if (out.numel() > 0) {
    const GemmOperand A = gemm_operand(a, batch), B = gemm_operand(b, batch);
    kernels::Gemm g;
    g.dtype = a.dtype();
    g.trans_a = A.trans;
    g.trans_b = B.trans;
    g.m = m; g.n = n; g.k = k;
    g.a = A.t.data_ptr(); g.lda = A.ld; g.stride_a = A.batch_stride;
    g.b = B.t.data_ptr(); g.ldb = B.ld; g.stride_b = B.batch_stride;
    g.c = out.data_ptr(); g.ldc = std::max<int64_t>(n, 1); g.stride_c = m * n;
    g.batch = shape_numel(batch);
    EMONEXT_KERNEL(out.device(), gemm, g);
  }
  return record(out, "matmul", {a, b}, [a, b](const Tensor& g) {
    return std::vector<Tensor>{a.requires_grad() ? sum_to(matmul(g, b.transpose(-1, -2)), a.shape()) : Tensor(),
                               b.requires_grad() ? sum_to(matmul(a.transpose(-1, -2), g), b.shape()) : Tensor()};
  });
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  EMONEXT_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got ", weight.str());
  EMONEXT_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input ", shape_str(x.shape()),
                " has last dim ", x.dim() ? x.size(-1) : 0, " but weight ", shape_str(weight.shape()), " expects ",
                weight.size(1));
  if (bias.defined())
    EMONEXT_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: bias ", shape_str(bias.shape()),
                  " does not match weight ", shape_str(weight.shape()), " (expected [", weight.size(0), "])");
  Shape out_shape = x.shape();
  out_shape.back() = weight.size(0);
  const Tensor x2 = x.reshape({-1, x.size(-1)});
  Tensor y;
  {
    NoGradGuard no_grad;
    y = matmul(x2, weight.transpose(0, 1));
  }
  // Its own backward rather than matmul's through the transpose: the weight's gradient
  // comes out of one GEMM as g^T x, contiguous in the weight's [out, in] layout, so it
  // becomes .grad with no copy (through the transpose it was a transposed view).
  y = record(y, "linear", {x2, weight}, [x2, weight](const Tensor& g) {
    return std::vector<Tensor>{x2.requires_grad() ? matmul(g, weight) : Tensor(),
                               weight.requires_grad() ? matmul(g.transpose(0, 1), x2) : Tensor()};
  });
  if (bias.defined()) y = add(y, bias);
  return y.reshape(out_shape);
}

}  // namespace emonext
