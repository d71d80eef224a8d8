#include "train/run_data.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/base/error.h"
#include "core/base/limits.h"
#include "models/checkpoint.h"

namespace emonext {

namespace fs = std::filesystem;

namespace {

void print_counts(const Dataset& d) {
  const std::vector<int64_t> counts = d.class_counts();
  std::printf("%-9s %6zu images:", d.name.c_str(), d.samples.size());
  for (size_t c = 0; c < counts.size(); ++c) std::printf(" %s %lld", fer2013_labels()[c].c_str(), (long long)counts[c]);
  std::printf("\n");
}

}  // namespace

Splits read_splits(const TrainConfig& c) {
  Splits s;
  if (c.benchmark > 0 || c.synthetic > 0) {
    // --benchmark: up to 64 batches, repeated over its steps, and at most kMaxSynthetic
    // images (more than the largest batch).
    s.train = synthetic_dataset(c.benchmark > 0 ? std::min(c.batch * std::min<int64_t>(c.benchmark, 64), limits::kMaxSynthetic) : c.synthetic,
                                c.seed);
    s.val = synthetic_dataset(std::max<int64_t>(c.batch, 64), c.seed + 1);
    s.val.name = "val";
  } else if (!c.csv.empty()) {
    s.train = read_fer2013_csv(c.csv, "Training");
    s.train.name = "train";
    s.val = read_fer2013_csv(c.csv, "PublicTest");
    s.val.name = "val";
    try {
      s.test = read_fer2013_csv(c.csv, "PrivateTest");
      s.test.name = "test";
      s.have_test = true;
    } catch (const Error&) {
    }
  } else {
    EMONEXT_CHECK(!c.data_dir.empty(), "no data: give --data DIR (train/ val/ [test/] folders), --csv FILE or --synthetic N");
    s.train = read_image_folders(c.data_dir, "train");
    s.val = read_image_folders(c.data_dir, "val");
    if (fs::is_directory(fs::path(c.data_dir) / "test")) {
      s.test = read_image_folders(c.data_dir, "test");
      s.have_test = true;
    }
  }
  int64_t top = 0;  // the largest label: the model needs an output for each
  for (const Dataset* d : {&s.train, &s.val, &s.test})
    for (const Sample& x : d->samples) top = std::max(top, x.label);
  EMONEXT_CHECK(top < c.classes, "--classes ", c.classes, " is fewer than the data's labels (0 to ", top, ")");
  print_counts(s.train);
  print_counts(s.val);
  if (s.have_test) print_counts(s.test);
  return s;
}

}  // namespace emonext
