// report.html, emonext_predict --explain and the atomic writes behind them: the report's
// figures are the run's own files', its pictures are what the model computes, and a
// write that fails leaves the previous file whole.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/autograd.h"
#include "core/base/file.h"
#include "models/checkpoint.h"
#include "tests/test_util.h"
#include "train/data.h"
#include "train/image.h"
#include "train/report_html.h"

namespace emonext::test {
namespace {

namespace fs = std::filesystem;

std::string read_text(const std::string& path) {
  const std::vector<char> b = read_all(path);
  return std::string(b.begin(), b.end());
}

// The rows of numbers of a JSON array of arrays ("null" is NaN), from text[at].
std::vector<std::vector<double>> json_rows(const std::string& text, const std::string& key) {
  const size_t at = text.find("\"" + key + "\":");
  EXPECT_NE(at, std::string::npos) << key;
  std::vector<std::vector<double>> rows;
  size_t i = text.find('[', at) + 1;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ',' || text[i] == '\n' || text[i] == ' ')) ++i;
    if (text[i] == ']') break;
    EXPECT_EQ(text[i], '[');
    ++i;
    std::vector<double> row;
    while (text[i] != ']') {
      if (text.compare(i, 4, "null") == 0) {
        row.push_back(std::nan(""));
        i += 4;
      } else {
        char* end = nullptr;
        row.push_back(std::strtod(text.c_str() + i, &end));
        i = size_t(end - text.c_str());
      }
      if (text[i] == ',') ++i;
    }
    rows.push_back(row);
    ++i;
  }
  return rows;
}

// A CSV file of numbers (header skipped; "-nan" as NaN), columns [first, first + count).
std::vector<std::vector<double>> csv_rows(const std::string& path, size_t first = 0, size_t count = 1000) {
  std::vector<std::vector<double>> rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::stringstream ss(line);
    size_t k = 0;
    for (std::string cell; std::getline(ss, cell, ','); ++k)
      if (k >= first && k < first + count) row.push_back(cell.find("nan") != std::string::npos ? std::nan("") : std::strtod(cell.c_str(), nullptr));
    rows.push_back(row);
  }
  return rows;
}

void expect_same_rows(const std::vector<std::vector<double>>& got, const std::vector<std::vector<double>>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t r = 0; r < got.size(); ++r) {
    ASSERT_EQ(got[r].size(), want[r].size()) << what << " row " << r;
    for (size_t c = 0; c < got[r].size(); ++c) {
      if (std::isnan(want[r][c])) {
        EXPECT_TRUE(std::isnan(got[r][c])) << what << " row " << r << " column " << c;
        continue;
      }
      // the report writes 9 significant digits, the CSV files 6 or 17
      EXPECT_NEAR(got[r][c], want[r][c], 1e-5 * std::max(1.0, std::fabs(want[r][c]))) << what << " row " << r << " column " << c;
    }
  }
}

std::string base64_decode(const std::string& text) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : text) {
    const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char* p = std::strchr(digits, ch);
    if (ch == '=' || !p || !ch) break;
    acc = (acc << 6) | uint32_t(p - digits);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xFF);
    }
  }
  return out;
}

// The k-th <img alt="ALT"> of the page, decoded.
GrayImage picture(const std::string& page, const std::string& alt, size_t k) {
  size_t at = 0;
  for (size_t i = 0; i <= k; ++i) {
    at = page.find("alt=\"" + alt + "\" src=\"data:image/png;base64,", at + 1);
    EXPECT_NE(at, std::string::npos) << alt << " " << k;
  }
  const size_t from = page.find("base64,", at) + 7, to = page.find('"', from);
  const std::string png = base64_decode(page.substr(from, to - from));
  return decode_gray_image(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "report picture");
}

// A small FER2013 in the folder form, test/ included (val's images stand in for it).
void small_fer2013(const std::string& d, int per_class) {
  for (const std::string split : {"train", "val", "test"})
    for (const std::string& l : fer2013_labels()) {
      fs::create_directories(d + "/" + split + "/" + l);
      int k = 0;
      for (const auto& e : fs::directory_iterator(fer2013_dir() + "/" + (split == "test" ? "val" : split) + "/" + l)) {
        fs::copy_file(e.path(), d + "/" + split + "/" + l + "/" + e.path().filename().string());
        if (++k == per_class) break;
      }
    }
}

TEST(Report, TheReportIsTheRunsOwnFiguresAndPictures) {
  REQUIRE_FER2013();
  const ScratchDir d("report");
  small_fer2013(d + "/data", 12);
  std::string out;
  ASSERT_EQ(run_tool(EMONEXT_TRAIN, "--data " + d + "/data --model atto --img-size 48 --batch 16 --epochs 2 --no-ema --device cpu "
                                    "--workers 2 --out " + d + "/run",
                     &out),
            0)
      << out;
  const std::string page = read_text(d + "/run/report.html");
  ASSERT_NE(page.find("id=\"emonext-data\""), std::string::npos);
  EXPECT_EQ(page.find("<script>"), std::string::npos) << "no script runs";
  EXPECT_EQ(page.find("http"), page.find("http://www.w3.org/2000/svg")) << "nothing is fetched";
  // The figures: metrics.csv, steps.csv and confusion.csv as they are.
  expect_same_rows(json_rows(page, "metrics"), csv_rows(d + "/run/metrics.csv"), "metrics");
  expect_same_rows(json_rows(page, "steps"), csv_rows(d + "/run/steps.csv"), "steps");
  expect_same_rows(json_rows(page, "confusion"), csv_rows(d + "/run/confusion.csv", 1, 7), "confusion");
  for (const std::string section : {"Loss per epoch", "Accuracy per epoch", "Loss per step", "Learning rate", "Gradient norm",
                                    "Training images/s", "Confusion matrix: the ten-crop test", "Validation faces", "Settings"})
    EXPECT_NE(page.find(section), std::string::npos) << section;
  // The pictures: two faces per emotion, and each transformed face is the spatial
  // transformer's output for it (the run's last weights: no EMA), within 8-bit rounding.
  const Dataset val = read_image_folders(d + "/data", "val");
  std::unique_ptr<EmoNeXt> model = load_emonext(d + "/run/last.safetensors");
  size_t shown = 0;
  for (size_t at = page.find("{\"index\":"); at != std::string::npos; at = page.find("{\"index\":", at + 1), ++shown) {
    const size_t index = size_t(std::stoul(page.substr(at + 9)));
    ASSERT_LT(index, val.samples.size());
    const GrayImage view = eval_view(val.image(index), 48);
    Tensor want;
    {
      NoGradGuard no_grad;
      want = model->stn.forward(to_batch({view}));
    }
    const GrayImage got = picture(page, "transformed", shown);
    ASSERT_EQ(got.h, 48);
    ASSERT_EQ(got.w, 48);
    const std::vector<double> w = want.to_vector();
    double worst = 0;
    for (int64_t i = 0; i < 48 * 48; ++i) worst = std::max(worst, std::fabs(double(got.px[size_t(i)]) - std::clamp(w[size_t(i * 3)] * 255, 0.0, 255.0)));
    EXPECT_LE(worst, 0.5 + 1e-3) << "face " << shown << " (validation image " << index << ")";
    const GrayImage input = picture(page, "input", shown);
    EXPECT_EQ(input.px.size(), view.px.size());
  }
  EXPECT_EQ(shown, 14u) << "two faces per emotion";
}

// The gradient norm's chart is on a log axis (a fresh init's first norms are thousands):
// norms a hundred times apart lie equally far apart, the ticks are labelled in norms, and
// a norm of 0 (which a log axis cannot place) is left out.
TEST(Report, ALogAxisSpacesRatiosEquallyAndLeavesOutZero) {
  const std::string svg = html::line_chart("g", "step", {{"", "#000", {{1, 3000}, {2, 30}, {3, 0}, {4, 0.3}}}}, html::YScale::Log);
  const size_t at = svg.find("points=\"");
  ASSERT_NE(at, std::string::npos) << svg;
  std::istringstream in(svg.substr(at + 8, svg.find('"', at + 8) - at - 8));
  std::vector<double> ys;
  for (std::string xy; in >> xy;) ys.push_back(std::stod(xy.substr(xy.find(',') + 1)));
  ASSERT_EQ(ys.size(), 3u) << svg;
  EXPECT_NEAR(ys[1] - ys[0], ys[2] - ys[1], 0.2) << svg;
  EXPECT_GT(ys[1] - ys[0], 10) << "lower norms lower on the chart";
  EXPECT_NE(svg.find(">1000</text>"), std::string::npos) << svg;
  EXPECT_NE(svg.find("log scale"), std::string::npos) << svg;
  const std::string linear = html::line_chart("g", "step", {{"", "#000", {{1, 3000}, {2, 30}, {3, 0}, {4, 0.3}}}});
  EXPECT_EQ(linear.find("log scale"), std::string::npos);
}

TEST(Report, AFailedWriteLeavesThePreviousFileWhole) {
  const ScratchDir d("atomic");
  const std::string path = d + "/report.html";
  write_file_atomically(path, [](std::ostream& o) { o << "the previous report"; });
  expect_error([&] {
    write_file_atomically(path, [](std::ostream& o) {
      o << "half of a new report";
      throw Error("interrupted while writing");
    });
  }, "interrupted while writing");
  EXPECT_EQ(read_text(path), "the previous report");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Report, ExplainIntoAFolderThatCannotBeWrittenIsRefusedFirst) {
  std::string out;
  // The weights do not exist either: the refusal names --explain, so it came before any work.
  EXPECT_EQ(run_tool(EMONEXT_PREDICT, "--weights /nonexistent.safetensors --explain /proc/no-such/dir x.jpg", &out), 1) << out;
  EXPECT_NE(out.find("--explain /proc/no-such/dir: cannot make that folder"), std::string::npos) << out;
  EXPECT_EQ(out.find("nonexistent.safetensors"), std::string::npos) << out;
}

TEST(Report, ExplainWritesThePicturesAndAnIndex) {
  REQUIRE_FER2013();
  const ScratchDir d("explain");
  EmoNeXt model(convnext_size("atto"), 7, 48);
  Generator gen(3);
  init_weights(model, gen);
  save_checkpoint(d + "/m.safetensors", model, fer2013_labels());
  fs::create_directories(d + "/faces");
  int copied = 0;
  for (const auto& e : fs::directory_iterator(fer2013_dir() + "/val/surprise")) {
    fs::copy_file(e.path(), d + "/faces/" + e.path().filename().string());
    if (++copied == 4) break;
  }
  std::string out;
  ASSERT_EQ(run_tool(EMONEXT_PREDICT, "--weights " + d + "/m.safetensors --explain " + d + "/ex " + d + "/faces", &out), 0) << out;
  const std::string index = read_text(d + "/ex/index.html");
  size_t pictures = 0;
  for (const auto& e : fs::directory_iterator(d + "/ex"))
    if (e.path().extension() == ".png") {
      ++pictures;
      EXPECT_NE(index.find(e.path().filename().string()), std::string::npos) << e.path();
      EXPECT_GE(load_gray_image(e.path().string()).w, 48);
    }
  EXPECT_EQ(pictures, 3 * 4u) << "three pictures per face";
}

}  // namespace
}  // namespace emonext::test
