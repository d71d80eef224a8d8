// emonext_fuzz: every reader of a file from a stranger, fed mutated copies of valid
// files, in process, for a set time. A reader may accept an input or refuse it with an
// emonext::Error; anything else is a finding: a crash or a sanitizer report (the
// sanitizer build), another exception type (an unchecked path: std::length_error,
// std::bad_alloc, ...), an input that takes longer than --input-seconds, or an
// allocation past --max-alloc-mb. The input that caused it is written to --save-dir.
//
//   emonext_fuzz [--seconds S] [--seed N] [--targets torch,safetensors,image,csv]
//                [--input-seconds T] [--max-alloc-mb M] [--save-dir DIR]
//
// Targets and their seeds (valid files, made here or read from the fixtures):
//   torch        tests/fixtures/torch_zip.pt and torch_zip64.pt (written by PyTorch), through
//                parse_torch_file and tensor_dict
//   safetensors  a checkpoint and a training state of the engine's own form (small tensors,
//                full metadata), through parse_safetensors, read_checkpoint_info and
//                config_from_metadata
//   image        FER2013 JPEGs (../shared/fer2013, when there) and PNGs made here, through
//                decode_gray_image and the evaluation view
//   csv          FER2013 CSV rows, through read_fer2013_csv
// Mutations: bit flips, interesting bytes and 2/4/8-byte integers at random offsets (the
// zip's offsets and sizes, pickle integers, image headers), cuts, repeats, splices of
// another seed, decimal numbers in text swapped for boundary values (JSON shapes and
// offsets, metadata, CSV pixels), and deep nesting ('[' runs in JSON, ']'/'a' runs in a
// pickle).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <new>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "core/safetensors.h"
#include "core/torch_file.h"
#include "models/checkpoint.h"
#include "train/config.h"
#include "train/data.h"
#include "tests/image_bytes.h"
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

  Bytes mutate(Bytes b, const std::vector<Bytes>& seeds) {
    const int n = 1 + int(below(3));
    for (int k = 0; k < n; ++k) one(b, seeds);
    if (b.size() > (size_t(1) << 22)) b.resize(size_t(1) << 22);  // inputs stay small: many per second
    return b;
  }

 private:
  uint64_t below(uint64_t n) { return n ? rng_() % n : 0; }
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
};

Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<Target> targets(const std::string& scratch) {
  using namespace emonext;
  std::vector<Target> out;
  const std::string fixtures = EMONEXT_TEST_FIXTURES, fer = std::string(EMONEXT_SOURCE_DIR) + "/../shared/fer2013";

  out.push_back({"torch", {read_bytes(fixtures + "/torch_zip.pt"), read_bytes(fixtures + "/torch_zip64.pt")}, [](const Bytes& b) {
                   const PyRef top = parse_torch_file(std::vector<char>(b.begin(), b.end()), "input.pt");
                   for (const char* key : {"model", "state_dict", "ema"})
                     if (const PyRef sd = top->get(key); sd && sd->kind == PyObject::Kind::Dict) tensor_dict(*sd);
                 }});

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
  out.push_back({"safetensors", {read_bytes(scratch + "/c.safetensors"), read_bytes(scratch + "/s.safetensors")}, [](const Bytes& b) {
                   const SafeTensors f = parse_safetensors(b.data(), b.size(), "input.safetensors");
                   try {
                     read_checkpoint_info(f.metadata, "input.safetensors");
                   } catch (const Error&) {
                   }
                   config_from_metadata(f.metadata, "input.safetensors");
                 }});

  using test::jpeg_bytes;
  using test::png_bytes;
  Target image{"image", {png_bytes(48, 48, 1), png_bytes(20, 31, 3), png_bytes(9, 5, 4), jpeg_bytes(48, 48, 1), jpeg_bytes(37, 23, 3)},
               [](const Bytes& b) {
                 const GrayImage img = decode_gray_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "input");
                 eval_view(img, 48);
               }};
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
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 20, input_seconds = 10;
  uint64_t seed = 1;
  std::string only, save_dir = fs::temp_directory_path().string();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--seconds") seconds = std::stod(v);
    else if (a == "--seed") seed = std::stoull(v);
    else if (a == "--targets") only = "," + v + ",";
    else if (a == "--input-seconds") input_seconds = std::stod(v);
    else if (a == "--max-alloc-mb") g_max_alloc = size_t(std::stoull(v)) << 20;
    else if (a == "--save-dir") save_dir = v;
    else {
      std::fprintf(stderr, "usage: emonext_fuzz [--seconds S] [--seed N] [--targets torch,safetensors,image,csv] "
                           "[--input-seconds T] [--max-alloc-mb M] [--save-dir DIR]\n");
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
    while (std::chrono::steady_clock::now() < end) {
      const Bytes input = mutator.mutate(t.seeds[size_t(runs) % t.seeds.size()], t.seeds);
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
      } catch (const std::exception& e) {
        std::fprintf(stderr, "emonext_fuzz: FINDING: %s: a %s escaped the reader: %s\n", t.name.c_str(), typeid(e).name(), e.what());
        save_current();
        ++findings;
      }
      alarm(0);
      g_current = nullptr;
      ++runs;
    }
    std::printf("%-12s %8lld inputs in %.0f s: %lld accepted, the rest refused (%zu kinds of refusal)\n", t.name.c_str(),
                (long long)runs, seconds, (long long)accepted, reasons.size());
    std::fflush(stdout);
  }
  if (findings) std::printf("%d finding(s); inputs saved under %s\n", findings, save_dir.c_str());
  return findings ? 1 : 0;
}
