#include "core/dist.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <unistd.h>

#include "core/base/error.h"

#if EMONEXT_WITH_MPI
#define OMPI_SKIP_MPICXX 1  // MPI's C API alone (Open MPI's mpi.h would pull in its deprecated C++ bindings)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace emonext::dist {

namespace {

int g_rank = 0, g_size = 1, g_local_rank = 0, g_local_size = 1;
#if EMONEXT_WITH_MPI
bool g_mpi = false;  // MPI_Init was called
#endif
double g_timeout = 300;

// Launchers say who a process is in its environment before MPI_Init: Open MPI, MPICH
// and Slurm's PMI. Without one of these the process runs alone (and never calls
// MPI_Init, which would start a singleton MPI job for nothing).
bool started_by_mpi_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

}  // namespace

bool built_with_mpi() { return EMONEXT_WITH_MPI != 0; }
int rank() { return g_rank; }
int size() { return g_size; }
int local_rank() { return g_local_rank; }
int local_size() { return g_local_size; }
void set_timeout(double seconds) { g_timeout = seconds; }
double timeout() { return g_timeout; }

void abort_all(const std::string& why, int code) {
  std::fflush(stdout);
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  std::fprintf(stderr, "emonext: rank %d of %d (pid %d on %s): %s\n", g_rank, g_size, int(getpid()), host, why.c_str());
  std::fflush(stderr);
#if EMONEXT_WITH_MPI
  if (g_mpi) {
    // mpirun forwards a rank's output asynchronously and stops forwarding when it kills
    // the job: a moment for the message to reach it first.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    MPI_Abort(MPI_COMM_WORLD, code);
  }
#endif
  std::exit(code);
}

void abort_timed_out(const std::string& what) {
  abort_all(what + ": waited " + std::to_string(int(g_timeout)) +
            " s for the other ranks (--timeout); a rank has stopped or hangs. Stopping every rank");
}

#if EMONEXT_WITH_MPI

void init(int* argc, char*** argv) {
  if (g_mpi || !started_by_mpi_launcher()) return;
  int provided = 0;
  // The loader's threads never call MPI; the main thread alone does.
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &g_local_rank);
  MPI_Comm_size(node, &g_local_size);
  MPI_Comm_free(&node);
  // A failed MPI call returns its code to be checked rather than aborting silently.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

void finalize() {
  if (!g_mpi) return;
  MPI_Finalize();
  g_mpi = false;
}

namespace {

void check(int code, const char* call, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  abort_all(std::string(what) + ": " + call + " failed: " + std::string(text, size_t(len)));
}

// Waits for the requests, polling; past the timeout every rank is stopped. A yield
// between polls for the first milliseconds, then short sleeps: a rank that waits long
// (for rank 0 writing a checkpoint) leaves the cores to the ranks that work.
void wait_all(MPI_Request* reqs, int n, const char* what) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (int polls = 0;; ++polls) {
    int done = 0;
    check(MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE), "MPI_Testall", what);
    if (done) return;
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited > g_timeout) abort_timed_out(what);
    if (polls < 2000) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

// The ring: chunk c is [c n / R, (c + 1) n / R). Reduce-scatter: at step s rank r sends
// its running sum of chunk (r - s) to rank r + 1 and adds the sum of chunk (r - s - 1)
// it receives from rank r - 1 to its own values (received + own, always in that order),
// so chunk c is summed as ((x[c] + x[c+1]) + x[c+2]) + ... over ranks c, c+1, ... and
// rank r ends holding chunk r + 1 complete. All-gather: R - 1 steps pass the complete
// chunks round the ring, copied, so every rank ends with the same bits.
template <class T>
void ring_all_reduce(T* data, int64_t n, const char* what) {
  if (!g_mpi || g_size == 1 || n == 0) return;
  EMONEXT_CHECK(n / g_size < int64_t(1) << 30, what, ": ", n, " elements is more than one all-reduce takes; reduce in buckets");
  const int R = g_size, r = g_rank, next = (r + 1) % R, prev = (r + R - 1) % R;
  auto begin = [&](int c) { return int64_t(c) * n / R; };
  auto count = [&](int c) { return int(begin(c + 1) - begin(c)); };
  std::vector<T> recv(size_t(n / R + 1));
  for (int s = 0; s < R - 1; ++s) {
    const int send_c = ((r - s) % R + R) % R, recv_c = ((r - s - 1) % R + R) % R;
    MPI_Request reqs[2];
    check(MPI_Irecv(recv.data(), count(recv_c), mpi_type<T>(), prev, s, MPI_COMM_WORLD, &reqs[0]), "MPI_Irecv", what);
    check(MPI_Isend(data + begin(send_c), count(send_c), mpi_type<T>(), next, s, MPI_COMM_WORLD, &reqs[1]), "MPI_Isend", what);
    wait_all(reqs, 2, what);
    T* own = data + begin(recv_c);
    for (int i = 0; i < count(recv_c); ++i) own[i] = recv[size_t(i)] + own[i];
  }
  for (int s = 0; s < R - 1; ++s) {
    const int send_c = ((r + 1 - s) % R + R) % R, recv_c = ((r - s) % R + R) % R;
    MPI_Request reqs[2];
    check(MPI_Irecv(data + begin(recv_c), count(recv_c), mpi_type<T>(), prev, R + s, MPI_COMM_WORLD, &reqs[0]), "MPI_Irecv",
          what);
    check(MPI_Isend(data + begin(send_c), count(send_c), mpi_type<T>(), next, R + s, MPI_COMM_WORLD, &reqs[1]), "MPI_Isend",
          what);
    wait_all(reqs, 2, what);
  }
}

}  // namespace

void all_reduce_sum(float* data, int64_t n, const char* what) { ring_all_reduce(data, n, what); }
void all_reduce_sum(double* data, int64_t n, const char* what) { ring_all_reduce(data, n, what); }

std::vector<char> all_gather_bytes(const void* data, int64_t bytes, std::vector<int64_t>* sizes, const char* what) {
  std::vector<int64_t> all(size_t(g_size), bytes);
  if (g_mpi && g_size > 1) {
    MPI_Request req;
    check(MPI_Iallgather(&bytes, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, MPI_COMM_WORLD, &req), "MPI_Iallgather", what);
    wait_all(&req, 1, what);
  }
  std::vector<int> counts, displs;
  int64_t total = 0;
  for (int64_t b : all) {
    EMONEXT_CHECK(b >= 0 && total + b < int64_t(1) << 31, what, ": gathering ", total + b, " bytes is more than one call takes");
    counts.push_back(int(b));
    displs.push_back(int(total));
    total += b;
  }
  std::vector<char> out(static_cast<size_t>(total));
  if (g_mpi && g_size > 1) {
    MPI_Request req;
    check(MPI_Iallgatherv(data, int(bytes), MPI_BYTE, out.data(), counts.data(), displs.data(), MPI_BYTE, MPI_COMM_WORLD, &req),
          "MPI_Iallgatherv", what);
    wait_all(&req, 1, what);
  } else if (bytes > 0) {
    std::memcpy(out.data(), data, size_t(bytes));
  }
  if (sizes) *sizes = all;
  return out;
}

void broadcast_bytes(void* data, int64_t bytes, int root, const char* what) {
  if (!g_mpi || g_size == 1) return;
  EMONEXT_CHECK(bytes >= 0 && bytes < int64_t(1) << 31, what, ": broadcasting ", bytes, " bytes is more than one call takes");
  MPI_Request req;
  check(MPI_Ibcast(data, int(bytes), MPI_BYTE, root, MPI_COMM_WORLD, &req), "MPI_Ibcast", what);
  wait_all(&req, 1, what);
}

#else  // built without MPI: one process alone, and a launcher's ranks are refused

void init(int*, char***) {
  if (started_by_mpi_launcher() && std::getenv("OMPI_COMM_WORLD_SIZE") && std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")) > 1)
    abort_all("this build has no MPI (tools/setup.sh installs Open MPI; rebuild with it) and cannot run as one of several ranks");
}
void finalize() {}
void all_reduce_sum(float*, int64_t, const char*) {}
void all_reduce_sum(double*, int64_t, const char*) {}
std::vector<char> all_gather_bytes(const void* data, int64_t bytes, std::vector<int64_t>* sizes, const char*) {
  if (sizes) *sizes = {bytes};
  const char* p = static_cast<const char*>(data);
  return std::vector<char>(p, p + bytes);
}
void broadcast_bytes(void*, int64_t, int, const char*) {}

#endif

}  // namespace emonext::dist
