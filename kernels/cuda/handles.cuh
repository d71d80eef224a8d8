// The cuBLAS and cuDNN handles of the current device, bound to its stream.
#pragma once
#include <cublas_v2.h>
#include <cudnn.h>

namespace emonext::kernels::cuda {

cublasHandle_t cublas_handle();
cudnnHandle_t cudnn_handle();

}  // namespace emonext::kernels::cuda
