// Multi-tensor launches: a few kernel launches for a whole list of tensors (a
// model's parameters and gradients) instead of one or two per tensor. PyTorch's
// multi_tensor_apply follows the same plan.
//
// A launch carries its work in its kernel arguments: up to kTensors tensors (Depth
// pointers each, their length, their position in the caller's list and one Extra
// value, such as a parameter's weight decay) and a map from each of its up to kBlocks
// blocks to one (tensor, chunk) pair. Block b works on elements
// [chunk * chunk_size, (chunk + 1) * chunk_size) of tensor tensor_of_block[b].
// Kernel arguments are limited to 4 KB, which sets the two caps; a tensor whose
// chunks do not fit in one launch carries on in the next, as its slot 0.
#pragma once
#include <cstdint>

namespace emonext::kernels::cuda {

template <int Depth, int kTensors, int kBlocks, class Extra>
struct TensorChunks {
  static_assert(kTensors <= 256, "tensor_of_block is a byte");
  static constexpr int tensors = kTensors, blocks = kBlocks;
  void* ptr[Depth][kTensors];
  int64_t n[kTensors];
  int32_t index[kTensors];  // the tensor's position in the caller's list
  Extra extra[kTensors];
  uint8_t tensor_of_block[kBlocks];
  int32_t chunk_of_block[kBlocks];

  void carry_to_slot_0(int slot) {
    for (int d = 0; d < Depth; ++d) ptr[d][0] = ptr[d][slot];
    n[0] = n[slot];
    index[0] = index[slot];
    extra[0] = extra[slot];
  }
};

// Calls fill(args, slot, i) for each tensor i < count, which sets args.ptr[.][slot]
// and args.extra[slot] and returns the tensor's length (0: nothing to do), and
// launch(args, blocks) whenever a launch's tensors or blocks are full, and at the end.
template <class Args, class Fill, class Launch>
void launch_over_chunks(size_t count, int64_t chunk_size, Fill fill, Launch launch) {
  static_assert(sizeof(Args) <= 3900, "a kernel's arguments are limited to 4 KB; leave room for the others");
  Args args{};
  int slot = 0, blocks = 0;
  for (size_t i = 0; i < count; ++i) {
    const int64_t n = fill(args, slot, i);
    if (n == 0) continue;
    args.n[slot] = n;
    args.index[slot] = int32_t(i);
    const int64_t chunks = (n + chunk_size - 1) / chunk_size;
    for (int64_t c = 0; c < chunks; ++c) {
      args.tensor_of_block[blocks] = uint8_t(slot);
      args.chunk_of_block[blocks] = int32_t(c);
      ++blocks;
      const bool last_chunk = c == chunks - 1;
      if (blocks == Args::blocks || (last_chunk && slot == Args::tensors - 1)) {
        launch(args, blocks);
        blocks = 0;
        if (!last_chunk) {
          args.carry_to_slot_0(slot);
          slot = 0;
        } else {
          slot = -1;  // the next tensor starts a fresh launch at slot 0
        }
      }
    }
    ++slot;
  }
  if (blocks > 0) launch(args, blocks);
}

}  // namespace emonext::kernels::cuda
