// Matrix products on the GPU through cuBLAS, fp32 accumulation for every
// floating type but f64 (f64 accumulation). cuBLAS is column-major: a
// row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T, so the
// operands swap places and keep their own transpose flags. A product with an
// epilogue (bias + GELU, or its backward) goes through cuBLASLt.
#include <cstdio>
#include <mutex>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/workspace.cuh"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

// cuBLASLt's descriptors, destroyed with the scope.
struct LtMatmul {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtMatmul() = default;
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;
  ~LtMatmul() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

template <class V>
void set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t what, const V& value) {
  EMONEXT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, what, &value, sizeof(value)));
}

// The most workspace cuBLASLt may ask for (NVIDIA's suggestion for Hopper). A call takes
// what its algorithm needs from the device's pool (so a captured step holds it as graph
// memory).
constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;

// cuBLAS's type for a dtype it multiplies (f32, f64, bf16, f16).
cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::F64: return CUDA_R_64F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: fail(detail::concat("gemm: dtype ", t, " is not supported; expected f32, f64, bf16 or f16"));
  }
}

const char* epilogue_name(GemmEpilogue e) { return e == GemmEpilogue::BiasGeluTanh ? "bias + GELU" : "GELU backward"; }

// Whether a cuBLASLt status means "not for this product" (the caller computes it another
// way) rather than a failure.
bool unsupported(cublasStatus_t status) { return status == CUBLAS_STATUS_NOT_SUPPORTED; }

}  // namespace

// One product with its epilogue (batch 1, alpha 1, beta 0; core/ checks the shapes and
// cuBLASLt's alignments: ldaux a multiple of 8). The algorithm is cuBLASLt's first
// heuristic choice for the shape, asked on every call: host work only, so a captured
// step asks once. Where the heuristic offers none (an empty list, or NOT_SUPPORTED, as
// it may for a shape or GPU; the emulation's EMONEXT_EMU_NO_LT_ALGORITHM forces it),
// nothing is queued and the first such product is reported.
bool gemm_epilogue(const Gemm& g, Stream s) {
  if (g.dtype == DType::F64) fail("gemm: an epilogue needs f32, bf16 or f16, not f64");
  const cudaDataType_t type = data_type(g.dtype);
  if (g.epilogue == GemmEpilogue::None) fail("gemm_epilogue: no epilogue asked for (gemm runs plain products)");
  if (g.m == 0 || g.n == 0) return true;
  cublasLtHandle_t lt = cublaslt_handle();
  LtMatmul mm;
  EMONEXT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&mm.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // The column-major C^T = op(B)^T op(A)^T: cuBLASLt's A is our B and its B our A.
  set(mm.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N));
  set(mm.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N));
  const bool forward = g.epilogue == GemmEpilogue::BiasGeluTanh;
  set(mm.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
      uint32_t(forward ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_DGELU_BGRAD));
  set(mm.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, forward ? const_cast<void*>(g.bias) : g.bias_grad);
  set(mm.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux);
  set(mm.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(g.ldaux));
  const auto u = [](int64_t v) { return uint64_t(v); };
  EMONEXT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&mm.a, type, u(g.trans_b ? g.k : g.n), u(g.trans_b ? g.n : g.k), g.ldb));
  EMONEXT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&mm.b, type, u(g.trans_a ? g.m : g.k), u(g.trans_a ? g.k : g.m), g.lda));
  EMONEXT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&mm.c, type, u(g.n), u(g.m), g.ldc));
  EMONEXT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&mm.pref));
  const uint64_t bytes = kLtWorkspaceBytes;
  EMONEXT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(mm.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes, sizeof(bytes)));
  cublasLtMatmulHeuristicResult_t choice{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(lt, mm.desc, mm.a, mm.b, mm.c, mm.c, mm.pref, 1, &choice, &found);
  if (!unsupported(status)) EMONEXT_CUBLAS_CHECK(status);
  if (unsupported(status) || found == 0) {
    static std::once_flag reported;
    std::call_once(reported, [&] {
      std::fprintf(stderr,
                   "emonext: cuBLASLt offers no algorithm for the %s epilogue at m %lld, n %lld, k %lld (%s): such products "
                   "run unfused (a GEMM, then bias_gelu)\n",
                   epilogue_name(g.epilogue), (long long)g.m, (long long)g.n, (long long)g.k, dtype_name(g.dtype));
    });
    return false;
  }
  const Workspace workspace(choice.workspaceSize);
  const float one = 1.0f, zero = 0.0f;
  EMONEXT_CUBLAS_CHECK(cublasLtMatmul(lt, mm.desc, &one, g.b, mm.a, g.a, mm.b, &zero, g.c, mm.c, g.c, mm.c, &choice.algo,
                                     workspace.as<void>(), choice.workspaceSize, static_cast<cudaStream_t>(s)));
  count_launch("cublasLtMatmul");
  return true;
}

void gemm(const Gemm& g, Stream s) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (g.epilogue != GemmEpilogue::None) {
    if (!gemm_epilogue(g, s))
      fail(detail::concat("gemm: cuBLASLt has no algorithm for the ", epilogue_name(g.epilogue), " epilogue at m ", g.m, ", n ", g.n,
                          ", k ", g.k, " (", g.dtype, ")"));
    return;
  }
  const cudaDataType_t type = data_type(g.dtype);
  const cublasComputeType_t compute = g.dtype == DType::F64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
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
