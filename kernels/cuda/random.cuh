// CUDA kernel of the dropout / drop-path keep-mask (declared in kernels/cuda/launchers_ops.hpp): the same Philox
// draws as the host's rand(shape, f64, gen) (core/tensor.hpp fill_random: element i reads words 2i and 2i+1 of the
// reserved block range, kernels/common/philox.hpp), so a mask made on the GPU equals the one made on the CPU from the
// same generator state, bit for bit, and no upload is needed.
#pragma once

#include "kernels/common/philox.hpp"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers_ops.hpp"

namespace arclight::kernels::cuda {

namespace rnd {

__global__ void keep_mask_kernel(std::int64_t count, std::uint64_t seed, std::uint64_t first_block, double keep,
                                 float scale, float* __restrict__ mask) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    std::uint32_t w[2];
    for (int k = 0; k < 2; ++k) {
      const std::int64_t word = 2 * i + k;
      w[k] = philox_block(seed, 0, first_block + std::uint64_t(word / 4)).v[word % 4];
    }
    mask[i] = philox_uniform_f64(w[0], w[1]) < keep ? scale : 0.f;
  }
}

}  // namespace rnd

void keep_mask(std::int64_t count, std::uint64_t seed, std::uint64_t first_block, double keep, float* mask,
               Stream stream) {
  constexpr const char* op = "keep_mask";
  ARCLIGHT_CHECK(count >= 0, op, "count is ", count, "; expected >= 0");
  ARCLIGHT_CHECK(keep >= 0.0 && keep <= 1.0, op, "keep probability ", keep, " outside [0, 1]");
  if (count == 0) return;
  ARCLIGHT_CHECK(mask != nullptr, op, "mask must not be null");
  const float scale = keep > 0.0 ? float(1.0 / keep) : 0.f;
  rnd::keep_mask_kernel<<<detail::elementwise_grid(count, 256), 256, 0, stream>>>(count, seed, first_block, keep, scale,
                                                                                  mask);
  detail::check_launch(op);
}

}  // namespace arclight::kernels::cuda
