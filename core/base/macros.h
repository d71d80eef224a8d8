// Macros shared by host code, CPU kernels and CUDA kernels.
#pragma once

// A function that both backends compile: plain inline on the host compiler,
// __host__ __device__ under nvcc.
#if defined(__CUDACC__)
#define EMONEXT_HD __host__ __device__ __forceinline__
#else
#define EMONEXT_HD inline
#endif
