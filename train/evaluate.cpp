#include "train/evaluate.h"

#include <algorithm>
#include <cstdio>

#include "core/autograd.h"
#include "core/base/error.h"
#include "core/base/escape.h"
#include "core/base/file.h"
#include "core/dist.h"
#include "train/image.h"

namespace emonext {

Evaluation evaluate(EmoNeXt& model, const Dataset& data, int64_t batch, Device device, const EvalView& view, bool sharded) {
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.eval();
  const int64_t classes = model.head.weight.size(0), size = model.image_size;
  const int ranks = sharded ? dist::size() : 1, rank = sharded ? dist::rank() : 0;
  Evaluation e;
  e.confusion.assign(size_t(classes), std::vector<int64_t>(size_t(classes), 0));
  int64_t correct = 0;
  const int64_t views = view.tencrop ? 10 : 1, per_batch = std::max<int64_t>(1, batch / views);
  const size_t batches = (data.samples.size() + size_t(per_batch) - 1) / size_t(per_batch);
  std::vector<double> batch_loss(batches, 0.0);  // each batch's summed cross-entropy, added in batch order at the end
  for (size_t k = size_t(rank); k < batches; k += size_t(ranks)) {
    const size_t first = k * size_t(per_batch);
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
    const Tensor host_labels = Tensor::from_ints(labels, {n});
    check_labels("evaluate", host_labels, classes);  // here, on the host: they index the confusion matrix below
    batch_loss[k] = cross_entropy(logits, host_labels.to(device)).item() * double(n);
    const std::vector<double> l = logits.to_vector();
    for (size_t j = 0; j < labels.size(); ++j) {
      const double* row = l.data() + j * size_t(classes);
      const int64_t pred = int64_t(std::max_element(row, row + classes) - row);
      ++e.confusion[size_t(labels[j])][size_t(pred)];
      correct += pred == labels[j];
    }
    e.images += n;
  }
  if (ranks > 1) {
    // Each batch was evaluated by one rank: the sums of the ranks' figures are the whole
    // set's, exactly (a batch's loss plus the other ranks' zeros is itself; the counts
    // are whole numbers), and every rank receives them.
    std::vector<double> all = batch_loss;
    all.push_back(double(correct));
    all.push_back(double(e.images));
    for (const auto& row : e.confusion) all.insert(all.end(), row.begin(), row.end());
    dist::all_reduce_sum(all.data(), int64_t(all.size()), "evaluation");
    std::copy(all.begin(), all.begin() + int64_t(batches), batch_loss.begin());
    correct = int64_t(all[batches]);
    e.images = int64_t(all[batches + 1]);
    size_t at = batches + 2;
    for (auto& row : e.confusion)
      for (int64_t& v : row) v = int64_t(all[at++]);
    std::string mine;
    for (const std::string& u : e.unreadable) mine += u + '\n';
    const std::vector<char> every = dist::all_gather_bytes(mine.data(), int64_t(mine.size()), nullptr, "evaluation: unreadable images");
    e.unreadable.clear();
    for (size_t from = 0, to; from < every.size(); from = to + 1) {
      to = size_t(std::find(every.begin() + int64_t(from), every.end(), '\n') - every.begin());
      e.unreadable.emplace_back(every.begin() + int64_t(from), every.begin() + int64_t(to));
    }
  }
  double loss_sum = 0;
  for (double l : batch_loss) loss_sum += l;
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
  // Written beside its name and renamed (never through a link), the labels (a
  // checkpoint's text) as CSV fields.
  write_file_atomically(path, [&](std::ostream& cm) {
    cm << "true\\predicted";
    for (const std::string& l : labels) cm << ',' << csv_field(l);
    cm << ",accuracy\n";
    for (size_t t = 0; t < e.confusion.size(); ++t) {
      cm << csv_field(labels[t]);
      for (int64_t v : e.confusion[t]) cm << ',' << v;
      cm << ',' << class_accuracy(e, t) << '\n';
    }
  });
}

}  // namespace emonext
