#include "core/storage.h"

#include <atomic>
#include <cstdlib>
#include <new>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/backend.h"

namespace emonext {

namespace {
// Host allocations: 64-byte aligned (a cache line, and enough for any vector load).
std::atomic<size_t> g_cpu_in_use{0}, g_cpu_peak{0}, g_cpu_allocations{0};
constexpr size_t kHostAlignment = 64;
}  // namespace

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device.is_cpu()) {
    const size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    data_ = std::aligned_alloc(kHostAlignment, rounded == 0 ? kHostAlignment : rounded);
    if (!data_) fail(detail::concat("cpu: out of memory allocating ", bytes, " bytes"));
    const size_t now = g_cpu_in_use += bytes;
    size_t peak = g_cpu_peak.load();
    while (now > peak && !g_cpu_peak.compare_exchange_weak(peak, now)) {}
    ++g_cpu_allocations;
  } else {
    data_ = cuda_allocate(bytes == 0 ? 1 : bytes, device);
  }
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    std::free(data_);
    g_cpu_in_use -= bytes_;
  } else {
    cuda_deallocate(data_, device_);
  }
}

void keep_freed_host_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);                  // large blocks come from the heap, and go back to it
  mallopt(M_TRIM_THRESHOLD, 1 << 30);      // and the heap's top is not handed back below 1 GiB free
#endif
}

MemoryStats memory_stats(Device device) {
  if (device.is_cpu()) return {g_cpu_in_use.load(), g_cpu_peak.load(), g_cpu_allocations.load()};
  return cuda_memory_stats(device);
}

void trim_device_memory(Device device) {
  if (device.is_cuda()) cuda_trim_memory(device);
}

}  // namespace emonext
