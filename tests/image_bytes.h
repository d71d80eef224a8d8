// Small PNG and JPEG files made in memory (stb_image_write, compiled static into the one
// file that includes this), with pixels from a fixed pattern: seeds for the fuzzer and
// inputs for the readers' tests.
#pragma once
#include <string>
#include <vector>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <stb/stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace emonext::test {

inline std::vector<unsigned char> pattern(int w, int h, int channels) {
  std::vector<unsigned char> px(size_t(w) * size_t(h) * size_t(channels));
  for (size_t i = 0; i < px.size(); ++i) px[i] = (unsigned char)(i * 37 + i / 7);
  return px;
}

inline std::string png_bytes(int w, int h, int channels = 1) {
  const std::vector<unsigned char> px = pattern(w, h, channels);
  int n = 0;
  unsigned char* mem = stbi_write_png_to_mem(px.data(), w * channels, w, h, channels, &n);
  std::string out(reinterpret_cast<char*>(mem), size_t(n));
  STBIW_FREE(mem);
  return out;
}

inline std::string jpeg_bytes(int w, int h, int channels = 1) {
  const std::vector<unsigned char> px = pattern(w, h, channels);
  std::string out;
  stbi_write_jpg_to_func([](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size_t(size)); },
                         &out, w, h, channels, px.data(), 90);
  return out;
}

}  // namespace emonext::test
