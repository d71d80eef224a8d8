// Images and emonext_predict: the transforms' geometry, and the tool on real
// FER2013 images (../shared/fer2013, skipped with the reason when absent).
#include <gtest/gtest.h>

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

TEST(Predict, RunsOnRealFer2013ImagesAndMatchesTheTensorMode) {
  REQUIRE_FER2013();
  const ScratchDir dir("predict");
  EmoNeXt model(convnext_size("atto"), 7, 48);
  Generator gen(4);
  init_weights(model, gen);
  save_checkpoint(dir + "/m.safetensors", model, fer2013_labels());
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

}  // namespace
}  // namespace emonext::test
