// Multi-tensor kernels on the CPU: a list of tensors is cut into chunks, and one
// parallel loop over all the chunks does the whole list (one fork and join for a
// model's ~150 parameters, not one per tensor). The CUDA twin, multi_tensor.cuh,
// maps its blocks the same way.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace emonext::kernels::cpu {

struct TensorChunk {
  size_t tensor;        // position in the list
  int64_t first, last;  // elements [first, last) of it
};

// The chunks of tensors 0..count-1 in order, n_of(i) elements each (empty tensors
// have none).
template <class NOf>
std::vector<TensorChunk> tensor_chunks(size_t count, int64_t chunk_size, NOf n_of) {
  std::vector<TensorChunk> out;
  for (size_t i = 0; i < count; ++i)
    for (int64_t first = 0, n = n_of(i); first < n; first += chunk_size)
      out.push_back({i, first, first + chunk_size < n ? first + chunk_size : n});
  return out;
}

}  // namespace emonext::kernels::cpu
