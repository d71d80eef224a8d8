// Reading a file the engine did not write: its size first (a directory or a device is
// refused: they open as streams of no useful length), then at most `max_bytes` of it.
#pragma once
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
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

// Makes the folder (and its parents) and writes a file into it, so that a path that
// cannot be a folder or cannot be written is said now, naming `what` (the option), not
// after hours of work.
inline void make_writable_folder(const std::string& dir, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  EMONEXT_CHECK(!ec && std::filesystem::is_directory(dir), what, " ", dir, ": cannot make that folder (",
                ec ? ec.message() : "a file has that name", ")");
  const std::filesystem::path probe = std::filesystem::path(dir) / ".emonext_write_test";
  const bool writable = static_cast<bool>(std::ofstream(probe) << "ok\n");
  std::filesystem::remove(probe, ec);
  EMONEXT_CHECK(writable, what, " ", dir, ": cannot write files there");
}

// Writes a file by `write` into path.tmp, then renames it over path: a reader sees the
// previous file or the new one, never half of one. A failed write (a full disk) or an
// exception from `write` leaves the previous file as it was and no .tmp behind.
inline void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
  const std::string tmp = path + ".tmp";
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    EMONEXT_CHECK(out, tmp, ": cannot open for writing");
    write(out);
    out.close();  // flushes; a failed flush sets failbit
    EMONEXT_CHECK(out, tmp, ": write failed (disk full?)");
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  EMONEXT_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, path, ": cannot rename ", tmp, " into place");
}

}  // namespace emonext
