// The data a run reads: FER2013's splits (image folders or the CSV) or a synthetic set.
#pragma once
#include "train/config.h"
#include "train/data.h"

namespace emonext {

struct Splits {
  Dataset train, val, test;
  bool have_test = false;
};

// The splits the settings name (--data, --csv, --synthetic, or --benchmark's synthetic
// set), their labels checked against --classes and each split's class counts printed.
Splits read_splits(const TrainConfig& c);

}  // namespace emonext
