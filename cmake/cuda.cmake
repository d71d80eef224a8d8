# Decides whether the CUDA backend builds, and for which architectures.
# A machine without a toolkit quietly gets the CPU-only build.
include(CheckLanguage)
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(STATUS "emonext: no CUDA toolkit found, building the CPU backend only")
  return()
endif()

# Architectures: the user's choice (-DCMAKE_CUDA_ARCHITECTURES=...), else the GPU in
# this machine, else sm_90 (H100/H200).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(_arch 90)
  find_program(_nvidia_smi nvidia-smi)
  if(_nvidia_smi)
    execute_process(COMMAND ${_nvidia_smi} --query-gpu=compute_cap --format=csv,noheader
                    OUTPUT_VARIABLE _cap RESULT_VARIABLE _rc ERROR_QUIET)
    if(_rc EQUAL 0 AND _cap MATCHES "^([0-9]+)\\.([0-9]+)")
      set(_arch "${CMAKE_MATCH_1}${CMAKE_MATCH_2}")
    endif()
  endif()
  set(CMAKE_CUDA_ARCHITECTURES ${_arch} CACHE STRING "CUDA architectures" FORCE)
endif()
message(STATUS "emonext: CUDA architectures ${CMAKE_CUDA_ARCHITECTURES}")

enable_language(CUDA)
# CMake 3.25 cannot ask nvcc for C++20; the .cu files and the headers they include keep to C++17.
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)
set(EMONEXT_WITH_CUDA ON)

# cuDNN: beside the toolkit (Debian/NVIDIA packages) or from the nvidia-cudnn pip wheel.
file(GLOB _cudnn_pip_roots /usr/local/lib/python3*/dist-packages/nvidia/cudnn
     /usr/lib/python3/dist-packages/nvidia/cudnn /opt/*/.venv/lib/python3*/site-packages/nvidia/cudnn)
find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} $ENV{CUDNN_ROOT}/include
          PATHS ${_cudnn_pip_roots} PATH_SUFFIXES include)
find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${CUDAToolkit_LIBRARY_DIR} $ENV{CUDNN_ROOT}/lib
             PATHS ${_cudnn_pip_roots} PATH_SUFFIXES lib lib64)
if(CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY)
  set(EMONEXT_WITH_CUDNN ON)
  message(STATUS "emonext: cuDNN ${CUDNN_LIBRARY}")
else()
  set(EMONEXT_WITH_CUDNN OFF)
  message(WARNING "emonext: cuDNN not found (set CUDNN_ROOT); building the CUDA backend without it")
endif()

# NCCL (the gradients' sums of a data-parallel run on GPUs): beside the toolkit or from the
# nvidia-nccl pip wheel. Without it, the sums go through host memory and MPI.
file(GLOB _nccl_pip_roots /usr/local/lib/python3*/dist-packages/nvidia/nccl /usr/lib/python3/dist-packages/nvidia/nccl
     /opt/*/.venv/lib/python3*/site-packages/nvidia/nccl)
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} $ENV{NCCL_ROOT}/include PATHS ${_nccl_pip_roots}
          PATH_SUFFIXES include)
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${CUDAToolkit_LIBRARY_DIR} $ENV{NCCL_ROOT}/lib
             PATHS ${_nccl_pip_roots} PATH_SUFFIXES lib lib64)
if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
  set(EMONEXT_WITH_NCCL ON)
  message(STATUS "emonext: NCCL ${NCCL_LIBRARY}")
else()
  set(EMONEXT_WITH_NCCL OFF)
  message(STATUS "emonext: NCCL not found (set NCCL_ROOT); data-parallel GPU runs sum through host memory")
endif()
