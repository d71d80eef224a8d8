// Images and emonext_predict: the transforms' geometry, and the tool on real
// FER2013 images (../shared/fer2013, skipped with the reason when absent).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/autograd.h"
#include "core/safetensors.h"
#include "models/checkpoint.h"
#include "tests/test_util.h"
#include "train/image.h"

namespace emonext::test {
namespace {

GrayImage ramp(int64_t h, int64_t w) {
  GrayImage img{h, w, std::vector<float>(size_t(h * w))};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) img.px[size_t(y * w + x)] = float(10 * y + x);
  return img;
}

TEST(Image, ResizeKeepsTheAspectAndConstants) {
  GrayImage flat{48, 64, std::vector<float>(48 * 64, 77.0f)};
  const GrayImage r = resize_shorter(flat, 236);
  EXPECT_EQ(r.h, 236);
  EXPECT_EQ(r.w, 314);  // 236 * 64 / 48 = 314.67, truncated as torchvision
  for (float v : r.px) ASSERT_NEAR(v, 77.0f, 1e-4);
  const GrayImage down = resize_shorter(flat, 20);
  for (float v : down.px) ASSERT_NEAR(v, 77.0f, 1e-4);
  // Doubling a ramp: bilinear between pixel centres.
  const GrayImage up = resize_shorter(ramp(4, 4), 8);
  EXPECT_NEAR(up.at(0, 2), 0.75f, 1e-5);  // output centre 1.25 -> between inputs 0 and 1 (x only: row 0 -> y 0)
  EXPECT_EQ(resize_for(224), 236);
  EXPECT_EQ(resize_for(48), 51);
}

TEST(Image, CropsFlipsAndRotations) {
  const GrayImage img = ramp(5, 6);
  const GrayImage c = center_crop(img, 3);  // top round(1) = 1, left round(1.5) = 2
  EXPECT_EQ(c.at(0, 0), img.at(1, 2));
  EXPECT_EQ(hflip(img).at(0, 0), img.at(0, 5));
  EXPECT_EQ(vflip(img).at(0, 0), img.at(4, 0));
  const GrayImage sq = ramp(5, 5);
  const GrayImage r90 = rotate(sq, 90);  // counter-clockwise: the top-right corner goes to the top-left
  EXPECT_EQ(r90.at(0, 0), sq.at(0, 4));
  EXPECT_EQ(r90.at(2, 2), sq.at(2, 2));
  EXPECT_EQ(rotate(sq, 0).px, sq.px);
  const std::vector<GrayImage> ten = ten_crop(ramp(48, 48), 48);
  ASSERT_EQ(ten.size(), 10u);
  EXPECT_EQ(ten[5].px, hflip(ten[0]).px);
  EXPECT_NE(ten[0].px, ten[3].px);  // corners differ: resized to 51 first
}

// A checkpoint of EmoNeXt-atto at 48 with the reference's initialisation from `seed`.
void save_random_atto(const std::string& path, uint64_t seed) {
  EmoNeXt model(convnext_size("atto"), 7, 48);
  Generator gen(seed);
  init_weights(model, gen);
  save_checkpoint(path, model, fer2013_labels());
}

TEST(Predict, RunsOnRealFer2013ImagesAndMatchesTheTensorMode) {
  REQUIRE_FER2013();
  const ScratchDir dir("predict");
  save_random_atto(dir + "/m.safetensors", 4);
  // Three images of two classes, as files and as a folder.
  std::vector<std::string> files;
  for (const char* cls : {"happy", "surprise"}) {
    std::vector<std::string> all;
    for (const auto& e : std::filesystem::directory_iterator(fer2013_dir() + "/val/" + cls)) all.push_back(e.path().string());
    std::sort(all.begin(), all.end());
    files.insert(files.end(), all.begin(), all.begin() + (files.empty() ? 2 : 1));
  }
  std::string cmd = std::string(EMONEXT_PREDICT) + " --device cpu --json --weights " + dir + "/m.safetensors";
  for (const std::string& f : files) cmd += " " + f;
  int rc = 0;
  const std::string out = run_command(cmd, &rc);
  EXPECT_EQ(rc, 0) << out;
  std::istringstream lines(out);
  std::vector<std::vector<double>> probs;
  for (std::string line; std::getline(lines, line);) {
    EXPECT_NE(line.find("\"label\": \""), std::string::npos) << line;
    std::vector<double> p;
    for (const std::string& label : fer2013_labels()) {
      const size_t at = line.find("\"" + label + "\": ", line.find("probabilities"));
      ASSERT_NE(at, std::string::npos) << line;
      p.push_back(std::stod(line.substr(at + label.size() + 4)));
    }
    double total = 0;
    for (double v : p) total += v;
    EXPECT_NEAR(total, 1.0, 1e-4) << line;
    probs.push_back(p);
  }
  ASSERT_EQ(probs.size(), files.size());
  // The same images through the tensor mode, and in process: the same probabilities.
  std::vector<GrayImage> views;
  for (const std::string& f : files) views.push_back(eval_view(load_gray_image(f), 48));
  const Tensor batch = to_batch(views);
  save_safetensors(dir + "/in.safetensors", {{"images", batch.permute({0, 3, 1, 2}).contiguous()}});
  run_command(std::string(EMONEXT_PREDICT) + " --device cpu --weights " + dir + "/m.safetensors --input-tensors " + dir +
                  "/in.safetensors --output " + dir + "/out.safetensors 2>&1",
              &rc);
  EXPECT_EQ(rc, 0);
  const std::vector<double> p = softmax(load_safetensors(dir + "/out.safetensors").at("logits")).to_vector();
  for (size_t k = 0; k < files.size(); ++k)
    for (size_t c = 0; c < 7; ++c) EXPECT_NEAR(p[k * 7 + c], probs[k][c], 2e-6) << files[k];
  // A corrupt image is reported by name and counted; the others still print.
  std::ofstream(dir + "/broken.jpg") << "not a jpeg";
  const std::string mixed = run_command(std::string(EMONEXT_PREDICT) + " --device cpu --weights " + dir + "/m.safetensors " + files[0] +
                                            " " + dir + "/broken.jpg 2>&1",
                                        &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(mixed.find("broken.jpg: cannot decode the image"), std::string::npos) << mixed;
  EXPECT_NE(mixed.find(files[0] + ": "), std::string::npos) << mixed;
}

// --evaluate DIR: accuracy and the confusion matrix over labelled folders, checked
// against the per-image mode's predictions on the same files (another code path), in
// both views; an unreadable image is named, left out and makes the exit code 1.
TEST(Predict, EvaluatesALabelledFolderAsItsPerImagePredictionsSay) {
  REQUIRE_FER2013();
  const ScratchDir dir("predict_eval");
  save_random_atto(dir + "/m.safetensors", 5);
  const std::vector<std::string>& labels = fer2013_labels();
  for (const std::string& l : labels) {
    std::filesystem::create_directories(dir + "/val/" + l);
    std::vector<std::filesystem::path> all;
    for (const auto& e : std::filesystem::directory_iterator(fer2013_dir() + "/val/" + l)) all.push_back(e.path());
    std::sort(all.begin(), all.end());
    for (size_t k = 0; k < 3; ++k) std::filesystem::copy_file(all[k], dir + "/val/" + l + "/" + all[k].filename().string());
  }
  std::ofstream(dir + "/val/sad/broken.jpg") << "not a jpeg";
  const std::string predict = std::string(EMONEXT_PREDICT) + " --device cpu --weights " + dir + "/m.safetensors";
  for (const std::string view : {"", " --tencrop"}) {
    // Per image: the confusion matrix from the predicted labels and the folder names.
    int rc = 0;
    const std::string lines = run_command(predict + view + " --json " + dir + "/val 2>/dev/null", &rc);
    EXPECT_EQ(rc, 1) << "the broken image";
    std::vector<std::vector<int64_t>> expected(7, std::vector<int64_t>(7, 0));
    int64_t images = 0, correct = 0;
    std::istringstream in(lines);
    for (std::string line; std::getline(in, line);) {
      const std::string path = line.substr(11, line.find('"', 11) - 11);  // {"image": "<path>"
      const size_t at = line.find("\"label\": \"") + 10;
      const std::string predicted = line.substr(at, line.find('"', at) - at);
      const std::string truth = std::filesystem::path(path).parent_path().filename().string();
      const size_t t = size_t(std::find(labels.begin(), labels.end(), truth) - labels.begin());
      const size_t p = size_t(std::find(labels.begin(), labels.end(), predicted) - labels.begin());
      ASSERT_LT(t, 7u) << line;
      ASSERT_LT(p, 7u) << line;
      ++expected[t][p];
      ++images;
      correct += t == p;
    }
    ASSERT_EQ(images, 21);
    // The evaluation mode on the folder.
    const std::string out = run_command(predict + view + " --evaluate " + dir + "/val/ --confusion " + dir + "/cm.csv 2>&1", &rc);
    EXPECT_EQ(rc, 1) << out;
    const std::string broken = std::filesystem::path(dir + "/val/sad/broken.jpg").lexically_normal().string();
    EXPECT_NE(out.find("skipped " + broken + ": cannot decode the image"), std::string::npos) << out;
    char figures[64];
    std::snprintf(figures, sizeof figures, "21 images, accuracy %.4f", double(correct) / 21.0);
    EXPECT_NE(out.find(figures), std::string::npos) << figures << "\n" << out;
    EXPECT_NE(out.find(view.empty() ? "(centre crop)" : "(ten-crop)"), std::string::npos) << out;
    std::ifstream cm(dir + "/cm.csv");
    std::string row;
    std::getline(cm, row);
    EXPECT_EQ(row, "true\\predicted,angry,disgust,fear,happy,neutral,sad,surprise,accuracy");
    for (size_t t = 0; t < 7; ++t) {
      ASSERT_TRUE(std::getline(cm, row));
      std::string want = labels[t];
      for (int64_t v : expected[t]) want.append(",").append(std::to_string(v));
      EXPECT_EQ(row.substr(0, row.rfind(',')), want) << view;
    }
  }
  // Arguments: the modes are exclusive; a folder that is not labelled is refused by name.
  int rc = 0;
  EXPECT_NE(run_command(predict + " --evaluate " + dir + "/val " + dir + "/val/sad 2>&1", &rc).find("give images or folders"),
            std::string::npos);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(run_command(predict + " --json --evaluate " + dir + "/val 2>&1", &rc).find("--json goes with images"), std::string::npos);
  EXPECT_EQ(rc, 2);
  const std::string unlabelled = run_command(predict + " --evaluate " + dir + "/val/sad 2>&1", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(unlabelled.find("missing emotion folder"), std::string::npos) << unlabelled;
  // The original CSV: the rows of one Usage (the sample has no PrivateTest rows, the default).
  const std::string csv = fer2013_dir() + "/fer2013_sample.csv";
  const std::string public_test = run_command(predict + " --evaluate " + csv + " --usage PublicTest 2>&1", &rc);
  EXPECT_EQ(rc, 0) << public_test;
  EXPECT_NE(public_test.find("PublicTest rows (centre crop): 105 images, accuracy "), std::string::npos) << public_test;
  EXPECT_NE(run_command(predict + " --evaluate " + csv + " 2>&1", &rc).find("no rows with Usage PrivateTest"), std::string::npos);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(run_command(predict + " --evaluate " + dir + "/val --usage PublicTest 2>&1", &rc).find("is not one"), std::string::npos);
  EXPECT_EQ(rc, 2);
}

}  // namespace
}  // namespace emonext::test
