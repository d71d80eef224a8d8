// softmax, log_softmax, one-hot and label-smoothed cross-entropy.
#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

namespace {

Tensor softmax_impl(bool log, const char* name, const Tensor& a) {
  check_floating(name, a);
  EMONEXT_CHECK(a.dim() >= 1, name, ": needs at least one dim, got a scalar");
  const Tensor x = a.contiguous();
  const int64_t cols = a.size(-1), rows = cols == 0 ? 0 : a.numel() / cols;
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (rows > 0) EMONEXT_KERNEL(out.device(), softmax_forward, log, out.data_ptr(), x.data_ptr(), a.dtype(), rows, cols);
  return record(out, name, {a}, [=, y = out.detach()](const Tensor& g) {
    const Tensor dy = g.contiguous();
    Tensor dx = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
    if (rows > 0)
      EMONEXT_KERNEL(dx.device(), softmax_backward, log, dx.data_ptr(), y.data_ptr(), dy.data_ptr(), dy.dtype(), rows, cols);
    return std::vector<Tensor>{dx};
  });
}

}  // namespace

// Labels on the CPU are checked to lie in [0, classes). Labels on a GPU are not read back:
// that would make the host wait for the device in every training step. The one_hot
// kernels compare each class with the label and never index by it, so a label out of
// range there gives a row of `off` values, not a stray write; the trainer and evaluate()
// check their labels here while they are still on the host.
void check_labels(const char* op, const Tensor& labels, int64_t classes) {
  EMONEXT_CHECK(labels.dtype() == DType::I64 && labels.dim() == 1, op, ": labels must be a 1-D i64 tensor, got ",
                labels.str());
  if (!labels.device().is_cpu()) return;
  for (int64_t v : labels.to_int_vector())
    EMONEXT_CHECK(v >= 0 && v < classes, op, ": label ", v, " is outside [0, ", classes, ")");
}

Tensor softmax(const Tensor& a) { return softmax_impl(false, "softmax", a); }
Tensor log_softmax(const Tensor& a) { return softmax_impl(true, "log_softmax", a); }

Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype, double on, double off) {
  check_labels("one_hot", labels, classes);
  const Tensor l = labels.contiguous();
  Tensor out = Tensor::empty({labels.size(0), classes}, dtype, labels.device());
  EMONEXT_CHECK(is_floating(dtype), "one_hot: dtype must be floating, got ", dtype_name(dtype));
  if (out.numel() > 0)
    EMONEXT_KERNEL(out.device(), one_hot, out.data_ptr(), dtype, l.data<int64_t>(), labels.size(0), classes, on, off);
  return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, double label_smoothing) {
  check_floating("cross_entropy", logits);
  EMONEXT_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, classes], got ", logits.str());
  EMONEXT_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), "cross_entropy: target ", target.str(),
                " does not match logits ", shape_str(logits.shape()), " (expected [", logits.size(0), "] i64)");
  EMONEXT_CHECK(target.device() == logits.device(), "cross_entropy: target on ", target.device().str(), ", logits on ",
                logits.device().str(), "; move the target with .to(", logits.device().str(), ")");
  EMONEXT_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, "cross_entropy: label_smoothing ", label_smoothing,
                " is outside [0, 1]");
  EMONEXT_CHECK(logits.size(0) > 0, "cross_entropy: empty batch");
  const int64_t n = logits.size(0), c = logits.size(1);
  const Tensor q = one_hot(target, c, logits.dtype(), 1.0 - label_smoothing + label_smoothing / double(c),
                           label_smoothing / double(c));
  return mul(sum(mul(q, log_softmax(logits))), -1.0 / double(n));
}

}  // namespace emonext
