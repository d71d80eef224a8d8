// NCCL as a data-parallel run uses it on GPUs: one communicator over the run's ranks,
// each rank on its GPU, and sums in place on a stream of NCCL's own, ordered by events
// after the device's stream's work that wrote the gradients, and joined back into the
// device's stream once, where the step needs the sums. Built when CMake finds NCCL beside
// the CUDA toolkit or in its pip wheel (EMONEXT_WITH_NCCL); used by a run of several
// ranks, which needs MPI too (rank 0's id reaches the others over it). No CUDA header here.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/view.h"

namespace emonext::kernels::cuda {

constexpr size_t kNcclIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES

// Rank 0 makes the id; every rank receives it (over MPI) and joins with it.
void nccl_unique_id(char* id);
void nccl_init(const char* id, int rank, int ranks, int device);
bool nccl_ready();
// In place: the sum over the ranks of n values (f32, or f64) at `data` on `device`,
// queued on a stream of NCCL's own after the work queued on the device's stream so far.
// Returns at once; the device's stream goes on beside it (a data-parallel step's
// backward keeps running while its finished buckets are summed) until nccl_join.
void nccl_all_reduce_sum_start(void* data, int64_t n, bool f64, int device);
// The device's stream waits (on the GPU) for every sum started so far: once a step,
// where it needs the sums.
void nccl_join(int device);
// NCCL's stream (null before the first sum), for tests.
Stream nccl_stream();
// Waits until every sum started is complete; false when `timeout_seconds` pass first
// (the communicator is then aborted: some rank stopped answering).
bool nccl_wait(int device, double timeout_seconds);

}  // namespace emonext::kernels::cuda
