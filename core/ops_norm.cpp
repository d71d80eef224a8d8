// The normalisations as differentiable ops: LayerNorm over the last dim (one kernel each
// way), and BatchNorm over [N, H, W, C] (training: one kernel each way; evaluation:
// element-wise ops on the running statistics).
#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

using Grads = std::vector<Tensor>;

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_floating("layer_norm", x);
  check_same("layer_norm", x, weight);
  check_same("layer_norm", x, bias);
  EMONEXT_CHECK(x.dim() >= 1, "layer_norm: input must have at least one dim");
  const int64_t cols = x.size(-1);
  EMONEXT_CHECK((weight.shape() == Shape{cols}) && (bias.shape() == Shape{cols}), "layer_norm: input last dim ", cols,
                " but weight ", shape_str(weight.shape()), " and bias ", shape_str(bias.shape()), " (expected [", cols, "])");
  EMONEXT_CHECK(eps > 0, "layer_norm: eps must be positive, got ", eps);
  const Tensor xc = x.contiguous(), w = weight.contiguous(), b = bias.contiguous();
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  const DType stat = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, stat, x.device()), rstd = Tensor::empty({rows}, stat, x.device());
  if (rows > 0)
    EMONEXT_KERNEL(x.device(), layer_norm_forward, y.data_ptr(), mean.data_ptr(), rstd.data_ptr(), xc.data_ptr(), w.data_ptr(),
                   b.data_ptr(), x.dtype(), rows, cols, eps);
  return record(y, "layer_norm", {x, weight, bias}, [=](const Tensor& g) {
    const Tensor dy = g.contiguous();
    Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
    Tensor dw = Tensor::empty({cols}, xc.dtype(), xc.device()), db = Tensor::empty({cols}, xc.dtype(), xc.device());
    if (rows > 0)
      EMONEXT_KERNEL(xc.device(), layer_norm_backward, dx.data_ptr(), dw.data_ptr(), db.data_ptr(), dy.data_ptr(),
                     xc.data_ptr(), mean.data_ptr(), rstd.data_ptr(), w.data_ptr(), xc.dtype(), rows, cols);
    else {
      dw.zero_();
      db.zero_();
    }
    return Grads{dx, dw, db};
  });
}

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean, Tensor& running_var,
                  bool training, double momentum, double eps) {
  check_floating("batch_norm", x);
  EMONEXT_CHECK(x.dim() == 4, "batch_norm: input must be channels-last [N, H, W, C], got ", x.str());
  const int64_t c = x.size(3);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&weight, &bias, &running_mean, &running_var}) {
    check_same("batch_norm", x, *t);
    EMONEXT_CHECK((t->shape() == Shape{c}), "batch_norm: parameter or buffer ", shape_str(t->shape()), " does not fit ", c,
                  " channels");
  }
  if (training) {
    // One op each way (kernels/*/batchnorm): the statistics, the normalisation and the
    // running statistics' update forward, the parameter sums and dx backward.
    const int64_t rows = x.numel() / c;
    EMONEXT_CHECK(rows > 1, "batch_norm: training needs more than one value per channel, got input ", shape_str(x.shape()));
    EMONEXT_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(),
                  "batch_norm: the running statistics must be contiguous (they are updated in place)");
    const DType stat = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
    const Tensor xc = x.contiguous(), wc = weight.contiguous(), bc = bias.contiguous();
    const Tensor mean_c = Tensor::empty({c}, stat, x.device()), rstd_c = Tensor::empty({c}, stat, x.device());
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    EMONEXT_KERNEL(x.device(), batch_norm_forward, y.data_ptr(), mean_c.data_ptr(), rstd_c.data_ptr(), running_mean.data_ptr(),
                   running_var.data_ptr(), xc.data_ptr(), wc.data_ptr(), bc.data_ptr(), x.dtype(), rows, c, eps, momentum);
    return record(y, "batch_norm", {x, weight, bias}, [=](const Tensor& g) {
      const Tensor dy = g.contiguous();
      Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
      Tensor dw = Tensor::empty({c}, xc.dtype(), xc.device()), db = Tensor::empty({c}, xc.dtype(), xc.device());
      EMONEXT_KERNEL(dy.device(), batch_norm_backward, dx.data_ptr(), dw.data_ptr(), db.data_ptr(), dy.data_ptr(), xc.data_ptr(),
                     mean_c.data_ptr(), rstd_c.data_ptr(), wc.data_ptr(), xc.dtype(), rows, c);
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  // Evaluation: the running statistics, composed of element-wise ops.
  const Tensor& mean_c = running_mean;
  const Tensor& var_c = running_var;
  return add(mul(div(sub(x, mean_c), sqrt(add(var_c, eps))), weight), bias);
}

}  // namespace emonext
