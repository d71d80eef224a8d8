// The CUDA runtime, cuBLAS and cuBLASLt functions the engine calls, played on the
// CPU in the emulation build. Device memory is plain heap memory (so
// AddressSanitizer sees every stray index), streams run their work at once in call
// order, and cuBLAS' gemm and cuBLASLt's matmul with its epilogues are the CPU
// backend's gemm. The device reports itself like an H100.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kernels/cuda/emulation/scheduler.h"
#include "kernels/kernels.h"

struct CUstream_st { int id = 0; };
struct CUmemPoolHandle_st { int id = 0; };
struct CUevent_st { int id = 0; };
struct cublasContext { cudaStream_t stream = nullptr; };
struct cublasLtContext { int id = 0; };
// A captured graph and its instance: the recorded work in order, and the memory it
// allocated and freed while captured (its memory nodes: the same addresses at every
// replay, released with the instance).
struct CUgraph_st {
  std::vector<std::function<void()>> work;
  std::vector<void*> memory;  // freed while captured: released with the graph
  std::vector<std::pair<void*, size_t>> owned;  // allocated while captured: the graph's own blocks
};
struct CUgraphExec_st : CUgraph_st {};

namespace {
thread_local cudaError_t g_last_error = cudaSuccess;
thread_local int g_device = 0;
CUmemPoolHandle_st g_pool;
// Streams and handles live as long as the process, as the engine keeps them; owned here so leak checkers stay quiet.
std::mutex g_objects_mutex;
std::deque<CUstream_st> g_streams;
std::deque<cublasContext> g_cublas;
std::deque<cublasLtContext> g_cublaslt;

cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) g_last_error = e;
  return e;
}
}  // namespace

// ---- devices ----
cudaError_t cudaGetDeviceCount(int* count) { *count = 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int device) {
  if (device != 0) return record(cudaErrorInvalidDevice);
  g_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) { *device = g_device; return cudaSuccess; }
cudaError_t cudaDeviceSynchronize();  // below, with the graphs
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return record(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof(*p));
  std::strncpy(p->name, "emonext emulated GPU (H100-like limits)", sizeof(p->name) - 1);
  p->totalGlobalMem = size_t(80) << 30;
  p->sharedMemPerBlock = emonext::emu::kSharedPerBlockDefault;
  p->sharedMemPerBlockOptin = emonext::emu::kSharedPerBlockOptin;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = emonext::emu::kMaxThreadsPerBlock;
  p->maxThreadsDim[0] = 1024; p->maxThreadsDim[1] = 1024; p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647; p->maxGridSize[1] = 65535; p->maxGridSize[2] = 65535;
  p->multiProcessorCount = emonext::emu::kMultiProcessors;
  p->major = 9;
  p->minor = 0;
  p->l2CacheSize = 50 * 1024 * 1024;
  p->maxThreadsPerMultiProcessor = 2048;
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || size_t(value) > emonext::emu::kSharedPerBlockOptin) return record(cudaErrorInvalidValue);
    emonext::emu::set_max_dynamic_shared(func, size_t(value));
  }
  return cudaSuccess;
}

// ---- errors ----
cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return g_last_error; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "emulated CUDA error";
  }
}

// ---- streams, events, memory pools ----
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  std::lock_guard<std::mutex> lock(g_objects_mutex);
  *s = &g_streams.emplace_back();
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t);  // below, with the graphs
cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new CUevent_st; return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }  // every stream's work is done when queued
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) { *ms = 0; return cudaSuccess; }  // no timing
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) { *pool = &g_pool; return cudaSuccess; }
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }  // freed blocks go back at once here

// ---- memory: real heap blocks ----
// Filled with 0xFF bytes, as shared memory is: a GPU's fresh memory holds whatever was
// there before, so a kernel that reads memory nobody wrote gets NaN here, not zeros.
// Memory allocated while a stream is captured is the graph's: its 0xFF fill is recorded
// too (a graph's memory holds no values from one replay to the next), and a free of it
// while captured is kept until the graph's instance is destroyed.
// An address allocated while captured belongs to its graph: freeing it outside the
// graph is an error, as on a GPU. When the graph goes without having freed it (a capture
// that failed), the block stays the graph's forever: filled with 0xFF bytes (a later
// read gets NaN) and never reused, so a free of it is still refused.
namespace {
CUgraph_st* g_capture = nullptr;  // the graph being captured (one at a time)
std::mutex g_owned_mutex;
// Addresses some graph allocated, live or abandoned; never destroyed, so that an abandoned
// block is still reachable (not a leak) when the process ends.
std::unordered_set<void*>& g_graph_owned = *new std::unordered_set<void*>;
// What cudaMemPoolGetAttribute and cudaDeviceGetGraphMemAttribute report: the bytes of
// the blocks allocated outside captures (a freed block is returned at once, so the pool
// holds only live ones) and of those the live graphs own, now and at most.
std::unordered_map<void*, size_t> g_block_bytes;
uint64_t g_pool_bytes = 0, g_pool_high = 0, g_graph_bytes = 0, g_graph_high = 0;
void count_block(void* p, size_t bytes, bool graph) {
  g_block_bytes[p] = bytes;
  uint64_t& now = graph ? g_graph_bytes : g_pool_bytes;
  uint64_t& high = graph ? g_graph_high : g_pool_high;
  now += bytes;
  high = std::max(high, now);
}
void uncount_block(void* p, bool graph) {
  const auto it = g_block_bytes.find(p);
  if (it == g_block_bytes.end()) return;
  (graph ? g_graph_bytes : g_pool_bytes) -= it->second;
  g_block_bytes.erase(it);
}
}  // namespace
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t stream) {
  *p = std::malloc(bytes == 0 ? 1 : bytes);
  if (!*p) return record(cudaErrorMemoryAllocation);
  void* block = *p;
  emonext::emu::run_or_record(stream, [block, bytes] { std::memset(block, 0xFF, bytes); });
  const bool graph = g_capture && emonext::emu::capturing(stream);
  if (graph) g_capture->owned.emplace_back(block, bytes);
  std::lock_guard<std::mutex> lock(g_owned_mutex);
  if (graph) g_graph_owned.insert(block);
  count_block(block, bytes, graph);
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (g_capture) return record(cudaErrorStreamCaptureUnsupported);  // not stream-ordered: not capturable
  return cudaMallocAsync(p, bytes, nullptr);
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream) {
  if (g_capture && emonext::emu::capturing(stream)) {
    g_capture->memory.push_back(p);
    return cudaSuccess;
  }
  {
    std::lock_guard<std::mutex> lock(g_owned_mutex);
    if (g_graph_owned.contains(p)) return record(cudaErrorInvalidValue);  // a graph's address, outside its graph
    uncount_block(p, false);
  }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, cudaMemPoolAttr attr, void* value) {
  std::lock_guard<std::mutex> lock(g_owned_mutex);
  if (attr == cudaMemPoolAttrReservedMemCurrent || attr == cudaMemPoolAttrUsedMemCurrent) *static_cast<uint64_t*>(value) = g_pool_bytes;
  else if (attr == cudaMemPoolAttrReservedMemHigh || attr == cudaMemPoolAttrUsedMemHigh) *static_cast<uint64_t*>(value) = g_pool_high;
  else return record(cudaErrorInvalidValue);
  return cudaSuccess;
}
cudaError_t cudaDeviceGetGraphMemAttribute(int device, cudaGraphMemAttributeType attr, void* value) {
  if (device != 0) return record(cudaErrorInvalidDevice);
  std::lock_guard<std::mutex> lock(g_owned_mutex);
  if (attr == cudaGraphMemAttrReservedMemCurrent || attr == cudaGraphMemAttrUsedMemCurrent) *static_cast<uint64_t*>(value) = g_graph_bytes;
  else if (attr == cudaGraphMemAttrReservedMemHigh || attr == cudaGraphMemAttrUsedMemHigh) *static_cast<uint64_t*>(value) = g_graph_high;
  else return record(cudaErrorInvalidValue);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) { return cudaFreeAsync(p, nullptr); }
cudaError_t cudaMallocHost(void** p, size_t bytes) {  // pinned host memory: plain heap memory here
  *p = std::malloc(bytes == 0 ? 1 : bytes);
  return *p ? cudaSuccess : record(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void* p) { std::free(p); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t stream) {
  emonext::emu::run_or_record(stream, [=] { std::memmove(dst, src, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (g_capture) return record(cudaErrorStreamCaptureUnsupported);  // a host wait, as on a GPU
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  emonext::emu::run_or_record(stream, [=] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}

// ---- graphs: capture records the stream's work (scheduler.h), a launch replays it ----
// A host wait while a stream is captured is an error, as on a GPU (where it also ends
// the capture's usefulness).
cudaError_t cudaDeviceSynchronize() { return g_capture ? record(cudaErrorStreamCaptureUnsupported) : cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return g_capture ? record(cudaErrorStreamCaptureUnsupported) : cudaSuccess; }
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (g_capture) return record(cudaErrorIllegalState);
  g_capture = new CUgraph_st;
  emonext::emu::begin_capture(stream);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
// A capture that was invalidated (EMONEXT_EMU_INVALIDATE_CAPTURE: scheduler.h) ends with
// that error and no graph, as on a GPU.
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (!g_capture || !emonext::emu::capturing(stream)) return record(cudaErrorIllegalState);
  const bool invalidated = emonext::emu::capture_invalidated();
  g_capture->work = emonext::emu::end_capture();
  *graph = std::exchange(g_capture, nullptr);
  if (!invalidated) return cudaSuccess;
  cudaGraphDestroy(std::exchange(*graph, nullptr));
  return record(cudaErrorStreamCaptureInvalidated);
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = new CUgraphExec_st{{graph->work, std::exchange(graph->memory, {}), std::exchange(graph->owned, {})}};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (emonext::emu::capturing(stream)) return record(cudaErrorStreamCaptureUnsupported);
  for (const std::function<void()>& work : exec->work) work();
  return cudaSuccess;
}
namespace {
template <class G> cudaError_t destroy_graph(G* graph) {
  std::unordered_set<void*> freed(graph->memory.begin(), graph->memory.end());
  {
    std::lock_guard<std::mutex> lock(g_owned_mutex);
    for (const auto& [p, bytes] : graph->owned) {
      uncount_block(p, true);
      if (freed.erase(p) != 0) {
        g_graph_owned.erase(p);
        std::free(p);
      } else {
        std::memset(p, 0xFF, bytes);  // abandoned: kept, refused to cudaFreeAsync, and NaN to read
      }
    }
    for (void* p : freed) uncount_block(p, false);  // older blocks freed while captured
  }
  for (void* p : freed) std::free(p);
  delete graph;
  return cudaSuccess;
}
}  // namespace
cudaError_t cudaGraphDestroy(cudaGraph_t graph) { return destroy_graph(graph); }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { return destroy_graph(exec); }

// ---- cuBLAS: the CPU backend's gemm ----
cublasStatus_t cublasCreate(cublasHandle_t* h) {
  // A real handle allocates its workspace with cudaMalloc, which a capture refuses: make
  // the handle before capturing (run the work once first).
  if (g_capture) return CUBLAS_STATUS_ALLOC_FAILED;
  std::lock_guard<std::mutex> lock(g_objects_mutex);
  *h = &g_cublas.emplace_back();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) { h->stream = s; return CUBLAS_STATUS_SUCCESS; }
const char* cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS         ? "CUBLAS_STATUS_SUCCESS"
         : s == CUBLAS_STATUS_NOT_SUPPORTED ? "CUBLAS_STATUS_NOT_SUPPORTED"
         : s == CUBLAS_STATUS_ALLOC_FAILED  ? "CUBLAS_STATUS_ALLOC_FAILED"
                                            : "CUBLAS_STATUS_INVALID_VALUE";
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                                          int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
                                          long long strideA, const void* B, cudaDataType Btype, int ldb, long long strideB,
                                          const void* beta, void* C, cudaDataType Ctype, int ldc, long long strideC,
                                          int batch, cublasComputeType_t compute, cublasGemmAlgo_t) {
  using emonext::DType;
  if (Atype != Btype || Btype != Ctype) return CUBLAS_STATUS_NOT_SUPPORTED;
  DType t;
  switch (Atype) {
    case CUDA_R_32F: t = DType::F32; break;
    case CUDA_R_64F: t = DType::F64; break;
    case CUDA_R_16BF: t = DType::BF16; break;
    case CUDA_R_16F: t = DType::F16; break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  const bool f64 = compute == CUBLAS_COMPUTE_64F;
  // Column-major C = op(A) op(B) is row-major C^T = op(B)^T op(A)^T: the row-major
  // product of the buffers read as they lie, with B first.
  emonext::kernels::Gemm g;
  g.dtype = t;
  g.trans_a = transb == CUBLAS_OP_T;
  g.trans_b = transa == CUBLAS_OP_T;
  g.m = n; g.n = m; g.k = k;
  g.a = B; g.lda = ldb; g.stride_a = strideB;
  g.b = A; g.ldb = lda; g.stride_b = strideA;
  g.c = C; g.ldc = ldc; g.stride_c = strideC;
  g.batch = batch;
  g.alpha = f64 ? float(*static_cast<const double*>(alpha)) : *static_cast<const float*>(alpha);
  g.beta = f64 ? float(*static_cast<const double*>(beta)) : *static_cast<const float*>(beta);
  emonext::emu::run_or_record(handle->stream, [g] { emonext::kernels::cpu::gemm(g, nullptr); });
  return CUBLAS_STATUS_SUCCESS;
}

// ---- cuBLASLt: a matmul with the epilogues the engine uses, on the CPU backend's gemm ----
// The descriptors are cuBLASLt's own semi-opaque structs; the emulation keeps its
// fields in their storage.
namespace {
struct LtDesc {
  int32_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  void* bias = nullptr;
  void* aux = nullptr;
  int64_t ldaux = 0;
};
struct LtLayout {
  cudaDataType type = CUDA_R_32F;
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
};
static_assert(sizeof(LtDesc) <= sizeof(cublasLtMatmulDescOpaque_t) && sizeof(LtLayout) <= sizeof(cublasLtMatrixLayoutOpaque_t));

template <class F, class Opaque>
F* fields(Opaque* o) { return reinterpret_cast<F*>(o->data); }

template <class V>
cublasStatus_t read_attribute(V* out, const void* buf, size_t size) {
  if (!buf || size != sizeof(V)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(out, buf, sizeof(V));
  return CUBLAS_STATUS_SUCCESS;
}

// The row-major product that a column-major D = op(A) op(B) is (as in cublasGemmStridedBatchedEx).
bool lt_gemm(const LtDesc& d, const LtLayout& a, const LtLayout& b, const LtLayout& c, emonext::kernels::Gemm* g) {
  using emonext::DType;
  using emonext::kernels::GemmEpilogue;
  if (a.type != b.type || b.type != c.type) return false;
  switch (a.type) {
    case CUDA_R_32F: g->dtype = DType::F32; break;
    case CUDA_R_16BF: g->dtype = DType::BF16; break;
    case CUDA_R_16F: g->dtype = DType::F16; break;
    default: return false;
  }
  const bool ta = d.trans_a == CUBLAS_OP_T, tb = d.trans_b == CUBLAS_OP_T;
  const uint64_t m = c.cols, n = c.rows, k = ta ? a.rows : a.cols;
  if ((ta ? a.cols : a.rows) != n || (tb ? b.rows : b.cols) != m || (tb ? b.cols : b.rows) != k) return false;
  if (c.ld < int64_t(c.rows) || a.ld < int64_t(a.rows) || b.ld < int64_t(b.rows)) return false;
  g->trans_a = tb;
  g->trans_b = ta;
  g->m = int64_t(m); g->n = int64_t(n); g->k = int64_t(k);
  g->lda = b.ld; g->ldb = a.ld; g->ldc = c.ld;
  switch (d.epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT: g->epilogue = GemmEpilogue::None; break;
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: g->epilogue = GemmEpilogue::BiasGeluTanh; g->bias = d.bias; break;
    case CUBLASLT_EPILOGUE_DGELU_BGRAD: g->epilogue = GemmEpilogue::GeluTanhBackward; g->bias_grad = d.bias; break;
    default: return false;
  }
  if (g->epilogue != GemmEpilogue::None) {
    // cuBLASLt's rules for the GELU input matrix: ld divisible by 8, no less than D's rows.
    if (!d.bias || !d.aux || d.ldaux % 8 != 0 || d.ldaux < int64_t(c.rows)) return false;
    g->aux = d.aux;
    g->ldaux = d.ldaux;
  }
  return true;
}
}  // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  if (g_capture) return CUBLAS_STATUS_ALLOC_FAILED;  // as cublasCreate
  std::lock_guard<std::mutex> lock(g_objects_mutex);
  *h = &g_cublaslt.emplace_back();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = new cublasLtMatmulDescOpaque_t{};
  new (fields<LtDesc>(*desc)) LtDesc{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) { delete desc; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t size) {
  LtDesc& d = *fields<LtDesc>(desc);
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return read_attribute(&d.trans_a, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return read_attribute(&d.trans_b, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return read_attribute(&d.epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return read_attribute(&d.bias, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return read_attribute(&d.aux, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return read_attribute(&d.ldaux, buf, size);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
  *layout = new cublasLtMatrixLayoutOpaque_t{};
  new (fields<LtLayout>(*layout)) LtLayout{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) { delete layout; return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new cublasLtMatmulPreferenceOpaque_t{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) { delete pref; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void* buf, size_t) {
  return buf ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

namespace {
// EMONEXT_EMU_NO_LT_ALGORITHM=forward, backward or both: the heuristic offers no
// algorithm for the bias + GELU epilogue, its backward, or either, as a real cuBLASLt may
// for a shape or GPU (tests force the engine's fallback with it).
bool lt_refuses(emonext::kernels::GemmEpilogue e) {
  using emonext::kernels::GemmEpilogue;
  const char* env = std::getenv("EMONEXT_EMU_NO_LT_ALGORITHM");
  if (!env || e == GemmEpilogue::None) return false;
  const std::string v = env;
  return v == "both" || (v == "forward" && e == GemmEpilogue::BiasGeluTanh) || (v == "backward" && e == GemmEpilogue::GeluTanhBackward);
}
}  // namespace

// One "algorithm" (the CPU gemm) for every product the emulation can run; none otherwise.
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* returned) {
  emonext::kernels::Gemm g;
  *returned = 0;
  if (requested < 1 || std::memcmp(c, d, sizeof(*c)) != 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (!lt_gemm(*fields<LtDesc>(desc), *fields<LtLayout>(a), *fields<LtLayout>(b), *fields<LtLayout>(c), &g) ||
      lt_refuses(g.epilogue))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

// D = alpha op(A) op(B) + beta C with alpha 1, beta 0 and C = D, as the engine calls it.
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t* algo, void*, size_t, cudaStream_t stream) {
  emonext::kernels::Gemm g;
  if (!algo || *static_cast<const float*>(alpha) != 1.0f || *static_cast<const float*>(beta) != 0.0f || C != D ||
      std::memcmp(c, d, sizeof(*c)) != 0)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!lt_gemm(*fields<LtDesc>(desc), *fields<LtLayout>(a), *fields<LtLayout>(b), *fields<LtLayout>(c), &g))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  g.a = B;
  g.b = A;
  g.c = D;
  emonext::emu::run_or_record(stream, [g] { emonext::kernels::cpu::gemm(g, nullptr); });
  return CUBLAS_STATUS_SUCCESS;
}
