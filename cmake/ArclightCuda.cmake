# The CUDA backend: nvcc compiles kernels/arclight_cuda.cu (raw-pointer kernels only) once into a static
# library that the INTERFACE target links, and ARCLIGHT_WITH_CUDA=1 is defined for consumers.
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES 80 90)
endif()
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/kernels/arclight_cuda.cu)
  add_library(arclight_cuda STATIC kernels/arclight_cuda.cu)
  add_library(arclight::cuda ALIAS arclight_cuda)
  set_target_properties(arclight_cuda PROPERTIES CUDA_STANDARD 17 POSITION_INDEPENDENT_CODE ON)
  target_include_directories(arclight_cuda PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}> $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/arclight-kernels>)
  # include/ too: the launchers throw arclight::Error (arclight/core/error.hpp) and reuse the CPU validators.
  target_include_directories(arclight_cuda PRIVATE ${ARCLIGHT_CUDNN_INCLUDE_DIR}
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>)
  target_link_libraries(arclight_cuda PUBLIC CUDA::cudart CUDA::cublas ${ARCLIGHT_CUDNN_LIBRARY})
  target_link_libraries(arclight INTERFACE arclight_cuda)
  install(TARGETS arclight_cuda EXPORT arclightTargets)
endif()
target_compile_definitions(arclight INTERFACE ARCLIGHT_WITH_CUDA=1)
