// Shared pieces of the CUDA kernels (compiled only inside kernels/arclight_cuda.cu): the status check that
// turns a CUDA error into arclight::Error with the op name, launch-size helpers, and deterministic
// warp / block reductions (fixed shuffle trees, then warp partials combined in warp order by one thread, so
// the same launch always produces the same bits; no floating-point atomics anywhere).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "arclight/core/error.hpp"
#include "kernels/cuda/launchers.hpp"

namespace arclight::kernels::cuda {

namespace detail {

// Throws arclight::Error("<op>: <what> failed: <error name>: <error text>") unless status is cudaSuccess.
inline void check_cuda(cudaError_t status, const char* op, const char* what) {
  if (status != cudaSuccess)
    ::arclight::fail(op, what, " failed: ", cudaGetErrorName(status), ": ", cudaGetErrorString(status));
}

// Checks the launch just issued (bad configuration, missing kernel image for this GPU, ...).
inline void check_launch(const char* op) { check_cuda(cudaGetLastError(), op, "kernel launch"); }

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Grid size of a grid-stride elementwise loop: enough blocks to fill the GPU a few times over, never more
// than the work needs, never more than the 32-bit grid limit.
inline unsigned elementwise_grid(std::int64_t count, int threads) {
  std::int64_t blocks = ceil_div(count, threads);
  if (blocks > 65536) blocks = 65536;
  return unsigned(blocks < 1 ? 1 : blocks);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
// scratch: >= 33 floats of shared memory; reusable after the call returns.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int w = 0; w < warps; ++w) t += scratch[w];
    scratch[32] = t;
  }
  __syncthreads();
  const float r = scratch[32];
  __syncthreads();
  return r;
}

// Sums `count` floats of `values` (device memory) with one block in a fixed order into *out (* scale).
// Used to finish two-level reductions (per-block partials -> one scalar) deterministically.
__global__ void finish_sum_kernel(const float* __restrict__ values, std::int64_t count, float scale,
                                  float* __restrict__ out) {
  __shared__ float scratch[33];
  float acc = 0.f;
  for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += values[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) *out = acc * scale;
}

}  // namespace detail

}  // namespace arclight::kernels::cuda
