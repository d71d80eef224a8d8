// The processes of a data-parallel run: MPI's world when mpirun (or another MPI
// launcher) started this process, else one process alone. Every collective here is
// deterministic (a rerun gives the same bits, and every rank ends with the same bits)
// and bounded in time: a collective that waits longer than the timeout for the other
// ranks stops every rank with one message (MPI_Abort), so no rank hangs forever.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace emonext::dist {

// Joins the MPI world when this process was started by an MPI launcher (and the build
// has MPI); one process alone otherwise. Call once, first thing in main.
void init(int* argc, char*** argv);
// Leaves the MPI world (a no-op alone). Every rank calls it at the end of a run.
void finalize();

int rank();        // 0 .. size() - 1
int size();        // the number of processes in the run; 1 alone
int local_rank();  // the rank among the processes on this machine (which GPU to take)
int local_size();  // the processes of the run on this machine
bool built_with_mpi();

// How long a collective waits for the other ranks before stopping the run (seconds).
void set_timeout(double seconds);
double timeout();

// In place, the element-wise sum over the ranks of data[0, n): a ring (reduce-scatter,
// then all-gather), so each element's sum is taken in one fixed order of ranks and
// every rank receives the same bits. `what` names the collective in a timeout message.
void all_reduce_sum(float* data, int64_t n, const char* what);
void all_reduce_sum(double* data, int64_t n, const char* what);
// Every rank's `bytes` concatenated in rank order; sizes[r] is rank r's byte count.
std::vector<char> all_gather_bytes(const void* data, int64_t bytes, std::vector<int64_t>* sizes, const char* what);
// Rank `root`'s bytes into every rank's `data` (each gives the same `bytes`).
void broadcast_bytes(void* data, int64_t bytes, int root, const char* what);

// Stops every rank of the run: prints "emonext_train: rank R: why" to stderr, then
// MPI_Abort (exit(code) alone).
[[noreturn]] void abort_all(const std::string& why, int code = 1);
// abort_all for a collective named `what` that waited past the timeout for the other ranks.
[[noreturn]] void abort_timed_out(const std::string& what);

}  // namespace emonext::dist
