// See planted_bugs.h. The broken kernels are deliberate.
#include <cuda_runtime.h>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/runtime.h"
#include "tests/emulation/planted_bugs.h"

namespace emonext::test::planted {

namespace {

using kernels::cuda::CopyKind;

// Device memory holding a copy of host values; freed on scope exit.
struct DeviceBuffer {
  float* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) { ptr = static_cast<float*>(kernels::cuda::allocate(count * sizeof(float), 0)); }
  DeviceBuffer(const std::vector<float>& host) : DeviceBuffer(host.size()) {
    kernels::cuda::memcpy(ptr, host.data(), n * sizeof(float), CopyKind::HostToDevice, 0);
  }
  ~DeviceBuffer() { kernels::cuda::deallocate(ptr, 0); }
  std::vector<float> host() const {
    std::vector<float> out(n);
    kernels::cuda::memcpy(out.data(), ptr, n * sizeof(float), CopyKind::DeviceToHost, 0);
    return out;
  }
};

kernels::Stream stream() { return kernels::cuda::stream(0); }

__global__ void shift_copy_broken(float* out, const float* in, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i + 1] = in[i];  // BUG: i == n - 1 writes out[n]
}
__global__ void shift_copy_correct(float* out, const float* in, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i + 1 < n) out[i + 1] = in[i];
}

__global__ void reverse_block_broken(float* out, const float* in) {
  __shared__ float buf[256];
  const unsigned t = threadIdx.x;
  buf[t] = in[t];
  // BUG: no __syncthreads() before reading another thread's slot
  out[t] = buf[blockDim.x - 1 - t];
}
__global__ void reverse_block_correct(float* out, const float* in) {
  __shared__ float buf[256];
  const unsigned t = threadIdx.x;
  buf[t] = in[t];
  __syncthreads();
  out[t] = buf[blockDim.x - 1 - t];
}

__global__ void sum_shared_broken(float* out, const float* in, int n) {
  __shared__ float buf[64];
  const int t = int(threadIdx.x);
  if (t < n) buf[t] = in[t];  // BUG: slots n..63 are never written
  __syncthreads();
  if (t == 0) {
    float s = 0;
    for (int i = 0; i < 64; ++i) s += buf[i];
    out[0] = s;
  }
}
__global__ void sum_shared_correct(float* out, const float* in, int n) {
  __shared__ float buf[64];
  const int t = int(threadIdx.x);
  buf[t] = t < n ? in[t] : 0.0f;
  __syncthreads();
  if (t == 0) {
    float s = 0;
    for (int i = 0; i < 64; ++i) s += buf[i];
    out[0] = s;
  }
}

__global__ void early_exit_broken(float* out) {
  if (threadIdx.x == 0) return;  // BUG: the others wait for thread 0 at the barrier
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}
__global__ void early_exit_correct(float* out) {
  __syncthreads();
  if (threadIdx.x == 0) return;
  out[threadIdx.x] = 1.0f;
}

__global__ void uses_dynamic_shared(float* out) {
  EMONEXT_DYNAMIC_SHARED(float, buf);
  buf[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = buf[threadIdx.x];
}

__global__ void warp_ops_kernel(float* out, const float* in) {
  const unsigned t = threadIdx.x, lane = t % 32;
  const float v = in[t];
  out[t * 6 + 0] = __shfl_up_sync(0xffffffffu, v, 1);
  out[t * 6 + 1] = __shfl_down_sync(0xffffffffu, v, 1);
  out[t * 6 + 2] = __shfl_xor_sync(0xffffffffu, v, 1);
  out[t * 6 + 3] = float(__ballot_sync(0xffffffffu, lane % 2 == 0));
  out[t * 6 + 4] = float(__any_sync(0xffffffffu, lane == 3));
  out[t * 6 + 5] = float(__all_sync(0xffffffffu, lane < 40));
}

__global__ void intrinsics_kernel(float* out, float x) {
  const float4 v = make_float4(x, 2 * x, 3 * x, 4 * x);
  out[0] = rsqrtf(x);
  out[1] = __expf(x);
  out[2] = __logf(x);
  out[3] = __bfloat162float(__float2bfloat16(x));
  out[4] = __half2float(__float2half(x));
  out[5] = v.x + v.y + v.z + v.w;
  out[6] = float(__popc(0xF0F0u));
  out[7] = float(__float_as_int(1.0f));
}

}  // namespace

std::vector<double> intrinsics(float x) {
  DeviceBuffer dout(8);
  EMONEXT_LAUNCH(intrinsics_kernel, 1, 1, 0, stream(), dout.ptr, x);
  const std::vector<float> r = dout.host();
  return std::vector<double>(r.begin(), r.end());
}

std::vector<float> shift_copy(const std::vector<float>& in, bool broken) {
  const int n = int(in.size());
  DeviceBuffer din(in), dout(std::vector<float>(in.size(), 0.0f));
  const unsigned blocks = unsigned((n + 63) / 64);
  if (broken) EMONEXT_LAUNCH(shift_copy_broken, blocks, 64, 0, stream(), dout.ptr, din.ptr, n);
  else EMONEXT_LAUNCH(shift_copy_correct, blocks, 64, 0, stream(), dout.ptr, din.ptr, n);
  return dout.host();
}

std::vector<float> reverse_block(const std::vector<float>& in, bool broken) {
  DeviceBuffer din(in), dout(in.size());
  if (broken) EMONEXT_LAUNCH(reverse_block_broken, 1, unsigned(in.size()), 0, stream(), dout.ptr, din.ptr);
  else EMONEXT_LAUNCH(reverse_block_correct, 1, unsigned(in.size()), 0, stream(), dout.ptr, din.ptr);
  return dout.host();
}

float sum_shared(const std::vector<float>& in, bool broken) {
  DeviceBuffer din(in), dout(1);
  if (broken) EMONEXT_LAUNCH(sum_shared_broken, 1, 64, 0, stream(), dout.ptr, din.ptr, int(in.size()));
  else EMONEXT_LAUNCH(sum_shared_correct, 1, 64, 0, stream(), dout.ptr, din.ptr, int(in.size()));
  return dout.host()[0];
}

void early_exit(bool broken) {
  DeviceBuffer dout(64);
  if (broken) EMONEXT_LAUNCH(early_exit_broken, 1, 64, 0, stream(), dout.ptr);
  else EMONEXT_LAUNCH(early_exit_correct, 1, 64, 0, stream(), dout.ptr);
}

void launch_with(unsigned threads, size_t shared_bytes, bool optin) {
  DeviceBuffer dout(threads);
  if (optin)
    EMONEXT_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(uses_dynamic_shared),
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes)));
  EMONEXT_LAUNCH(uses_dynamic_shared, 1, threads, shared_bytes, stream(), dout.ptr);
}

std::vector<double> warp_ops(const std::vector<float>& in) {
  DeviceBuffer din(in), dout(in.size() * 6);
  EMONEXT_LAUNCH(warp_ops_kernel, 1, unsigned(in.size()), 0, stream(), dout.ptr, din.ptr);
  const std::vector<float> r = dout.host();
  return std::vector<double>(r.begin(), r.end());
}

}  // namespace emonext::test::planted
