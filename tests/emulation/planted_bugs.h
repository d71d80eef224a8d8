// Kernels with the bugs that blind-written kernels have, each beside its
// correct twin, and kernels that exercise the execution model. Compiled from
// planted_bugs.cu by the emulation build only; each runner copies inputs to the
// (emulated) device, launches through EMONEXT_LAUNCH and copies the result back.
#pragma once
#include <vector>

namespace emonext::test::planted {

// out[i + 1] = in[i]: the broken one also writes out[n], one past the end.
std::vector<float> shift_copy(const std::vector<float>& in, bool broken);
// Reverses a block's values through shared memory; the broken one lacks the barrier.
std::vector<float> reverse_block(const std::vector<float>& in, bool broken);
// Sums 64 shared slots of which only in.size() are written by the broken one.
float sum_shared(const std::vector<float>& in, bool broken);
// Thread 0 returns before a __syncthreads that the others wait at.
void early_exit(bool broken);
// A launch of `threads` threads asking for `shared_bytes` of dynamic shared
// memory (at least 4 * threads: each thread writes one float), with or without
// opting in to more than the default 48 KiB.
void launch_with(unsigned threads, size_t shared_bytes, bool optin);
// For a block of n threads (n need not be a multiple of 32), per thread:
// [shfl_up by 1, shfl_down by 1, shfl_xor 1, ballot(lane even), any(lane==3), all(lane<40)]
// over the values in[i], using the full mask.
std::vector<double> warp_ops(const std::vector<float>& in);
// One thread evaluates intrinsics on x: [rsqrtf, __expf, __logf, bf16 round trip,
// f16 round trip, float4 sum, __popc(0xF0F0), __float_as_int(1.0f)].
std::vector<double> intrinsics(float x);

}  // namespace emonext::test::planted
