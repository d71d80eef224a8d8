// Devices, streams, the pooled allocator, copies and library handles.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/runtime.h"

namespace emonext::kernels::cuda {

namespace {

std::atomic<uint64_t> g_launches{0};
std::atomic<uint64_t> g_host_waits{0};
std::atomic<int> g_captures{0};  // streams being captured, all devices together

struct DeviceState {
  cudaStream_t stream = nullptr;
  cudaStream_t copy_stream = nullptr;  // the input's copies (copy_in_async), made at first use
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
#if EMONEXT_WITH_CUDNN
  cudnnHandle_t cudnn = nullptr;
#endif
  std::unordered_map<void*, size_t> live;  // allocation sizes, for the statistics
  MemoryStats stats;
  // While the stream is captured (begin_capture .. end_capture):
  bool capturing = false;
  std::unordered_map<void*, size_t> graph_memory;  // allocated during the capture and not yet freed
  std::vector<void*> freed_during_capture;         // older memory freed during it: released after the first replay
  // Blocks a capture allocated and still held when it failed: their addresses were its
  // graph's, gone with it, so their later frees only drop the bookkeeping (cudaFreeAsync
  // of a graph's address outside the graph is an error).
  std::unordered_set<void*> abandoned;
};

// An instantiated graph and what its first replay must release (empty once released).
struct GraphState {
  cudaGraphExec_t exec = nullptr;
  std::vector<void*> free_after_first_replay;
};

// Frees each block on the stream, after the work queued there so far.
void free_on_stream(const std::vector<void*>& blocks, cudaStream_t stream) noexcept {
  for (void* p : blocks) EMONEXT_CUDA_WARN(cudaFreeAsync(p, stream));
}

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
  if (s.capturing) s.graph_memory[p] = bytes;
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
    // During a capture a free becomes part of the graph, which may free only its own
    // memory: older memory waits for the graph's first replay.
    if (s.capturing && s.graph_memory.erase(ptr) == 0) {
      s.freed_during_capture.push_back(ptr);
      return;
    }
    if (s.abandoned.erase(ptr) != 0) return;
  }
  EMONEXT_CUDA_WARN(cudaFreeAsync(ptr, s.stream));  // called from destructors: report, never throw
}

namespace {
// A host wait cannot be part of a graph: say which one was tried.
void refuse_while_capturing(const DeviceState& s, int device, const char* what) {
  if (s.capturing)
    fail(detail::concat("cuda:", device, ": ", what, " while the stream is captured as a graph: a graph's work "
                        "cannot wait for the host or make the host wait"));
}
}  // namespace

void memcpy(void* dst, const void* src, size_t bytes, CopyKind kind, int device) {
  if (bytes == 0) return;
  DeviceState& s = state(device);
  if (kind != CopyKind::DeviceToDevice)
    refuse_while_capturing(s, device, kind == CopyKind::HostToDevice ? "a copy from host memory" : "a copy to host memory");
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
  refuse_while_capturing(state(device), device, "synchronize");
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
  refuse_while_capturing(s, device, "an input copy on the copy stream");
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

void begin_capture(int device) {
  DeviceState& s = state(device);
  EMONEXT_CHECK(!s.capturing, "cuda:", device, ": a graph capture began while another was under way");
  EMONEXT_CUDA_CHECK(cudaSetDevice(device));
  // Thread-local mode: a call on this thread that could wait on the captured work fails
  // (other threads, such as the data loader's, are not concerned).
  EMONEXT_CUDA_CHECK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeThreadLocal));
  std::lock_guard<std::mutex> lock(registry().mu);
  s.capturing = true;
  g_captures.fetch_add(1);
}

namespace {
// Stops the capture in the stream and in the bookkeeping; returns the captured graph
// (nullptr if the stream's capture had failed, or was invalidated), and the blocks it
// allocated that are still held.
cudaGraph_t stop_capture(DeviceState& s, std::vector<void*>& freed_before, std::unordered_map<void*, size_t>& still_held) {
  cudaGraph_t graph = nullptr;
  const cudaError_t status = cudaStreamEndCapture(s.stream, &graph);
  if (status != cudaSuccess) (void)cudaGetLastError();
  std::lock_guard<std::mutex> lock(registry().mu);
  s.capturing = false;
  g_captures.fetch_sub(1);
  freed_before.swap(s.freed_during_capture);
  still_held.swap(s.graph_memory);
  return status == cudaSuccess ? graph : nullptr;
}

// A capture that is not kept: its graph destroyed, the older memory freed during it
// released on the stream, the blocks it allocated and still held abandoned.
void discard_capture(DeviceState& s, cudaGraph_t graph, const std::vector<void*>& freed_before,
                     const std::unordered_map<void*, size_t>& still_held) noexcept {
  if (graph) EMONEXT_CUDA_WARN(cudaGraphDestroy(graph));
  free_on_stream(freed_before, s.stream);
  std::lock_guard<std::mutex> lock(registry().mu);
  for (const auto& [p, n] : still_held) s.abandoned.insert(p);
}
}  // namespace

Graph end_capture(int device) {
  DeviceState& s = state(device);
  EMONEXT_CHECK(s.capturing, "cuda:", device, ": end_capture without begin_capture");
  std::vector<void*> freed_before;
  std::unordered_map<void*, size_t> still_held;
  cudaGraph_t graph = stop_capture(s, freed_before, still_held);
  if (!graph) {
    discard_capture(s, nullptr, freed_before, still_held);
    fail(detail::concat("cuda:", device, ": the graph capture failed or was invalidated (a call the capture does not allow "
                        "was made during it)"));
  }
  if (!still_held.empty()) {
    size_t bytes = 0;
    for (const auto& [p, n] : still_held) bytes += n;
    discard_capture(s, graph, freed_before, still_held);
    fail(detail::concat("cuda:", device, ": ", still_held.size(), " block(s) of memory (", bytes, " bytes) allocated while "
                        "capturing a graph are still held when the capture ends; a graph's memory must be freed within it"));
  }
  auto* g = new GraphState;
  g->free_after_first_replay = std::move(freed_before);
  const cudaError_t status = cudaGraphInstantiate(&g->exec, graph, 0);
  EMONEXT_CUDA_WARN(cudaGraphDestroy(graph));
  if (status != cudaSuccess) {
    free_on_stream(g->free_after_first_replay, s.stream);
    delete g;
    EMONEXT_CUDA_CHECK(status);
  }
  return g;
}

void abandon_capture(int device) noexcept {
  DeviceState& s = state(device);
  if (!s.capturing) return;
  std::vector<void*> freed_before;
  std::unordered_map<void*, size_t> still_held;
  discard_capture(s, stop_capture(s, freed_before, still_held), freed_before, still_held);
}

void replay(Graph graph, int device) {
  auto* g = static_cast<GraphState*>(graph);
  DeviceState& s = state(device);
  EMONEXT_CUDA_CHECK(cudaGraphLaunch(g->exec, s.stream));
  count_launch("cudaGraphLaunch");
  free_on_stream(std::exchange(g->free_after_first_replay, {}), s.stream);
}

void graph_destroy(Graph graph, int device) noexcept {
  auto* g = static_cast<GraphState*>(graph);
  if (!g) return;
  free_on_stream(g->free_after_first_replay, state(device).stream);
  EMONEXT_CUDA_WARN(cudaGraphExecDestroy(g->exec));
  delete g;
}

MemoryStats memory_stats(int device) {
  DeviceState& s = state(device);
  MemoryStats m;
  {
    std::lock_guard<std::mutex> lock(registry().mu);
    m = s.stats;
  }
  cudaMemPool_t pool;
  uint64_t v = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
    if (cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &v) == cudaSuccess) m.pool_reserved = v;
    if (cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &v) == cudaSuccess) m.pool_reserved_peak = v;
  }
  if (cudaDeviceGetGraphMemAttribute(device, cudaGraphMemAttrReservedMemCurrent, &v) == cudaSuccess) m.graph_reserved = v;
  if (cudaDeviceGetGraphMemAttribute(device, cudaGraphMemAttrReservedMemHigh, &v) == cudaSuccess) m.graph_reserved_peak = v;
  (void)cudaGetLastError();  // a figure CUDA cannot give stays 0
  return m;
}

void trim_pool(int device) {
  cudaMemPool_t pool;
  EMONEXT_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  EMONEXT_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
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

cublasLtHandle_t cublaslt_handle() {
  DeviceState& s = state(current_device());
  if (!s.cublaslt) EMONEXT_CUBLAS_CHECK(cublasLtCreate(&s.cublaslt));
  return s.cublaslt;
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
  if (!sync_launches() || g_captures.load() > 0) return;  // a captured launch runs at the replay
  const cudaError_t status = cudaDeviceSynchronize();
  if (status != cudaSuccess)
    fail(detail::concat("CUDA error in ", name, " (found at once: EMONEXT_SYNC_LAUNCHES is set): ", cudaGetErrorString(status)));
}

}  // namespace emonext::kernels::cuda
