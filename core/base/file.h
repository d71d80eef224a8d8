// Reading a file the engine did not write: its size first (a directory or a device is
// refused: they open as streams of no useful length), then at most `max_bytes` of it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "core/base/error.h"

namespace emonext {

// The size of a regular file, or an error naming it.
inline uint64_t regular_file_size(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  EMONEXT_CHECK(!ec && std::filesystem::exists(status), path, ": cannot open the file (no such file)");
  EMONEXT_CHECK(std::filesystem::is_regular_file(status), path, ": not a file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  EMONEXT_CHECK(!ec, path, ": cannot tell the file's size (", ec.message(), ")");
  return size;
}

// The whole file, refused when it is larger than max_bytes.
inline std::vector<char> read_file(const std::string& path, uint64_t max_bytes = std::numeric_limits<uint64_t>::max()) {
  const uint64_t size = regular_file_size(path);
  EMONEXT_CHECK(size <= max_bytes, path, ": ", size, " bytes is more than such a file may have (", max_bytes, ")");
  std::vector<char> bytes(static_cast<size_t>(size));
  std::ifstream f(path, std::ios::binary);
  EMONEXT_CHECK(f.good(), path, ": cannot open the file");
  EMONEXT_CHECK(f.read(bytes.data(), std::streamsize(bytes.size())), path, ": read error");
  return bytes;
}

}  // namespace emonext
