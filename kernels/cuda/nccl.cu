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

bool nccl_all_reduce_sum(void* data, int64_t n, bool f64, int device, double timeout_seconds) {
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  check_nccl(ncclAllReduce(data, data, size_t(n), f64 ? ncclDouble : ncclFloat, ncclSum, g_comm, s), "ncclAllReduce");
  count_launch("ncclAllReduce");
  // Polled rather than waited for, so that a rank that stopped answering ends the wait.
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    const cudaError_t e = cudaStreamQuery(s);
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
