// Matrix products on the GPU through cuBLAS, fp32 accumulation for every
// floating type but f64 (f64 accumulation). cuBLAS is column-major: a
// row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T, so the
// operands swap places and keep their own transpose flags.
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/runtime.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

void gemm(const Gemm& g, Stream) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  cudaDataType_t type;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  switch (g.dtype) {
    case DType::F32: type = CUDA_R_32F; break;
    case DType::F64: type = CUDA_R_64F; compute = CUBLAS_COMPUTE_64F; break;
    case DType::BF16: type = CUDA_R_16BF; break;
    case DType::F16: type = CUDA_R_16F; break;
    default: fail(detail::concat("gemm: dtype ", g.dtype, " is not supported; expected f32, f64, bf16 or f16"));
  }
  const double alpha64 = g.alpha, beta64 = g.beta;
  const float alpha32 = g.alpha, beta32 = g.beta;
  const void* alpha = compute == CUBLAS_COMPUTE_64F ? static_cast<const void*>(&alpha64) : &alpha32;
  const void* beta = compute == CUBLAS_COMPUTE_64F ? static_cast<const void*>(&beta64) : &beta32;
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  EMONEXT_CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas_handle(), op_b, op_a, int(g.n), int(g.m), int(g.k), alpha, g.b, type,
                                                  int(g.ldb), g.stride_b, g.a, type, int(g.lda), g.stride_a, beta, g.c, type,
                                                  int(g.ldc), g.stride_c, int(g.batch), compute, CUBLAS_GEMM_DEFAULT));
  count_launch("cublasGemmStridedBatchedEx");
}

}  // namespace emonext::kernels::cuda
