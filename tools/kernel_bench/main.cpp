// kernel_bench: times the hand-written ConvNeXt kernels against a baseline run in
// the same process, after checking each result against a reference.
//
//   kernel_bench [--device auto|cpu|cuda] [--shape N,H,W,C] [--dtype f32|bf16|f16]
//                [--iters K] [--csv FILE]
//
// Shapes: ConvNeXt-Tiny's first stage, [N, 56, 56, 96] (GELU runs on the block's
// hidden [N, 56, 56, 384]; grid sampling on the spatial transformer's [N, 224, 224, 3]
// images); N is 64 on a GPU and 4 on the CPU unless --shape says.
// GPU baselines: cuDNN's grouped convolution (channels-last, same dtype) for the
// depthwise convolution, naive one-thread-per-output kernels for the rest; the
// fraction of the device's copy bandwidth uses a device-to-device copy measured
// here. CPU: the engine's CPU kernels against plain single-threaded loops. Both: the
// fused AdamW update against the same update op by op, and the multi-tensor update of
// a whole model's parameters against one call per parameter.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/base/file.h"
#include "core/base/limits.h"
#include "core/base/options.h"
#include "core/ops.h"
#include "kernels/cuda/cudnn_conv.h"
#include "models/emonext.h"
#include "tools/kernel_bench/baselines.h"
#include "train/report_html.h"

namespace emonext::bench {
namespace {

// The largest buffer --shape may ask for, in elements.
constexpr int64_t kMaxShapeElements = int64_t(1) << 29;

struct Options {
  DeviceChoice device = DeviceChoice::Auto;
  Shape shape;  // empty: the default for the device
  DType dtype = DType::F32;
  int iters = 10;
  std::string csv, html;
};

struct Case {
  std::string kernel, direction, baseline;
  double bytes = 0, flops = 0;
  std::function<void()> engine, reference;  // reference: the baseline, timed too
  std::function<double()> error;            // max |engine - check| / (1 + |check|), after both ran
  std::function<double()> baseline_error = {};  // the same for the baseline, where the check is a third result
};

struct Result {
  Case c;
  double ms = 0, baseline_ms = 0, err = 0, baseline_err = -1;  // -1: the baseline is the check
};

void add_options(cli::Options& t, Options& o) {
  t.choice("--device", "auto: the GPU when this build has its mode and one answers", &o.device, device_choices())
      .add({"--shape", "N,H,W,C", "the activations' shape (default: ConvNeXt-Tiny's stage 1, batch 64 on a GPU, 4 on the CPU)", "", "",
            [&o](const std::string& v) {
              std::stringstream ss(v);
              o.shape.clear();
              for (std::string part; std::getline(ss, part, ',');) o.shape.push_back(limits::parse_int(part, "--shape", 1, 1 << 20));
              EMONEXT_CHECK(o.shape.size() == 4, "--shape takes N,H,W,C, got '", v, "'");
              // Each buffer of the widest kind ([N, H, W, 4C], the GELU's) at most 2^29
              // elements: a few GiB in all (ConvNeXt-T's stage 1 at batch 128 is 2^27).
              const int64_t widest = limits::mul(limits::mul(limits::mul(o.shape[0], o.shape[1], "--shape"), o.shape[2], "--shape"),
                                                 4 * o.shape[3], "--shape");
              EMONEXT_CHECK(widest <= kMaxShapeElements, "--shape ", v, ": N*H*W*4C is ", widest, " elements, more than the ",
                            kMaxShapeElements, " a buffer may have here");
            }})
      .choice("--dtype", "the kernels' dtype (the CPU mode runs f32)", &o.dtype, {{"f32", DType::F32}, {"bf16", DType::BF16}, {"f16", DType::F16}})
      .integer("--iters", "K", "timed runs of each kernel (the median is reported)", &o.iters, 1, 100000)
      .text("--csv", "FILE", "the table as CSV too", &o.csv)
      .text("--html", "FILE", "a roofline of the run: each kernel and its baseline under the copy-bandwidth and matmul ceilings", &o.html);
}

double cpu_time_ms(const std::function<void()>& fn, int iters) {
  fn();  // warm-up
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double max_error(const Tensor& got, const Tensor& want) {
  const std::vector<double> a = got.to_vector(), b = want.to_vector();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(a[i] - b[i]) / (1 + std::fabs(b[i]));
    if (!(e <= worst)) worst = e;
  }
  return worst;
}

// The tensors every case reads: stage-1 activations, the block's hidden activations, parameters.
struct Data {
  kernels::DwConv conv;
  int64_t rows, C, C4;
  kernels::GridSample sample;
  Tensor x, dy, w, bias, ln_w, ln_b, x4, dy4, b4, gate, img, grid, dimg;
  Data(const Shape& s, DType t, Device d) {
    Generator gen(1);
    conv = {t, s[0], s[1], s[2], s[3], 7};
    C = s[3];
    C4 = 4 * C;
    rows = s[0] * s[1] * s[2];
    x = randn(s, gen, 0, 1, t, d);
    dy = randn(s, gen, 0, 1, t, d);
    w = randn({C, 1, 7, 7}, gen, 0, 0.1, t, d);  // PyTorch's layout, which the kernels and cuDNN read
    bias = randn({C}, gen, 0, 1, t, d);
    ln_w = randn({C}, gen, 1, 0.1, t, d);
    ln_b = randn({C}, gen, 0, 0.1, t, d);
    x4 = randn({s[0], s[1], s[2], C4}, gen, 0, 1, t, d);
    dy4 = randn({s[0], s[1], s[2], C4}, gen, 0, 1, t, d);
    b4 = randn({C4}, gen, 0, 0.1, t, d);
    gate = rand({s[0], C}, gen, 0, 1, t, d);
    // The spatial transformer: 224x224 RGB, a grid from a slight zoom and rotation.
    sample = {t, s[0], 224, 224, 3, 224, 224, true};
    img = rand({s[0], 224, 224, 3}, gen, 0, 1, t, d);
    dimg = randn({s[0], 224, 224, 3}, gen, 0, 1, t, d);
    std::vector<double> theta;
    for (int64_t i = 0; i < s[0]; ++i) theta.insert(theta.end(), {0.93, 0.05, 0.01, -0.04, 0.91, -0.02});
    grid = affine_grid(Tensor::from_vector(theta, {s[0], 2, 3}, DType::F64), 224, 224, true).to(t).to(d);
  }
};

Tensor like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }

// Output buffers for the cases; a deque keeps each Tensor at one address while the cases hold pointers to it.
using Buffers = std::deque<Tensor>;
Tensor* buffer(Buffers& keep, Tensor t) { return &keep.emplace_back(std::move(t)); }

// The optimiser's update on an f32 parameter of x's size (the master weights are f32 in
// every precision): the fused AdamW kernel beside the same update op by op with the
// engine's ops (what AdamW::step did before the kernel: ~15 ops, each a pass over memory
// and, on a GPU, a launch). Both start from the same state; the check is after one run.
Case adamw_case(const Data& d, Buffers& keep) {
  Generator gen(3);
  const Device dev = d.x.device();
  const Shape s = {d.x.numel()};
  const Tensor p0 = randn(s, gen, 0, 1, DType::F32, dev), g = randn(s, gen, 0, 0.1, DType::F32, dev);
  Tensor *p = buffer(keep, p0.clone()), *m = buffer(keep, Tensor::zeros(s, DType::F32, dev)),
         *v = buffer(keep, Tensor::zeros(s, DType::F32, dev)), *pb = buffer(keep, p0.clone()),
         *mb = buffer(keep, Tensor::zeros(s, DType::F32, dev)), *vb = buffer(keep, Tensor::zeros(s, DType::F32, dev));
  const AdamWHyper h{1e-3, 0.9, 0.999, 1e-8, 0.01, 1};
  const double n = double(d.x.numel());
  return {"adamw", "update", "op by op", 28 * n, 15 * n, [=] { adamw_update_(*p, g, *m, *v, h); },
          [=] {
            const double c1 = 1 - h.beta1, c2 = 1 - h.beta2;  // bias corrections at t = 1
            *mb = *mb * h.beta1 + g * (1 - h.beta1);
            *vb = *vb * h.beta2 + g * g * (1 - h.beta2);
            pb->copy_(*pb * (1 - h.lr * h.weight_decay) - (*mb / (sqrt(*vb * (1 / c2)) + h.eps)) * (h.lr / c1));
          },
          [=] { return std::max({max_error(*p, *pb), max_error(*m, *mb), max_error(*v, *vb)}); }};
}

// The optimiser's update on a whole model's parameters, EmoNeXt-atto's 154 shapes (3.73 M
// values; f32): the multi-tensor update of the list, a few launches on a GPU, beside the
// same fused kernel called once per parameter. What a GPU launch costs shows here.
Case adamw_model_case(Device dev, Buffers& keep) {
  Generator gen(4);
  EmoNeXt shapes(convnext_size("atto"), 7, 48);
  auto list = std::make_shared<std::vector<AdamWParam>>(), each = std::make_shared<std::vector<AdamWParam>>();
  double n = 0;
  for (const Module::Named& t : shapes.named_parameters()) {
    const Shape s = t.tensor->shape();
    const Tensor p0 = randn(s, gen, 0, 1, DType::F32, dev);
    const Tensor* g = buffer(keep, randn(s, gen, 0, 0.1, DType::F32, dev));
    for (auto* l : {list.get(), each.get()})
      l->push_back({buffer(keep, p0.clone()), g, buffer(keep, Tensor::zeros(s, DType::F32, dev)),
                    buffer(keep, Tensor::zeros(s, DType::F32, dev)), t.tensor->dim() > 1});
    n += double(p0.numel());
  }
  const AdamWHyper h{1e-3, 0.9, 0.999, 1e-8, 0.05, 1};
  return {"adamw", "atto model", "per tensor", 28 * n, 15 * n, [=] { adamw_update_(*list, h); },
          [=] {
            for (const AdamWParam& x : *each) adamw_update_({x}, h);
          },
          [=] {
            double worst = 0;
            for (size_t i = 0; i < list->size(); ++i)
              worst = std::max({worst, max_error(*(*list)[i].param, *(*each)[i].param), max_error(*(*list)[i].exp_avg_sq, *(*each)[i].exp_avg_sq)});
            return worst;
          }};
}

// The end of a ConvNeXt block, x + drop_path(gamma * (h + b)) at x's shape, drop path on
// (every fourth image dropped): the fused kernels beside the ops they replaced, op by op
// (forward: the bias add, the layer scale, the mask, the residual add; backward: the two
// products, the two column sums and the product they reduce). Either backend.
std::vector<Case> layer_scale_residual_cases(const Data& d, Buffers& keep) {
  const Device dev = d.x.device();
  const DType t = d.x.dtype();
  const int64_t n_img = d.x.size(0), c = d.C;
  const double keep_p = 0.75, s = double(dtype_size(t)), n = double(d.x.numel());
  std::vector<double> draws;
  for (int64_t i = 0; i < n_img; ++i) draws.push_back(i % 4 == 3 ? 0.9 : 0.1);
  const Tensor* u = buffer(keep, Tensor::from_vector(draws, {n_img}, DType::F32, dev));
  std::vector<double> scale;
  for (double v : draws) scale.push_back(v < keep_p ? 1 / keep_p : 0);
  const Tensor* mask = buffer(keep, Tensor::from_vector(scale, {n_img, 1, 1, 1}, t, dev));
  const Tensor *h = &d.dy, *b = &d.bias, *gamma = &d.ln_w, *g = &d.x;  // h, and the incoming gradient g
  const Tensor* hb = buffer(keep, add(*h, *b));                          // what the op-by-op forward kept
  const kernels::LayerScaleResidual p{t, n_img, d.x.size(1) * d.x.size(2), c, keep_p};
  const auto* uf = static_cast<const float*>(u->data_ptr());
  Tensor *y = buffer(keep, like(d.x)), *yb = buffer(keep, like(d.x)), *dh = buffer(keep, like(d.x)), *dhb = buffer(keep, like(d.x)),
         *db = buffer(keep, like(*b)), *dbb = buffer(keep, like(*b)), *dgm = buffer(keep, like(*b)), *dgmb = buffer(keep, like(*b)),
         *want = buffer(keep, Tensor()), *want_db = buffer(keep, Tensor()), *want_dgm = buffer(keep, Tensor());
  // The backward's check: the same formulas op by op in f32 (as batch_norm_cases: in 16-bit
  // the op-by-op products are rounded one by one before the column sums).
  auto check_backward = [=] {
    const DType f32 = DType::F32;
    const Tensor gm = g->to(f32) * mask->to(f32);
    *want = gm * gamma->to(f32);
    *want_db = sum(*want, {0, 1, 2});
    *want_dgm = sum(gm * (h->to(f32) + b->to(f32)), {0, 1, 2});
  };
  return {
      {"layer_scale_res", "forward", "op by op", 3 * n * s, 4 * n,
       [=, &d] { EMONEXT_KERNEL(dev, layer_scale_residual_forward, p, y->data_ptr(), d.x.data_ptr(), h->data_ptr(), b->data_ptr(), gamma->data_ptr(), uf); },
       [=, &d] { *yb = d.x + (*h + *b) * *gamma * *mask; },
       [=] { return max_error(*y, *yb); }},
      {"layer_scale_res", "backward", "op by op", 3 * n * s, 6 * n,
       [=] { EMONEXT_KERNEL(dev, layer_scale_residual_backward, p, dh->data_ptr(), db->data_ptr(), dgm->data_ptr(), g->data_ptr(), h->data_ptr(), b->data_ptr(), gamma->data_ptr(), uf); },
       [=] {
         const Tensor gm = *g * *mask;
         *dhb = gm * *gamma;
         *dbb = sum(*dhb, {0, 1, 2});
         *dgmb = sum(gm * *hb, {0, 1, 2});
       },
       [=] {
         check_backward();
         return std::max({max_error(*dh, *want), max_error(*db, *want_db), max_error(*dgm, *want_dgm)});
       },
       [=] { return std::max({max_error(*dhb, *want), max_error(*dbb, *want_db), max_error(*dgmb, *want_dgm)}); }},
  };
}

// bias_gelu's backward on the block's hidden activations: dx and the bias's gradient in
// one pass, beside the same op by op (x + b into a new tensor, gelu' times g, the column
// sums reading dx again), as bias_gelu's backward was before. Either backend.
Case bias_gelu_backward_case(const Data& d, Buffers& keep) {
  const Device dev = d.x4.device();
  const DType t = d.x4.dtype();
  const double s = double(dtype_size(t)), n4 = double(d.x4.numel());
  const int64_t rows = d.x4.numel() / d.C4;
  Tensor *dx = buffer(keep, like(d.x4)), *dxb = buffer(keep, like(d.x4)), *db = buffer(keep, like(d.b4)),
         *dbb = buffer(keep, like(d.b4)), *want = buffer(keep, Tensor()), *want_db = buffer(keep, Tensor());
  return {"bias_gelu", "backward", "op by op", 3 * n4 * s, 26 * n4,
          [=, &d] { EMONEXT_KERNEL(dev, bias_gelu_backward, t, false, dx->data_ptr(), db->data_ptr(), d.dy4.data_ptr(), d.x4.data_ptr(), d.b4.data_ptr(), rows, d.C4); },
          [=, &d] {
            const Tensor pre = d.x4 + d.b4;
            EMONEXT_KERNEL(dev, binary, kernels::BinaryOp::GeluErfBackward, view_of(*dxb), view_of(d.dy4), view_of(pre));
            *dbb = sum(*dxb, {0, 1, 2});
          },
          [=, &d] {  // the check: the same op by op in f32 (in 16-bit the baseline rounds dx before its column sums)
            const Tensor pre = d.x4.to(DType::F32) + d.b4.to(DType::F32);
            *want = Tensor::empty(pre.shape(), DType::F32, dev);
            EMONEXT_KERNEL(dev, binary, kernels::BinaryOp::GeluErfBackward, view_of(*want), view_of(d.dy4.to(DType::F32)), view_of(pre));
            *want_db = sum(*want, {0, 1, 2});
            return std::max(max_error(*dx, *want), max_error(*db, *want_db));
          },
          [=] { return std::max(max_error(*dxb, *want), max_error(*dbb, *want_db)); }};
}

// Training-mode BatchNorm over the stage-1 activations as [N*H*W, C] rows (the model's
// are the spatial transformer's maps; the kernel is the same): the batchnorm kernels
// beside the same work op by op in the same dtype (forward: the mean, the variance, the
// running statistics, the normalisation, as batch_norm was composed before; backward:
// the column sums and dx from the saved statistics). Both are checked against the
// formulas op by op in f32: in 16-bit the op-by-op products are rounded one by one, and
// a sum of 200,704 of them can be far from the fused kernels' f32 sums. Either backend.
std::vector<Case> batch_norm_cases(const Data& d, Buffers& keep) {
  const Device dev = d.x.device();
  const DType t = d.x.dtype(), f32 = DType::F32;
  const int64_t c = d.C;
  const double s = double(dtype_size(t)), n = double(d.x.numel()), m = double(d.rows);
  const Tensor *x = &d.x, *g = &d.dy, *w = &d.ln_w, *b = &d.ln_b;
  Tensor *y = buffer(keep, like(d.x)), *yb = buffer(keep, like(d.x)), *dx = buffer(keep, like(d.x)), *dxb = buffer(keep, like(d.x)),
         *dw = buffer(keep, like(*w)), *dwb = buffer(keep, like(*w)), *db = buffer(keep, like(*w)), *dbb = buffer(keep, like(*w)),
         *rm = buffer(keep, Tensor::zeros({c}, t, dev)), *rv = buffer(keep, Tensor::ones({c}, t, dev)),
         *rmb = buffer(keep, Tensor::zeros({c}, t, dev)), *rvb = buffer(keep, Tensor::ones({c}, t, dev)),
         *mean = buffer(keep, Tensor::empty({c}, f32, dev)), *rstd = buffer(keep, Tensor::empty({c}, f32, dev)),
         *want = buffer(keep, Tensor()), *want_dw = buffer(keep, Tensor()), *want_db = buffer(keep, Tensor());
  // The f32 check, made once both have run: y, or dx (with dw and db).
  auto check_forward = [=] {
    const Tensor x32 = x->to(f32), mu = emonext::mean(x32, {0, 1, 2}), var = emonext::mean(pow(x32 - mu, 2.0), {0, 1, 2});
    *want = (x32 - mu) / sqrt(var + 1e-5) * w->to(f32) + b->to(f32);
  };
  auto check_backward = [=] {
    const Tensor g32 = g->to(f32), xhat = (x->to(f32) - *mean) * *rstd;
    *want_db = sum(g32, {0, 1, 2});
    *want_dw = sum(g32 * xhat, {0, 1, 2});
    *want = w->to(f32) * *rstd * (g32 - *want_db / m - xhat * *want_dw / m);
  };
  return {
      {"batch_norm", "forward", "op by op", 2 * n * s, 8 * n,
       [=] { EMONEXT_KERNEL(dev, batch_norm_forward, y->data_ptr(), mean->data_ptr(), rstd->data_ptr(), rm->data_ptr(), rv->data_ptr(), x->data_ptr(), w->data_ptr(), b->data_ptr(), t, d.rows, c, 1e-5, 0.1); },
       [=] {
         const Tensor mu = emonext::mean(*x, {0, 1, 2}), var = emonext::mean(pow(*x - mu, 2.0), {0, 1, 2});
         rmb->copy_(*rmb * 0.9 + mu * 0.1);
         rvb->copy_(*rvb * 0.9 + var * (0.1 * m / (m - 1)));
         *yb = (*x - mu) / sqrt(var + 1e-5) * *w + *b;
       },
       [=] {
         check_forward();
         return max_error(*y, *want);
       },
       [=] { return max_error(*yb, *want); }},
      {"batch_norm", "backward", "op by op", 3 * n * s, 10 * n,
       [=] { EMONEXT_KERNEL(dev, batch_norm_backward, dx->data_ptr(), dw->data_ptr(), db->data_ptr(), g->data_ptr(), x->data_ptr(), mean->data_ptr(), rstd->data_ptr(), w->data_ptr(), t, d.rows, c); },
       [=] {
         const Tensor mu = mean->to(t), rs = rstd->to(t), xhat = (*x - mu) * rs;
         *dbb = sum(*g, {0, 1, 2});
         *dwb = sum(*g * xhat, {0, 1, 2});
         *dxb = *w * rs * (*g - *dbb / m - xhat * *dwb / m);
       },
       [=] {
         check_backward();
         return std::max({max_error(*dx, *want), max_error(*dw, *want_dw), max_error(*db, *want_db)});
       },
       [=] { return std::max({max_error(*dxb, *want), max_error(*dwb, *want_dw), max_error(*dbb, *want_db)}); }},
  };
}

// The cases written with the engine's ops and kernel dispatch, the same on either
// device: each fused kernel beside the work it replaced.
std::vector<Case> either_device_cases(const Data& d, Buffers& keep) {
  std::vector<Case> cases = {adamw_case(d, keep), adamw_model_case(d.x.device(), keep), bias_gelu_backward_case(d, keep)};
  for (Case& c : layer_scale_residual_cases(d, keep)) cases.push_back(std::move(c));
  for (Case& c : batch_norm_cases(d, keep)) cases.push_back(std::move(c));
  return cases;
}

// The CPU cases: the engine's CPU kernels, checked against (and timed beside) naive loops.
std::vector<Case> cpu_cases(Data& d, Buffers& keep) {
  const double s = double(dtype_size(d.x.dtype())), n = double(d.x.numel()), n4 = double(d.x4.numel());
  Tensor *y = buffer(keep, like(d.x)), *yr = buffer(keep, like(d.x)), *dw = buffer(keep, like(d.w)),
         *dwr = buffer(keep, like(d.w)), *y4 = buffer(keep, like(d.x4)), *y4r = buffer(keep, like(d.x4)),
         *m = buffer(keep, Tensor::empty({d.rows})), *r = buffer(keep, Tensor::empty({d.rows})), *lw = buffer(keep, like(d.ln_w)),
         *lb = buffer(keep, like(d.ln_b)), *lwr = buffer(keep, like(d.ln_w)), *lbr = buffer(keep, like(d.ln_b)),
         *dg = buffer(keep, like(d.gate)), *dgr = buffer(keep, like(d.gate)), *pool = buffer(keep, like(d.gate)),
         *poolr = buffer(keep, like(d.gate)), *img_out = buffer(keep, like(d.img)), *img_outr = buffer(keep, like(d.img)),
         *dgrid = buffer(keep, like(d.grid)), *dgridr = buffer(keep, like(d.grid));
  const auto f = [](const Tensor& t) { return t.data<float>(); };
  const double ni = double(d.img.numel()), npx = double(d.grid.numel() / 2);
  const int64_t hw = d.conv.h * d.conv.w;
  std::vector<Case> cases = {
      {"dwconv7x7", "forward", "naive loops", 2 * n * s, 2 * 49 * n,
       [=, &d] { kernels::cpu::dwconv_forward(d.conv, y->data_ptr(), d.x.data_ptr(), d.w.data_ptr(), d.bias.data_ptr(), nullptr); },
       [=, &d] { naive_cpu::dwconv_forward(d.conv, f(*yr), f(d.x), f(d.w), f(d.bias)); },
       [=] { return max_error(*y, *yr); }},
      {"dwconv7x7", "backward input", "naive loops", 2 * n * s, 2 * 49 * n,
       [=, &d] { kernels::cpu::dwconv_backward_input(d.conv, y->data_ptr(), d.dy.data_ptr(), d.w.data_ptr(), nullptr); },
       [=, &d] { naive_cpu::dwconv_backward_input(d.conv, f(*yr), f(d.dy), f(d.w)); },
       [=] { return max_error(*y, *yr); }},
      {"dwconv7x7", "backward weight", "naive loops", 2 * n * s, 2 * 49 * n,
       [=, &d] { kernels::cpu::dwconv_backward_weight(d.conv, dw->data_ptr(), nullptr, d.dy.data_ptr(), d.x.data_ptr(), nullptr); },
       [=, &d] { naive_cpu::dwconv_backward_weight(d.conv, f(*dwr), f(d.dy), f(d.x)); },
       [=] { return max_error(*dw, *dwr); }},
      {"layer_norm", "forward", "naive loops", 2 * n * s, 8 * n,
       [=, &d] { kernels::cpu::layer_norm_forward(y->data_ptr(), m->data_ptr(), r->data_ptr(), d.x.data_ptr(), d.ln_w.data_ptr(), d.ln_b.data_ptr(), DType::F32, d.rows, d.C, 1e-6, nullptr); },
       [=, &d] { naive_cpu::layer_norm_forward(f(*yr), f(d.x), f(d.ln_w), f(d.ln_b), d.rows, d.C, 1e-6); },
       [=] { return max_error(*y, *yr); }},
      {"layer_norm", "backward", "naive loops", 3 * n * s, 12 * n,
       [=, &d] { kernels::cpu::layer_norm_backward(y->data_ptr(), lw->data_ptr(), lb->data_ptr(), d.dy.data_ptr(), d.x.data_ptr(), m->data_ptr(), r->data_ptr(), d.ln_w.data_ptr(), DType::F32, d.rows, d.C, nullptr); },
       [=, &d] { naive_cpu::layer_norm_backward(f(*yr), f(*lwr), f(*lbr), f(d.dy), f(d.x), f(d.ln_w), d.rows, d.C, 1e-6); },
       [=] { return std::max({max_error(*y, *yr), max_error(*lw, *lwr), max_error(*lb, *lbr)}); }},
      {"bias_gelu", "forward", "naive loops", 2 * n4 * s, 20 * n4,
       [=, &d] { kernels::cpu::binary(kernels::BinaryOp::AddGeluErf, view_of(*y4), view_of(d.x4), view_as(d.b4, d.x4.shape()), nullptr); },
       [=, &d] { naive_cpu::bias_gelu_forward(f(*y4r), f(d.x4), f(d.b4), d.rows, d.C4); },
       [=] { return max_error(*y4, *y4r); }},
      {"gelu", "backward", "naive loops", 3 * n4 * s, 25 * n4,
       [=, &d] { kernels::cpu::binary(kernels::BinaryOp::GeluErfBackward, view_of(*y4), view_of(d.dy4), view_of(d.x4), nullptr); },
       [=, &d] { naive_cpu::gelu_backward(f(*y4r), f(d.dy4), f(d.x4), int64_t(n4)); },
       [=] { return max_error(*y4, *y4r); }},
      {"se_gate", "forward", "naive loops", 2 * n * s, n,
       [=, &d] { kernels::cpu::binary(kernels::BinaryOp::Mul, view_of(*y), view_of(d.x), view_as(d.gate.reshape({d.conv.n, 1, 1, d.C}), d.x.shape()), nullptr); },
       [=, &d] { naive_cpu::se_gate_forward(f(*yr), f(d.x), f(d.gate), d.conv.n, hw, d.C); },
       [=] { return max_error(*y, *yr); }},
      {"se_gate", "backward", "naive loops", 3 * n * s, 3 * n,
       [=, &d] { kernels::cpu::se_gate_backward(y->data_ptr(), dg->data_ptr(), d.dy.data_ptr(), d.x.data_ptr(), d.gate.data_ptr(), DType::F32, d.conv.n, hw, d.C, nullptr); },
       [=, &d] { naive_cpu::se_gate_backward(f(*yr), f(*dgr), f(d.dy), f(d.x), f(d.gate), d.conv.n, hw, d.C); },
       [=] { return std::max(max_error(*y, *yr), max_error(*dg, *dgr)); }},
      {"se_pool", "forward", "naive loops", n * s, n,
       [=, &d] { kernels::cpu::reduce(kernels::ReduceOp::Sum, pool->data_ptr(), d.x.data_ptr(), DType::F32, d.conv.n, hw, d.C, nullptr); },
       [=, &d] { naive_cpu::se_pool(f(*poolr), f(d.x), d.conv.n, hw, d.C); },
       [=] { return max_error(mul(*pool, 1.0 / double(hw)), *poolr); }},
      {"grid_sample", "forward", "naive loops", (2 * ni + 2 * npx) * s, 8 * ni,
       [=, &d] { kernels::cpu::grid_sample_forward(d.sample, img_out->data_ptr(), d.img.data_ptr(), d.grid.data_ptr(), nullptr); },
       [=, &d] { naive_cpu::grid_sample_forward(d.sample, f(*img_outr), f(d.img), f(d.grid)); },
       [=] { return max_error(*img_out, *img_outr); }},
      {"grid_sample", "backward", "naive loops", (3 * ni + 4 * npx) * s, 24 * ni,
       [=, &d] { kernels::cpu::grid_sample_backward(d.sample, img_out->data_ptr(), dgrid->data_ptr(), d.dimg.data_ptr(), d.img.data_ptr(), d.grid.data_ptr(), false, nullptr); },
       [=, &d] { naive_cpu::grid_sample_backward(d.sample, f(*img_outr), f(*dgridr), f(d.dimg), f(d.img), f(d.grid)); },
       [=] { return std::max(max_error(*img_out, *img_outr), max_error(*dgrid, *dgridr)); }},
  };
  for (Case& c : either_device_cases(d, keep)) cases.push_back(std::move(c));
  return cases;
}

#if EMONEXT_BENCH_GPU
// A cuDNN baseline call that failed as it ran (kernels/cuda/cudnn_conv.h) stops the bench.
void cudnn_ran(bool ok) { EMONEXT_CHECK(ok, "kernel_bench: cuDNN's depthwise convolution failed as it ran (see above)"); }

// The GPU cases: the engine's CUDA kernels timed beside cuDNN or naive kernels; both
// are checked (the dwconv ones against the CPU backend on the same values).
std::vector<Case> gpu_cases(Data& d, Data& host, Buffers& keep) {
  const Device dev = d.x.device();
  const DType t = d.x.dtype();
  const double s = double(dtype_size(t)), n = double(d.x.numel()), n4 = double(d.x4.numel());
  kernels::Stream st = kernels::cuda::stream(dev.index);
  Tensor *y = buffer(keep, like(d.x)), *yb = buffer(keep, like(d.x)), *dw = buffer(keep, like(d.w)),
         *y4 = buffer(keep, like(d.x4)), *y4b = buffer(keep, like(d.x4)),
         *m = buffer(keep, Tensor::empty({d.rows}, DType::F32, dev)), *r = buffer(keep, Tensor::empty({d.rows}, DType::F32, dev)),
         *lw = buffer(keep, like(d.ln_w)), *lb = buffer(keep, like(d.ln_b)), *lwb = buffer(keep, like(d.ln_w)),
         *lbb = buffer(keep, like(d.ln_b)), *dg = buffer(keep, like(d.gate)), *dgb = buffer(keep, like(d.gate)),
         *pool = buffer(keep, like(d.gate)), *poolb = buffer(keep, like(d.gate)), *img_out = buffer(keep, like(d.img)),
         *img_outb = buffer(keep, like(d.img)), *dgrid = buffer(keep, like(d.grid)), *dgridb = buffer(keep, like(d.grid)),
         *dimg_f32 = buffer(keep, Tensor::empty(d.img.shape(), DType::F32, dev));
  const double ni = double(d.img.numel()), npx = double(d.grid.numel() / 2);
  Tensor* dwb = buffer(keep, like(d.w));  // cuDNN's filter gradient, in the same [C, K, K] layout
  Tensor* want = buffer(keep, Tensor());  // the CPU backend's result that both dwconv runs are checked against
  // cuDNN's grouped convolution, one group per channel, its first choice of algorithm
  // (deterministic or not, as PyTorch picks by default).
  namespace kc = kernels::cuda;
  const kc::CudnnConv cp{t, d.conv.n, d.conv.h, d.conv.w, d.C, d.C, d.conv.k, d.conv.k, 1, d.conv.k / 2, d.C, false};
  EMONEXT_CHECK(kc::cudnn_conv_supported(cp), "kernel_bench: cuDNN has no algorithm for the depthwise convolution at ",
                d.conv.n, "x", d.conv.h, "x", d.conv.w, "x", d.C, " in ", t);
  std::cout << "cuDNN algos " << kc::cudnn_conv_algorithms(cp) << "\n";
  const int64_t hw = d.conv.h * d.conv.w;
  std::vector<Case> cases = {
      {"dwconv7x7", "forward", "cuDNN", 2 * n * s, 2 * 49 * n,
       [=, &d] { kernels::cuda::dwconv_forward(d.conv, y->data_ptr(), d.x.data_ptr(), d.w.data_ptr(), d.bias.data_ptr(), st); },
       [=, &d] { cudnn_ran(kc::cudnn_conv_forward(cp, yb->data_ptr(), d.x.data_ptr(), d.w.data_ptr(), d.bias.data_ptr(), st)); },
       [=, &host] {
         *want = like(host.x);
         kernels::cpu::dwconv_forward(host.conv, want->data_ptr(), host.x.data_ptr(), host.w.data_ptr(), host.bias.data_ptr(), nullptr);
         return max_error(*y, *want);
       },
       [=] { return max_error(*yb, *want); }},
      {"dwconv7x7", "backward input", "cuDNN", 2 * n * s, 2 * 49 * n,
       [=, &d] { kernels::cuda::dwconv_backward_input(d.conv, y->data_ptr(), d.dy.data_ptr(), d.w.data_ptr(), st); },
       [=, &d] { cudnn_ran(kc::cudnn_conv_backward_data(cp, yb->data_ptr(), d.dy.data_ptr(), d.w.data_ptr(), st)); },
       [=, &host] {
         *want = like(host.x);
         kernels::cpu::dwconv_backward_input(host.conv, want->data_ptr(), host.dy.data_ptr(), host.w.data_ptr(), nullptr);
         return max_error(*y, *want);
       },
       [=] { return max_error(*yb, *want); }},
      {"dwconv7x7", "backward weight", "cuDNN", 2 * n * s, 2 * 49 * n,
       [=, &d] { kernels::cuda::dwconv_backward_weight(d.conv, dw->data_ptr(), nullptr, d.dy.data_ptr(), d.x.data_ptr(), st); },
       [=, &d] { cudnn_ran(kc::cudnn_conv_backward_filter(cp, dwb->data_ptr(), d.dy.data_ptr(), d.x.data_ptr(), st)); },
       [=, &host] {
         *want = like(host.w);
         kernels::cpu::dwconv_backward_weight(host.conv, want->data_ptr(), nullptr, host.dy.data_ptr(), host.x.data_ptr(), nullptr);
         return max_error(*dw, *want);
       },
       [=] { return max_error(*dwb, *want); }},
      {"layer_norm", "forward", "naive", 2 * n * s, 8 * n,
       [=, &d] { kernels::cuda::layer_norm_forward(y->data_ptr(), m->data_ptr(), r->data_ptr(), d.x.data_ptr(), d.ln_w.data_ptr(), d.ln_b.data_ptr(), t, d.rows, d.C, 1e-6, st); },
       [=, &d] { naive_gpu::layer_norm_forward(t, yb->data_ptr(), d.x.data_ptr(), d.ln_w.data_ptr(), d.ln_b.data_ptr(), d.rows, d.C, 1e-6); },
       [=] { return max_error(*y, *yb); }},
      {"layer_norm", "backward", "naive", 3 * n * s, 12 * n,
       [=, &d] { kernels::cuda::layer_norm_backward(y->data_ptr(), lw->data_ptr(), lb->data_ptr(), d.dy.data_ptr(), d.x.data_ptr(), m->data_ptr(), r->data_ptr(), d.ln_w.data_ptr(), t, d.rows, d.C, st); },
       [=, &d] { naive_gpu::layer_norm_backward(t, yb->data_ptr(), lwb->data_ptr(), lbb->data_ptr(), d.dy.data_ptr(), d.x.data_ptr(), d.ln_w.data_ptr(), d.rows, d.C, 1e-6); },
       [=] { return std::max({max_error(*y, *yb), max_error(*lw, *lwb), max_error(*lb, *lbb)}); }},
      {"bias_gelu", "forward", "naive", 2 * n4 * s, 20 * n4,
       [=, &d] { kernels::cuda::binary(kernels::BinaryOp::AddGeluErf, view_of(*y4), view_of(d.x4), view_as(d.b4, d.x4.shape()), st); },
       [=, &d] { naive_gpu::bias_gelu_forward(t, y4b->data_ptr(), d.x4.data_ptr(), d.b4.data_ptr(), d.rows, d.C4); },
       [=] { return max_error(*y4, *y4b); }},
      {"gelu", "backward", "naive", 3 * n4 * s, 25 * n4,
       [=, &d] { kernels::cuda::binary(kernels::BinaryOp::GeluErfBackward, view_of(*y4), view_of(d.dy4), view_of(d.x4), st); },
       [=, &d] { naive_gpu::gelu_backward(t, y4b->data_ptr(), d.dy4.data_ptr(), d.x4.data_ptr(), int64_t(n4)); },
       [=] { return max_error(*y4, *y4b); }},
      {"se_gate", "forward", "naive", 2 * n * s, n,
       [=, &d] { kernels::cuda::binary(kernels::BinaryOp::Mul, view_of(*y), view_of(d.x), view_as(d.gate.reshape({d.conv.n, 1, 1, d.C}), d.x.shape()), st); },
       [=, &d] { naive_gpu::se_gate_forward(t, yb->data_ptr(), d.x.data_ptr(), d.gate.data_ptr(), d.conv.n, hw, d.C); },
       [=] { return max_error(*y, *yb); }},
      {"se_gate", "backward", "naive", 3 * n * s, 3 * n,
       [=, &d] { kernels::cuda::se_gate_backward(y->data_ptr(), dg->data_ptr(), d.dy.data_ptr(), d.x.data_ptr(), d.gate.data_ptr(), t, d.conv.n, hw, d.C, st); },
       [=, &d] { naive_gpu::se_gate_backward(t, yb->data_ptr(), dgb->data_ptr(), d.dy.data_ptr(), d.x.data_ptr(), d.gate.data_ptr(), d.conv.n, hw, d.C); },
       [=] { return std::max(max_error(*y, *yb), max_error(*dg, *dgb)); }},
      {"se_pool", "forward", "naive", n * s, n,
       [=, &d] { kernels::cuda::reduce(kernels::ReduceOp::Sum, pool->data_ptr(), d.x.data_ptr(), t, d.conv.n, hw, d.C, st); },
       [=, &d] { naive_gpu::se_pool(t, poolb->data_ptr(), d.x.data_ptr(), d.conv.n, hw, d.C); },
       [=] { return max_error(mul(*pool, 1.0 / double(hw)), *poolb); }},
      {"grid_sample", "forward", "naive", (2 * ni + 2 * npx) * s, 8 * ni,
       [=, &d] { kernels::cuda::grid_sample_forward(d.sample, img_out->data_ptr(), d.img.data_ptr(), d.grid.data_ptr(), st); },
       [=, &d] { naive_gpu::grid_sample_forward(d.sample, img_outb->data_ptr(), d.img.data_ptr(), d.grid.data_ptr()); },
       [=] { return max_error(*img_out, *img_outb); }},
      {"grid_sample", "backward", "naive", (3 * ni + 4 * npx) * s, 24 * ni,
       [=, &d] { kernels::cuda::grid_sample_backward(d.sample, img_out->data_ptr(), dgrid->data_ptr(), d.dimg.data_ptr(), d.img.data_ptr(), d.grid.data_ptr(), false, st); },
       [=, &d] { naive_gpu::grid_sample_backward(d.sample, dimg_f32->data<float>(), dgridb->data_ptr(), d.dimg.data_ptr(), d.img.data_ptr(), d.grid.data_ptr()); },
       [=] { return std::max(max_error(*img_out, dimg_f32->to(img_out->dtype())), max_error(*dgrid, *dgridb)); }},
  };
  // bf16/f16: the depthwise kernels' two-channels-per-thread form (the default, which the
  // rows above time) against their one-channel form (DwConv::packed): the same bits
  // forward and backward input, the weight gradient summed in another order.
  if (dtype_size(t) == 2) {
    kernels::DwConv one = d.conv;
    one.packed = false;
    cases.push_back({"dwconv7x7 packed", "forward", "one channel/thread", 2 * n * s, 2 * 49 * n,
                     [=, &d] { kernels::cuda::dwconv_forward(d.conv, y->data_ptr(), d.x.data_ptr(), d.w.data_ptr(), d.bias.data_ptr(), st); },
                     [=, &d] { kernels::cuda::dwconv_forward(one, yb->data_ptr(), d.x.data_ptr(), d.w.data_ptr(), d.bias.data_ptr(), st); },
                     [=] { return max_error(*y, *yb); }});
    cases.push_back({"dwconv7x7 packed", "backward input", "one channel/thread", 2 * n * s, 2 * 49 * n,
                     [=, &d] { kernels::cuda::dwconv_backward_input(d.conv, y->data_ptr(), d.dy.data_ptr(), d.w.data_ptr(), st); },
                     [=, &d] { kernels::cuda::dwconv_backward_input(one, yb->data_ptr(), d.dy.data_ptr(), d.w.data_ptr(), st); },
                     [=] { return max_error(*y, *yb); }});
    cases.push_back({"dwconv7x7 packed", "backward weight", "one channel/thread", 2 * n * s, 2 * 49 * n,
                     [=, &d] { kernels::cuda::dwconv_backward_weight(d.conv, dw->data_ptr(), nullptr, d.dy.data_ptr(), d.x.data_ptr(), st); },
                     [=, &d] { kernels::cuda::dwconv_backward_weight(one, dwb->data_ptr(), nullptr, d.dy.data_ptr(), d.x.data_ptr(), st); },
                     [=] { return max_error(*dw, *dwb); }});
  }
  for (Case& c : either_device_cases(d, keep)) cases.push_back(std::move(c));
  return cases;
}
#endif

// The median time of fn on the device.
std::function<double(const std::function<void()>&)> timer_for(bool gpu, int iters) {
  return [gpu, iters](const std::function<void()>& fn) {
#if EMONEXT_BENCH_GPU
    if (gpu) return gpu_time_ms(fn, iters);
#else
    (void)gpu;
#endif
    return cpu_time_ms(fn, iters);
  };
}

// --html: the run as a roofline. x: FLOPs per byte of each kernel's minimum traffic (the
// arithmetic of docs/PERF.md); y: the FLOP/s it reached, the engine's kernel and its
// baseline (on the same minimum bytes). The ceilings are measured in this run: the copy
// bandwidth (a kernel can reach bandwidth x intensity), and a square matrix product in
// the run's dtype through the engine's matmul (cuBLAS, or the CPU's GEMM on its threads).
void write_roofline(const std::string& path, const std::vector<Result>& results, bool gpu, DType dtype, const Shape& shape,
                    double bandwidth, const std::function<double(const std::function<void()>&)>& timer) {
  const Device dev = gpu ? Device::cuda(0) : Device::cpu();
  const int64_t n = gpu ? 8192 : 1024;
  Generator gen(1);
  const Tensor a = rand({n, n}, gen, -1, 1, gpu ? dtype : DType::F32, dev), b = rand({n, n}, gen, -1, 1, gpu ? dtype : DType::F32, dev);
  const double matmul_gflops = 2.0 * double(n) * double(n) * double(n) / (timer([&] { matmul(a, b); }) * 1e6);
  std::vector<html::Mark> marks;
  double lo = 1e9, hi = 0;
  std::string rows;
  for (const Result& r : results) {
    const double intensity = r.c.flops / r.c.bytes;
    lo = std::min(lo, intensity), hi = std::max(hi, intensity);
    const std::string name = r.c.kernel + " " + r.c.direction;
    marks.push_back({intensity, r.c.flops / (r.ms * 1e6), name, "#1f77b4"});
    marks.push_back({intensity, r.c.flops / (r.baseline_ms * 1e6), r.c.baseline, "#aaaaaa"});
    char row[512];
    std::snprintf(row, sizeof row, "<tr><td>%s</td><td>%.3g</td><td>%.4g</td><td>%.0f%%</td><td>%s</td><td>%.4g</td></tr>\n",
                  html_escape(name).c_str(), intensity, r.ms, 100 * r.c.bytes / (r.ms * 1e6) / bandwidth,
                  html_escape(r.c.baseline).c_str(), r.baseline_ms);
    rows += row;
  }
  html::Series memory{"copy bandwidth " + std::to_string(int(bandwidth)) + " GB/s x intensity", "#2ca02c", {}};
  html::Series compute{"matmul " + std::to_string(int(matmul_gflops)) + " GFLOP/s", "#d62728", {}};
  // The ceilings from a tenth of the lowest intensity to 100 times the highest, in steps
  // of 1.25x counted first (a kernel of no FLOPs has intensity 0, where x *= 1.25 would
  // never end).
  lo = std::isfinite(lo) && lo > 1e-6 ? lo : 1e-6, hi = std::isfinite(hi) && hi > lo ? hi : lo;
  const int points = int(std::ceil(std::log(hi * 1000 / lo) / std::log(1.25)));
  for (int k = 0; k <= std::min(points, 400); ++k) {
    const double x = lo / 10 * std::pow(1.25, k);
    memory.points.emplace_back(x, bandwidth * x);
    compute.points.emplace_back(x, matmul_gflops);
  }
  const std::string title = std::string("kernel_bench on ") + (gpu ? "cuda:0" : "the CPU") + ", " + dtype_name(dtype) + ", " + shape_str(shape);
  html::write_atomically(
      path, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html_escape(title) +
                "</title><style>body{font-family:sans-serif;margin:20px}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
                "font-size:13px;text-align:left}</style></head><body><h1>" + html_escape(title) +
                "</h1><p>Each kernel (blue) and its baseline (gray) at the FLOPs per byte of the kernel's minimum traffic; the "
                "lines are this run's copy bandwidth and a " + std::to_string(n) + "&sup3; matmul. A memory-bound kernel sits on the "
                "green line at its best.</p>\n" +
                html::loglog_chart(title, "FLOP per byte of minimum traffic", "GFLOP/s", {memory, compute}, marks) +
                "\n<table><tr><th>kernel</th><th>FLOP/byte</th><th>ms</th><th>% of copy</th><th>baseline</th><th>baseline ms</th></tr>\n" +
                rows + "</table></body></html>\n");
}

double tolerance(DType t) { return t == DType::F32 ? 2e-3 : t == DType::F16 ? 2e-2 : 6e-2; }

}  // namespace

int run(int argc, char** argv) {
  Options o;
  cli::Options table("kernel_bench", "kernel_bench [--device auto|cpu|cuda] [--shape N,H,W,C] [--dtype f32|bf16|f16] [--iters K] [--csv FILE]");
  add_options(table, o);
  table.parse(argc, argv);
  const auto usage = [&](const std::string& why) { table.usage_error(why); };
  const bool gpu = o.device == DeviceChoice::Cuda || (o.device == DeviceChoice::Auto && EMONEXT_BENCH_GPU && cuda_available());
#if !EMONEXT_BENCH_GPU
  if (gpu) usage("this build has no GPU mode (CUDA backend not built, or the emulation build: it has no timing)");
#endif
  if (!gpu && o.dtype != DType::F32) usage("the CPU mode runs f32 (its naive baselines are f32)");
  // The CSV file is opened before the run, so a path that cannot be written stops it
  // now rather than after every kernel has been timed.
  std::ofstream csv;
  if (!o.csv.empty()) {
    csv.open(o.csv);
    if (!csv) usage("--csv " + o.csv + ": cannot open the file for writing");
  }
  if (!o.html.empty()) {  // the same for --html, which is written at the end (atomically, beside its name)
    try {
      write_file_atomically(o.html, [](std::ostream& out) { out << "<!DOCTYPE html>\n<p>kernel_bench is running</p>\n"; });
    } catch (const Error& e) {
      usage(std::string("--html: ") + e.what());
    }
  }

  const Shape shape = !o.shape.empty() ? o.shape : Shape{gpu ? 64 : 4, 56, 56, 96};
  std::printf("kernel_bench: device %s, dtype %s, shape [N,H,W,C] = %s (GELU on C*4), %d timed runs each, median\n",
              gpu ? "cuda:0" : "cpu", dtype_name(o.dtype), shape_str(shape).c_str(), o.iters);

  std::vector<Case> cases;
  Buffers keep;
  double bandwidth = 0;
  Data host(shape, gpu ? o.dtype : DType::F32, Device::cpu());
  std::unique_ptr<Data> device;
#if EMONEXT_BENCH_GPU
  if (gpu) {
    bandwidth = gpu_copy_bandwidth_gbs(0);
    device = std::make_unique<Data>(shape, o.dtype, Device::cuda(0));
    // The CPU check runs in f32 on the device's values.
    for (Tensor* t : {&host.x, &host.dy, &host.w, &host.bias, &host.ln_w, &host.ln_b, &host.x4, &host.dy4, &host.b4, &host.gate})
      *t = t->to(DType::F32);
    host.conv.dtype = DType::F32;
    cases = gpu_cases(*device, host, keep);
  }
#endif
  if (!gpu) {
    // Host copy bandwidth: memcpy of 256 MiB, bytes read + written.
    Tensor a = Tensor::zeros({1 << 26}), b = Tensor::zeros({1 << 26});
    const double ms = cpu_time_ms([&] { std::memcpy(b.data_ptr(), a.data_ptr(), size_t(1) << 28); }, 5);
    bandwidth = 2.0 * double(size_t(1) << 28) / (ms * 1e6);
    cases = cpu_cases(host, keep);
  }
  std::printf("measured copy bandwidth: %.1f GB/s (read + write)\n\n", bandwidth);
  std::printf("%-15s %-16s %10s %9s %7s %9s  %-12s %10s %8s %9s %9s\n", "kernel", "direction", "ms", "GB/s", "%copy", "GFLOP/s",
              "baseline", "base ms", "speedup", "max err", "base err");
  std::vector<Result> results;
  bool ok = true;
  for (const Case& c : cases) {
    c.engine();
    c.reference();
    synchronize(gpu ? Device::cuda(0) : Device::cpu());
    Result r{c};
    r.err = c.error();
    if (c.baseline_error) r.baseline_err = c.baseline_error();
    const bool valid = r.err <= tolerance(o.dtype);
    ok &= valid;
    const auto timer = timer_for(gpu, o.iters);
    r.ms = timer(c.engine);
    r.baseline_ms = timer(c.reference);
    const double gbs = c.bytes / (r.ms * 1e6);
    char base_err[16] = "        -";
    if (r.baseline_err >= 0) std::snprintf(base_err, sizeof base_err, "%9.1e", r.baseline_err);
    std::printf("%-15s %-16s %10.3f %9.1f %6.0f%% %9.1f  %-12s %10.3f %7.2fx %9.1e %s%s\n", c.kernel.c_str(), c.direction.c_str(),
                r.ms, gbs, 100 * gbs / bandwidth, c.flops / (r.ms * 1e6), c.baseline.c_str(), r.baseline_ms, r.baseline_ms / r.ms,
                r.err, base_err, valid ? "" : "  FAILED CHECK");
    results.push_back(r);
  }
  if (!o.html.empty()) {
    write_roofline(o.html, results, gpu, o.dtype, shape, bandwidth, timer_for(gpu, o.iters));
    std::printf("\nwrote %s\n", o.html.c_str());
  }
  if (csv.is_open()) {
    csv << "kernel,direction,device,dtype,shape,ms,bytes,gb_per_s,fraction_of_copy,gflop_per_s,baseline,baseline_ms,speedup,max_err,baseline_max_err\n";
    for (const Result& r : results) {
      const double gbs = r.c.bytes / (r.ms * 1e6);
      csv << r.c.kernel << ',' << r.c.direction << ',' << (gpu ? "cuda" : "cpu") << ',' << dtype_name(o.dtype) << ",\""
          << shape_str(shape) << "\"," << r.ms << ',' << r.c.bytes << ',' << gbs << ',' << gbs / bandwidth << ','
          << r.c.flops / (r.ms * 1e6) << ',' << r.c.baseline << ',' << r.baseline_ms << ',' << r.baseline_ms / r.ms << ','
          << r.err << ',' << (r.baseline_err >= 0 ? std::to_string(r.baseline_err) : "") << '\n';
    }
    csv.close();
    if (!csv) {
      std::fprintf(stderr, "kernel_bench: writing %s failed\n", o.csv.c_str());
      return 1;
    }
    std::printf("\nwrote %s\n", o.csv.c_str());
  }
  return ok ? 0 : 1;
}

}  // namespace emonext::bench

int main(int argc, char** argv) {
  try {
    return emonext::bench::run(argc, argv);
  } catch (const std::exception& e) {  // emonext::Error, and the standard library's
    std::fprintf(stderr, "kernel_bench: %s\n", e.what());
    return 1;
  }
}
