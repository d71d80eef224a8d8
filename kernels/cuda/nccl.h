// NCCL as a data-parallel run uses it on GPUs: one communicator over the run's ranks,
// each rank on its GPU, and sums in place on that device's stream (the engine's one
// stream, so a sum is ordered after the backward pass that wrote the gradients). Built
// when CMake finds NCCL beside the CUDA toolkit (EMONEXT_WITH_NCCL); no CUDA header here.
#pragma once
#include <cstddef>
#include <cstdint>

namespace emonext::kernels::cuda {

constexpr size_t kNcclIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES

// Rank 0 makes the id; every rank receives it (over MPI) and joins with it.
void nccl_unique_id(char* id);
void nccl_init(const char* id, int rank, int ranks, int device);
bool nccl_ready();
// In place: the sum over the ranks of n values (f32, or f64) at `data` on `device`,
// queued on a stream of NCCL's own after the work queued on the device's stream so far;
// the device's stream waits for it before anything queued later. Returns at once.
void nccl_all_reduce_sum_start(void* data, int64_t n, bool f64, int device);
// Waits until every sum started is complete; false when `timeout_seconds` pass first
// (the communicator is then aborted: some rank stopped answering).
bool nccl_wait(int device, double timeout_seconds);

}  // namespace emonext::kernels::cuda
