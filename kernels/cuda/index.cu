// Gather and scatter-add along one dimension of a contiguous [outer, dim, inner]
// block, and one-hot encoding (CUDA). index_add gives each thread a whole
// output column (o, i) and adds in index order, like the CPU twin: no atomics,
// the same bits every run.
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;

template <class T>
__global__ void index_select_kernel(T* out, const T* in, const int64_t* idx, int64_t in_dim, int64_t n_idx, int64_t inner, int64_t total) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t % inner, j = (t / inner) % n_idx, o = t / (inner * n_idx);
    out[t] = in[(o * in_dim + idx[j]) * inner + i];
  }
}

template <class T>
__global__ void index_add_kernel(T* out, const T* src, const int64_t* idx, int64_t out_dim, int64_t n_idx, int64_t inner, int64_t columns) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < columns; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t % inner, o = t / inner;
    for (int64_t j = 0; j < n_idx; ++j) {
      T& dst = out[(o * out_dim + idx[j]) * inner + i];
      dst = store<T>(load(dst) + load(src[(o * n_idx + j) * inner + i]));
    }
  }
}

template <class T>
__global__ void one_hot_kernel(T* out, const int64_t* labels, int64_t n, int64_t classes, T on, T off) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n * classes; t += int64_t(gridDim.x) * blockDim.x)
    out[t] = (t % classes) == labels[t / classes] ? on : off;
}

}  // namespace

void index_select(void* out, const void* in, DType dtype, const int64_t* idx, int64_t outer, int64_t in_dim, int64_t n_idx, int64_t inner, Stream s) {
  dispatch_all<Types>(dtype, "index_select", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t total = outer * n_idx * inner;
    EMONEXT_LAUNCH(index_select_kernel<T>, blocks_for(total, kThreads), kThreads, 0, s, static_cast<T*>(out),
                   static_cast<const T*>(in), idx, in_dim, n_idx, inner, total);
  });
}

void index_add(void* out, const void* src, DType dtype, const int64_t* idx, int64_t outer, int64_t out_dim, int64_t n_idx, int64_t inner, Stream s) {
  dispatch_floating<Types>(dtype, "index_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(index_add_kernel<T>, blocks_for(outer * inner, kThreads), kThreads, 0, s, static_cast<T*>(out),
                   static_cast<const T*>(src), idx, out_dim, n_idx, inner, outer * inner);
  });
}

void one_hot(void* out, DType dtype, const int64_t* labels, int64_t n, int64_t classes, double on, double off, Stream s) {
  dispatch_floating<Types>(dtype, "one_hot", [&](auto tag) {
    using T = typename decltype(tag)::type;
    EMONEXT_LAUNCH(one_hot_kernel<T>, blocks_for(n * classes, kThreads), kThreads, 0, s, static_cast<T*>(out), labels, n,
                   classes, host_value<T>(on), host_value<T>(off));
  });
}

}  // namespace emonext::kernels::cuda
