// What the engine accepts from a file or a command line it did not write: the limits
// every reader bounds a count, size, offset, stride or depth by before it uses it, and
// the checked arithmetic they compute sizes with. Each limit is far past any real file
// (docs/ARCHITECTURE.md, "Untrusted input"); a value past one is refused with an error
// naming the file, the field and the limit.
#pragma once
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <vector>

#include "core/base/error.h"

namespace emonext::limits {

// A tensor in a file: at most 8 dimensions and 2^34 elements (64 GiB of f32;
// ConvNeXt-XLarge's largest weight has 2^24).
inline constexpr int kMaxRank = 8;
inline constexpr int64_t kMaxElements = int64_t(1) << 34;
// Nesting: JSON objects and arrays in a safetensors header, containers in a pickle (a
// state dict nests 2 or 3 deep).
inline constexpr int kMaxNesting = 64;
// Objects in one pickle (a ConvNeXt-XLarge state dict has ~10^4).
inline constexpr int64_t kMaxPickleObjects = int64_t(1) << 24;
// Images: at most 2^26 pixels (8192 x 8192) with sides at most 16 times each other (a
// resize to the model's size scales memory by the square of the aspect ratio).
inline constexpr int64_t kMaxImagePixels = int64_t(1) << 26;
inline constexpr int64_t kMaxImageAspect = 16;
// A JPEG's scans (SOS markers): a progressive encoder writes about 10, and each scan is a
// pass over the whole image.
inline constexpr int64_t kMaxJpegScans = 100;
// A model's input size and classes (checkpoint metadata, --img-size, --classes): EmoNeXt
// is trained at 224 on 7 emotions; ImageNet-22k has 21,841 classes.
inline constexpr int64_t kMaxModelImageSize = 2048;
inline constexpr int64_t kMaxClasses = 100000;
// A training batch (--batch, a training state): at most 65,536 images.
inline constexpr int64_t kMaxBatch = int64_t(1) << 16;
// A training state's step counts (2^52: the device's control block holds them as f64,
// exact to 2^53, so a run resumed at the limit still writes a state the next resume
// reads), and a run's logs read back by a resume (300 epochs of steps.csv is ~8 MB).
inline constexpr int64_t kMaxRunSteps = int64_t(1) << 52;
inline constexpr uint64_t kMaxLogBytes = uint64_t(1) << 30;
// Synthetic images (--synthetic, a training state's setting): 2^20 of 48 x 48.
inline constexpr int64_t kMaxSynthetic = int64_t(1) << 20;
static_assert(kMaxBatch <= kMaxSynthetic, "a synthetic set holds at least one batch");

// a + b and a * b of non-negative sizes, or an error naming `what` when the result
// passes 2^63 - 1.
template <class... Where>
int64_t add(int64_t a, int64_t b, const Where&... what) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) fail(detail::concat(what..., ": size overflows (", a, " + ", b, ")"));
  return r;
}
template <class... Where>
int64_t mul(int64_t a, int64_t b, const Where&... what) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) fail(detail::concat(what..., ": size overflows (", a, " x ", b, ")"));
  return r;
}

// The element count of a shape read from a file: its rank, each size (>= 0) and the
// product checked against the limits above. The product of the sizes other than 0 is
// bounded too: a [0, 2^62, 2^62] tensor holds nothing, but its strides (products of the
// sizes after each dimension) would overflow.
template <class... Where>
int64_t numel(const std::vector<int64_t>& shape, const Where&... what) {
  if (shape.size() > size_t(kMaxRank))
    fail(detail::concat(what..., ": ", shape.size(), " dimensions (at most ", kMaxRank, ")"));
  int64_t n = 1, nonzero = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(detail::concat(what..., ": negative size ", d));
    nonzero = mul(nonzero, std::max<int64_t>(d, 1), what...);
    if (nonzero > kMaxElements) fail(detail::concat(what..., ": more than ", kMaxElements, " elements"));
    n *= d;
  }
  return n;
}

// A whole decimal integer in [lo, hi], or an error naming `what` (std::stoll would throw
// its own exception, or accept "12abc").
inline int64_t parse_int(const std::string& text, const std::string& what, int64_t lo = std::numeric_limits<int64_t>::min(),
                         int64_t hi = std::numeric_limits<int64_t>::max()) {
  int64_t v = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  if (r.ec != std::errc() || r.ptr != text.data() + text.size() || text.empty())
    fail(detail::concat(what, ": '", text.substr(0, 40), "' is not a whole number"));
  if (v < lo || v > hi) fail(detail::concat(what, ": ", v, " is out of range [", lo, ", ", hi, "]"));
  return v;
}

// A finite decimal number, or an error naming `what`.
inline double parse_real(const std::string& text, const std::string& what) {
  double v = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  if (r.ec != std::errc() || r.ptr != text.data() + text.size() || text.empty() || !(v - v == 0))
    fail(detail::concat(what, ": '", text.substr(0, 40), "' is not a finite number"));
  return v;
}

}  // namespace emonext::limits
