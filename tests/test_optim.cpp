// The optimiser's pieces (train/optim.h and core's fused AdamW update): the update
// against torch.optim.AdamW's formula written out in double, the weight-decay
// exemption, gradient clipping, the learning-rate schedules, the EMA, and bad arguments.
// (The overfit-batch test in test_train.cpp holds three whole training steps
// against PyTorch's own AdamW.)
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "layers/layers.h"
#include "tests/test_util.h"
#include "train/amp.h"
#include "train/optim.h"

namespace emonext::test {
namespace {

// torch.optim.AdamW's step for element values in double.
struct AdamWReference {
  double lr, beta1, beta2, eps, wd;
  void step(int t, double& p, double& m, double& v, double g) const {
    p *= 1 - lr * wd;
    m = beta1 * m + (1 - beta1) * g;
    v = beta2 * v + (1 - beta2) * g * g;
    const double denom = std::sqrt(v) / std::sqrt(1 - std::pow(beta2, t)) + eps;
    p -= lr / (1 - std::pow(beta1, t)) * m / denom;
  }
};

TEST(Optim, AdamWUpdateFollowsTorchsFormula) {
  const AdamWReference ref{1e-2, 0.9, 0.999, 1e-8, 0.05};
  const int64_t n = 1003;  // not a multiple of any vector width
  Generator gen(5);
  const Tensor p0 = randn({n}, gen, 0, 1, DType::F64);
  std::vector<Tensor> grads;
  for (int t = 1; t <= 5; ++t) grads.push_back(randn({n}, gen, 0, t == 3 ? 100.0 : 0.1, DType::F64));  // one large step
  std::vector<double> p = p0.to_vector(), m(size_t(n), 0.0), v(size_t(n), 0.0);
  auto grad_scale = [](int t) { return t == 3 ? 0.25 : 1.0; };  // step 3 clipped
  for (int t = 1; t <= 5; ++t) {
    const std::vector<double> g = grads[size_t(t - 1)].to_vector();
    for (size_t i = 0; i < p.size(); ++i) ref.step(t, p[i], m[i], v[i], g[i] * grad_scale(t));
  }
  const Tensor want_p = Tensor::from_vector(p, {n}, DType::F64), want_m = Tensor::from_vector(m, {n}, DType::F64),
               want_v = Tensor::from_vector(v, {n}, DType::F64);
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor tp = p0.to(dt).clone(), tm = Tensor::zeros({n}, dt), tv = Tensor::zeros({n}, dt);
    for (int t = 1; t <= 5; ++t)
      adamw_update_(tp, grads[size_t(t - 1)].to(dt), tm, tv, {ref.lr, ref.beta1, ref.beta2, ref.eps, ref.wd, t, grad_scale(t)});
    const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
    expect_close(tp, want_p, tol, std::string("param ") + dtype_name(dt));
    expect_rel(tm, want_m, tol, std::string("exp_avg ") + dtype_name(dt));
    expect_rel(tv, want_v, tol, std::string("exp_avg_sq ") + dtype_name(dt));
  }
  // The parameters moved: the comparison above is not of two unchanged copies.
  double moved = 0;
  const std::vector<double> start = p0.to_vector();
  for (size_t i = 0; i < p.size(); ++i) moved = std::max(moved, std::fabs(p[i] - start[i]));
  EXPECT_GT(moved, 1e-2);
}

// A Linear and a LayerNorm under one module: two matrices' worth of names.
struct TwoLayers : Module {
  Linear fc{4, 3};
  LayerNorm norm{3, 1e-6};
  TwoLayers() {
    register_module("fc", &fc);
    register_module("norm", &norm);
  }
};

// Gives net the weights every other net given them has (Generator(4)'s draws), on dev.
void seed_alike(TwoLayers& net, Device dev = Device::cpu()) {
  Generator same(4);
  NoGradGuard no_grad;
  for (const Module::Named& p : net.named_parameters()) p.tensor->copy_(randn(p.tensor->shape(), same));
  net.to(dev);
}

TEST(Optim, AdamWExemptsNormsAndBiasesWhenAsked) {
  // Zero gradients leave the moments at 0 and the update at 0: only weight decay moves
  // a parameter, by the factor 1 - lr * wd, and only where it applies.
  for (bool decay_all : {true, false}) {
    TwoLayers net;
    for (const Module::Named& p : net.named_parameters()) {
      NoGradGuard no_grad;
      p.tensor->fill_(2.0);
      p.tensor->set_grad(Tensor::zeros(p.tensor->shape()));
    }
    AdamW opt(net, {0.9, 0.999, 1e-8, 0.5, decay_all});
    opt.step(0.1);  // factor 1 - 0.1 * 0.5 = 0.95
    EXPECT_EQ(opt.steps(), 1);
    for (const Module::Named& p : net.named_parameters()) {
      const bool decays = decay_all || p.tensor->dim() > 1;
      EXPECT_FLOAT_EQ(float(p.tensor->to_vector()[0]), decays ? 1.9f : 2.0f) << p.name << (decay_all ? "" : ", exempting");
    }
  }
}

TEST(Optim, AdamWLeavesParametersWithoutAGradientAlone) {
  TwoLayers net;
  Generator gen(2);
  net.fc.weight.set_grad(randn({3, 4}, gen));
  const std::vector<double> bias = net.fc.bias.to_vector(), weight = net.fc.weight.to_vector();
  AdamW opt(net, {});
  opt.step(1e-2);
  EXPECT_EQ(net.fc.bias.to_vector(), bias);
  EXPECT_NE(net.fc.weight.to_vector(), weight);
}

TEST(Optim, AdamWUpdateRefusesBadArguments) {
  Tensor p = Tensor::zeros({4}), m = Tensor::zeros({4}), v = Tensor::zeros({4});
  EXPECT_NE(error_of([&] { adamw_update_(p, Tensor::zeros({5}), m, v, {}); }).find("does not match the parameter"),
            std::string::npos);
  EXPECT_NE(error_of([&] { adamw_update_(p, Tensor::zeros({4}, DType::F64), m, v, {}); }).find("different dtypes"),
            std::string::npos);
  Tensor strided = Tensor::zeros({8}).slice(0, 0, 8, 2);
  EXPECT_NE(error_of([&] { adamw_update_(p, Tensor::zeros({4}), strided, v, {}); }).find("contiguous"), std::string::npos);
  AdamWHyper zero_step;
  zero_step.t = 0;
  EXPECT_NE(error_of([&] { adamw_update_(p, Tensor::zeros({4}), m, v, zero_step); }).find("starts at 1"), std::string::npos);
  Tensor learnt = Tensor::zeros({4}).set_requires_grad();
  EXPECT_NE(error_of([&] { adamw_update_(learnt, Tensor::zeros({4}), m, v, {}); }).find("NoGradGuard"), std::string::npos);
  NoGradGuard no_grad;
  adamw_update_(learnt, Tensor::ones({4}), m, v, {});  // allowed with grad mode off
  EXPECT_LT(learnt.to_vector()[0], 0.0);
}

// The list form (what AdamW::step calls; its chunks cross tensors) gives each parameter
// the bits that a call of its own gives, decay exemptions included; a bad entry
// anywhere in the list is refused before any parameter changes.
TEST(Optim, AdamWUpdateOfAListEqualsOneCallPerParameter) {
  Generator gen(9);
  const std::vector<int64_t> sizes = {3, 40000, 0, 17, 70001, 1};
  std::vector<std::array<Tensor, 4>> a, b;  // p, g, m, v
  for (int64_t n : sizes) {
    a.push_back({randn({n}, gen), randn({n}, gen, 0, 0.1), randn({n}, gen, 0, 0.01), rand({n}, gen, 0, 1e-4)});
    b.push_back({a.back()[0].clone(), a.back()[1], a.back()[2].clone(), a.back()[3].clone()});
  }
  const AdamWHyper h{1e-2, 0.9, 0.99, 1e-8, 0.1, 4, 0.5};
  std::vector<AdamWParam> list;
  for (size_t i = 0; i < sizes.size(); ++i) list.push_back({&a[i][0], &a[i][1], &a[i][2], &a[i][3], i % 2 == 0});
  for (size_t i = 0; i < sizes.size(); ++i) {
    AdamWHyper own = h;
    own.weight_decay = i % 2 == 0 ? h.weight_decay : 0.0;
    adamw_update_(b[i][0], b[i][1], b[i][2], b[i][3], own);
  }
  adamw_update_(list, h);
  for (size_t i = 0; i < sizes.size(); ++i)
    for (size_t k : {0, 2, 3}) EXPECT_EQ(a[i][k].to_vector(), b[i][k].to_vector()) << "parameter " << i << " tensor " << k;
  const std::vector<double> before = a[0][0].to_vector();
  Tensor wrong = Tensor::zeros({5});
  list[3].grad = &wrong;
  EXPECT_NE(error_of([&] { adamw_update_(list, h); }).find("does not match the parameter"), std::string::npos);
  EXPECT_EQ(a[0][0].to_vector(), before) << "the first parameter changed although the list was refused";
}

TEST(Optim, ClippingScalesToTheMaximumNormAndReportsTheNormBefore) {
  TwoLayers net;
  net.fc.weight.set_grad(Tensor::full({3, 4}, 1.0));  // 12 ones
  net.fc.bias.set_grad(Tensor::full({3}, 2.0));       // sum of squares 12
  // norm.weight and norm.bias have no gradient: they take no part
  EXPECT_NEAR(clip_grad_norm(net, 100.0), std::sqrt(24.0), 1e-6);
  EXPECT_EQ(net.fc.weight.grad().to_vector()[0], 1.0);  // under the maximum: untouched
  EXPECT_NEAR(clip_grad_norm(net, 1.0), std::sqrt(24.0), 1e-6);
  double total = 0;
  for (const Tensor& g : {net.fc.weight.grad(), net.fc.bias.grad()})
    for (double x : g.to_vector()) total += x * x;
  EXPECT_NEAR(std::sqrt(total), 1.0, 1e-5);
  EXPECT_NEAR(net.fc.bias.grad().to_vector()[0] / net.fc.weight.grad().to_vector()[0], 2.0, 1e-6);  // direction kept
  net.fc.bias.set_grad(Tensor::full({3}, NAN));
  EXPECT_TRUE(std::isnan(clip_grad_norm(net, 1.0)));
}

// The trainer hands clipping's factor to AdamW instead of scaling the gradients in a
// pass of their own: the parameters come out the same, bit for bit.
TEST(Optim, ClippingInsideAdamWEqualsClippingTheGradientsFirst) {
  TwoLayers a, b;
  Generator gen(9);
  for (TwoLayers* net : {&a, &b}) seed_alike(*net);
  AdamW opt_a(a, {}), opt_b(b, {});
  for (int step = 0; step < 3; ++step) {
    for (const Module::Named& p : a.named_parameters()) p.tensor->set_grad(randn(p.tensor->shape(), gen, 0, 3.0));
    for (size_t i = 0; i < a.named_parameters().size(); ++i)
      b.named_parameters()[i].tensor->set_grad(a.named_parameters()[i].tensor->grad().clone());
    const double norm_a = clip_grad_norm(a, 0.5);
    opt_a.step(1e-2);
    const double norm_b = grad_norm(b);
    EXPECT_EQ(norm_a, norm_b);
    ASSERT_LT(clip_factor(norm_b, 0.5), 0.2);  // the clipping is real
    opt_b.step(1e-2, clip_factor(norm_b, 0.5));
  }
  for (size_t i = 0; i < a.named_parameters().size(); ++i)
    EXPECT_EQ(a.named_parameters()[i].tensor->to_vector(), b.named_parameters()[i].tensor->to_vector())
        << a.named_parameters()[i].name;
  EXPECT_EQ(clip_factor(0.4, 0.5), 1.0);
  EXPECT_EQ(clip_factor(NAN, 0.5), 1.0);
}

// The training step's checks on the device (StepChecks, step_check_ and AdamW reading
// its control) against the host's way of taking the same steps, on every device this
// build has: the same norms and parameters bit for bit; fp16's skip, halving and growth;
// the halts that stop a run; the ring's bound.
TEST(Optim, TheDevicesStepChecksEqualTheHostsAndSkipAsItDid) {
  std::vector<Device> devices{Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (const Device dev : devices) {
    SCOPED_TRACE(dev.str());
    TwoLayers a, b;
    for (TwoLayers* net : {&a, &b}) seed_alike(*net, dev);
    const auto params = [](TwoLayers& net) {
      std::vector<std::vector<double>> out;
      for (const Module::Named& p : net.named_parameters()) out.push_back(p.tensor->to_vector());
      return out;
    };
    const auto moments = [](AdamW& opt) {
      std::vector<std::vector<double>> out;
      for (const auto& [name, t] : opt.state()) out.push_back(t->to_vector());
      return out;
    };
    // Three images, three classes: a tie goes to the first class (torch.argmax), so the
    // first row is wrong and the other two right.
    const Tensor logits = Tensor::from_vector({0.5, 0.5, 0.1, 0, 2, 1, 3, 0, 0}, {3, 3}, DType::F32, dev);
    const Tensor labels = Tensor::from_ints({1, 1, 0}, {3}, dev);
    const Tensor loss = Tensor::from_vector({1.25}, {1}, DType::F32, dev);
    AdamW opt_a(a, {}), opt_b(b, {});
    LossScaler scaler;
    scaler.on = true;
    scaler.scale = 4;
    StepChecks checks(dev, 8, 0.5, scaler, opt_b);
    const LrSchedule lr{.peak = 1e-2};  // constant, as the host's steps below
    // One step as the trainer takes it: the check queued, counted, AdamW reading its control.
    const auto take_step = [&](StepChecks& c, const Tensor& step_loss) {
      c.check(b, step_loss, logits, labels, lr);
      c.count();
      opt_b.step(c.control());
    };
    Generator gen(9);
    std::vector<double> norms;
    for (int step = 0; step < 4; ++step) {  // gradients as fp16 leaves them: times the scale, 4
      for (const Module::Named& p : a.named_parameters())
        p.tensor->set_grad(randn(p.tensor->shape(), gen, 0, step == 2 ? 0.01 : 3.0, DType::F32, dev) * 4.0);
      for (size_t i = 0; i < a.named_parameters().size(); ++i)
        b.named_parameters()[i].tensor->set_grad(a.named_parameters()[i].tensor->grad().clone());
      norms.push_back(grad_norm(a) / 4);
      opt_a.step(1e-2, clip_factor(norms.back(), 0.5) / 4);
      take_step(checks, loss);
    }
    EXPECT_EQ(opt_b.steps(), 0) << "the host's count waits for read()";
    std::vector<StepRecord> r = checks.read();
    ASSERT_EQ(r.size(), 4u);
    for (size_t i = 0; i < r.size(); ++i) {
      EXPECT_EQ(r[i].grad_norm, norms[i]) << "step " << i;
      EXPECT_EQ(r[i].loss, 1.25);
      EXPECT_EQ(r[i].correct, 2);
      EXPECT_EQ(r[i].loss_scale, 4);
      EXPECT_FALSE(r[i].skipped);
      EXPECT_EQ(r[i].halted, kernels::kRunning);
    }
    ASSERT_GT(norms[0], 0.5);  // clipped steps
    ASSERT_LT(norms[2], 0.5);  // and an unclipped one
    EXPECT_EQ(params(a), params(b));
    EXPECT_EQ(moments(opt_a), moments(opt_b));
    EXPECT_EQ(opt_b.steps(), 4);
    EXPECT_EQ(scaler.good, 4);
    EXPECT_EQ(scaler.scale, 4);

    // An overflowing fp16 step changes no parameter, moment or step count; the scale halves.
    const auto before = params(b);
    const auto before_m = moments(opt_b);
    b.fc.bias.set_grad(Tensor::from_vector({1, INFINITY, 1}, {3}, DType::F32, dev));
    take_step(checks, loss);
    r = checks.read();
    ASSERT_EQ(r.size(), 1u);
    EXPECT_TRUE(r[0].skipped);
    EXPECT_EQ(r[0].halted, kernels::kRunning);
    EXPECT_EQ(r[0].loss_scale, 4);
    EXPECT_EQ(params(b), before);
    EXPECT_EQ(moments(opt_b), before_m);
    EXPECT_EQ(opt_b.steps(), 4);
    EXPECT_EQ(scaler.scale, 2);
    EXPECT_EQ(scaler.good, 0);
    // 2000 good steps in a row double it: the host's count, uploaded, is the device's.
    scaler.good = 1999;
    checks.upload(5);
    b.fc.bias.set_grad(Tensor::ones({3}, DType::F32, dev));
    take_step(checks, loss);
    r = checks.read();
    EXPECT_FALSE(r[0].skipped);
    EXPECT_NE(params(b), before);
    EXPECT_EQ(opt_b.steps(), 5);
    EXPECT_EQ(scaler.scale, 4);
    EXPECT_EQ(scaler.good, 0);
    for (int i = 0; i < 8; ++i) {
      checks.check(b, loss, logits, labels, lr);
      checks.count();
    }
    EXPECT_THROW(checks.check(b, loss, logits, labels, lr), Error) << "a ninth step overruns a ring of 8";
    EXPECT_THROW(checks.count(), Error);
    checks.read();

    // Without fp16, non-finite gradients halt the run: this and every later update skipped.
    LossScaler off;
    StepChecks halting(dev, 4, 0.5, off, opt_b);
    const auto halted_at = params(b);
    const int64_t t = opt_b.steps();
    b.fc.bias.set_grad(Tensor::from_vector({1, NAN, 1}, {3}, DType::F32, dev));
    take_step(halting, loss);
    b.fc.bias.set_grad(Tensor::ones({3}, DType::F32, dev));
    take_step(halting, loss);
    r = halting.read();
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0].halted, kernels::kNonFiniteGradients);
    EXPECT_TRUE(r[1].skipped);
    EXPECT_EQ(params(b), halted_at);
    EXPECT_EQ(opt_b.steps(), t);
    // A non-finite loss halts too; fp16's scale falling below 2^-24 does.
    StepChecks bad_loss(dev, 1, 0, off, opt_b);
    take_step(bad_loss, Tensor::from_vector({NAN}, {1}, DType::F32, dev));
    EXPECT_EQ(bad_loss.read()[0].halted, kernels::kNonFiniteLoss);
    LossScaler tiny;
    tiny.on = true;
    tiny.scale = LossScaler::kFloor;
    StepChecks floor(dev, 1, 0, tiny, opt_b);
    b.fc.bias.set_grad(Tensor::from_vector({1, INFINITY, 1}, {3}, DType::F32, dev));
    take_step(floor, loss);
    r = floor.read();
    EXPECT_TRUE(r[0].skipped);
    EXPECT_EQ(r[0].halted, kernels::kScaleUnderflow);
  }
}

// The learning rate comes from the device's step count (so that a CUDA graph replaying
// the step follows the schedule): AdamW with the control takes the host's scheduled steps
// bit for bit, through a warm restart; the ring's rows wrap and read() returns them in
// order; upload(k) resumes the count at step k.
TEST(Optim, TheDevicesLearningRateAndRingFollowTheRunsStepCount) {
  std::vector<Device> devices{Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  const LrSchedule sched{.kind = Schedule::Restarts, .peak = 0.1, .warmup = 2, .cycle = 5, .total = 100};
  for (const Device dev : devices) {
    SCOPED_TRACE(dev.str());
    TwoLayers a, b;
    for (TwoLayers* net : {&a, &b}) seed_alike(*net, dev);
    AdamW opt_a(a, {}), opt_b(b, {});
    LossScaler off;
    StepChecks checks(dev, 3, 0, off, opt_b);
    const Tensor logits = Tensor::from_vector({1, 0}, {1, 2}, DType::F32, dev);
    const Tensor labels = Tensor::from_ints({0}, {1}, dev);
    Generator gen(2);
    std::vector<double> losses;
    for (int64_t step = 0; step < 8; ++step) {
      for (const Module::Named& p : a.named_parameters()) p.tensor->set_grad(randn(p.tensor->shape(), gen, 0, 1, DType::F32, dev));
      for (size_t i = 0; i < a.named_parameters().size(); ++i)
        b.named_parameters()[i].tensor->set_grad(a.named_parameters()[i].tensor->grad().clone());
      opt_a.step(learning_rate(sched.kind, sched.peak, step, sched.warmup, sched.cycle, sched.total));
      checks.check(b, Tensor::from_vector({double(step)}, {1}, DType::F32, dev), logits, labels, sched);
      checks.count();
      opt_b.step(checks.control());
      if (checks.pending() < 2 && step < 7) continue;  // reads after steps 1, 3, 5 and 7: rows 0-1, 2-0, 1-2, 0-1
      const std::vector<StepRecord> r = checks.read();
      ASSERT_EQ(r.size(), 2u);
      for (const StepRecord& x : r) losses.push_back(x.loss);
    }
    EXPECT_EQ(losses, (std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7}));
    for (size_t i = 0; i < a.named_parameters().size(); ++i)
      EXPECT_EQ(a.named_parameters()[i].tensor->to_vector(), b.named_parameters()[i].tensor->to_vector())
          << a.named_parameters()[i].name;
    EXPECT_EQ(checks.control().to_vector()[kernels::kLearningRate], learning_rate(sched.kind, sched.peak, 7, 2, 5, 100));
    checks.upload(11);  // a resumed run at step 11: c = 1, in the warm-up
    checks.check(b, Tensor::from_vector({0}, {1}, DType::F32, dev), logits, labels, sched);
    checks.count();
    EXPECT_EQ(checks.read().size(), 1u);
    EXPECT_EQ(checks.control().to_vector()[kernels::kLearningRate], 0.1 * 1 / 2);
    EXPECT_EQ(checks.control().to_vector()[kernels::kRunSteps], 12);
  }
}

TEST(Optim, LearningRateSchedules) {
  const double peak = 1e-3;
  // The reference's cosine with warm restarts: warmup 128, cycle 1024.
  EXPECT_EQ(learning_rate(Schedule::Restarts, peak, 0, 128, 1024, 5000), 0.0);
  EXPECT_DOUBLE_EQ(learning_rate(Schedule::Restarts, peak, 64, 128, 1024, 5000), peak / 2);
  EXPECT_DOUBLE_EQ(learning_rate(Schedule::Restarts, peak, 128, 128, 1024, 5000), peak);
  EXPECT_NEAR(learning_rate(Schedule::Restarts, peak, 128 + 448, 128, 1024, 5000), peak / 2, 1e-12);
  EXPECT_EQ(learning_rate(Schedule::Restarts, peak, 1024, 128, 1024, 5000), 0.0);  // the restart
  EXPECT_DOUBLE_EQ(learning_rate(Schedule::Restarts, peak, 1024 + 128, 128, 1024, 5000), peak);
  // Warm-up then one cosine to 0 at the end of the run.
  EXPECT_DOUBLE_EQ(learning_rate(Schedule::Cosine, peak, 64, 128, 1024, 900), peak / 2);
  EXPECT_DOUBLE_EQ(learning_rate(Schedule::Cosine, peak, 128, 128, 1024, 900), peak);
  EXPECT_NEAR(learning_rate(Schedule::Cosine, peak, 514, 128, 1024, 900), peak / 2, 1e-12);
  EXPECT_NEAR(learning_rate(Schedule::Cosine, peak, 900, 128, 1024, 900), 0.0, 1e-18);
  EXPECT_EQ(learning_rate(Schedule::Constant, peak, 7, 128, 1024, 900), peak);
  EXPECT_EQ(schedule_from_name("cosine"), Schedule::Cosine);
  EXPECT_NE(error_of([] { schedule_from_name("step"); }).find("restarts, cosine or constant"), std::string::npos);
}

// The reference's EMA, written out for one value: every 16th optimiser step s (1-based)
// a plain copy while s <= 100, else e = d e + (1 - d) x with d = min(0.99, 1 - (1 + s -
// 100)^(-2/3)); nothing in between. Weights and BatchNorm buffers alike; the i64 batch
// counter is copied. swap() exchanges the EMA with the model's values, twice restores.
TEST(Optim, EmaFollowsTheReferencesDecayEverySixteenSteps) {
  BatchNorm2d bn(3);
  const auto set_all = [&](double v) {
    NoGradGuard no_grad;
    for (const Module::Named& t : bn.named_tensors()) t.tensor->fill_(v);
  };
  set_all(0);
  Ema ema(bn, 16);
  ASSERT_EQ(ema.state().size(), 5u);
  EXPECT_EQ(ema.state()[0].first, "ema.weight");
  EXPECT_EQ(ema.state()[4].first, "ema.num_batches_tracked");
  double expected = 0;  // the EMA of the value x_s = 0.5 s, as the reference's formula gives it
  for (int64_t s = 1; s <= 300; ++s) {
    const double x = 0.5 * double(s);
    set_all(x);
    ema.update(bn, s);
    if (s % 16 == 0) {
      const double d = s <= 100 ? 0.0 : std::min(0.99, 1 - std::pow(double(1 + s - 100), -2.0 / 3.0));
      expected = d * expected + (1 - d) * x;
    }
    if (s == 15 || s == 96 || s == 112 || s == 300) {
      ema.swap(bn);
      for (const Module::Named& t : bn.named_tensors()) {
        const double want = t.name == "num_batches_tracked" ? 0.5 * double(s - s % 16) : expected;
        for (double v : t.tensor->to_vector())
          EXPECT_NEAR(v, t.name == "num_batches_tracked" ? std::floor(want) : want, 1e-4 * std::max(1.0, want))
              << t.name << " at step " << s;
      }
      ema.swap(bn);
      for (const Module::Named& t : bn.named_tensors())
        for (double v : t.tensor->to_vector()) EXPECT_EQ(v, t.name == "num_batches_tracked" ? std::floor(x) : x) << "swapped back";
    }
  }
  EXPECT_GT(std::fabs(expected - 150.0), 1.0) << "at step 300 the average lags the value: the decay was applied";
}

// The EMA queued every step with the step read on the device (what a CUDA graph
// replays) gives the host's updates bit for bit: nothing on the steps between, the
// plain copy up to step 100, the decay after, the counter copied; on every device.
TEST(Optim, TheEmaReadingItsStepOnTheDeviceEqualsTheHosts) {
  std::vector<Device> devices{Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (const Device dev : devices) {
    SCOPED_TRACE(dev.str());
    BatchNorm2d bn(70000);  // more than one chunk (16,384 values) a tensor
    bn.to(dev);
    Ema host(bn, 16), device(bn, 16);
    Generator gen(5);
    std::vector<double> state(kernels::kStateSize, 0.0);
    for (int64_t s = 1; s <= 130; ++s) {
      {
        NoGradGuard no_grad;
        for (const Module::Named& t : bn.named_tensors())
          if (t.tensor->dtype() == DType::I64) t.tensor->fill_(double(s));
          else t.tensor->copy_(randn(t.tensor->shape(), gen, 0, 1, DType::F32, dev));
      }
      host.update(bn, s);
      state[kernels::kRunSteps] = double(s);  // as step_check_ leaves it after step s
      device.update(bn, Tensor::from_vector(state, {kernels::kStateSize}, DType::F64, dev));
      if (s != 15 && s != 16 && s != 112 && s != 128) continue;
      for (size_t i = 0; i < host.state().size(); ++i)
        ASSERT_EQ(host.state()[i].second->to_vector(), device.state()[i].second->to_vector()) << host.state()[i].first << " at step " << s;
    }
    const std::vector<double> last = host.state()[0].second->to_vector();
    EXPECT_NE(last, bn.weight.to_vector()) << "after step 100 the average lags the weights";
    EXPECT_EQ(host.state().back().second->to_vector()[0], 128) << "num_batches_tracked copied at step 128";
  }
}

}  // namespace
}  // namespace emonext::test
