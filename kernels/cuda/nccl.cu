#include "kernels/cuda/nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.h"

namespace emonext::kernels::cuda {

static_assert(kNcclIdBytes == NCCL_UNIQUE_ID_BYTES, "kNcclIdBytes is NCCL's id size");

namespace {

ncclComm_t g_comm = nullptr;
cudaStream_t g_comm_stream = nullptr;  // the sums' stream, beside the device's
cudaEvent_t g_ready = nullptr, g_done = nullptr;

void check_nccl(ncclResult_t r, const char* call) {
  EMONEXT_CHECK(r == ncclSuccess, call, " failed: ", ncclGetErrorString(r));
}

}  // namespace

void nccl_unique_id(char* id) {
  ncclUniqueId u;
  check_nccl(ncclGetUniqueId(&u), "ncclGetUniqueId");
  std::memcpy(id, u.internal, kNcclIdBytes);
}

void nccl_init(const char* id, int rank, int ranks, int device) {
  ncclUniqueId u;
  std::memcpy(u.internal, id, kNcclIdBytes);
  set_device(device);
  check_nccl(ncclCommInitRank(&g_comm, ranks, u, rank), "ncclCommInitRank");
}

bool nccl_ready() { return g_comm != nullptr; }

void nccl_all_reduce_sum_start(void* data, int64_t n, bool f64, int device) {
  set_device(device);
  auto compute = static_cast<cudaStream_t>(stream(device));
  if (!g_comm_stream) {
    EMONEXT_CUDA_CHECK(cudaStreamCreateWithFlags(&g_comm_stream, cudaStreamNonBlocking));
    EMONEXT_CUDA_CHECK(cudaEventCreateWithFlags(&g_ready, cudaEventDisableTiming));
    EMONEXT_CUDA_CHECK(cudaEventCreateWithFlags(&g_done, cudaEventDisableTiming));
  }
  // The values were written by the work queued so far; the sum runs beside whatever the
  // device's stream does next, which waits for it only at nccl_join.
  EMONEXT_CUDA_CHECK(cudaEventRecord(g_ready, compute));
  EMONEXT_CUDA_CHECK(cudaStreamWaitEvent(g_comm_stream, g_ready, 0));
  check_nccl(ncclAllReduce(data, data, size_t(n), f64 ? ncclDouble : ncclFloat, ncclSum, g_comm, g_comm_stream), "ncclAllReduce");
  count_launch("ncclAllReduce");
}

void nccl_join(int device) {
  if (!g_comm_stream) return;
  set_device(device);
  EMONEXT_CUDA_CHECK(cudaEventRecord(g_done, g_comm_stream));
  EMONEXT_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream(device)), g_done, 0));
}

Stream nccl_stream() { return g_comm_stream; }

bool nccl_wait(int device, double timeout_seconds) {
  if (!g_comm_stream) return true;
  set_device(device);
  // Polled rather than waited for, so that a rank that stopped answering ends the wait.
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    const cudaError_t e = cudaStreamQuery(g_comm_stream);
    if (e == cudaSuccess) return true;
    EMONEXT_CHECK(e == cudaErrorNotReady, "ncclAllReduce: ", cudaGetErrorString(e));
    ncclResult_t async = ncclSuccess;
    check_nccl(ncclCommGetAsyncError(g_comm, &async), "ncclCommGetAsyncError");
    check_nccl(async, "ncclAllReduce");
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_seconds) {
      ncclCommAbort(g_comm);
      g_comm = nullptr;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace emonext::kernels::cuda
