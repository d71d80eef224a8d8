#include "train/image.h"

#include <turbojpeg.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>

#include "core/base/error.h"
#include "core/base/file.h"
#include "core/base/limits.h"

// stb_image for PNG only (JPEG goes to libjpeg-turbo; no other format is read).
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#endif
#include <stb/stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace emonext {

namespace {

// The limits of core/base/limits.h on a header's width and height, before any pixel is
// decoded.
void check_dimensions(const std::string& name, int64_t w, int64_t h) {
  EMONEXT_CHECK(w >= 1 && h >= 1, name, ": an image of ", w, " x ", h, " pixels");
  EMONEXT_CHECK(w <= limits::kMaxImagePixels / h, name, ": ", w, " x ", h, " pixels is more than the ", limits::kMaxImagePixels,
                " an image may have");
  EMONEXT_CHECK(std::max(w, h) <= limits::kMaxImageAspect * std::min(w, h), name, ": ", w, " x ", h,
                " pixels: one side is more than ", limits::kMaxImageAspect, " times the other");
}

// A progressive JPEG's scans each pass over the whole image: a small file of thousands of
// scans over a large header decodes for minutes (10,000 scans of 8192 x 8192: 57 s), and
// nothing in it warns. Real encoders write at most ~10 (libjpeg's progressive script).
// Each scan starts with an SOS marker (FF DA), which cannot occur inside entropy-coded
// data (an FF there is followed by 00 or a restart marker), so the pairs are counted
// before anything is decoded; a thumbnail inside an APP segment adds its own few.
int64_t jpeg_scans(const uint8_t* data, size_t n) {
  int64_t scans = 0;
  for (const uint8_t* p = data; (p = static_cast<const uint8_t*>(std::memchr(p, 0xFF, size_t(data + n - p)))) && p + 1 < data + n; ++p)
    scans += p[1] == 0xDA;
  return scans;
}

// libjpeg-turbo (fuzzed upstream, continuously): the header first, then the pixels as
// gray (the luma channel of a colour JPEG). A file the decoder has to guess at (a
// warning: truncated data, a bad Huffman code) is refused, not half-decoded. Each loader
// thread keeps one decoder; any failure drops it, since a header it refused (12-bit
// samples, a lossless or arithmetic-coded frame, a zero height) leaves it mid-header and
// every later file on the thread would fail ("two SOI markers").
GrayImage decode_jpeg(const uint8_t* data, size_t n, const std::string& name) {
  struct Closer { void operator()(void* h) const { tjDestroy(h); } };
  thread_local std::unique_ptr<void, Closer> handle;
  EMONEXT_CHECK(n <= ULONG_MAX, name, ": file too large");
  const int64_t scans = jpeg_scans(data, n);
  EMONEXT_CHECK(scans <= limits::kMaxJpegScans, name, ": cannot decode the image (JPEG: ", scans, " scans; at most ",
                limits::kMaxJpegScans, " are read)");
  if (!handle) handle.reset(tjInitDecompress());
  EMONEXT_CHECK(handle, name, ": cannot start the JPEG decoder");
  try {
    int w = 0, h = 0, subsampling = 0, colorspace = 0;
    if (tjDecompressHeader3(handle.get(), data, static_cast<unsigned long>(n), &w, &h, &subsampling, &colorspace) != 0)
      fail(detail::concat(name, ": cannot decode the image (JPEG header: ", tjGetErrorStr2(handle.get()), ")"));
    EMONEXT_CHECK(colorspace != TJCS_CMYK && colorspace != TJCS_YCCK, name, ": a CMYK JPEG (save it as RGB or gray)");
    check_dimensions(name, w, h);
    std::vector<uint8_t> gray(size_t(w) * size_t(h));
    // TJFLAG_LIMITSCANS: libjpeg-turbo's own bound (500 scans), behind the count above.
    if (tjDecompress2(handle.get(), data, static_cast<unsigned long>(n), gray.data(), w, 0, h, TJPF_GRAY,
                      TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0)
      fail(detail::concat(name, ": cannot decode the image (JPEG: ", tjGetErrorStr2(handle.get()), ")"));
    return gray_from_bytes(gray.data(), h, w);
  } catch (...) {
    handle.reset();  // the next file starts from a fresh decoder
    throw;
  }
}

// A PNG's chunks (length, type, data, CRC after the 8-byte signature) walked before stb
// sees them: each must fit in the file. stb grows its buffer for the compressed image
// data to the length a chunk claims before reading it, so a 100-byte file claiming a
// 2 GB chunk made it allocate 2 GB (found by emonext_fuzz).
void check_png_chunks(const uint8_t* data, size_t n, const std::string& name) {
  for (size_t at = 8; at < n;) {
    EMONEXT_CHECK(n - at >= 12, name, ": cannot decode the image (PNG: a chunk cut short at byte ", at, ")");
    const uint64_t length = (uint64_t(data[at]) << 24) | (uint64_t(data[at + 1]) << 16) | (uint64_t(data[at + 2]) << 8) | data[at + 3];
    EMONEXT_CHECK(length <= n - at - 12, name, ": cannot decode the image (PNG: a chunk of ", length, " bytes at byte ", at,
                  " runs past the end of the file)");
    if (std::memcmp(data + at + 4, "IEND", 4) == 0) return;
    // An empty image-data chunk before any data makes stb copy zero bytes into a buffer it
    // has not made (a null pointer, undefined behaviour; found by emonext_fuzz). No
    // encoder writes one.
    EMONEXT_CHECK(length > 0 || std::memcmp(data + at + 4, "IDAT", 4) != 0, name,
                  ": cannot decode the image (PNG: an empty IDAT chunk at byte ", at, ")");
    at += 12 + size_t(length);
  }
}

// stb_image's PNG decoder, its size read from the header before anything is decoded;
// gray by stb's luma weights (alpha dropped).
GrayImage decode_png(const uint8_t* data, size_t n, const std::string& name) {
  EMONEXT_CHECK(n <= size_t(INT32_MAX), name, ": file too large");
  check_png_chunks(data, n, name);
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(data, int(n), &w, &h, &channels))
    fail(detail::concat(name, ": cannot decode the image (PNG: ", stbi_failure_reason(), ")"));
  check_dimensions(name, w, h);
  unsigned char* px = stbi_load_from_memory(data, int(n), &w, &h, &channels, 1);
  EMONEXT_CHECK(px != nullptr, name, ": cannot decode the image (PNG: ", stbi_failure_reason(), ")");
  GrayImage img = gray_from_bytes(px, h, w);
  stbi_image_free(px);
  return img;
}

}  // namespace

GrayImage decode_gray_image(const uint8_t* data, size_t n, const std::string& name) {
  static constexpr uint8_t kJpeg[] = {0xFF, 0xD8, 0xFF}, kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (n >= sizeof kJpeg && std::memcmp(data, kJpeg, sizeof kJpeg) == 0) return decode_jpeg(data, n, name);
  if (n >= sizeof kPng && std::memcmp(data, kPng, sizeof kPng) == 0) return decode_png(data, n, name);
  fail(detail::concat(name, ": cannot decode the image (not a JPEG or PNG file)"));
}

GrayImage load_gray_image(const std::string& path) {
  const std::vector<char> bytes = read_file(path, kMaxImageFileBytes);
  return decode_gray_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

GrayImage gray_from_bytes(const uint8_t* px, int64_t h, int64_t w) {
  GrayImage img{h, w, std::vector<float>(size_t(h * w))};
  for (size_t i = 0; i < img.px.size(); ++i) img.px[i] = float(px[i]);
  return img;
}

namespace {

// One axis of a separable resample: `lines` lines of n_in values -> n_out values, along
// rows ([lines, n_in] -> [lines, n_out]) or columns ([n_in, lines] -> [n_out, lines]).
// Output pixel centre c = (o + 0.5) * scale; triangle weights of support max(scale, 1).
std::vector<float> resample_axis(const std::vector<float>& in, int64_t n_in, int64_t n_out, int64_t lines, bool along_rows) {
  const double scale = double(n_in) / double(n_out), support = std::max(scale, 1.0);
  std::vector<float> out(size_t(lines * n_out));
  std::vector<double> weights;
  for (int64_t o = 0; o < n_out; ++o) {
    const double centre = (double(o) + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(0, int64_t(std::floor(centre - support))),
                  hi = std::min<int64_t>(n_in, int64_t(std::ceil(centre + support)));
    weights.assign(size_t(hi - lo), 0.0);
    double total = 0;
    for (int64_t i = lo; i < hi; ++i) {
      const double d = std::fabs((double(i) + 0.5 - centre) / support);
      total += weights[size_t(i - lo)] = std::max(0.0, 1.0 - d);
    }
    for (int64_t l = 0; l < lines; ++l) {
      double acc = 0;
      for (int64_t i = lo; i < hi; ++i) {
        const float v = along_rows ? in[size_t(l * n_in + i)] : in[size_t(i * lines + l)];
        acc += weights[size_t(i - lo)] * v;
      }
      const float r = float(total > 0 ? acc / total : 0.0);
      if (along_rows) out[size_t(l * n_out + o)] = r;
      else out[size_t(o * lines + l)] = r;
    }
  }
  return out;
}

}  // namespace

GrayImage resize_shorter(const GrayImage& img, int64_t size) {
  EMONEXT_CHECK(img.h > 0 && img.w > 0 && size > 0, "resize: empty image or size");
  int64_t h = size, w = size;
  if (img.h < img.w) w = int64_t(double(size) * double(img.w) / double(img.h));
  else if (img.w < img.h) h = int64_t(double(size) * double(img.h) / double(img.w));
  if (h == img.h && w == img.w) return img;
  // Rows first (w), then columns (h).
  const std::vector<float> rows = resample_axis(img.px, img.w, w, img.h, true);
  return GrayImage{h, w, resample_axis(rows, img.h, h, w, false)};
}

GrayImage crop(const GrayImage& img, int64_t top, int64_t left, int64_t h, int64_t w) {
  GrayImage out{h, w, std::vector<float>(size_t(h * w), 0.0f)};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const int64_t sy = top + y, sx = left + x;
      if (sy >= 0 && sy < img.h && sx >= 0 && sx < img.w) out.px[size_t(y * w + x)] = img.at(sy, sx);
    }
  return out;
}

GrayImage center_crop(const GrayImage& img, int64_t size) {
  const int64_t top = int64_t(std::lround(double(img.h - size) / 2.0)), left = int64_t(std::lround(double(img.w - size) / 2.0));
  return crop(img, top, left, size, size);
}

GrayImage hflip(const GrayImage& img) {
  GrayImage out = img;
  for (int64_t y = 0; y < img.h; ++y) std::reverse(out.px.begin() + y * img.w, out.px.begin() + (y + 1) * img.w);
  return out;
}

GrayImage vflip(const GrayImage& img) {
  GrayImage out = img;
  for (int64_t y = 0; y < img.h; ++y)
    std::copy(img.px.begin() + (img.h - 1 - y) * img.w, img.px.begin() + (img.h - y) * img.w, out.px.begin() + y * img.w);
  return out;
}

GrayImage rotate(const GrayImage& img, double degrees) {
  const double a = degrees * M_PI / 180.0, c = std::cos(a), s = std::sin(a);
  const double cy = double(img.h - 1) / 2.0, cx = double(img.w - 1) / 2.0;
  GrayImage out{img.h, img.w, std::vector<float>(img.px.size(), 0.0f)};
  for (int64_t y = 0; y < img.h; ++y)
    for (int64_t x = 0; x < img.w; ++x) {
      // The source of output (x, y): rotate back by -a (image y points down, so a
      // counter-clockwise turn on screen maps (dx, dy) to (c dx + s dy, -s dx + c dy)).
      const double dx = double(x) - cx, dy = double(y) - cy;
      const int64_t sx = int64_t(std::lround(c * dx - s * dy + cx)), sy = int64_t(std::lround(s * dx + c * dy + cy));
      if (sx >= 0 && sx < img.w && sy >= 0 && sy < img.h) out.px[size_t(y * img.w + x)] = img.at(sy, sx);
    }
  return out;
}

int64_t resize_for(int64_t image_size) { return int64_t(std::lround(double(image_size) * 236.0 / 224.0)); }

GrayImage eval_view(const GrayImage& img, int64_t image_size) {
  return center_crop(resize_shorter(img, resize_for(image_size)), image_size);
}

std::vector<GrayImage> ten_crop(const GrayImage& img, int64_t image_size) {
  const GrayImage r = resize_shorter(img, resize_for(image_size));
  const int64_t s = image_size;
  std::vector<GrayImage> crops = {crop(r, 0, 0, s, s), crop(r, 0, r.w - s, s, s), crop(r, r.h - s, 0, s, s),
                                  crop(r, r.h - s, r.w - s, s, s), center_crop(r, s)};
  for (size_t i = 0; i < 5; ++i) crops.push_back(hflip(crops[i]));
  return crops;
}

Tensor to_batch(const std::vector<GrayImage>& images) {
  const int64_t h = images.empty() ? 0 : images[0].h, w = images.empty() ? 0 : images[0].w;
  Tensor x = Tensor::empty({int64_t(images.size()), h, w, 3});
  float* dst = x.data<float>();
  for (const GrayImage& img : images) {
    EMONEXT_CHECK(img.h == h && img.w == w, "to_batch: an image of ", img.h, "x", img.w, " among images of ", h, "x", w);
    for (float v : img.px) {
      dst[0] = dst[1] = dst[2] = v / 255.0f;
      dst += 3;
    }
  }
  return x;
}

}  // namespace emonext
