// The cuBLAS, cuBLASLt and cuDNN handles of the current device, bound to its stream
// (cuBLASLt takes the stream per call). cuDNN is there when the build found it
// (EMONEXT_WITH_CUDNN).
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#if EMONEXT_WITH_CUDNN
#include <cudnn.h>
#endif

namespace emonext::kernels::cuda {

cublasHandle_t cublas_handle();
cublasLtHandle_t cublaslt_handle();
#if EMONEXT_WITH_CUDNN
cudnnHandle_t cudnn_handle();
#endif

}  // namespace emonext::kernels::cuda
