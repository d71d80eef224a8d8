// Small PNG and JPEG files made in memory (train/report_html's writers) with pixels from a
// fixed pattern: seeds for the fuzzer and inputs for the readers' tests.
#pragma once
#include <turbojpeg.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "train/report_html.h"

namespace emonext::test {

inline std::vector<unsigned char> pattern(int w, int h, int channels) {
  std::vector<unsigned char> px(size_t(w) * size_t(h) * size_t(channels));
  for (size_t i = 0; i < px.size(); ++i) px[i] = (unsigned char)(i * 37 + i / 7);
  return px;
}

inline std::string png_bytes(int w, int h, int channels = 1) { return html::png(pattern(w, h, channels).data(), w, h, channels); }
inline std::string jpeg_bytes(int w, int h, int channels = 1) { return html::jpeg(pattern(w, h, channels).data(), w, h, channels); }

// A progressive JPEG (libjpeg-turbo's scan script: 6 scans for gray, 10 for colour).
inline std::string progressive_jpeg_bytes(int w, int h, int channels = 1) {
  tjhandle t = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long n = 0;
  const std::vector<unsigned char> px = pattern(w, h, channels);
  const int ok = tjCompress2(t, px.data(), w, 0, h, channels == 1 ? TJPF_GRAY : TJPF_RGB, &out, &n,
                             channels == 1 ? TJSAMP_GRAY : TJSAMP_420, 90, TJFLAG_PROGRESSIVE);
  std::string bytes = ok == 0 ? std::string(reinterpret_cast<char*>(out), n) : "";
  tjFree(out);
  tjDestroy(t);
  if (bytes.empty()) throw std::runtime_error("progressive_jpeg_bytes: cannot encode");
  return bytes;
}

// The JPEG with its last scan (its SOS segment and entropy-coded data, up to EOI) repeated
// `extra` more times, and its frame header's height and width set when given: the file a
// decoder spends one pass over the whole declared image on per scan.
inline std::string with_repeated_scans(std::string jpeg, int extra, int height = 0, int width = 0) {
  const size_t last = jpeg.rfind("\xff\xda"), eoi = jpeg.rfind("\xff\xd9");
  const std::string scan = jpeg.substr(last, eoi - last);
  std::string more;
  for (int k = 0; k < extra; ++k) more += scan;
  jpeg.insert(eoi, more);
  if (height > 0) {
    const size_t sof = jpeg.find("\xff\xc2");
    jpeg[sof + 5] = char(height >> 8), jpeg[sof + 6] = char(height & 0xFF);
    jpeg[sof + 7] = char(width >> 8), jpeg[sof + 8] = char(width & 0xFF);
  }
  return jpeg;
}

}  // namespace emonext::test
