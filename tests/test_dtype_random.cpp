// 16-bit float conversions against PyTorch's bits, and the Philox generator
// against the published known-answer vectors.
#include <gtest/gtest.h>

#include <cmath>

#include "core/base/philox.h"
#include "core/ops.h"

namespace emonext {
namespace {

struct Conversion { double value; uint16_t f16_bits, bf16_bits; };

// Bits from torch.tensor([v], dtype=float32).half() / .bfloat16() (PyTorch 1.13).
const Conversion kConversions[] = {
    {0.1, 0x2e66, 0x3dcd}, {1.0, 0x3c00, 0x3f80}, {-2.5, 0xc100, 0xc020}, {65504.0, 0x7bff, 0x4780},
    {65519.0, 0x7bff, 0x4780}, {65520.0, 0x7c00, 0x4780}, {1e-08, 0x0000, 0x322c}, {5.96e-08, 0x0001, 0x3380},
    {3e-05, 0x01f7, 0x37fc}, {1.00146484375, 0x3c02, 0x3f80}, {1.00048828125, 0x3c00, 0x3f80},
    {3.14159, 0x4248, 0x4049}, {-0.0, 0x8000, 0x8000}, {1e+30, 0x7c00, 0x714a},
    {2.9802322387695312e-08, 0x0000, 0x3300}, {8.940696716308594e-08, 0x0002, 0x33c0},
};

TEST(DType, HalfAndBFloat16RoundLikePyTorch) {
  for (const Conversion& c : kConversions) {
    EXPECT_EQ(f16(float(c.value)).bits, c.f16_bits) << "f16(" << c.value << ")";
    EXPECT_EQ(bf16(float(c.value)).bits, c.bf16_bits) << "bf16(" << c.value << ")";
  }
}

TEST(DType, EveryHalfValueRoundTrips) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    f16 h;
    h.bits = uint16_t(bits);
    const float f = float(h);
    if (std::isnan(f)) continue;
    EXPECT_EQ(f16(f).bits, bits) << "f16 bits " << bits;
    bf16 b;
    b.bits = uint16_t(bits);
    if (!std::isnan(float(b))) {
      EXPECT_EQ(bf16(float(b)).bits, bits) << "bf16 bits " << bits;
    }
  }
}

TEST(DType, CastsThroughTensors) {
  const Tensor x = Tensor::from_vector({1.5, -2.0, 3.75, 255.0}, {4}, DType::F32);
  EXPECT_EQ(x.to(DType::I64).to_int_vector(), (std::vector<int64_t>{1, -2, 3, 255}));
  EXPECT_EQ(x.to(DType::BF16).to(DType::F64).to_vector(), (std::vector<double>{1.5, -2.0, 3.75, 255.0}));
  EXPECT_EQ(x.to(DType::F16).to_vector(), (std::vector<double>{1.5, -2.0, 3.75, 255.0}));
  const Tensor bytes = Tensor::from_vector({0.0, 7.0, 255.0}, {3}, DType::F32).to(DType::U8);
  EXPECT_EQ(bytes.to_int_vector(), (std::vector<int64_t>{0, 7, 255}));
}

// Known-answer tests of Random123 (kat_vectors): philox4x32 with 10 rounds.
TEST(Philox, MatchesRandom123KnownAnswers) {
  philox::U32x4 zero = philox::philox4x32_10(0, 0);
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[1], 0xe169c58du);
  EXPECT_EQ(zero.v[2], 0xbc57ac4cu);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);
}

TEST(Random, SameSeedSameNumbersAndGeneratorAdvances) {
  Generator g1(42), g2(42);
  const Tensor a = rand({1000}, g1), b = rand({1000}, g2);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  const Tensor c = rand({1000}, g1);  // the generator moved on
  EXPECT_NE(a.to_vector(), c.to_vector());
  EXPECT_EQ(g1.counter(), 2u * 250u);
}

TEST(Random, UniformAndNormalHaveTheirMoments) {
  Generator gen(7);
  const std::vector<double> u = rand({100000}, gen, -1.0, 3.0).to_vector();
  double mn = 1e9, mx = -1e9, s = 0;
  for (double v : u) { mn = std::min(mn, v); mx = std::max(mx, v); s += v; }
  EXPECT_GE(mn, -1.0);
  EXPECT_LT(mx, 3.0);
  EXPECT_NEAR(s / double(u.size()), 1.0, 0.02);
  const std::vector<double> z = randn({100000}, gen, 2.0, 0.5).to_vector();
  double m = 0, m2 = 0;
  for (double v : z) { m += v; m2 += v * v; }
  m /= double(z.size());
  EXPECT_NEAR(m, 2.0, 0.01);
  EXPECT_NEAR(std::sqrt(m2 / double(z.size()) - m * m), 0.5, 0.01);
}

TEST(Random, ElementValuesDoNotDependOnTheDtype) {
  // Element i always draws the same Philox lane: a bf16 fill is the f32 fill, rounded.
  Generator g1(3), g2(3);
  const std::vector<double> f = randn({37}, g1, 0, 1, DType::F32).to(DType::BF16).to_vector();
  const std::vector<double> b = randn({37}, g2, 0, 1, DType::BF16).to_vector();
  EXPECT_EQ(f, b);
}

}  // namespace
}  // namespace emonext
