#include "train/data.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/base/error.h"
#include "core/base/file.h"
#include "core/base/limits.h"
#include "core/base/philox.h"
#include "models/checkpoint.h"

namespace emonext {

namespace fs = std::filesystem;

std::vector<int64_t> Dataset::class_counts() const {
  std::vector<int64_t> counts(fer2013_labels().size(), 0);
  for (const Sample& s : samples) ++counts[size_t(s.label)];
  return counts;
}

namespace {

// Synthetic sample i: its label, then its 48 x 48 pixels, from one Philox stream.
int64_t synthetic_label(SampleRng& rng) { return int64_t(rng.uniform() * 7) % 7; }

}  // namespace

GrayImage Dataset::image(size_t i) const {
  const Sample& s = samples[i];
  if (synthetic) {
    SampleRng rng(seed, 1u << 20, uint64_t(i));
    synthetic_label(rng);
    std::vector<uint8_t> px(48 * 48);
    for (uint8_t& p : px) p = uint8_t(rng.uniform() * 256);
    return gray_from_bytes(px.data(), 48, 48);
  }
  return s.path.empty() ? gray_from_bytes(s.pixels.data(), s.h, s.w) : load_gray_image(s.path);
}

Dataset read_image_folders(const std::string& dir, const std::string& split) {
  const fs::path root = fs::path(dir) / split;
  EMONEXT_CHECK(fs::is_directory(root), root.string(), ": no such folder (expected ", dir, "/", split,
                "/<emotion>/*.jpg with emotions ", "angry, disgust, fear, happy, neutral, sad, surprise)");
  const std::vector<std::string>& labels = fer2013_labels();
  std::error_code ec;  // an entry whose type cannot be told (a link to itself) is skipped, as other non-images are
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory(ec))
      EMONEXT_CHECK(std::find(labels.begin(), labels.end(), e.path().filename().string()) != labels.end(), e.path().string(),
                    ": not one of the seven emotions (angry, disgust, fear, happy, neutral, sad, surprise)");
  Dataset d;
  d.name = split;
  for (size_t c = 0; c < labels.size(); ++c) {
    const fs::path folder = root / labels[c];
    EMONEXT_CHECK(fs::is_directory(folder), folder.string(), ": missing emotion folder");
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(folder)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
      if (e.is_regular_file(ec) && (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp" || ext == ".pgm"))
        files.push_back(e.path().string());
    }
    EMONEXT_CHECK(!files.empty(), folder.string(), ": no images (an empty class)");
    std::sort(files.begin(), files.end());
    for (std::string& f : files) d.samples.push_back({std::move(f), {}, 0, 0, int64_t(c)});
  }
  return d;
}

Dataset read_fer2013_csv(const std::string& path, const std::string& usage) {
  std::ifstream f = open_regular_file(path);  // a FIFO is refused, not waited on
  return read_fer2013_csv(f, path, usage);
}

Dataset read_fer2013_csv(std::istream& f, const std::string& path, const std::string& usage) {
  // CSV code -> engine label: 0 angry 1 disgust 2 fear 3 happy 4 sad 5 surprise 6 neutral.
  static const int64_t to_engine[7] = {0, 1, 2, 3, 5, 6, 4};
  Dataset d;
  d.name = usage;
  std::string line;
  int64_t n = 0;
  // A line, at most 64 KiB of it (a FER2013 row is ~9 KB): a file without newlines would
  // otherwise be read whole into one string.
  std::streambuf& in = *f.rdbuf();
  const auto getline = [&](std::string& out) {  // false at the end of the file
    out.clear();
    int c = in.sbumpc();
    if (c == EOF) return false;
    for (; c != EOF && c != '\n'; c = in.sbumpc()) {
      EMONEXT_CHECK(out.size() < 65536, path, ":", n + 1, ": a line longer than 65536 bytes: not FER2013's CSV");
      out += char(c);
    }
    return true;
  };
  EMONEXT_CHECK(getline(line), path, ": empty file");
  ++n;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  EMONEXT_CHECK(line == "emotion,pixels,Usage", path, ":1: expected the header emotion,pixels,Usage, got '", line.substr(0, 60), "'");
  while (getline(line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t a = line.find(','), b = line.rfind(',');
    EMONEXT_CHECK(a != std::string::npos && b != a, path, ":", n, ": expected 3 fields (emotion,pixels,Usage)");
    const std::string code = line.substr(0, a), pixels = line.substr(a + 1, b - a - 1), use = line.substr(b + 1);
    EMONEXT_CHECK(code.size() == 1 && code[0] >= '0' && code[0] <= '6', path, ":", n, ": emotion '", code, "' is not 0..6");
    EMONEXT_CHECK(use == "Training" || use == "PublicTest" || use == "PrivateTest", path, ":", n, ": Usage '", use,
                  "' is not Training, PublicTest or PrivateTest");
    if (use != usage) continue;
    Sample s;
    s.h = s.w = 48;
    s.label = to_engine[code[0] - '0'];
    s.pixels.reserve(48 * 48);
    std::istringstream ss(pixels);
    for (std::string v; ss >> v;) {
      EMONEXT_CHECK(s.pixels.size() < 48 * 48, path, ":", n, ": more than 2304 pixels, expected 2304 (48 x 48)");
      const int64_t x = limits::parse_int(v, detail::concat(path, ":", n, ": pixel"), 0, 255);
      s.pixels.push_back(uint8_t(x));
    }
    EMONEXT_CHECK(s.pixels.size() == 48 * 48, path, ":", n, ": ", s.pixels.size(), " pixels, expected 2304 (48 x 48)");
    d.samples.push_back(std::move(s));
  }
  EMONEXT_CHECK(!d.samples.empty(), path, ": no rows with Usage ", usage);
  return d;
}

Dataset synthetic_dataset(int64_t n, uint64_t seed) {
  EMONEXT_CHECK(n >= 0 && n <= limits::kMaxSynthetic, "synthetic_dataset: ", n, " images (at most ", limits::kMaxSynthetic, ")");
  Dataset d;
  d.name = "synthetic";
  d.synthetic = true;
  d.seed = seed;
  for (int64_t i = 0; i < n; ++i) {
    SampleRng rng(seed, 1u << 20, uint64_t(i));
    Sample s;
    s.h = s.w = 48;
    s.label = synthetic_label(rng);
    d.samples.push_back(std::move(s));
  }
  return d;
}

SampleRng::SampleRng(uint64_t seed, uint64_t epoch, uint64_t index)
    : key_(seed), counter_((epoch << 44) ^ (index << 12)) {}  // 4096 blocks per sample, 2^32 samples per epoch

double SampleRng::uniform() {
  if (next_ == 4) {
    const philox::U32x4 r = philox::philox4x32_10(counter_++, key_);
    for (int k = 0; k < 4; ++k) lanes_[k] = r.v[k];
    next_ = 0;
  }
  return double(philox::uniform01(lanes_[next_++]));
}

GrayImage train_view(const GrayImage& img, int64_t image_size, const Augment& aug, SampleRng& rng) {
  GrayImage x = img;
  const double u_h = rng.uniform(), u_v = rng.uniform(), u_r = rng.uniform(), u_t = rng.uniform(), u_l = rng.uniform();
  if (aug.hflip && u_h < 0.5) x = hflip(x);
  if (aug.vflip && u_v < 0.5) x = vflip(x);
  x = resize_shorter(x, resize_for(image_size));
  if (aug.rotate_degrees > 0) x = rotate(x, (2 * u_r - 1) * aug.rotate_degrees);
  if (!aug.random_crop) return center_crop(x, image_size);
  const int64_t top = int64_t(u_t * double(x.h - image_size + 1)), left = int64_t(u_l * double(x.w - image_size + 1));
  return crop(x, top, left, image_size, image_size);
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  SampleRng rng(seed ^ 0x5eed0fde11a5ULL, uint64_t(epoch), 0xFFFFFULL);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(int64_t(rng.uniform() * double(i + 1)))]);
  return order;
}

Loader::Loader(const Dataset& data, int64_t batch, int64_t image_size, bool train, const Augment& aug, uint64_t seed, int64_t epoch,
               int threads, int64_t first_batch, bool drop_last, int rank, int ranks)
    : data_(data), batch_(batch), size_(image_size), epoch_(epoch), rank_(rank), ranks_(ranks), train_(train), aug_(aug), seed_(seed) {
  EMONEXT_CHECK(ranks >= 1 && rank >= 0 && rank < ranks && batch % ranks == 0, "Loader: batch ", batch, " cannot be shared by ",
                ranks, " ranks");
  const int64_t n = int64_t(data.samples.size());
  if (train) order_ = epoch_order(n, seed, epoch);
  else for (int64_t i = 0; i < n; ++i) order_.push_back(i);
  batches_ = drop_last ? n / batch : (n + batch - 1) / batch;
  next_out_ = next_in_ = first_batch;
  ahead_ = std::max(2, 2 * threads);
  for (int t = 0; t < std::max(1, threads); ++t) workers_.emplace_back([this] { work(); });
}

Loader::~Loader() {
  {
    // Set under the lock: a worker that has just found nothing to do and is about to wait
    // would otherwise miss the notify and wait for ever (a hang at the end of an epoch,
    // found by emonext_fuzz's folder target, which makes a loader per input).
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

Batch Loader::make(int64_t b) const {
  Batch out;
  out.index = b;
  const int64_t share = batch_ / ranks_, first = b * batch_ + rank_ * share;
  const int64_t last = std::min<int64_t>(first + share, int64_t(order_.size()));
  std::vector<GrayImage> views;
  std::vector<int64_t> labels;
  for (int64_t k = first; k < last; ++k) {
    const size_t i = size_t(order_[size_t(k)]);
    try {
      const GrayImage img = data_.image(i);
      SampleRng rng(seed_, uint64_t(epoch_), i);
      views.push_back(train_ ? train_view(img, size_, aug_, rng) : eval_view(img, size_));
      labels.push_back(data_.samples[i].label);
    } catch (const Error& e) {
      out.unreadable.push_back(e.what());
    }
  }
  out.images = views.empty() ? Tensor::empty({0, size_, size_, 3}) : to_batch(views);
  out.labels = Tensor::from_ints(labels, {int64_t(labels.size())});
  return out;
}

void Loader::work() {
  while (true) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || (next_in_ < batches_ && next_in_ < next_out_ + ahead_); });
      if (stop_) return;
      b = next_in_++;
    }
    Batch made;
    try {
      made = make(b);
    } catch (const std::exception& e) {  // not an unreadable image (make skips those): out of memory, say
      made.index = b;
      made.failure = e.what();
    } catch (...) {
      made.index = b;
      made.failure = "an unknown exception";
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_[b] = std::move(made);
    }
    cv_.notify_all();
  }
}

Batch Loader::next() {
  if (next_out_ >= batches_) return Batch{};
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return ready_.count(next_out_) > 0; });
  Batch b = std::move(ready_.at(next_out_));
  ready_.erase(next_out_++);
  lock.unlock();
  cv_.notify_all();
  wait_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EMONEXT_CHECK(b.failure.empty(), "the data loader failed making batch ", b.index, " (", b.failure, "); stopping");
  return b;
}

}  // namespace emonext
