// Files: reading one the engine did not write (a regular file, its size first, at most
// `max_bytes` of it), and writing the engine's outputs without following a link that
// someone else planted where an output goes (a run folder received as an archive, a
// shared runs folder): every output is created exclusively (O_EXCL | O_NOFOLLOW) under a
// temporary name and renamed into place, and a log is appended to through O_NOFOLLOW.
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <streambuf>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.h"

namespace emonext {

// The size of a regular file, or an error naming it. A FIFO, a device or a folder is
// refused before it is opened (opening a FIFO waits for a writer).
inline uint64_t regular_file_size(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  EMONEXT_CHECK(!ec && std::filesystem::exists(status), path, ": cannot open the file (",
                ec && ec != std::errc::no_such_file_or_directory ? ec.message() : "no such file", ")");
  EMONEXT_CHECK(std::filesystem::is_regular_file(status), path, ": not a file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  EMONEXT_CHECK(!ec, path, ": cannot tell the file's size (", ec.message(), ")");
  return size;
}

// A regular file opened for reading (regular_file_size's checks first).
inline std::ifstream open_regular_file(const std::string& path) {
  regular_file_size(path);
  std::ifstream f(path, std::ios::binary);
  EMONEXT_CHECK(f.good(), path, ": cannot open the file");
  return f;
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

// An output stream over a file descriptor it owns: a failed write (a full disk) sets the
// stream's badbit, as std::ofstream's does.
class FdOutput : public std::ostream {
 public:
  explicit FdOutput(int fd = -1) : std::ostream(nullptr), buf_(fd) { rdbuf(&buf_); }
  // A move takes the descriptor, after the bytes the other stream holds are written.
  FdOutput(FdOutput&& o) noexcept : std::ostream(nullptr), buf_(o.release()) {
    rdbuf(&buf_);
    clear(o.rdstate());
  }
  FdOutput& operator=(FdOutput&& o) noexcept {
    close();
    buf_.fd = o.release();
    clear(o.rdstate());
    return *this;
  }
  ~FdOutput() override { close(); }
  // Flushes and closes; false (and badbit) when a write or the close failed.
  bool close() {
    if (buf_.fd < 0) return !bad();
    const bool ok = buf_.pubsync() == 0 && ::close(buf_.fd) == 0;
    buf_.fd = -1;
    if (!ok) setstate(std::ios::badbit);
    return ok;
  }

 private:
  int release() {
    if (buf_.pubsync() != 0) setstate(std::ios::badbit);
    return std::exchange(buf_.fd, -1);
  }
  struct Buf : std::streambuf {
    explicit Buf(int f) : fd(f) { setp(bytes, bytes + sizeof bytes); }
    int_type overflow(int_type c) override {
      if (sync() != 0) return traits_type::eof();
      if (!traits_type::eq_int_type(c, traits_type::eof())) {
        *pptr() = traits_type::to_char_type(c);
        pbump(1);
      }
      return traits_type::not_eof(c);
    }
    int sync() override {
      for (char* p = pbase(); p < pptr();) {
        const ssize_t w = fd < 0 ? -1 : ::write(fd, p, size_t(pptr() - p));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
      }
      setp(bytes, bytes + sizeof bytes);
      return 0;
    }
    int fd;
    char bytes[1 << 16];
  };
  Buf buf_;
};

// path opened for writing, never through a link: `flags` among O_APPEND, O_TRUNC, O_EXCL
// (with O_CREAT); a link or anything but a regular file there is an error naming it.
inline FdOutput open_output(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | flags, 0644);
  if (fd < 0) {
    const int e = errno;
    fail(detail::concat(path, ": cannot open for writing (",
                        e == ELOOP ? "it is a symbolic link; outputs are not written through links" : std::strerror(e), ")"));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(detail::concat(path, ": not a regular file; outputs are written to regular files only"));
  }
  return FdOutput(fd);
}

// A new file at path, made by this process: whatever was there (a stale file, a planted
// link: the link goes, its target is untouched) is removed first, and the file is created
// exclusively, so nothing planted in between is followed either.
inline FdOutput create_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail(detail::concat(path, ": cannot replace (", std::strerror(errno), ")"));
  return open_output(path, O_EXCL);
}

// Makes the folder (and its parents) and writes a file into it, so that a path that
// cannot be a folder or cannot be written is said now, naming `what` (the option), not
// after hours of work.
inline void make_writable_folder(const std::string& dir, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  EMONEXT_CHECK(!ec && std::filesystem::is_directory(dir), what, " ", dir, ": cannot make that folder (",
                ec ? ec.message() : "a file has that name", ")");
  const std::string probe = (std::filesystem::path(dir) / ".emonext_write_test").string();
  bool writable = false;
  try {
    FdOutput out = create_file(probe);
    writable = static_cast<bool>(out << "ok\n") && out.close();
  } catch (const Error&) {
  }
  ::unlink(probe.c_str());
  EMONEXT_CHECK(writable, what, " ", dir, ": cannot write files there");
}

// Files that belong together, each written by its function (a checkpoint and its training
// state): every one goes to NAME.tmp (create_file: a new file, never a planted link's
// target), and only when all are written in full are they renamed over their names, in
// order. A failed write (a full disk) or an exception from a writer removes the .tmp
// files and leaves every previous file as it was; a reader sees each file whole, old or
// new. (A crash between two renames can still leave a new file beside an old one: the
// run's files record their step for --resume to check.)
using FileWriter = std::function<void(std::ostream&)>;
inline void write_files_atomically(const std::vector<std::pair<std::string, FileWriter>>& files) {
  std::vector<std::string> written;
  try {
    for (const auto& [path, write] : files) {
      const std::string tmp = path + ".tmp";
      FdOutput out = create_file(tmp);
      written.push_back(tmp);
      write(out);
      EMONEXT_CHECK(out.close(), tmp, ": write failed (disk full?)");
    }
  } catch (...) {
    for (const std::string& tmp : written) ::unlink(tmp.c_str());
    throw;
  }
  for (const auto& [path, write] : files)
    EMONEXT_CHECK(std::rename((path + ".tmp").c_str(), path.c_str()) == 0, path, ": cannot rename ", path, ".tmp into place");
}

inline void write_file_atomically(const std::string& path, const FileWriter& write) { write_files_atomically({{path, write}}); }

}  // namespace emonext
