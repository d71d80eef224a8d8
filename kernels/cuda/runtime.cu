// Devices, streams, the pooled allocator, copies and library handles.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/runtime.h"

namespace emonext::kernels::cuda {

namespace {

std::atomic<uint64_t> g_launches{0};
std::atomic<uint64_t> g_host_waits{0};

struct DeviceState {
  cudaStream_t stream = nullptr;
  cudaStream_t copy_stream = nullptr;  // the input's copies (copy_in_async), made at first use
  cublasHandle_t cublas = nullptr;
#if EMONEXT_WITH_CUDNN
  cudnnHandle_t cudnn = nullptr;
#endif
  std::unordered_map<void*, size_t> live;  // allocation sizes, for the statistics
  MemoryStats stats;
};

struct Registry {
  std::mutex mu;
  int count = -1;
  std::string reason;
  std::vector<DeviceState> devices;
};

Registry& registry() {
  static Registry r;
  return r;
}

// Must be called with the registry's mutex held.
void probe_locked(Registry& r) {
  if (r.count >= 0) return;
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess) {
    r.count = 0;
    r.reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(status);
    (void)cudaGetLastError();  // clear the sticky error for later calls
  } else {
    r.count = n;
    if (n == 0) r.reason = "no CUDA device found";
  }
  r.devices.resize(size_t(r.count));
}

DeviceState& state(int device) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  probe_locked(r);
  EMONEXT_CHECK(device >= 0 && device < r.count, "cuda:", device, " is not available (", r.count,
                " device(s); ", r.reason, ")");
  DeviceState& s = r.devices[size_t(device)];
  if (!s.stream) {
    EMONEXT_CUDA_CHECK(cudaSetDevice(device));
    EMONEXT_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    // Keep freed memory in the pool instead of returning it to the driver at each sync.
    cudaMemPool_t pool;
    EMONEXT_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    EMONEXT_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  }
  return s;
}

}  // namespace

const char* cublas_status_name(cublasStatus_t s) { return cublasGetStatusString(s); }

int device_count() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  probe_locked(r);
  return r.count;
}

std::string unavailable_reason() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  probe_locked(r);
  return r.reason;
}

void set_device(int device) {
  state(device);
  EMONEXT_CUDA_CHECK(cudaSetDevice(device));
}

int current_device() {
  int d = 0;
  EMONEXT_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

Stream stream(int device) { return state(device).stream; }

void* allocate(size_t bytes, int device) {
  DeviceState& s = state(device);
  EMONEXT_CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  const cudaError_t status = cudaMallocAsync(&p, bytes, s.stream);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    const MemoryStats st = memory_stats(device);
    fail(detail::concat("cuda:", device, ": out of memory allocating ", bytes, " bytes (", st.in_use,
                        " bytes in use by the engine): ", cudaGetErrorString(status)));
  }
  std::lock_guard<std::mutex> lock(registry().mu);
  s.live[p] = bytes;
  s.stats.in_use += bytes;
  s.stats.allocations += 1;
  if (s.stats.in_use > s.stats.peak) s.stats.peak = s.stats.in_use;
  return p;
}

void deallocate(void* ptr, int device) {
  if (!ptr) return;
  DeviceState& s = state(device);
  {
    std::lock_guard<std::mutex> lock(registry().mu);
    auto it = s.live.find(ptr);
    if (it != s.live.end()) {
      s.stats.in_use -= it->second;
      s.live.erase(it);
    }
  }
  EMONEXT_CUDA_WARN(cudaFreeAsync(ptr, s.stream));  // called from destructors: report, never throw
}

void memcpy(void* dst, const void* src, size_t bytes, CopyKind kind, int device) {
  if (bytes == 0) return;
  DeviceState& s = state(device);
  const cudaMemcpyKind k = kind == CopyKind::HostToDevice   ? cudaMemcpyHostToDevice
                           : kind == CopyKind::DeviceToHost ? cudaMemcpyDeviceToHost
                                                            : cudaMemcpyDeviceToDevice;
  EMONEXT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, k, s.stream));
  // Host memory here is pageable and owned by the caller: wait until the copy is done.
  if (kind != CopyKind::DeviceToDevice) {
    g_host_waits.fetch_add(1, std::memory_order_relaxed);
    EMONEXT_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  }
}

void synchronize(int device) {
  g_host_waits.fetch_add(1, std::memory_order_relaxed);
  EMONEXT_CUDA_CHECK(cudaStreamSynchronize(state(device).stream));
}

uint64_t host_waits() { return g_host_waits.load(std::memory_order_relaxed); }

void* allocate_pinned(size_t bytes) {
  void* p = nullptr;
  EMONEXT_CUDA_CHECK(cudaMallocHost(&p, bytes == 0 ? 1 : bytes));
  return p;
}

void free_pinned(void* p) noexcept {
  if (p) EMONEXT_CUDA_WARN(cudaFreeHost(p));
}

Event event_create() {
  cudaEvent_t e = nullptr;
  EMONEXT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

void event_destroy(Event e) noexcept {
  if (e) EMONEXT_CUDA_WARN(cudaEventDestroy(static_cast<cudaEvent_t>(e)));
}

void copy_in_async(void* dst, const void* src, size_t bytes, int device, Event after, Event done) {
  DeviceState& s = state(device);
  if (!s.copy_stream) EMONEXT_CUDA_CHECK(cudaStreamCreateWithFlags(&s.copy_stream, cudaStreamNonBlocking));
  if (after) EMONEXT_CUDA_CHECK(cudaStreamWaitEvent(s.copy_stream, static_cast<cudaEvent_t>(after), 0));
  if (bytes) EMONEXT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s.copy_stream));
  if (done) EMONEXT_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(done), s.copy_stream));
}

void record_event(Event e, int device) { EMONEXT_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e), state(device).stream)); }

void stream_wait_event(Event e, int device) {
  EMONEXT_CUDA_CHECK(cudaStreamWaitEvent(state(device).stream, static_cast<cudaEvent_t>(e), 0));
}

void host_wait_event(Event e) {
  const cudaError_t ready = cudaEventQuery(static_cast<cudaEvent_t>(e));
  if (ready == cudaSuccess) return;
  if (ready != cudaErrorNotReady) EMONEXT_CUDA_CHECK(ready);
  g_host_waits.fetch_add(1, std::memory_order_relaxed);
  EMONEXT_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e)));
}

MemoryStats memory_stats(int device) {
  DeviceState& s = state(device);
  std::lock_guard<std::mutex> lock(registry().mu);
  return s.stats;
}

cublasHandle_t cublas_handle() {
  const int device = current_device();
  DeviceState& s = state(device);
  if (!s.cublas) {
    EMONEXT_CUBLAS_CHECK(cublasCreate(&s.cublas));
    EMONEXT_CUBLAS_CHECK(cublasSetStream(s.cublas, s.stream));
  }
  return s.cublas;
}

#if EMONEXT_WITH_CUDNN
cudnnHandle_t cudnn_handle() {
  const int device = current_device();
  DeviceState& s = state(device);
  if (!s.cudnn) {
    EMONEXT_CUDNN_CHECK(cudnnCreate(&s.cudnn));
    EMONEXT_CUDNN_CHECK(cudnnSetStream(s.cudnn, s.stream));
  }
  return s.cudnn;
}
#endif

uint64_t launches() { return g_launches.load(std::memory_order_relaxed); }

bool sync_launches() {
  static const bool on = [] {
    const char* v = std::getenv("EMONEXT_SYNC_LAUNCHES");
    return v && std::strcmp(v, "0") != 0 && *v != '\0';
  }();
  return on;
}

void count_launch(const char* name) {
  g_launches.fetch_add(1, std::memory_order_relaxed);
  if (!sync_launches()) return;
  const cudaError_t status = cudaDeviceSynchronize();
  if (status != cudaSuccess)
    fail(detail::concat("CUDA error in ", name, " (found at once: EMONEXT_SYNC_LAUNCHES is set): ", cudaGetErrorString(status)));
}

}  // namespace emonext::kernels::cuda
