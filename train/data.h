// FER2013 for training: the sources (image folders, the original CSV, synthetic
// images), the recipe's transforms with a random stream per sample, and a loader
// whose background threads prepare batches ahead of the training step.
//
// Reproducibility: the order of an epoch and every sample's augmentation come from
// Philox streams keyed by (seed, epoch, sample index), never from thread timing, so
// a seed gives the same batches whatever the number of loader threads, and a run
// resumed at step k sees the batches a straight run would.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <istream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "train/image.h"

namespace emonext {

// One labelled image: a file to decode, pixels held in memory (CSV), or neither (a
// synthetic set's image, drawn again when asked for).
struct Sample {
  std::string path;
  std::vector<uint8_t> pixels;  // h x w gray when path is empty
  int64_t h = 0, w = 0;
  int64_t label = 0;
};

struct Dataset {
  std::string name;  // "train", "val", "test" or "synthetic"
  std::vector<Sample> samples;
  bool synthetic = false;  // image(i) draws sample i's pixels from `seed`
  uint64_t seed = 0;
  std::vector<int64_t> class_counts() const;  // over fer2013_labels()
  GrayImage image(size_t i) const;            // decodes; throws emonext::Error naming the file
};

// dir/<split>/<emotion>/*.{jpg,jpeg,png,bmp,...}, the seven emotions of
// fer2013_labels(); a missing split or emotion folder, an empty emotion, or an
// unknown folder is an error naming it.
Dataset read_image_folders(const std::string& dir, const std::string& split);
// The original fer2013.csv (emotion,pixels,Usage): rows of one Usage (Training,
// PublicTest, PrivateTest); codes 0..6 (angry, disgust, fear, happy, sad, surprise,
// neutral) mapped onto the engine's order. A malformed row is an error naming the
// line and what is wrong.
Dataset read_fer2013_csv(const std::string& path, const std::string& usage);
// The same from a stream; `path` names it in errors.
Dataset read_fer2013_csv(std::istream& in, const std::string& path, const std::string& usage);
// n random 48x48 images with random labels (benchmarks and smoke runs); the pixels are
// drawn when an image is asked for, so the set holds its labels alone.
Dataset synthetic_dataset(int64_t n, uint64_t seed);

struct Augment {
  bool hflip = true, vflip = true;  // each with p 0.5
  double rotate_degrees = 20;       // uniform in +-; 0 turns it off
  bool random_crop = true;          // else the centre crop
};

// A sample's random numbers: Philox4x32-10 keyed by the seed, counter from
// (epoch, index); uniform floats in [0, 1).
class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t epoch, uint64_t index);
  double uniform();

 private:
  uint64_t key_, counter_;
  uint32_t lanes_[4];
  int next_ = 4;
};

// The training view of a sample (REFERENCE.md's order: flips, resize, rotation, crop).
GrayImage train_view(const GrayImage& img, int64_t image_size, const Augment& aug, SampleRng& rng);

// The order of an epoch: a permutation of [0, n) from (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

struct Batch {
  int64_t index = -1;  // within the epoch
  Tensor images;       // [B, S, S, 3] f32, CPU
  Tensor labels;       // [B] i64
  std::vector<std::string> unreadable;  // samples skipped: "path: reason"
  std::string failure;  // a loader thread's exception (not an unreadable image): next() throws it
};

// Prepares the batches of one epoch in background threads, `ahead` batches in advance,
// and hands them out in order. Train mode shuffles and augments; eval mode keeps the
// order and takes the evaluation view. An unreadable image is skipped and reported in
// its batch's `unreadable` (so a batch may hold fewer samples); any other failure in a
// loader thread (an allocation that fails) is thrown by next() as an emonext::Error in
// the caller's thread, where the run stops saying so, instead of ending the process.
class Loader {
 public:
  Loader(const Dataset& data, int64_t batch, int64_t image_size, bool train, const Augment& aug, uint64_t seed, int64_t epoch,
         int threads, int64_t first_batch = 0, bool drop_last = true, int rank = 0, int ranks = 1);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;
  int64_t batches() const { return batches_; }
  // The next batch in order, or an empty Batch (index -1) after the last. Adds the time
  // spent waiting to wait_seconds().
  Batch next();
  double wait_seconds() const { return wait_; }

 private:
  void work();
  Batch make(int64_t b) const;

  const Dataset& data_;
  int64_t batch_, size_, epoch_;
  int64_t rank_, ranks_;  // batch b holds this rank's share of global batch b: its rank-th batch_ / ranks_ samples
  bool train_;
  Augment aug_;
  uint64_t seed_;
  std::vector<int64_t> order_;
  int64_t batches_, next_out_, next_in_;
  int ahead_;
  std::map<int64_t, Batch> ready_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::vector<std::thread> workers_;
  double wait_ = 0;
};

}  // namespace emonext
