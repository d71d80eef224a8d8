// Files from strangers: each class of hostile input that once crashed a reader, read
// out of bounds, overflowed or asked for gigabytes, made small here and refused
// cleanly (an emonext::Error naming the file and the field). Run under the sanitizer
// build in CI, where a read out of bounds or a leak fails the test too.
#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/base/limits.h"
#include "core/safetensors.h"
#include "core/torch_file.h"
#include "models/checkpoint.h"
#include "models/pretrained.h"
#include "tests/image_bytes.h"
#include "tests/torch_bytes.h"
#include "tests/test_util.h"
#include "train/config.h"
#include "train/data.h"
#include "train/image.h"
#include "train/report_html.h"

namespace emonext::test {
namespace {

namespace fs = std::filesystem;

std::string bytes_of(const std::vector<char>& v) { return std::string(v.begin(), v.end()); }

PyRef load_torch_bytes(const std::string& bytes) { return parse_torch_file(std::vector<char>(bytes.begin(), bytes.end()), "t.pt"); }

TEST(Untrusted, TheHandMadeTorchFileReads) {  // the helpers above make a file the reader takes
  const PyRef top = load_torch_bytes(torch_file(tensor_pickle(4, {2, 2}, {2, 1})));
  ASSERT_TRUE(top->get("w"));
  EXPECT_EQ(top->get("w")->tensor.shape(), (Shape{2, 2}));
}

TEST(Untrusted, TorchTensorRecordsThatLieAreRefused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {tensor_pickle(4, {2, 2}, {-2, 1}, 2), "negative stride"},
      {tensor_pickle(4, {2, 2}, {1}), "1 strides for 2 dimensions"},
      {tensor_pickle(4, {100, 100}, {0, 0}), "10000 elements, more than its storage's 4"},
      {tensor_pickle(4, {1000000000, 1000000000}, {0, 0}), "more than 17179869184 elements"},
      {tensor_pickle(int64_t(1) << 62, {1}, {1}), "size overflows"},
      {tensor_pickle(4, {4, 1}, {int64_t(1) << 62, 1}), "size overflows"},
      {tensor_pickle(4, {4}, {1}, -1), "runs past its storage"},
      {tensor_pickle(4, {-3}, {1}), "negative size -3"},
      {tensor_pickle(4, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1, 1}), "9 dimensions (at most 8)"},
      // No elements, but sizes whose product overflows the strides (2^62 * 2^62).
      {tensor_pickle(4, {0, int64_t(1) << 62, int64_t(1) << 62}, {1, 1, 1}), "more than 17179869184 elements"},
      {tensor_pickle(4, {0, int64_t(1) << 20, int64_t(1) << 20}, {1, 1, 1}), "more than 17179869184 elements"},
  };
  for (const auto& [pickle, says] : cases) expect_error([&] { load_torch_bytes(torch_file(pickle)); }, says);
}

TEST(Untrusted, TorchTensorsThatShareAStorageMayNotAskForMoreThanTheFile) {
  // The same view 2,000 times (tied weights, many times over): one copy, one tensor.
  const int64_t numel = 1 << 16;
  const PyRef tied = load_torch_bytes(torch_file(shared_storage_pickle(2000, numel, 0), size_t(numel) * 4));
  EXPECT_EQ(tied->get("w0")->tensor.data_ptr(), tied->get("w1999")->tensor.data_ptr());
  // 2,000 views of one 256 KiB storage that overlap: 256 MiB asked of a file of 300 KB.
  expect_error([&] { load_torch_bytes(torch_file(shared_storage_pickle(2000, numel, 1), size_t(numel) * 4)); },
               "its tensors ask for more than the file's");
}

TEST(Untrusted, TorchZipOffsetsThatWrapAreRefused) {
  // A zip64 entry size near 2^64: data offset + size wraps past the bounds check it once passed.
  const std::string f = zip({{"archive/data.pkl", "\x80\x02}."}, {"archive/data/0", "abcd", ~uint64_t(0) - 10}});
  expect_error([&] { load_torch_bytes(f); }, "entry archive/data/0 runs past the end of the file");
  // A directory that claims more entries than the file can hold.
  std::string g = zip({{"archive/data.pkl", "\x80\x02}."}});
  g.replace(g.size() - 12, 2, le(0xFFFE, 2));
  expect_error([&] { load_torch_bytes(g); }, "t.pt: corrupt or truncated torch file");
}

TEST(Untrusted, DeepOrSelfReferentialPicklesAreRefusedAndFreed) {
  // 200,000 nested lists: freed by recursion this would overflow the stack.
  const int depth = 200000;
  expect_error([&] { load_torch_bytes(torch_file("\x80\x02" + std::string(depth, ']') + std::string(depth - 1, 'a') + ".")); },
               "nests containers more than 64 deep");
  // The same chain built top-down through the memo, which a depth count at each append misses.
  std::string chain = "\x80\x02]q" + std::string(1, '\0');
  for (int k = 1; k < 255; ++k) chain += "]q" + std::string(1, char(k)) + "h" + std::string(1, char(k - 1)) + "h" + std::string(1, char(k)) + "a";
  expect_error([&] { load_torch_bytes(torch_file(chain + "h" + std::string(1, '\0') + ".")); }, "nests containers more than 64 deep");
  // A list that holds itself (a reference cycle, never freed: LeakSanitizer would report it).
  expect_error([&] { load_torch_bytes(torch_file(std::string("\x80\x02]q\x00h\x00", 7) + "a.")); }, "contains itself");
}

// ---- safetensors --------------------------------------------------------------------------------
std::string safetensors(const std::string& header, const std::string& data) { return le(header.size(), 8) + header + data; }

SafeTensors parse(const std::string& bytes) { return parse_safetensors(bytes.data(), bytes.size(), "t.safetensors"); }

TEST(Untrusted, SafetensorsHeadersThatLieAreRefused) {
  expect_error([&] { parse(safetensors(std::string(100000, '[') + std::string(100000, ']'), "")); }, "nesting deeper than 64");
  expect_error([&] { parse(safetensors(R"({"w":{"dtype":"F32","shape":[8589934592,8589934592],"data_offsets":[0,16]}})", std::string(16, 0))); },
               "size overflows");
  expect_error([&] { parse(safetensors(R"({"w":{"dtype":"F32","shape":[17179869184,2],"data_offsets":[0,16]}})", std::string(16, 0))); },
               "more than 17179869184 elements");
  expect_error([&] { parse(safetensors(R"({"w":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}})", "abcd")); },
               "not a 64-bit integer");
  expect_error([&] { parse(safetensors(R"({"w":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}})", "abcd")); },
               "9 dimensions");
  expect_error([&] { parse(safetensors(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", std::string(8, 0))); },
               "not a number");
  // Tensors share bytes, leave a gap, leave bytes over, or appear twice: refused as the
  // reference library refuses them.
  const std::string two = std::string(8, '\0');
  expect_error([&] { parse(safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", two)); },
               "tensor 'b' data [0, 4) overlaps another tensor's");
  expect_error([&] { parse(safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", two)); },
               "tensor 'a' data [4, 8) leaves a gap");
  expect_error([&] { parse(safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", two)); },
               "the tensors hold 4 of the 8 data bytes");
  expect_error([&] { parse(safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", two)); },
               "tensor 'a' appears twice");
  {  // 2,000 entries over one 4 MiB block: 8 GiB asked of a 4 MiB file before; refused now
    std::string header = "{";
    for (int k = 0; k < 2000; ++k) header += std::string(k ? "," : "") + "\"w" + std::to_string(k) + R"(":{"dtype":"F32","shape":[1048576],"data_offsets":[0,4194304]})";
    expect_error([&] { parse(safetensors(header + "}", std::string(size_t(4) << 20, '\0'))); }, "overlaps another tensor's");
  }
  // The header's order is kept, whatever the offsets' (the reference writes names sorted,
  // bytes by dtype).
  const SafeTensors ordered = parse(safetensors(R"({"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", two));
  EXPECT_EQ(ordered.tensors[0].first, "z");
  // A zero beside sizes whose product overflows: nothing to read, but strides that would.
  expect_error([&] { parse(safetensors(R"({"w":{"dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})", "")); },
               "more than 17179869184 elements");
  expect_error([&] { Tensor::empty({0, int64_t(1) << 62, int64_t(1) << 62}); }, "its strides overflow 64 bits");
  // Empty tensors and an empty data section are fine (and copy nothing from nowhere).
  const SafeTensors empty = parse(safetensors(R"({"w":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}})", ""));
  EXPECT_EQ(empty.at("w").numel(), 0);
  const ScratchDir d("untrusted_st");
  expect_error([&] { load_safetensors(d.path()); }, "not a file");
  expect_error([&] { load_safetensors_metadata(d.path()); }, "not a file");
  expect_error([&] { load_torch_file(d.path()); }, "not a file");
  expect_error([&] { load_gray_image(d.path()); }, "not a file");
}

// ---- checkpoints, training states, settings ------------------------------------------------------
TEST(Untrusted, CheckpointMetadataIsParsedAndBounded) {
  const auto info = [](std::map<std::string, std::string> m) { read_checkpoint_info(m, "c.safetensors"); };
  const std::map<std::string, std::string> ok = {{"model", "atto"}, {"classes", "7"}, {"image_size", "48"},
                                                 {"labels", "a,b,c,d,e,f,g"}};
  info(ok);
  auto m = ok;
  m["image_size"] = "4000000000";
  expect_error([&] { info(m); }, "'image_size': 4000000000 is out of range [32, 2048]");
  m = ok;
  m["classes"] = "7abc";
  expect_error([&] { info(m); }, "'classes': '7abc' is not a whole number");
  m["classes"] = "99999999999999999999";
  expect_error([&] { info(m); }, "is not a whole number");
  m = ok;  // the GELU's form: erf when absent (files from before the key), erf or tanh, nothing else
  EXPECT_EQ(read_checkpoint_info(m, "c").gelu, GeluApprox::None);
  m["gelu"] = "tanh";
  EXPECT_EQ(read_checkpoint_info(m, "c").gelu, GeluApprox::Tanh);
  m["gelu"] = "erf";
  EXPECT_EQ(read_checkpoint_info(m, "c").gelu, GeluApprox::None);
  m["gelu"] = std::string(5000, 'x');
  const std::string said = error_of([&] { info(m); });
  EXPECT_NE(said.find("metadata 'gelu' is 'xxxx"), std::string::npos) << said;
  EXPECT_LT(said.size(), 200u) << "the hostile value is quoted in full";
}

TEST(Untrusted, TrainingStateSettingsAreRangeChecked) {
  std::map<std::string, std::string> m = setting_metadata(TrainConfig{});
  EXPECT_TRUE(config_from_metadata(m, "s").has_value());
  for (const auto& [key, value, says] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"log_every", "0", "--log-every must be at least 1, got 0"},
           {"ema_every", "0", "ema_every must be at least 1, got 0"},
           {"image_size", "4000000000", "--img-size must be in [32, 2048]"},
           {"batch", "-5", "--batch must be in [1, 65536]"},
           {"lr", "nan", "setting lr: 'nan' is not a finite number"},
           {"schedule", "bogus", "setting schedule: is restarts|cosine|constant, got 'bogus'"},
           {"gelu", "exact", "setting gelu: is erf|tanh, got 'exact'"},
           {"epochs", "1e400", "not a number"}}) {
    auto bad = m;
    bad["setting." + key] = value;
    expect_error([&] { config_from_metadata(bad, "s"); }, says);
  }
}

TEST(Untrusted, AScalarWhereAWeightShouldBeIsRefused) {
  const ScratchDir d("untrusted_import");
  // A Facebook-style file whose stem convolution is a 0-dimensional tensor.
  save_safetensors(d + "/w.safetensors", {{"downsample_layers.0.0.weight", Tensor::from_vector({1}, {})}});
  ImportReport report;
  expect_error([&] { import_pretrained(d + "/w.safetensors", WeightSource::Facebook, "", 7, 48, 0, report); },
               "downsample_layers.0.0.weight is [], not a convolution weight");
  expect_error([&] { Tensor::from_vector({1}, {}).size(0); }, "size(0) of a tensor with no dimensions");
}

// ---- images -------------------------------------------------------------------------------------
std::string png(int w, int h) { return png_bytes(w, h); }

GrayImage decode(const std::string& bytes) {
  return decode_gray_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "img");
}

TEST(Untrusted, ImagesAreSizedFromTheirHeaderFirst) {
  EXPECT_EQ(decode(png(40, 30)).w, 40);
  expect_error([&] { decode(png(1, 1000000)); }, "one side is more than 16 times the other");
  expect_error([&] { decode(png(100000, 1)); }, "one side is more than 16 times the other");
  std::string huge = png(64, 64);  // IHDR's width and height (bytes 16..23, big-endian) set to 30000 x 30000
  for (int k : {16, 20}) huge.replace(size_t(k), 4, std::string("\x00\x00\x75\x30", 4));
  expect_error([&] { decode(huge); }, "30000 x 30000 pixels is more than the 67108864 an image may have");
  // Found by emonext_fuzz in stb's PNG decoder: a chunk that claims 2 GB (stb grew its
  // buffer to it before reading), and an empty image-data chunk (a null memcpy).
  std::string claims = png(8, 8);
  const size_t idat = claims.find("IDAT") - 4;
  std::string big = claims;
  big.replace(idat, 4, std::string("\x7f\x00\x00\x30", 4));
  expect_error([&] { decode(big); }, "runs past the end of the file");
  std::string empty_idat = claims;
  empty_idat.insert(idat, std::string("\0\0\0\0IDAT\0\0\0\0", 12));
  expect_error([&] { decode(empty_idat); }, "an empty IDAT chunk");
  // Formats no face dataset uses are not decoded at all: a PNM 2^32 - 1 wide, a BMP INT_MIN high.
  expect_error([&] { decode("P5\n4294967295 1\n255\n" + std::string(16, 'x')); }, "not a JPEG or PNG file");
  expect_error([&] { decode("BM" + std::string(16, '\0') + le(8, 4) + le(uint32_t(INT_MIN), 4) + std::string(64, '\0')); },
               "not a JPEG or PNG file");
  expect_error([&] { decode(""); }, "not a JPEG or PNG file");
}

TEST(Untrusted, DamagedFer2013JpegsAreRefusedOrDecodedWithinBounds) {
  REQUIRE_FER2013();
  const std::string dir = fer2013_dir() + "/train/happy";
  const std::string face = bytes_of(read_all(fs::directory_iterator(dir)->path().string()));
  EXPECT_EQ(decode(face).w, 48);
  // Every single-bit flip in the first 600 bytes (the tables and the start of the scan):
  // each is refused or decoded to 48 x 48, and the sanitizer build sees no bad read.
  int refused = 0;
  for (size_t byte = 0; byte < std::min<size_t>(600, face.size()); ++byte)
    for (int bit = 0; bit < 8; ++bit) {
      std::string damaged = face;
      damaged[byte] = char(damaged[byte] ^ (1 << bit));
      try {
        const GrayImage img = decode(damaged);
        EXPECT_GE(img.w * img.h, 1);
      } catch (const Error&) {
        ++refused;
      }
    }
  EXPECT_GT(refused, 0);
  // Cut short: refused (the decoder warns; a warning is not a half image).
  expect_error([&] { decode(face.substr(0, face.size() / 2)); }, "img: cannot decode the image (JPEG");
}

// A JPEG the decoder refuses at its header, made from a good one by one coordinated edit of
// its frame header (SOF0: FF C0, length, precision, height, width, ...): 12-bit samples,
// lossless (SOF3), arithmetic-coded (SOF9), a zero height.
std::vector<std::pair<std::string, std::string>> jpegs_refused_at_the_header() {
  const std::string good = jpeg_bytes(24, 24);
  const size_t sof = good.find("\xff\xc0");
  std::vector<std::pair<std::string, std::string>> out;
  std::string twelve = good;
  twelve[sof + 4] = 12;
  out.emplace_back("12-bit samples", twelve);
  std::string lossless = good;
  lossless[sof + 1] = char(0xC3);
  out.emplace_back("lossless SOF3", lossless);
  std::string arithmetic = good;
  arithmetic[sof + 1] = char(0xC9);
  out.emplace_back("arithmetic SOF9", arithmetic);
  std::string zero = good;
  zero[sof + 5] = zero[sof + 6] = 0;
  out.emplace_back("zero height", zero);
  return out;
}

TEST(Untrusted, AJpegRefusedAtItsHeaderLeavesTheDecoderAsItFoundIt) {
  // libjpeg-turbo keeps a handle per loader thread; one refused file once left it
  // mid-header, and every later JPEG on that thread failed ("two SOI markers").
  const std::string good = jpeg_bytes(30, 20);
  for (const auto& [what, bad] : jpegs_refused_at_the_header()) {
    SCOPED_TRACE(what);
    expect_error([&] { decode(bad); }, "img: cannot decode the image");
    for (int k = 0; k < 3; ++k) EXPECT_EQ(decode(good).w, 30);
  }
}

TEST(Untrusted, AFolderWithOneBadJpegLosesOnlyThatImage) {
  // A FER2013-style split of good faces and one 12-bit JPEG, read by one loader thread:
  // every good image comes through, the bad one alone is named.
  const ScratchDir d("untrusted_folder");
  const std::string good = jpeg_bytes(48, 48);
  for (const std::string& emotion : fer2013_labels()) {
    fs::create_directories(d + "/val/" + emotion);
    for (int k = 0; k < 3; ++k) std::ofstream(d + "/val/" + emotion + "/" + std::to_string(k) + ".jpg", std::ios::binary) << good;
  }
  std::ofstream(d + "/val/angry/00_bad.jpg", std::ios::binary) << jpegs_refused_at_the_header()[0].second;
  const Dataset data = read_image_folders(d.path(), "val");
  ASSERT_EQ(data.samples.size(), 22u);
  Loader loader(data, 22, 48, false, Augment{}, 0, 0, 1);
  const Batch b = loader.next();
  EXPECT_EQ(b.labels.numel(), 21);
  ASSERT_EQ(b.unreadable.size(), 1u);
  EXPECT_NE(b.unreadable[0].find("00_bad.jpg"), std::string::npos) << b.unreadable[0];
}

TEST(Untrusted, AJpegOfThousandsOfScansIsRefusedAtOnce) {
  const std::string progressive = progressive_jpeg_bytes(40, 32, 3);
  EXPECT_EQ(decode(progressive).w, 40);  // a real encoder's 10 scans decode
  // 10,000 scans over an 8192 x 8192 header: a minute of decoding, refused before any.
  const std::string hostile = with_repeated_scans(progressive, 10000, 8192, 8192);
  const auto t0 = std::chrono::steady_clock::now();
  expect_error([&] { decode(hostile); }, "img: cannot decode the image (JPEG: 10010 scans; at most 100 are read)");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  expect_error([&] { decode(with_repeated_scans(progressive, 91)); }, "101 scans");
}

// ---- what the tools draw and write ------------------------------------------------------------
TEST(Untrusted, ChartsEndForEveryValueTheirPointsCanHold) {
  // A chart's ticks once stepped by a fifth of the span: one ulp apart, the step rounded
  // away and the loop drew the same tick until memory ran out (a plain 1-step run did).
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan(""), big = 1e308, tiny = 4.9e-324;
  const std::vector<std::pair<double, double>> ys = {
      {1.0, 1.0}, {1.0, std::nextafter(1.0, 2.0)}, {2.0794415416798357, std::nextafter(2.0794415416798357, 3.0)},
      {-big, big}, {big, std::numeric_limits<double>::max()}, {0.0, tiny}, {tiny, tiny}, {-tiny, tiny}, {1e-300, 1e300},
      {0.0, 0.0}, {nan, 1.0}, {1.0, inf}, {-inf, inf}, {nan, nan}, {1e15, std::nextafter(1e15, 2e15)}, {-1.0, -1.0}};
  for (const auto& [a, b] : ys) {
    SCOPED_TRACE(testing::Message() << a << " .. " << b);
    for (const auto& x : std::vector<std::pair<double, double>>{{1, 2}, {a, b}, {5, 5}}) {
      for (const html::YScale scale : {html::YScale::Linear, html::YScale::Log}) {
        const std::string svg = html::line_chart("t", "x", {{"s", "#000", {{x.first, a}, {x.second, b}}}}, scale);
        EXPECT_LT(svg.size(), 20000u);
        EXPECT_EQ(svg.compare(svg.size() - 6, 6, "</svg>"), 0);
      }
    }
    const std::string roofline = html::loglog_chart("t", "x", "y", {{"l", "#000", {{a, b}, {b, a}}}}, {{a, b, "m", "#000"}, {b, a, "n", "#000"}});
    EXPECT_LT(roofline.size(), 20000u);
  }
}

// ---- the loader -----------------------------------------------------------------------------------
TEST(Untrusted, AFailureInALoaderThreadStopsTheRunWithAMessage) {
  Dataset d;
  Sample s;
  s.h = s.w = int64_t(1) << 31;  // gray_from_bytes asks for 2^62 floats: the allocation throws in the worker
  s.pixels.resize(4);
  d.samples = {s, s};
  Loader loader(d, 2, 48, false, Augment{}, 0, 0, 2);
  expect_error([&] { loader.next(); }, "the data loader failed making batch 0");
}

}  // namespace
}  // namespace emonext::test
