// safetensors files: an 8-byte little-endian header length, a JSON header
// (name -> {dtype, shape, data_offsets}, optional "__metadata__" of strings),
// then the raw little-endian data.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/base/file.h"
#include "core/tensor.h"

namespace emonext {

struct SafeTensors {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in file order, on the CPU
  std::map<std::string, std::string> metadata;
  // The named tensor; throws naming the file's tensors when it is missing.
  const Tensor& at(const std::string& name) const;
  bool contains(const std::string& name) const;
};

// Throws emonext::Error naming the file and what is wrong with it (missing,
// truncated, bad header, offsets outside the data, unknown dtype).
SafeTensors load_safetensors(const std::string& path);
// The same from a whole file's bytes in memory; `name` names it in errors.
SafeTensors parse_safetensors(const char* bytes, size_t n, const std::string& name);
// The file's __metadata__, from its header alone (a checkpoint's description without
// reading its tensors); the same errors as load_safetensors for a damaged header.
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);
// The file's bytes, for write_files_atomically (core/base/file.h): the tensors are copied
// to the host when the writer is made.
FileWriter safetensors_writer(const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});
// Writes path.tmp and renames it over path (write_file_atomically): a reader never sees
// half a file, and a failed write (a full disk) leaves the old file as it was.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace emonext
