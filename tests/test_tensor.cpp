// Tensor metadata, views sharing storage, contiguous(), in-place copies.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "tests/test_util.h"

namespace emonext {
namespace {

Tensor arange(int64_t n, DType dtype = DType::F32) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double(i);
  return Tensor::from_vector(v, {n}, dtype);
}

TEST(Tensor, ShapeStridesAndSizes) {
  const Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(Tensor::zeros({}).numel(), 1);  // a scalar
  EXPECT_EQ(Tensor::zeros({3, 0}).numel(), 0);
  EXPECT_EQ(t.str(), "Tensor[2, 3, 4] f32 cpu");
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = arange(12).reshape({3, 4});
  const Tensor tt = t.transpose(0, 1);
  EXPECT_EQ(tt.shape(), (Shape{4, 3}));
  EXPECT_EQ(tt.strides(), (Shape{1, 4}));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.storage(), t.storage());
  EXPECT_EQ(tt.to_vector(), (std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  // A write through a view is seen by the base.
  t.slice(1, 1, 3).fill_(-1);
  EXPECT_EQ(t.to_vector(), (std::vector<double>{0, -1, -1, 3, 4, -1, -1, 7, 8, -1, -1, 11}));
}

TEST(Tensor, SliceWithStepAndNegativeBounds) {
  const Tensor t = arange(10);
  EXPECT_EQ(t.slice(0, 1, 8, 3).to_vector(), (std::vector<double>{1, 4, 7}));
  EXPECT_EQ(t.slice(0, -3, 10).to_vector(), (std::vector<double>{7, 8, 9}));
  EXPECT_EQ(t.slice(0, 5, 100).numel(), 5);  // clamped, as Python slicing
}

TEST(Tensor, ExpandHasZeroStridesAndContiguousCopies) {
  const Tensor col = arange(3).reshape({3, 1});
  const Tensor e = col.expand({2, 3, 4});
  EXPECT_EQ(e.strides(), (Shape{0, 1, 0}));
  const Tensor c = e.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), col.storage());
  EXPECT_EQ(c.to_vector()[size_t(12 + 4 * 2 + 3)], 2.0);
}

TEST(Tensor, ReshapeOfNonContiguousCopiesAndInfersMinusOne) {
  const Tensor t = arange(6).reshape({2, 3}).transpose(0, 1);
  const Tensor r = t.reshape({-1});
  EXPECT_EQ(r.to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(arange(6).reshape({3, -1}).shape(), (Shape{3, 2}));
  EXPECT_EQ(arange(6).unsqueeze(0).shape(), (Shape{1, 6}));
  EXPECT_EQ(arange(6).unsqueeze(-1).squeeze(1).shape(), (Shape{6}));
}

TEST(Tensor, CopyBroadcastsAndConvertsDtype) {
  Tensor dst = Tensor::zeros({2, 3}, DType::F64);
  dst.copy_(Tensor::from_vector({1, 2, 3}, {3}, DType::BF16));
  EXPECT_EQ(dst.to_vector(), (std::vector<double>{1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(dst.clone().storage() == dst.storage(), false);
}

TEST(Tensor, EveryDtypeStoresAndReads) {
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I64, DType::U8}) {
    const Tensor x = Tensor::full({5}, 3.0, t);
    EXPECT_EQ(x.dtype(), t);
    EXPECT_EQ(x.to_vector(), std::vector<double>(5, 3.0)) << dtype_name(t);
  }
}

TEST(Tensor, DeviceChoices) {
  EXPECT_EQ(pick_device(DeviceChoice::Cpu), Device::cpu());
  if (!cuda_available()) {
    EXPECT_EQ(pick_device(DeviceChoice::Auto), Device::cpu());
    EXPECT_THROW(pick_device(DeviceChoice::Cuda), Error);
  }
}

TEST(Tensor, MemoryIsReturnedWhenTensorsDie) {
  const size_t before = memory_stats(Device::cpu()).in_use;
  {
    const Tensor big = Tensor::zeros({1000, 1000});
    EXPECT_GE(memory_stats(Device::cpu()).in_use, before + 4000000);
  }
  EXPECT_EQ(memory_stats(Device::cpu()).in_use, before);
}

// Runs f on one OpenMP thread and on several (at least 2): the results must be the
// same bits. The thread count is restored afterwards.
template <class F>
void expect_same_bits_on_one_and_several_threads(F f, const char* what) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<double> one = f().to_vector();
  omp_set_num_threads(std::max(2, threads));
  const std::vector<double> several = f().to_vector();
  omp_set_num_threads(threads);
  EXPECT_EQ(one, several) << what;
}

// Sums over the middle of [outer, r, inner] (bias gradients, BatchNorm statistics) go
// through the CPU's chunked column sum: it must equal a plain double loop, across chunk
// boundaries (r = 1000 is 8 chunks), with inf kept and -0 + -0 = +0 (as torch.sum,
// which starts from +0), and give the same bits on one thread as on several.
TEST(Tensor, ColumnSumsMatchALoopWhateverTheThreads) {
  Generator gen(7);
  for (DType t : {DType::F32, DType::F64}) {
    const Tensor x = randn({3, 1000, 5}, gen, 0, 1, t);
    const std::vector<double> v = x.to_vector();
    const Tensor got = sum(x, {1});
    ASSERT_EQ(got.shape(), (Shape{3, 5}));
    const std::vector<double> g = got.to_vector();
    for (int o = 0; o < 3; ++o)
      for (int i = 0; i < 5; ++i) {
        double want = 0;
        for (int j = 0; j < 1000; ++j) want += v[size_t((o * 1000 + j) * 5 + i)];
        EXPECT_NEAR(g[size_t(o * 5 + i)], want, t == DType::F32 ? 1e-4 : 1e-12) << "o " << o << " i " << i;
      }
    expect_same_bits_on_one_and_several_threads([&] { return sum(x, {1}); }, "column sums");
  }
  const Tensor special = Tensor::from_vector({-0.0, 1.0, -0.0, INFINITY}, {2, 2});
  const std::vector<double> s = sum(special, {0}).to_vector();
  EXPECT_TRUE(s[0] == 0 && !std::signbit(s[0])) << s[0];
  EXPECT_EQ(s[1], INFINITY);
}

// A 16-bit mean divides before it rounds: an f16 sum of 3,136 values of 30 (94,080) or of
// 64 values of 2,000 is past f16's largest finite value (65,504), its mean is not. Each
// path of the reduction: along rows, down long columns (the SE pool), down short ones.
// The mean of nothing is NaN, as torch's.
TEST(Tensor, SixteenBitMeansDoNotOverflowWhereTheirSumsWould) {
  for (DType t : {DType::F16, DType::BF16}) {
    const std::string name = dtype_name(t);
    EXPECT_EQ(mean(Tensor::full({2, 3136}, 30.0, t), {1}).to_vector(), (std::vector<double>{30, 30})) << name;
    EXPECT_EQ(global_avg_pool(Tensor::full({1, 56, 56, 4}, 30.0, t)).to_vector(), std::vector<double>(4, 30.0)) << name;
    EXPECT_EQ(mean(Tensor::full({1, 64, 3}, 2000.0, t), {1}).to_vector(), std::vector<double>(3, 2000.0)) << name;
  }
  EXPECT_TRUE(std::isnan(mean(Tensor::zeros({0, 3}), {0}).to_vector()[0]));
}

TEST(Tensor, SumSquaresMatchesALoopWhateverTheThreads) {
  Generator gen(8);
  // Lengths around the CPU's block of 2^14 and the CUDA kernel's 8192, and an empty one.
  const std::vector<int64_t> lengths = {1, 5, 8192, 16385, 70001, 0};
  for (DType t : {DType::F32, DType::F64, DType::BF16}) {
    std::vector<Tensor> xs;
    for (int64_t n : lengths) xs.push_back(randn({n}, gen, 0, 2, t));
    xs.push_back(randn({3, 7, 5}, gen, 0, 1, t).transpose(0, 2));  // not contiguous
    const Tensor got = sum_squares(xs);
    ASSERT_EQ(got.shape(), (Shape{int64_t(xs.size())}));
    EXPECT_EQ(got.dtype(), t == DType::F64 ? DType::F64 : DType::F32);
    const std::vector<double> g = got.to_vector();
    for (size_t k = 0; k < xs.size(); ++k) {
      double want = 0;
      for (double v : xs[k].to_vector()) want += v * v;
      EXPECT_NEAR(g[k], want, (t == DType::F64 ? 1e-12 : 1e-6) * (1 + want)) << dtype_name(t) << " tensor " << k;
    }
    expect_same_bits_on_one_and_several_threads([&] { return sum_squares(xs); }, "sum_squares");
  }
  EXPECT_THROW(sum_squares({Tensor::zeros({2}), Tensor::zeros({2}, DType::F64)}), Error);
  EXPECT_THROW(sum_squares({}), Error);
}

// The CPU's dense convolution (kernels/cpu/conv.cpp: bands of output rows unfolded in
// cache) against direct loops in double, forward and every gradient: shapes of one band
// and of several with a ragged last band, stride 2 with padding, batch 1, a map the
// size of the kernel; and the same bits on one thread and on several.
TEST(Conv, CpuConvolutionMatchesDirectLoopsAcrossBands) {
  struct Case {
    int64_t n, h, w, c, cout, k, stride, pad;
  };
  // {2, 50, 60, 3, 8, 7}: 54 x 147 patch values per output row, 8 rows a band, 44 rows.
  const Case cases[] = {{2, 50, 60, 3, 8, 7, 1, 0}, {3, 23, 17, 5, 6, 3, 2, 1}, {1, 40, 300, 4, 5, 5, 2, 2}, {2, 5, 5, 2, 3, 5, 1, 0}};
  Generator gen(11);
  for (const Case& k : cases)
    for (DType t : {DType::F64, DType::F32}) {
      const std::string what = "n " + std::to_string(k.n) + " " + std::to_string(k.h) + "x" + std::to_string(k.w) + " c " +
                               std::to_string(k.c) + " k " + std::to_string(k.k) + " stride " + std::to_string(k.stride) +
                               " pad " + std::to_string(k.pad) + " " + dtype_name(t);
      const int64_t ho = (k.h + 2 * k.pad - k.k) / k.stride + 1, wo = (k.w + 2 * k.pad - k.k) / k.stride + 1;
      Tensor x = randn({k.n, k.h, k.w, k.c}, gen, 0, 1, t), w = randn({k.cout, k.c, k.k, k.k}, gen, 0, 0.2, t),
             b = randn({k.cout}, gen, 0, 1, t);
      const Tensor dy = randn({k.n, ho, wo, k.cout}, gen, 0, 1, t);
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      b.set_requires_grad(true);
      const Tensor y = conv2d(x, w, b, k.stride, k.pad);
      ASSERT_EQ(y.shape(), (Shape{k.n, ho, wo, k.cout})) << what;
      sum(mul(y, dy)).backward();

      const std::vector<double> xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector(), dv = dy.to_vector();
      std::vector<double> ye(size_t(y.numel())), dxe(xv.size(), 0.0), dwe(wv.size(), 0.0), dbe(bv.size(), 0.0);
      for (int64_t n = 0; n < k.n; ++n)
        for (int64_t oy = 0; oy < ho; ++oy)
          for (int64_t ox = 0; ox < wo; ++ox)
            for (int64_t o = 0; o < k.cout; ++o) {
              const size_t yi = size_t(((n * ho + oy) * wo + ox) * k.cout + o);
              double acc = bv[size_t(o)];
              dbe[size_t(o)] += dv[yi];
              for (int64_t i = 0; i < k.k; ++i)
                for (int64_t j = 0; j < k.k; ++j) {
                  const int64_t iy = oy * k.stride - k.pad + i, ix = ox * k.stride - k.pad + j;
                  if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
                  for (int64_t c = 0; c < k.c; ++c) {
                    const size_t xi = size_t(((n * k.h + iy) * k.w + ix) * k.c + c), wi = size_t(((o * k.c + c) * k.k + i) * k.k + j);
                    acc += xv[xi] * wv[wi];
                    dxe[xi] += dv[yi] * wv[wi];
                    dwe[wi] += dv[yi] * xv[xi];
                  }
                }
              ye[yi] = acc;
            }
      const double tol = t == DType::F64 ? 1e-10 : 2e-4;
      test::expect_close(y, Tensor::from_vector(ye, y.shape(), DType::F64), tol, what + ": y");
      test::expect_close(x.grad(), Tensor::from_vector(dxe, x.shape(), DType::F64), tol, what + ": dx");
      test::expect_close(w.grad(), Tensor::from_vector(dwe, w.shape(), DType::F64), tol * 10, what + ": dw");
      test::expect_close(b.grad(), Tensor::from_vector(dbe, b.shape(), DType::F64), tol * 10, what + ": db");
      for (int g = 0; g < 2; ++g)  // dx, then dw: each the same bits on one thread and on several
        expect_same_bits_on_one_and_several_threads(
            [&] {
              Tensor xs = x.detach(), ws = w.detach();
              xs.set_requires_grad(true);
              ws.set_requires_grad(true);
              sum(mul(conv2d(xs, ws, b.detach(), k.stride, k.pad), dy)).backward();
              return g == 0 ? xs.grad() : ws.grad();
            },
            (what + (g == 0 ? ": dx" : ": dw")).c_str());
    }
}

// The depthwise convolution's weight and bias gradients sum each image in double on the
// threads, then the images in order: against a plain double loop, and the same bits on
// one thread as on several (5 images: an uneven split of the images over the threads).
TEST(Conv, DepthwiseWeightGradientIsTheSameOnAnyThreadCount) {
  const int64_t n = 5, h = 9, w = 11, c = 40, k = 7, p = k / 2;
  Generator gen(12);
  for (DType t : {DType::F64, DType::F32}) {
    const Tensor x = randn({n, h, w, c}, gen, 0, 1, t), wt = randn({c, 1, k, k}, gen, 0, 0.2, t),
                 b = randn({c}, gen, 0, 1, t), dy = randn({n, h, w, c}, gen, 0, 1, t);
    const auto grads = [&](int which) {
      Tensor ws = wt.detach(), bs = b.detach();
      ws.set_requires_grad(true);
      bs.set_requires_grad(true);
      sum(mul(depthwise_conv2d(x, ws, bs), dy)).backward();
      return which == 0 ? ws.grad() : bs.grad();
    };
    const std::vector<double> xv = x.to_vector(), dv = dy.to_vector();
    std::vector<double> dwe(size_t(c * k * k), 0.0), dbe(size_t(c), 0.0);
    for (int64_t i = 0; i < n * h * w; ++i)
      for (int64_t ch = 0; ch < c; ++ch) dbe[size_t(ch)] += dv[size_t(i * c + ch)];
    for (int64_t im = 0; im < n; ++im)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t z = 0; z < w; ++z)
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j) {
              const int64_t yi = y + i - p, zi = z + j - p;
              if (yi < 0 || yi >= h || zi < 0 || zi >= w) continue;
              for (int64_t ch = 0; ch < c; ++ch)
                dwe[size_t((ch * k + i) * k + j)] +=
                    dv[size_t(((im * h + y) * w + z) * c + ch)] * xv[size_t(((im * h + yi) * w + zi) * c + ch)];
            }
    const double tol = t == DType::F64 ? 1e-10 : 2e-4;
    test::expect_close(grads(0), Tensor::from_vector(dwe, wt.shape(), DType::F64), tol, std::string(dtype_name(t)) + ": dw");
    test::expect_close(grads(1), Tensor::from_vector(dbe, b.shape(), DType::F64), tol, std::string(dtype_name(t)) + ": db");
    expect_same_bits_on_one_and_several_threads([&] { return grads(0); }, "depthwise dw");
    expect_same_bits_on_one_and_several_threads([&] { return grads(1); }, "depthwise db");
  }
}

// The CPU's GELU runs glibc's SIMD erff/expf where the toolchain has them
// (kernels/cpu/vector_math.h): over a dense sweep of inputs, f32 forward, bias+GELU and
// backward stay within a few f32 ulp of the same formulas in f64. The error is measured
// against |x| + |y|: 1 + erf(x / sqrt 2) cancels for very negative x, in f32 as in
// PyTorch, so the relative error of a tiny output is no test of erff.
TEST(Tensor, GeluInF32IsAccurateOverItsWholeRange) {
  std::vector<double> xs;
  for (double x = -12; x <= 12; x += 1.0 / 1024) xs.push_back(x);
  const int64_t n = int64_t(xs.size());
  const Tensor x64 = Tensor::from_vector(xs, {n}, DType::F64);  // every x is exact in f32
  const Tensor zero = Tensor::zeros({1}, DType::F64);
  auto check = [&](const Tensor& got32, const Tensor& want64, const char* what) {
    const std::vector<double> a = got32.to_vector(), b = want64.to_vector();
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double e = std::fabs(a[i] - b[i]) / (std::fabs(xs[i]) + std::fabs(b[i]) + 1e-6);
      if (!(e <= worst)) { worst = e; at = i; }
    }
    EXPECT_LE(worst, 3e-7) << what << " at x = " << xs[at] << ": " << a[at] << " vs " << b[at];
  };
  check(gelu(x64.to(DType::F32)), gelu(x64), "gelu");
  check(bias_gelu(x64.to(DType::F32).reshape({n, 1}), zero.to(DType::F32)), bias_gelu(x64.reshape({n, 1}), zero), "bias_gelu");
  const Tensor a = x64.to(DType::F32).detach().set_requires_grad(), b = x64.detach().clone().set_requires_grad();
  gelu(a).backward(Tensor::ones({n}));
  gelu(b).backward(Tensor::ones({n}, DType::F64));
  check(a.grad(), b.grad(), "gelu backward");
}

// ConvNeXt's pwconv1 -> GELU -> pwconv2 with the tanh GELU: the GEMM-epilogue path
// (gelu_mlp's CPU twin of cuBLASLt's GELU_AUX_BIAS and DGELU_BGRAD) gives the unfused
// ops' bits in f32 (the same products, the same GELU formulas, the bias gradient summed
// in the same chunks), and their values in bf16 to its rounding. 126 rows: two of the
// bias gradient's 64-row chunks, the second partial.
TEST(GeluMlp, TheGemmEpiloguePathGivesTheUnfusedBits) {
  using namespace test;
  Generator gen(7);
  for (DType t : {DType::F32, DType::BF16}) {
    const std::vector<Tensor> in = {randn({2, 7, 9, 40}, gen, 0, 1, t), randn({160, 40}, gen, 0, 0.2, t),
                                    randn({160}, gen, 0, 0.5, t), randn({40, 160}, gen, 0, 0.1, t)};
    const Tensor dy = randn({2, 7, 9, 40}, gen, 0, 1, t);
    const GeluMlpRun fused = run_gelu_mlp(in, dy, true), unfused = run_gelu_mlp(in, dy, false);
    EXPECT_EQ(fused.op, "gelu_mlp");
    EXPECT_EQ(unfused.op, "linear");
    const char* names[] = {"y", "dx", "dw1", "db1", "dw2"};
    for (size_t i = 0; i < fused.values.size(); ++i) {
      ASSERT_EQ(fused.values[i].shape(), unfused.values[i].shape()) << names[i];
      if (t == DType::F32)
        EXPECT_EQ(fused.values[i].to_vector(), unfused.values[i].to_vector()) << names[i] << " differs in f32";
      else  // the epilogue applies the bias and GELU before the product is rounded to bf16
        expect_rel(fused.values[i], unfused.values[i], 2e-2, std::string("bf16 ") + names[i]);
    }
  }
}

// Where the epilogue does not apply, gelu_mlp is the unfused ops: the erf GELU (ConvNeXt's),
// f64, a hidden width that is not a multiple of 8 (cuBLASLt's rule for the kept
// pre-activation); operands that do not chain are refused by name.
TEST(GeluMlp, RunsUnfusedWhereTheEpilogueDoesNotApplyAndChecksItsShapes) {
  using namespace test;
  Generator gen(8);
  const Tensor x = randn({5, 8}, gen), w1 = randn({16, 8}, gen), b1 = randn({16}, gen), w2 = randn({8, 16}, gen);
  EXPECT_EQ(gelu_mlp(x, w1, b1, w2, GeluApprox::Tanh, true).grad_fn(), nullptr);  // no gradient asked: no node
  const Tensor xg = x.detach().clone().set_requires_grad();
  EXPECT_EQ(producing_op(gelu_mlp(xg, w1, b1, w2, GeluApprox::Tanh, true)), "gelu_mlp");
  EXPECT_EQ(producing_op(gelu_mlp(xg, w1, b1, w2, GeluApprox::None, true)), "linear");
  EXPECT_EQ(producing_op(gelu_mlp(xg.to(DType::F64), w1.to(DType::F64), b1.to(DType::F64), w2.to(DType::F64), GeluApprox::Tanh, true)),
            "linear");
  const Tensor w1_12 = randn({12, 8}, gen), b1_12 = randn({12}, gen), w2_12 = randn({8, 12}, gen);
  EXPECT_EQ(producing_op(gelu_mlp(xg, w1_12, b1_12, w2_12, GeluApprox::Tanh, true)), "linear");
  expect_error([&] { gelu_mlp(x, w1, b1, w2_12, GeluApprox::Tanh, true); }, "do not chain");
  expect_error([&] { gelu_mlp(x, w1, b1_12, w2, GeluApprox::Tanh, true); }, "do not chain");
}

}  // namespace
}  // namespace emonext
