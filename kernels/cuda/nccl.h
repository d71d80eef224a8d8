// NCCL as a data-parallel run uses it on GPUs: one communicator over the run's ranks,
// each rank on its GPU, and sums in place on a stream of NCCL's own, ordered by events
// after the device's stream's work that wrote the gradients and before its work that
// follows. Built when CMake finds NCCL beside the CUDA toolkit or in its pip wheel
// (EMONEXT_WITH_NCCL); used by a run of several ranks, which needs MPI too (rank 0's id
// reaches the others over it). No CUDA header here.
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
