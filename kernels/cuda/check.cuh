// Status checks for CUDA, cuBLAS and cuDNN calls: a failure throws
// emonext::Error naming the call, the file and line, and the library's words.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#if EMONEXT_WITH_CUDNN
#include <cudnn.h>
#endif

#include <cstdio>

#include "core/base/error.h"

namespace emonext::kernels::cuda {

const char* cublas_status_name(cublasStatus_t s);

}  // namespace emonext::kernels::cuda

#define EMONEXT_CUDA_CHECK(call)                                                                        \
  do {                                                                                                  \
    cudaError_t status_ = (call);                                                                       \
    if (status_ != cudaSuccess)                                                                         \
      ::emonext::fail(::emonext::detail::concat("CUDA error in ", #call, " (", __FILE__, ":", __LINE__, \
                                                "): ", cudaGetErrorString(status_)));                   \
  } while (0)

// For destructors and other places that must not throw: reports the failure on stderr.
#define EMONEXT_CUDA_WARN(call)                                                                             \
  do {                                                                                                      \
    cudaError_t status_ = (call);                                                                           \
    if (status_ != cudaSuccess) {                                                                           \
      std::fprintf(stderr, "emonext: warning: %s failed (%s:%d): %s\n", #call, __FILE__, __LINE__,          \
                   cudaGetErrorString(status_));                                                            \
      (void)cudaGetLastError();                                                                             \
    }                                                                                                       \
  } while (0)

#define EMONEXT_CUBLAS_CHECK(call)                                                                        \
  do {                                                                                                    \
    cublasStatus_t status_ = (call);                                                                      \
    if (status_ != CUBLAS_STATUS_SUCCESS)                                                                 \
      ::emonext::fail(::emonext::detail::concat("cuBLAS error in ", #call, " (", __FILE__, ":", __LINE__, \
                                                "): ", ::emonext::kernels::cuda::cublas_status_name(status_))); \
  } while (0)

#if EMONEXT_WITH_CUDNN
#define EMONEXT_CUDNN_WARN(call)                                                                            \
  do {                                                                                                      \
    cudnnStatus_t status_ = (call);                                                                         \
    if (status_ != CUDNN_STATUS_SUCCESS)                                                                    \
      std::fprintf(stderr, "emonext: warning: %s failed (%s:%d): %s\n", #call, __FILE__, __LINE__,          \
                   cudnnGetErrorString(status_));                                                           \
  } while (0)

#define EMONEXT_CUDNN_CHECK(call)                                                                        \
  do {                                                                                                   \
    cudnnStatus_t status_ = (call);                                                                      \
    if (status_ != CUDNN_STATUS_SUCCESS)                                                                 \
      ::emonext::fail(::emonext::detail::concat("cuDNN error in ", #call, " (", __FILE__, ":", __LINE__, \
                                                "): ", cudnnGetErrorString(status_)));                   \
  } while (0)
#endif
