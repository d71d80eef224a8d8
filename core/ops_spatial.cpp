// The spatial transformer's sampling as differentiable ops: the affine grid of a batch
// of transforms, and bilinear grid sampling (kernels/*/grid_sample).
#include "core/autograd.h"
#include "core/backend.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

using Grads = std::vector<Tensor>;

namespace {
// PyTorch's base-grid coordinates: linspace(-1, 1, n), scaled by (n - 1) / n without align_corners; 0 for n = 1.
std::vector<double> grid_coordinates(int64_t n, bool align_corners) {
  std::vector<double> v(static_cast<size_t>(n), 0.0);
  if (n <= 1) return v;
  for (int64_t i = 0; i < n; ++i) {
    const double x = -1.0 + 2.0 * double(i) / double(n - 1);
    v[size_t(i)] = align_corners ? x : x * double(n - 1) / double(n);
  }
  return v;
}
}  // namespace

Tensor affine_grid_base(int64_t h, int64_t w, bool align_corners, DType dtype, Device device) {
  EMONEXT_CHECK(h > 0 && w > 0, "affine_grid: output size ", h, "x", w, " must be positive");
  const std::vector<double> xs = grid_coordinates(w, align_corners), ys = grid_coordinates(h, align_corners);
  std::vector<double> base;
  base.reserve(size_t(h * w * 3));
  for (int64_t i = 0; i < h; ++i)
    for (int64_t j = 0; j < w; ++j) base.insert(base.end(), {xs[size_t(j)], ys[size_t(i)], 1.0});
  return Tensor::from_vector(base, {1, h * w, 3}, dtype, device);
}

Tensor affine_grid(const Tensor& theta, const Tensor& base, int64_t h, int64_t w) {
  check_floating("affine_grid", theta);
  EMONEXT_CHECK(theta.dim() == 3 && theta.size(1) == 2 && theta.size(2) == 3, "affine_grid: theta must be [N, 2, 3], got ",
                theta.str());
  EMONEXT_CHECK(h > 0 && w > 0, "affine_grid: output size ", h, "x", w, " must be positive");
  check_same("affine_grid", theta, base);
  EMONEXT_CHECK(base.shape() == Shape({1, h * w, 3}), "affine_grid: the base grid ", base.str(), " is not affine_grid_base(", h,
                ", ", w, ")'s [1, ", h * w, ", 3]");
  // grid[n, p] = theta[n] @ (x_p, y_p, 1): one batched matmul, differentiable in theta.
  return matmul(base, theta.transpose(1, 2)).reshape({theta.size(0), h, w, 2});
}

Tensor affine_grid(const Tensor& theta, int64_t h, int64_t w, bool align_corners) {
  check_floating("affine_grid", theta);
  return affine_grid(theta, affine_grid_base(h, w, align_corners, theta.dtype(), theta.device()), h, w);
}

Tensor grid_sample(const Tensor& input, const Tensor& grid, bool align_corners, bool deterministic) {
  check_floating("grid_sample", input);
  check_same("grid_sample", input, grid);
  EMONEXT_CHECK(input.dim() == 4, "grid_sample: input must be channels-last [N, H, W, C], got ", input.str());
  EMONEXT_CHECK(grid.dim() == 4 && grid.size(0) == input.size(0) && grid.size(3) == 2, "grid_sample: grid ",
                shape_str(grid.shape()), " does not fit input ", shape_str(input.shape()), " (expected [", input.size(0),
                ", Ho, Wo, 2])");
  const kernels::GridSample p{input.dtype(), input.size(0), input.size(1), input.size(2), input.size(3),
                              grid.size(1), grid.size(2), align_corners};
  const Tensor x = input.contiguous(), g = grid.contiguous();
  Tensor y = Tensor::empty({p.n, p.ho, p.wo, p.c}, input.dtype(), input.device());
  if (y.numel() > 0) EMONEXT_KERNEL(y.device(), grid_sample_forward, p, y.data_ptr(), x.data_ptr(), g.data_ptr());
  return record(y, "grid_sample", {input, grid}, [=, need_x = input.requires_grad(), need_g = grid.requires_grad()](const Tensor& dy_) {
    const Tensor dy = dy_.contiguous();
    Tensor dx = need_x ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
    Tensor dg = need_g ? Tensor::empty(g.shape(), g.dtype(), g.device()) : Tensor();
    if (dy.numel() > 0)
      EMONEXT_KERNEL(dy.device(), grid_sample_backward, p, need_x ? dx.data_ptr() : nullptr, need_g ? dg.data_ptr() : nullptr,
                     dy.data_ptr(), x.data_ptr(), g.data_ptr(), deterministic);
    else {
      if (need_x) dx.zero_();
      if (need_g) dg.zero_();
    }
    return Grads{dx, dg};
  });
}

}  // namespace emonext
