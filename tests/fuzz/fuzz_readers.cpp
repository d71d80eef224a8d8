// emonext_fuzz: every reader of a file from a stranger, fed mutated copies of valid
// files and generated hostile ones, in process, for a set time. A reader may accept an
// input or refuse it with an emonext::Error; anything else is a finding: a crash or a
// sanitizer report (the sanitizer build), another exception type (an unchecked path:
// std::length_error, std::bad_alloc, ...), an input that takes longer than
// --input-seconds, an allocation past --max-alloc-mb, or a broken oracle (below). The
// input that caused it is written to --save-dir.
//
//   emonext_fuzz [--seconds S] [--seed N] [--targets torch,safetensors,image,csv,folder]
//                [--input-seconds T] [--max-alloc-mb M] [--save-dir DIR] [--replay FILE]
//
// --replay FILE runs the targets on that one input (a finding's, to reproduce it) and
// says what each did, with its time.
//
// Targets, their seeds (valid files, made here or read from the fixtures) and oracles:
//   torch        tests/fixtures/torch_zip.pt and torch_zip64.pt (written by PyTorch), through
//                parse_torch_file and tensor_dict; the tensors read hold at most the file's bytes
//   safetensors  a checkpoint and a training state of the engine's own form (small tensors,
//                full metadata), through parse_safetensors, read_checkpoint_info and
//                config_from_metadata; the tensors read hold at most the file's bytes
//   image        FER2013 JPEGs (../shared/fer2013, when there), PNGs and progressive JPEGs
//                made here, through decode_gray_image and the evaluation view; after each
//                input a good JPEG still decodes on the same thread (the decoder's state)
//   csv          FER2013 CSV rows, through read_fer2013_csv
//   folder       a FER2013-style folder of 14 good faces and the input as one more file,
//                through read_image_folders and a one-thread Loader: every good face comes
//                through, whatever the bad one is
// Mutations: bit flips, interesting bytes and 2/4/8-byte integers at random offsets (the
// zip's offsets and sizes, pickle integers, image headers), cuts, repeats, splices of
// another seed, decimal numbers in text swapped for boundary values (JSON shapes and
// offsets, metadata, CSV pixels), and deep nesting ('[' runs in JSON, ']'/'a' runs in a
// pickle). Generated inputs (a third of the runs), which mutations of a valid file
// rarely reach, made with fields edited together: safetensors headers and torch records
// of many tensors over one block (aliases), huge declared sizes over few bytes and zero
// sizes beside huge ones; progressive JPEGs of thousands of scans over large headers,
// and JPEGs whose frame header the decoder refuses (12-bit, lossless, arithmetic, zero
// height).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "core/safetensors.h"
#include "core/torch_file.h"
#include "models/checkpoint.h"
#include "train/config.h"
#include "train/data.h"
#include "tests/image_bytes.h"
#include "tests/torch_bytes.h"
#include "train/image.h"

// GCC 12 takes the replaced operator delete's free() for a mismatch with operator new,
// and warns of an overlap inside std::string::insert it cannot rule out (its bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

// In the sanitizer build, malloc past the cap is reported as an error too (the decoders
// allocate with malloc, the engine with new; new is capped below).
// Both sanitizers end with abort(), whose handler below saves the input.
extern "C" const char* __asan_default_options() { return "max_allocation_size_mb=1024:allocator_may_return_null=0:abort_on_error=1"; }
extern "C" const char* __ubsan_default_options() { return "abort_on_error=1:print_stacktrace=1"; }

namespace {

namespace fs = std::filesystem;
using Bytes = std::string;

// ---- what a finding needs: the input, saved before the process dies -------------------------
size_t g_max_alloc = size_t(1) << 30;
const Bytes* g_current = nullptr;
char g_save_path[4096] = "";

void save_current() {  // async-signal-safe: open, write, close
  if (!g_current || !g_save_path[0]) return;
  const int fd = ::open(g_save_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  size_t done = 0;
  while (done < g_current->size()) {
    const ssize_t w = ::write(fd, g_current->data() + done, g_current->size() - done);
    if (w <= 0) break;
    done += size_t(w);
  }
  ::close(fd);
  constexpr char kSaid[] = "emonext_fuzz: the input is saved in ";
  (void)!::write(2, kSaid, sizeof kSaid - 1);
  (void)!::write(2, g_save_path, std::strlen(g_save_path));
  (void)!::write(2, "\n", 1);
}

void on_fatal_signal(int sig) {
  if (sig == SIGALRM) {
    constexpr char kSlow[] = "\nemonext_fuzz: FINDING: an input took longer than --input-seconds\n";
    (void)!::write(2, kSlow, sizeof kSlow - 1);
  }
  save_current();
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

// Every allocation through new is capped, so that a reader that believes a length in a
// small file and asks for gigabytes is a finding, not a slow run.
void* operator new(size_t n) {
  if (n > g_max_alloc) {
    std::fprintf(stderr, "\nemonext_fuzz: FINDING: an allocation of %zu bytes (the cap is %zu)\n", n, g_max_alloc);
    save_current();
    std::abort();
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void* operator new[](size_t n) { return operator new(n); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace {

// ---- mutations ------------------------------------------------------------------------------------
class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  Bytes mutate(Bytes b, const std::vector<Bytes>& seeds, int at_most = 3) {
    const int n = 1 + int(below(uint64_t(at_most)));
    for (int k = 0; k < n; ++k) one(b, seeds);
    if (b.size() > (size_t(1) << 22)) b.resize(size_t(1) << 22);  // inputs stay small: many per second
    return b;
  }
  uint64_t below(uint64_t n) { return n ? rng_() % n : 0; }

 private:
  size_t at(const Bytes& b) { return size_t(below(b.size())); }

  void one(Bytes& b, const std::vector<Bytes>& seeds) {
    static const uint64_t kInts[] = {0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000ULL, 0xFFFFFFFFULL,
                                     0x100000000ULL, 1ULL << 62, 0x7FFFFFFFFFFFFFFFULL, 0x8000000000000000ULL, ~0ULL, ~0ULL - 15};
    static const char* kNumbers[] = {"0", "-1", "1", "4294967295", "4294967296", "9223372036854775807", "-9223372036854775808",
                                     "99999999999999999999", "17179869184", "65536", "2049", "1e400", "nan", "-0"};
    switch (below(11)) {
      case 0:  // a bit
        if (!b.empty()) b[at(b)] ^= char(1 << below(8));
        break;
      case 1:  // an interesting byte
        if (!b.empty()) b[at(b)] = char(kInts[below(6)]);
        break;
      case 2: {  // an interesting 2, 4 or 8-byte little-endian integer (offsets, sizes, lengths)
        const size_t w = size_t(2) << below(3);
        if (b.size() < w) break;
        uint64_t v = kInts[below(sizeof kInts / sizeof kInts[0])];
        if (below(4) == 0) v = b.size() + below(64) - 32;  // near the file's own size
        const size_t o = size_t(below(b.size() - w + 1));
        for (size_t i = 0; i < w; ++i) b[o + i] = char((v >> (8 * i)) & 0xFF);
        break;
      }
      case 3:  // cut a range out
        if (!b.empty()) {
          const size_t o = at(b);
          b.erase(o, size_t(below(std::min<size_t>(b.size() - o, 256) + 1)));
        }
        break;
      case 4:  // repeat a range
        if (!b.empty()) {
          const size_t o = at(b), n = size_t(below(std::min<size_t>(b.size() - o, 256) + 1));
          b.insert(at(b), b.substr(o, n));
        }
        break;
      case 5:  // truncate
        b.resize(at(b));
        break;
      case 6: {  // a splice of another seed
        const Bytes& s = seeds[size_t(below(seeds.size()))];
        if (s.empty() || b.empty()) break;
        const size_t from = size_t(below(s.size())), n = size_t(below(std::min<size_t>(s.size() - from, 512) + 1));
        b.replace(at(b), n, s.substr(from, n));
        break;
      }
      case 7:
      case 8: {  // a decimal number in text swapped for a boundary value
        std::vector<std::pair<size_t, size_t>> runs;
        for (size_t i = 0; i < b.size() && runs.size() < 4096;) {
          if (b[i] >= '0' && b[i] <= '9') {
            size_t j = i;
            while (j < b.size() && b[j] >= '0' && b[j] <= '9') ++j;
            runs.emplace_back(i, j - i);
            i = j;
          } else {
            ++i;
          }
        }
        if (runs.empty()) break;
        const auto [o, n] = runs[size_t(below(runs.size()))];
        b.replace(o, n, kNumbers[below(sizeof kNumbers / sizeof kNumbers[0])]);
        break;
      }
      case 9: {  // deep nesting: JSON arrays, or pickle lists appended into each other
        const size_t n = size_t(64 + below(4096));
        if (below(2)) b.insert(at(b), std::string(n, '['));
        else b.insert(at(b), std::string(n, ']') + std::string(n - 1, 'a'));
        break;
      }
      default:  // an interesting byte run (0x00 or 0xFF)
        if (!b.empty()) {
          const size_t o = at(b);
          b.replace(o, std::min<size_t>(b.size() - o, size_t(1 + below(16))), size_t(1 + below(16)), below(2) ? '\0' : '\xFF');
        }
    }
  }

  std::mt19937_64 rng_;
};

// ---- targets ----------------------------------------------------------------------------------------
struct Target {
  std::string name;
  std::vector<Bytes> seeds;
  std::function<void(const Bytes&)> read;  // returns (accepted) or throws emonext::Error (refused)
  std::vector<std::function<Bytes(Mutator&)>> generators = {};  // hostile inputs made whole
};

// An oracle that failed: a finding, whatever the reader did.
struct Finding : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The bytes the distinct tensors hold (a tensor seen twice, the same memory, once).
int64_t distinct_bytes(const std::vector<emonext::Tensor>& tensors) {
  std::set<const void*> seen;
  int64_t n = 0;
  for (const emonext::Tensor& t : tensors)
    if (seen.insert(t.data_ptr()).second) n += t.numel() * int64_t(emonext::dtype_size(t.dtype()));
  return n;
}

void check_holds_at_most_the_input(const std::vector<emonext::Tensor>& tensors, const Bytes& input) {
  const int64_t held = distinct_bytes(tensors);
  if (held > int64_t(input.size()))
    throw Finding("the tensors read hold " + std::to_string(held) + " bytes, more than the input's " + std::to_string(input.size()));
}

// ---- generated inputs ---------------------------------------------------------------------------
// A size from a hostile writer's menu: small, a power of two up to 2^62, or 0.
int64_t hostile_size(Mutator& m) {
  switch (m.below(4)) {
    case 0: return 0;
    case 1: return int64_t(1 + m.below(8));
    case 2: return int64_t(1 + m.below(1 << 16));
    default: return int64_t(1) << m.below(63);
  }
}

// A safetensors file of 1..3000 tensors whose shapes and offsets are edited together: each
// entry's bytes match its shape (so the size check passes where it can), and the offsets
// overlap (one block for all), tile, or leave gaps; the data section is at most 1 MiB.
Bytes safetensors_generated(Mutator& m) {
  const int count = 1 + int(m.below(m.below(2) ? 3000 : 4));
  const int mode = int(m.below(3));  // 0: all at offset 0 (aliases); 1: tiled; 2: random starts
  std::string header = "{";
  uint64_t at = 0, data = 0;
  for (int k = 0; k < count; ++k) {
    std::vector<int64_t> shape(m.below(4));
    uint64_t numel = 1;
    for (int64_t& d : shape) numel *= uint64_t(d = hostile_size(m));
    const uint64_t bytes = numel * 4;  // wraps for huge shapes, as a hostile writer's arithmetic might
    const uint64_t begin = mode == 0 ? 0 : mode == 1 ? at : m.below(uint64_t(1) << 20);
    at = begin + bytes;
    data = std::max(data, std::min<uint64_t>(at, uint64_t(1) << 20));
    header += std::string(k ? "," : "") + "\"t" + std::to_string(k) + "\":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t i = 0; i < shape.size(); ++i) header += (i ? "," : "") + std::to_string(shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(begin + bytes) + "]}";
  }
  header += "}";
  return emonext::test::le(header.size(), 8) + header + Bytes(size_t(data), '\0');
}

// A torch.save file of 1..3000 tensors over one storage: views that alias it, sizes of 0
// beside huge ones, a storage that claims more elements than its bytes.
Bytes torch_generated(Mutator& m) {
  const int count = 1 + int(m.below(m.below(2) ? 3000 : 4));
  const int64_t storage = m.below(2) ? int64_t(1 + m.below(1 << 18)) : hostile_size(m);
  std::vector<emonext::test::View> views;
  for (int k = 0; k < count; ++k) {
    emonext::test::View v;
    v.offset = m.below(4) ? int64_t(m.below(uint64_t(std::max<int64_t>(storage, 1)))) : hostile_size(m);
    const size_t rank = m.below(4);
    for (size_t i = 0; i < rank; ++i) {
      v.shape.push_back(m.below(2) ? int64_t(m.below(uint64_t(std::max<int64_t>(storage - v.offset, 1)) + 1)) : hostile_size(m));
      v.stride.push_back(m.below(3) ? 1 : hostile_size(m));
    }
    views.push_back(v);
  }
  const size_t bytes = size_t(std::min<int64_t>(storage, 1 << 18)) * 4;
  return emonext::test::torch_file(emonext::test::views_pickle(storage, views), m.below(4) ? bytes : bytes / 2);
}

// A progressive JPEG with its last scan repeated 0..3000 more times, sometimes over a
// header of up to 8192 x 8192; or a JPEG whose frame header the decoder refuses.
Bytes jpeg_generated(Mutator& m) {
  using emonext::test::progressive_jpeg_bytes;
  if (m.below(3) == 0) {  // a refused header: 12-bit, lossless (SOF3), arithmetic (SOF9), zero height
    Bytes j = emonext::test::jpeg_bytes(8 + int(m.below(40)), 8 + int(m.below(40)));
    const size_t sof = j.find("\xff\xc0");
    switch (m.below(4)) {
      case 0: j[sof + 4] = 12; break;
      case 1: j[sof + 1] = char(0xC3); break;
      case 2: j[sof + 1] = char(0xC9); break;
      default: j[sof + 5] = j[sof + 6] = 0;
    }
    return j;
  }
  static const int kRepeats[] = {0, 1, 50, 89, 90, 91, 500, 3000};
  const int side = m.below(2) ? 8192 : 0;
  return emonext::test::with_repeated_scans(progressive_jpeg_bytes(16 + int(m.below(48)), 16 + int(m.below(48)), m.below(2) ? 1 : 3),
                                            kRepeats[m.below(8)], side, side);
}

Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<Target> targets(const std::string& scratch) {
  using namespace emonext;
  std::vector<Target> out;
  const std::string fixtures = EMONEXT_TEST_FIXTURES, fer = std::string(EMONEXT_SOURCE_DIR) + "/../shared/fer2013";

  out.push_back({"torch",
                 {read_bytes(fixtures + "/torch_zip.pt"), read_bytes(fixtures + "/torch_zip64.pt")},
                 [](const Bytes& b) {
                   const PyRef top = parse_torch_file(std::vector<char>(b.begin(), b.end()), "input.pt");
                   std::vector<Tensor> read;
                   for (const PyObject* d : {top.get(), top->get("model").get(), top->get("state_dict").get(), top->get("ema").get()})
                     if (d && d->kind == PyObject::Kind::Dict)
                       for (const auto& [name, t] : tensor_dict(*d)) read.push_back(t);
                   check_holds_at_most_the_input(read, b);
                 },
                 {torch_generated}});

  // A checkpoint and a training state as the engine writes them, with small tensors.
  std::map<std::string, std::string> ckpt = {{"format", "emonext"}, {"model", "atto"}, {"classes", "7"}, {"image_size", "48"},
                                             {"labels", "angry,disgust,fear,happy,neutral,sad,surprise"}};
  std::map<std::string, std::string> state = setting_metadata(TrainConfig{});
  for (const auto& [k, v] : std::map<std::string, std::string>{{"epoch", "3"}, {"step", "120"}, {"best_accuracy", "0.41"},
                                                               {"loss_scale", "65536"}})
    state[k] = v;
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"head.weight", Tensor::from_vector(std::vector<double>(14, 0.5), {7, 2})},
      {"head.bias", Tensor::from_vector(std::vector<double>(7, 0.1), {7})},
      {"stages.0.0.dwconv.weight", Tensor::from_vector(std::vector<double>(49, 0.2), {1, 1, 7, 7}).to(DType::BF16)},
      {"counter", Tensor::from_ints({5}, {1})}};
  save_safetensors(scratch + "/c.safetensors", tensors, ckpt);
  save_safetensors(scratch + "/s.safetensors", tensors, state);
  out.push_back({"safetensors",
                 {read_bytes(scratch + "/c.safetensors"), read_bytes(scratch + "/s.safetensors")},
                 [](const Bytes& b) {
                   const SafeTensors f = parse_safetensors(b.data(), b.size(), "input.safetensors");
                   std::vector<Tensor> read;
                   for (const auto& [name, t] : f.tensors) read.push_back(t);
                   check_holds_at_most_the_input(read, b);
                   try {
                     read_checkpoint_info(f.metadata, "input.safetensors");
                   } catch (const Error&) {
                   }
                   config_from_metadata(f.metadata, "input.safetensors");
                 },
                 {safetensors_generated}});

  using test::jpeg_bytes;
  using test::png_bytes;
  // After each input, accepted or refused, a good JPEG decodes on the same thread.
  static const Bytes good_jpeg = jpeg_bytes(48, 48, 1);
  const auto decode = [](const Bytes& b, const char* name) {
    return decode_gray_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), name);
  };
  Target image{"image",
               {png_bytes(48, 48, 1), png_bytes(20, 31, 3), png_bytes(9, 5, 4), good_jpeg, jpeg_bytes(37, 23, 3),
                test::progressive_jpeg_bytes(40, 30, 3)},
               [decode](const Bytes& b) {
                 try {
                   eval_view(decode(b, "input"), 48);
                 } catch (const Error&) {
                   try {
                     decode(good_jpeg, "a good JPEG");
                   } catch (const Error& e) {
                     throw Finding(std::string("a refused input left the decoder broken: ") + e.what());
                   }
                   throw;
                 }
               },
               {jpeg_generated}};
  if (fs::is_directory(fer + "/val"))
    for (const char* emotion : {"angry", "happy", "surprise"})
      image.seeds.push_back(read_bytes(fs::directory_iterator(fer + "/val/" + emotion)->path().string()));
  out.push_back(image);

  Bytes csv = "emotion,pixels,Usage\n";
  for (int r = 0; r < 3; ++r) {
    csv += std::to_string(r * 2) + ",";
    for (int i = 0; i < 2304; ++i) csv += (i ? " " : "") + std::to_string((i * 7 + r) % 256);
    csv += r == 1 ? ",PublicTest\n" : ",Training\n";
  }
  out.push_back({"csv", {csv}, [](const Bytes& b) {
                   std::istringstream in(b);
                   read_fer2013_csv(in, "input.csv", "Training");
                 }});

  // A folder of good faces, two per emotion, and the input as angry/3_bad.jpg, between
  // them in the order a loader thread decodes them.
  const std::string folder = scratch + "_folder";
  for (const std::string& emotion : fer2013_labels()) {
    fs::create_directories(folder + "/val/" + emotion);
    for (const char* name : {"/0.jpg", "/9.jpg"}) std::ofstream(folder + "/val/" + emotion + name, std::ios::binary) << good_jpeg;
  }
  std::ofstream(folder + "/val/angry/3_bad.jpg", std::ios::binary) << good_jpeg;
  const auto data = std::make_shared<Dataset>(read_image_folders(folder, "val"));
  out.push_back({"folder", image.seeds, [data, folder](const Bytes& b) {
                   std::ofstream(folder + "/val/angry/3_bad.jpg", std::ios::binary | std::ios::trunc) << b;
                   Loader loader(*data, int64_t(data->samples.size()), 48, false, Augment{}, 0, 0, 1);
                   const Batch batch = loader.next();
                   if (batch.labels.numel() < int64_t(data->samples.size()) - 1)
                     throw Finding("one bad file lost " + std::to_string(int64_t(data->samples.size()) - 1 - batch.labels.numel()) +
                                   " good faces: " + (batch.unreadable.empty() ? "" : batch.unreadable.back()));
                 },
                 {jpeg_generated}});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 20, input_seconds = 10;
  uint64_t seed = 1;
  std::string only, save_dir = fs::temp_directory_path().string(), replay;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--seconds") seconds = std::stod(v);
    else if (a == "--seed") seed = std::stoull(v);
    else if (a == "--targets") only = "," + v + ",";
    else if (a == "--input-seconds") input_seconds = std::stod(v);
    else if (a == "--max-alloc-mb") g_max_alloc = size_t(std::stoull(v)) << 20;
    else if (a == "--save-dir") save_dir = v;
    else if (a == "--replay") replay = v;
    else {
      std::fprintf(stderr, "usage: emonext_fuzz [--seconds S] [--seed N] [--targets torch,safetensors,image,csv,folder] "
                           "[--input-seconds T] [--max-alloc-mb M] [--save-dir DIR] [--replay FILE]\n");
      return 2;
    }
  }
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGALRM}) signal(sig, on_fatal_signal);
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_set_death_callback(save_current);  // a sanitizer report ends the process its own way
#endif
  const std::string scratch = save_dir + "/emonext_fuzz_" + std::to_string(::getpid());
  fs::create_directories(scratch);
  std::vector<Target> all;
  try {
    all = targets(scratch);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "emonext_fuzz: cannot make the seeds: %s\n", e.what());
    return 1;
  }
  fs::remove_all(scratch);
  int findings = 0;
  if (!replay.empty()) {
    const Bytes input = read_bytes(replay);
    for (Target& t : all) {
      if (!only.empty() && only.find("," + t.name + ",") == std::string::npos) continue;
      const auto t0 = std::chrono::steady_clock::now();
      std::string what = "accepted";
      try {
        t.read(input);
      } catch (const emonext::Error& e) {
        what = std::string("refused: ") + e.what();
      } catch (const std::exception& e) {
        what = std::string("FINDING: ") + e.what();
        ++findings;
      }
      std::printf("%-12s %.3f s: %s\n", t.name.c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                  what.c_str());
    }
    fs::remove_all(scratch + "_folder");
    return findings ? 1 : 0;
  }
  for (Target& t : all) {
    if (!only.empty() && only.find("," + t.name + ",") == std::string::npos) continue;
    std::snprintf(g_save_path, sizeof g_save_path, "%s/emonext_fuzz_finding_%s.bin", save_dir.c_str(), t.name.c_str());
    for (const Bytes& s : t.seeds) {  // every seed must be accepted, or the mutations start from nothing
      try {
        t.read(s);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "emonext_fuzz: %s: a seed is refused: %s\n", t.name.c_str(), e.what());
        return 1;
      }
    }
    Mutator mutator(seed * 1000003 + std::hash<std::string>{}(t.name));
    int64_t runs = 0, accepted = 0;
    std::set<std::string> reasons;
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    int64_t generated = 0;
    while (std::chrono::steady_clock::now() < end) {
      const bool generate = !t.generators.empty() && mutator.below(3) == 0;
      generated += generate;
      const Bytes input = generate ? (mutator.below(2) ? t.generators[mutator.below(t.generators.size())](mutator)
                                                       : mutator.mutate(t.generators[mutator.below(t.generators.size())](mutator), t.seeds, 1))
                                   : mutator.mutate(t.seeds[size_t(runs) % t.seeds.size()], t.seeds);
      g_current = &input;
      alarm(unsigned(std::max(1.0, input_seconds)));
      try {
        t.read(input);
        ++accepted;
      } catch (const emonext::Error& e) {
        if (reasons.size() < 100000) {  // the message without its numbers: the kinds of refusal
          std::string kind = e.what();
          for (char& c : kind)
            if (c >= '0' && c <= '9') c = '#';
          reasons.insert(kind.substr(0, 120));
        }
      } catch (const Finding& e) {
        std::fprintf(stderr, "emonext_fuzz: FINDING: %s: %s\n", t.name.c_str(), e.what());
        save_current();
        ++findings;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "emonext_fuzz: FINDING: %s: a %s escaped the reader: %s\n", t.name.c_str(), typeid(e).name(), e.what());
        save_current();
        ++findings;
      }
      alarm(0);
      g_current = nullptr;
      ++runs;
    }
    std::printf("%-12s %8lld inputs (%lld generated) in %.0f s: %lld accepted, the rest refused (%zu kinds of refusal)\n",
                t.name.c_str(), (long long)runs, (long long)generated, seconds, (long long)accepted, reasons.size());
    std::fflush(stdout);
  }
  fs::remove_all(scratch + "_folder");
  if (findings) std::printf("%d finding(s); inputs saved under %s\n", findings, save_dir.c_str());
  return findings ? 1 : 0;
}
