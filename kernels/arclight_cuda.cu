// The single translation unit nvcc compiles (cmake/ArclightCuda.cmake builds it into the static library
// arclight::cuda). It includes every kernels/cuda/*.cuh, which define the kernels and the launchers declared for
// the host compiler in kernels/cuda/launchers.hpp. Kernels see only raw pointers and the plain structs of
// kernels/common/; no framework template is ever instantiated by nvcc.
#include "kernels/cuda/launchers.hpp"
#include "kernels/cuda/launchers_dnn.hpp"
#include "kernels/cuda/launchers_ops.hpp"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/runtime.cuh"

#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/gem.cuh"
#include "kernels/cuda/optim.cuh"
#include "kernels/cuda/schedule.cuh"
#include "kernels/cuda/search.cuh"
#include "kernels/cuda/amp.cuh"
#include "kernels/cuda/dnn.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/conv_blocks.cuh"
#include "kernels/cuda/pooling.cuh"
#include "kernels/cuda/depthwise.cuh"
#include "kernels/cuda/random.cuh"
