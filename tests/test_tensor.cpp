// Tensor metadata, views sharing storage, contiguous(), in-place copies.
#include <gtest/gtest.h>

#include "core/autograd.h"
#include "core/ops.h"

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

TEST(Tensor, DeviceParsing) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3").index, 3);
  EXPECT_THROW(Device::parse("gpu"), Error);
  EXPECT_THROW(Device::parse("cuda:x"), Error);
}

TEST(Tensor, MemoryIsReturnedWhenTensorsDie) {
  const size_t before = memory_stats(Device::cpu()).in_use;
  {
    const Tensor big = Tensor::zeros({1000, 1000});
    EXPECT_GE(memory_stats(Device::cpu()).in_use, before + 4000000);
  }
  EXPECT_EQ(memory_stats(Device::cpu()).in_use, before);
}

}  // namespace
}  // namespace emonext
