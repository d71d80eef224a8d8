// The layering rules of docs/ARCHITECTURE.md, checked on the sources: each folder may
// include only the folders below it (core/base < kernels < core < layers < models <
// train < tools < tests), and in core/ only the seam (core/backend.h and .cpp) may
// include kernels/.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace emonext::test {
namespace {

namespace fs = std::filesystem;

// The layer of a path relative to the source root, or -1 for one outside the layers.
int layer_of(const std::string& path) {
  static const std::vector<std::pair<std::string, int>> layers = {{"core/base/", 0}, {"kernels/", 1}, {"core/", 2}, {"layers/", 3},
                                                                  {"models/", 4},    {"train/", 5},   {"tools/", 6}, {"tests/", 7}};
  for (const auto& [prefix, layer] : layers)
    if (path.rfind(prefix, 0) == 0) return layer;
  return -1;
}

TEST(Layers, NoFileIncludesAFolderAboveItsOwn) {
  const fs::path root = EMONEXT_SOURCE_DIR;
  int files = 0;
  for (const char* top : {"core", "kernels", "layers", "models", "train", "tools", "tests"}) {
    for (const auto& e : fs::recursive_directory_iterator(root / top)) {
      const std::string ext = e.path().extension().string();
      if (!e.is_regular_file() || (ext != ".h" && ext != ".cpp" && ext != ".cu" && ext != ".cuh")) continue;
      const std::string file = fs::relative(e.path(), root).generic_string();
      const int mine = layer_of(file);
      ++files;
      std::ifstream in(e.path());
      int line_no = 0;
      for (std::string line; std::getline(in, line);) {
        ++line_no;
        if (line.rfind("#include \"", 0) != 0) continue;
        const std::string included = line.substr(10, line.find('"', 10) - 10);
        const int theirs = layer_of(included);
        if (theirs < 0) continue;  // a header beside the file, or a library's
        EXPECT_LE(theirs, mine) << file << ":" << line_no << " includes " << included << ", a layer above its own";
        if (mine == 2 && theirs == 1) {
          EXPECT_TRUE(file == "core/backend.h" || file == "core/backend.cpp")
              << file << ":" << line_no << " includes " << included << ": in core/ only the seam (core/backend.h, .cpp) reaches kernels/";
        }
      }
    }
  }
  EXPECT_GT(files, 100) << "the sources were not found under " << root;
}

}  // namespace
}  // namespace emonext::test
