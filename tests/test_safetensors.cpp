// safetensors round trip and refusal of damaged files.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/ops.h"
#include "core/safetensors.h"

namespace emonext {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("emonext_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

TEST(SafeTensors, RoundTripsEveryDtypeAndMetadata) {
  const std::string path = temp_path("rt.safetensors");
  Generator gen(5);
  const Tensor a = randn({3, 4}, gen);
  const Tensor b = Tensor::from_ints(std::vector<int64_t>{7, -1}, {2});
  const Tensor c = randn({5}, gen).to(DType::BF16);
  const Tensor d = Tensor::full({2, 2}, 9, DType::U8).transpose(0, 1);  // non-contiguous on purpose
  save_safetensors(path, {{"a", a}, {"b", b}, {"c", c}, {"d", d}}, {{"model", "atto"}, {"note", "quote \" and \\"}});
  const SafeTensors st = load_safetensors(path);
  ASSERT_EQ(st.tensors.size(), 4u);
  EXPECT_EQ(st.at("a").to_vector(), a.to_vector());
  EXPECT_EQ(st.at("b").dtype(), DType::I64);
  EXPECT_EQ(st.at("b").to_int_vector(), (std::vector<int64_t>{7, -1}));
  EXPECT_EQ(st.at("c").dtype(), DType::BF16);
  EXPECT_EQ(st.at("c").to_vector(), c.to_vector());
  EXPECT_EQ(st.at("d").to_vector(), std::vector<double>(4, 9.0));
  EXPECT_EQ(st.metadata.at("model"), "atto");
  EXPECT_EQ(st.metadata.at("note"), "quote \" and \\");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_THROW(st.at("missing"), Error);
  std::remove(path.c_str());
}

TEST(SafeTensors, RefusesTruncatedAndCorruptFiles) {
  const std::string path = temp_path("bad.safetensors");
  save_safetensors(path, {{"w", Tensor::ones({100})}});
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 10);
  try {
    load_safetensors(path);
    ADD_FAILURE() << "a truncated file loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside"), std::string::npos) << e.what();
  }
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const uint64_t len = 12;
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << "{\"w\": {dtyp";
  }
  EXPECT_THROW(load_safetensors(path), Error);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "xx";
  }
  EXPECT_THROW(load_safetensors(path), Error);
  EXPECT_THROW(load_safetensors(temp_path("does_not_exist")), Error);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace emonext
