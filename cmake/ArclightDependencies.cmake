# Finds the system packages arclight builds on (all Debian packages, installed by scripts/setup.sh) and
# decides whether the CUDA backend is compiled in (ARCLIGHT_WITH_CUDA), printing the decision.
find_package(OpenMP REQUIRED COMPONENTS CXX)
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_package(ZLIB REQUIRED)
include(ArclightFindCblas)

set(ARCLIGHT_WITH_CUDA OFF)
if(NOT ARCLIGHT_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  set(_arclight_cudnn_hint "")
  if(CMAKE_CUDA_COMPILER)
    get_filename_component(_arclight_cuda_bin "${CMAKE_CUDA_COMPILER}" DIRECTORY)
    set(_arclight_cudnn_hint "${_arclight_cuda_bin}/..")
  endif()
  find_path(ARCLIGHT_CUDNN_INCLUDE_DIR cudnn.h HINTS ${_arclight_cudnn_hint} ENV CUDNN_ROOT
            PATH_SUFFIXES include)
  find_library(ARCLIGHT_CUDNN_LIBRARY cudnn HINTS ${_arclight_cudnn_hint} ENV CUDNN_ROOT
               PATH_SUFFIXES lib64 lib lib/x64)
  if(CMAKE_CUDA_COMPILER AND ARCLIGHT_CUDNN_INCLUDE_DIR AND ARCLIGHT_CUDNN_LIBRARY)
    set(ARCLIGHT_WITH_CUDA ON)
  elseif(ARCLIGHT_CUDA STREQUAL "ON")
    message(FATAL_ERROR "arclight: ARCLIGHT_CUDA=ON but nvcc (${CMAKE_CUDA_COMPILER}) or cuDNN "
                        "(${ARCLIGHT_CUDNN_INCLUDE_DIR}, ${ARCLIGHT_CUDNN_LIBRARY}) was not found")
  endif()
endif()
if(ARCLIGHT_WITH_CUDA)
  message(STATUS "arclight: backend = CPU + CUDA (nvcc ${CMAKE_CUDA_COMPILER}, cuDNN ${ARCLIGHT_CUDNN_LIBRARY})")
else()
  message(STATUS "arclight: backend = CPU only (ARCLIGHT_CUDA=${ARCLIGHT_CUDA})")
endif()
