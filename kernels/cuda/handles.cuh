// The cuBLAS and cuDNN handles of the current device, bound to its stream.
// cuDNN is there when the build found it (EMONEXT_WITH_CUDNN).
#pragma once
#include <cublas_v2.h>
#if EMONEXT_WITH_CUDNN
#include <cudnn.h>
#endif

namespace emonext::kernels::cuda {

cublasHandle_t cublas_handle();
#if EMONEXT_WITH_CUDNN
cudnnHandle_t cudnn_handle();
#endif

}  // namespace emonext::kernels::cuda
