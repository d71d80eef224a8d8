// The zip/pickle reader for torch.save files, against files PyTorch wrote
// (tools/reference/emonext_twin.py fixtures): every dtype, views with offsets and
// strides into a shared storage, objects to skip, and the refusals.
#include <gtest/gtest.h>

#include <fstream>

#include "core/safetensors.h"
#include "core/torch_file.h"
#include "tests/op_cases.h"
#include "tests/test_util.h"

namespace emonext::test {
namespace {

std::string write_file(const ScratchDir& dir, const std::string& name, const std::vector<char>& bytes) {
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  return path;
}

void expect_refused(const std::string& path, const std::string& says) {
  try {
    load_torch_file(path);
    ADD_FAILURE() << path << " was read; expected an error saying: " << says;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "the error names the file: " << e.what();
  }
}

TEST(TorchFile, ReadsEveryTensorAsPyTorchStoredIt) {
  const PyRef top = load_torch_file(fixture_path("torch_zip.pt"));
  ASSERT_EQ(top->kind, PyObject::Kind::Dict);
  const PyRef model = top->get("model");
  ASSERT_TRUE(model);
  const auto tensors = tensor_dict(*model);
  const SafeTensors want = load_safetensors(fixture_path("torch_zip_expected.safetensors"));
  ASSERT_EQ(tensors.size(), want.tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    EXPECT_EQ(name, want.tensors[i].first);  // in the file's order
    EXPECT_EQ(t.shape(), want.at(name).shape()) << name;
    EXPECT_EQ(t.to_vector(), want.at(name).to_vector()) << name;  // exact: f16/bf16 widen exactly
  }
  EXPECT_EQ(tensors[2].second.dtype(), DType::F16);
  EXPECT_EQ(tensors[3].second.dtype(), DType::BF16);
  EXPECT_EQ(tensors[4].second.to_int_vector(), (std::vector<int64_t>{3, -1, int64_t(1) << 40}));
}

// The same archive in zip64 form (every size and offset in zip64 records, as torch.save
// writes files past 4 GiB; emonext_twin.py's rewrite_as_zip64, checked by torch.load):
// the same tensors and numbers; a broken zip64 locator or end record is refused.
TEST(TorchFile, ReadsTheZip64FormAlike) {
  const PyRef plain = load_torch_file(fixture_path("torch_zip.pt")), zip64 = load_torch_file(fixture_path("torch_zip64.pt"));
  const auto want = tensor_dict(*plain->get("model")), got = tensor_dict(*zip64->get("model"));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(got[i].second.dtype(), want[i].second.dtype()) << got[i].first;
    EXPECT_EQ(got[i].second.shape(), want[i].second.shape()) << got[i].first;
    EXPECT_EQ(got[i].second.to_vector(), want[i].second.to_vector()) << got[i].first;
  }
  EXPECT_EQ(zip64->get("epoch")->i, 12);
  const std::vector<char> good = read_all(fixture_path("torch_zip64.pt"));
  const ScratchDir dir("torch_zip64");
  // The tail: zip64 end record (56 bytes), its locator (20), the classic end record (22).
  std::vector<char> no_locator = good, no_record = good;
  no_locator[good.size() - 22 - 20] ^= 0x7f;
  expect_refused(write_file(dir, "zip64_no_locator.pt", no_locator), "zip64 locator missing");
  no_record[good.size() - 22 - 20 - 56] ^= 0x7f;
  expect_refused(write_file(dir, "zip64_no_record.pt", no_record), "zip64 end record missing");
}

TEST(TorchFile, KeepsNumbersAndSkipsOtherObjects) {
  const PyRef top = load_torch_file(fixture_path("torch_zip.pt"));
  EXPECT_EQ(top->get("epoch")->i, 12);
  EXPECT_DOUBLE_EQ(top->get("lr")->f, 1e-3);
  EXPECT_EQ(top->get("big")->i, -(int64_t(1) << 40));
  EXPECT_EQ(top->get("args")->kind, PyObject::Kind::Opaque);
  EXPECT_EQ(top->get("args")->s, "argparse.Namespace");
  const PyRef history = top->get("history");
  ASSERT_EQ(history->items.size(), 5u);
  EXPECT_EQ(history->items[2]->s, "x");
  EXPECT_EQ(history->items[3]->kind, PyObject::Kind::None);
  EXPECT_EQ(history->items[4]->items[0]->i, 1);
  EXPECT_FALSE(top->get("no such key"));
}

TEST(TorchFile, RefusesOldNonZipFiles) {
  expect_refused(fixture_path("torch_legacy.pt"), "not a zip-format torch file");
}

TEST(TorchFile, RefusesTruncatedAndCorruptFiles) {
  const std::vector<char> good = read_all(fixture_path("torch_zip.pt"));
  const ScratchDir dir("torch_corrupt");
  for (size_t keep : {good.size() - 1, good.size() - 30, good.size() / 2, size_t(40)}) {
    const std::vector<char> cut(good.begin(), good.begin() + std::ptrdiff_t(keep));
    expect_refused(write_file(dir, "cut_" + std::to_string(keep) + ".pt", cut), "corrupt or truncated");
  }
  std::vector<char> bad = good;
  // The first central-directory signature: the archive's index no longer parses.
  for (size_t i = bad.size() - 22; i > 0; --i)
    if (bad[i] == 'P' && bad[i + 1] == 'K' && bad[i + 2] == 1 && bad[i + 3] == 2) {
      bad[i + 2] = 9;
      break;
    }
  expect_refused(write_file(dir, "bad_directory.pt", bad), "corrupt or truncated");
  expect_refused(dir + "/does_not_exist.pt", "cannot open");
}

}  // namespace
}  // namespace emonext::test
