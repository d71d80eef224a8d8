// safetensors round trip and refusal of damaged files.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/ops.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

namespace emonext {
namespace {


TEST(SafeTensors, RoundTripsEveryDtypeAndMetadata) {
  const test::ScratchDir dir("safetensors_rt");
  const std::string path = dir + "/rt.safetensors";
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
  EXPECT_EQ(load_safetensors_metadata(path), st.metadata);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_THROW(st.at("missing"), Error);
}

// Strings in the header as JSON writes them: control characters round-trip (written as
// \u00XX), and a header from another writer may spell any character \uXXXX (Python's
// json.dumps does for every non-ASCII one), surrogate pairs included.
TEST(SafeTensors, HeaderStringsReadEveryJsonEscape) {
  const test::ScratchDir dir("safetensors_escapes");
  const std::string path = dir + "/e.safetensors";
  const std::string odd = "tab\there, line\nbreak, cr\r, bell\x07, caf\xc3\xa9";
  save_safetensors(path, {{"w", Tensor::ones({1})}}, {{"note", odd}});
  EXPECT_EQ(load_safetensors(path).metadata.at("note"), odd);

  const auto write_header = [&](const std::string& header) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const uint64_t len = header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header;
  };
  write_header(R"({"__metadata__":{"k":"caf\u00e9 \u00E9\/\"\\ \ud83d\ude00 \u0041\b\f"}})");
  EXPECT_EQ(load_safetensors(path).metadata.at("k"), "caf\xc3\xa9 \xc3\xa9/\"\\ \xf0\x9f\x98\x80 A\b\f");
  for (const char* bad : {R"({"__metadata__":{"k":"\u00g0"}})", R"({"__metadata__":{"k":"\ud83d x"}})",
                          R"({"__metadata__":{"k":"\u00)"}) {
    write_header(bad);
    EXPECT_THROW(load_safetensors(path), Error) << bad;
  }
}

TEST(SafeTensors, RefusesTruncatedAndCorruptFiles) {
  const test::ScratchDir dir("safetensors_bad");
  const std::string path = dir + "/bad.safetensors";
  save_safetensors(path, {{"w", Tensor::ones({100})}});
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 10);
  EXPECT_NO_THROW(load_safetensors_metadata(path)) << "the header alone is whole";
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
  EXPECT_THROW(load_safetensors_metadata(path), Error);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "xx";
  }
  EXPECT_THROW(load_safetensors(path), Error);
  EXPECT_THROW(load_safetensors(dir + "/does_not_exist"), Error);
}

// A write that fails part way (a full disk; here a file-size limit, which fails the
// write the same way) is an error naming the file, and leaves no partial .tmp file
// behind, nor touches the file already there.
TEST(SafeTensors, AFailedWriteSaysSoAndLeavesNothingBehind) {
  const test::ScratchDir dir("safetensors_full");
  const std::string path = dir + "/w.safetensors";
  save_safetensors(path, {{"w", Tensor::ones({10})}});
  const auto before = std::filesystem::file_size(path);
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  rlimit small = old;
  small.rlim_cur = 4096;
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // the write fails with EFBIG instead of killing us
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string message = test::error_of([&] { save_safetensors(path, {{"w", Tensor::ones({100000})}}); });
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(message.find(path + ".tmp: write failed (disk full?)"), std::string::npos) << message;
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(std::filesystem::file_size(path), before);
  EXPECT_EQ(load_safetensors(path).at("w").numel(), 10);
}

}  // namespace
}  // namespace emonext
