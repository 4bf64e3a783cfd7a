// Portability macros shared by every kernel. The scalar math in kernels/common/ is compiled both by the
// host compiler (CPU kernels) and by nvcc (CUDA kernels); ARCLIGHT_HOST_DEVICE marks it for both.
#pragma once

#if defined(__CUDACC__)
#define ARCLIGHT_HOST_DEVICE __host__ __device__
#define ARCLIGHT_INLINE __forceinline__
#else
#define ARCLIGHT_HOST_DEVICE
#define ARCLIGHT_INLINE inline
#endif
