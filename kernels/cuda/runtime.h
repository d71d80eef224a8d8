// The CUDA runtime as the engine uses it, with no CUDA header in sight so that
// core/ can include it in every build. One stream per device carries all of
// the engine's work on that device; memory comes from that device's
// stream-ordered pool (cudaMallocAsync), which keeps freed blocks for reuse.
#pragma once
#include <cstddef>
#include <string>

#include "kernels/view.h"

namespace emonext::kernels::cuda {

// Number of usable GPUs; 0 (never an exception) when no driver or device answers.
int device_count();
// Why device_count() is 0, in words, for skip messages and errors.
std::string unavailable_reason();

void set_device(int device);
int current_device();
Stream stream(int device);

void* allocate(size_t bytes, int device);
void deallocate(void* ptr, int device);

enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
// Ordered on the device's stream; returns once the host side may be reused or read.
void memcpy(void* dst, const void* src, size_t bytes, CopyKind kind, int device);
void synchronize(int device);

struct MemoryStats { size_t in_use = 0, peak = 0, allocations = 0; };
MemoryStats memory_stats(int device);

}  // namespace emonext::kernels::cuda
