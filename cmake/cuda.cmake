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

# A CUDA library beside the toolkit (Debian/NVIDIA packages), under $ENV{<NAME>_ROOT}, or
# from its nvidia-<wheel> pip wheel: sets <NAME>_INCLUDE_DIR, <NAME>_LIBRARY and FOUND_VAR,
# and says which it found, or MISSING (a message of mode MISSING_MODE) when it found none.
function(emonext_find_cuda_library NAME HEADER WHEEL LIBRARY FOUND_VAR MISSING_MODE MISSING)
  file(GLOB _pip_roots /usr/local/lib/python3*/dist-packages/nvidia/${WHEEL} /usr/lib/python3/dist-packages/nvidia/${WHEEL}
       /opt/*/.venv/lib/python3*/site-packages/nvidia/${WHEEL})
  find_path(${NAME}_INCLUDE_DIR ${HEADER} HINTS ${CUDAToolkit_INCLUDE_DIRS} $ENV{${NAME}_ROOT}/include PATHS ${_pip_roots}
            PATH_SUFFIXES include)
  find_library(${NAME}_LIBRARY NAMES ${WHEEL} ${LIBRARY} HINTS ${CUDAToolkit_LIBRARY_DIR} $ENV{${NAME}_ROOT}/lib
               PATHS ${_pip_roots} PATH_SUFFIXES lib lib64)
  if(${NAME}_INCLUDE_DIR AND ${NAME}_LIBRARY)
    set(${FOUND_VAR} ON PARENT_SCOPE)
    message(STATUS "emonext: ${NAME} ${${NAME}_LIBRARY}")
  else()
    set(${FOUND_VAR} OFF PARENT_SCOPE)
    message(${MISSING_MODE} "emonext: ${NAME} not found (set ${NAME}_ROOT); ${MISSING}")
  endif()
endfunction()

# cuDNN: the few dense convolutions (and kernel_bench's baselines).
emonext_find_cuda_library(CUDNN cudnn.h cudnn libcudnn.so.9 EMONEXT_WITH_CUDNN WARNING "building the CUDA backend without it")
# NCCL: the gradients' sums of a data-parallel run on GPUs.
emonext_find_cuda_library(NCCL nccl.h nccl libnccl.so.2 EMONEXT_WITH_NCCL STATUS
                          "data-parallel GPU runs sum through host memory")
