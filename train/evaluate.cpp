#include "train/evaluate.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "core/autograd.h"
#include "core/base/error.h"
#include "train/image.h"

namespace emonext {

Evaluation evaluate(EmoNeXt& model, const Dataset& data, int64_t batch, Device device, const EvalView& view) {
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.eval();
  const int64_t classes = model.head.weight.size(0), size = model.image_size;
  Evaluation e;
  e.confusion.assign(size_t(classes), std::vector<int64_t>(size_t(classes), 0));
  int64_t correct = 0;
  double loss_sum = 0;
  const int64_t views = view.tencrop ? 10 : 1, per_batch = std::max<int64_t>(1, batch / views);
  for (size_t first = 0; first < data.samples.size(); first += size_t(per_batch)) {
    std::vector<GrayImage> crops;
    std::vector<int64_t> labels;
    for (size_t i = first; i < data.samples.size() && i < first + size_t(per_batch); ++i) {
      GrayImage img;
      try {
        img = data.image(i);
      } catch (const Error& err) {
        e.unreadable.push_back(err.what());
        continue;
      }
      if (view.tencrop) {
        for (GrayImage& v : ten_crop(img, size)) crops.push_back(std::move(v));
      } else if (view.random_crop) {
        SampleRng rng(view.seed ^ 0xe7a1ULL, uint64_t(view.epoch), i);
        const Augment crop_only{false, false, 0, true};
        crops.push_back(train_view(img, size, crop_only, rng));
      } else {
        crops.push_back(eval_view(img, size));
      }
      labels.push_back(data.samples[i].label);
    }
    if (labels.empty()) continue;
    const int64_t n = int64_t(labels.size());
    const Tensor logits = mean(model.forward(to_batch(crops).to(device)).logits.reshape({n, views, classes}), {1});
    loss_sum += cross_entropy(logits, Tensor::from_ints(labels, {n}).to(device)).item() * double(n);
    const std::vector<double> l = logits.to_vector();
    for (size_t k = 0; k < labels.size(); ++k) {
      const double* row = l.data() + k * size_t(classes);
      const int64_t pred = int64_t(std::max_element(row, row + classes) - row);
      ++e.confusion[size_t(labels[k])][size_t(pred)];
      correct += pred == labels[k];
    }
    e.images += n;
  }
  e.accuracy = e.images ? double(correct) / double(e.images) : 0;
  e.loss = e.images ? loss_sum / double(e.images) : 0;
  model.train(was_training);
  return e;
}

namespace {
double class_accuracy(const Evaluation& e, size_t t) {
  int64_t row = 0;
  for (int64_t v : e.confusion[t]) row += v;
  return row ? double(e.confusion[t][t]) / double(row) : 0.0;
}
}  // namespace

void print_confusion(const Evaluation& e, const std::vector<std::string>& labels) {
  std::printf("  %-9s %-8s predicted:", "true", "accuracy");
  for (const std::string& l : labels) std::printf(" %5.5s", l.c_str());
  std::printf("\n");
  for (size_t t = 0; t < e.confusion.size(); ++t) {
    std::printf("  %-9s %.4f  ", labels[t].c_str(), class_accuracy(e, t));
    for (int64_t v : e.confusion[t]) std::printf(" %5lld", (long long)v);
    std::printf("\n");
  }
}

void write_confusion_csv(const std::string& path, const Evaluation& e, const std::vector<std::string>& labels) {
  std::ofstream cm(path);
  cm << "true\\predicted";
  for (const std::string& l : labels) cm << ',' << l;
  cm << ",accuracy\n";
  for (size_t t = 0; t < e.confusion.size(); ++t) {
    cm << labels[t];
    for (int64_t v : e.confusion[t]) cm << ',' << v;
    cm << ',' << class_accuracy(e, t) << '\n';
  }
  EMONEXT_CHECK(cm.flush(), path, ": could not write the confusion matrix");
}

}  // namespace emonext
