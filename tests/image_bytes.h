// Small PNG and JPEG files made in memory (train/report_html's writers) with pixels from a
// fixed pattern: seeds for the fuzzer and inputs for the readers' tests.
#pragma once
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

}  // namespace emonext::test
