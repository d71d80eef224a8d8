// The table of op cases, one line each: a name (matching a case of
// tools/reference/make_op_fixtures.py) and the engine function under test.
// The PyTorch-fixture test, the gradient check and the CUDA-vs-CPU test all
// run this one table.
#pragma once
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "core/tensor.h"

namespace emonext::test {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct OpCase {
  std::string name;
  OpFn fn;
};

const std::vector<OpCase>& op_cases();

// How GoogleTest prints a case: its name.
inline void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

// The directory of the committed fixtures.
std::string fixture_path(const std::string& file);
// tests/fixtures/ops.safetensors, loaded once per process.
const SafeTensors& op_fixtures();

}  // namespace emonext::test
