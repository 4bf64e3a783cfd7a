// Gradient unscaling for fp16 mixed precision with dynamic loss scaling: the loss was multiplied by a scale S
// before backward, so every gradient is S times too large; amp_unscale multiplies them all by 1/S in place, in
// one launch per up to kMaxAmpTensors tensors (pointers and sizes travel in the kernel's parameter block, as in
// optim.cuh), and raises a device flag when any gradient is inf or NaN so the host-side scaler
// (include/arclight/cuda/grad_scaler.hpp) skips that optimizer step and backs the scale off. The flag is set
// with a plain store of 1.0f (every writer stores the same value, so the result is deterministic; no atomics).
// 1/S is read from device memory, so the call can be captured in a CUDA graph. Traffic: 4 bytes read + 4
// written per element.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace arclight::kernels::cuda {

namespace amp_detail {

constexpr int kMaxAmpTensors = 64;
constexpr int kAmpThreads = 256;

struct AmpBatch {
  float* data[kMaxAmpTensors];
  std::int64_t count[kMaxAmpTensors];
  int tensors;
};

// Grid-stride over each tensor of the batch in turn; float4 over the 16-byte-aligned body of a tensor, scalar
// head and tail.
__global__ void __launch_bounds__(kAmpThreads)
    amp_unscale_kernel(AmpBatch b, const float* __restrict__ inv_scale, float* __restrict__ found_inf) {
  const float inv = *inv_scale;
  const std::int64_t start = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  bool bad = false;
  for (int t = 0; t < b.tensors; ++t) {
    float* __restrict__ g = b.data[t];
    const std::int64_t n = b.count[t];
    std::int64_t lead = std::int64_t(((16u - (reinterpret_cast<std::uintptr_t>(g) & 15u)) & 15u) >> 2);
    if (lead > n) lead = n;
    const std::int64_t n4 = (n - lead) >> 2;
    for (std::int64_t i = start; i < lead; i += stride) {
      const float v = g[i];
      bad |= !isfinite(v);
      g[i] = v * inv;
    }
    float4* __restrict__ g4 = reinterpret_cast<float4*>(g + lead);
    for (std::int64_t i = start; i < n4; i += stride) {
      float4 v = g4[i];
      bad |= !(isfinite(v.x) && isfinite(v.y) && isfinite(v.z) && isfinite(v.w));
      v.x *= inv;
      v.y *= inv;
      v.z *= inv;
      v.w *= inv;
      g4[i] = v;
    }
    for (std::int64_t i = lead + 4 * n4 + start; i < n; i += stride) {
      const float v = g[i];
      bad |= !isfinite(v);
      g[i] = v * inv;
    }
  }
  if (bad) *found_inf = 1.f;
}

}  // namespace amp_detail

void amp_unscale(const AmpTensor* tensors_host, std::int64_t tensor_count, const float* inv_scale, float* found_inf,
                 Stream stream) {
  const char* op = "cuda::amp_unscale";
  ARCLIGHT_CHECK(tensor_count >= 0, op, "expected tensor_count >= 0, got ", tensor_count);
  if (tensor_count == 0) return;
  ARCLIGHT_CHECK(tensors_host != nullptr, op, "expected ", tensor_count, " tensors, got a null list");
  ARCLIGHT_CHECK(inv_scale != nullptr && found_inf != nullptr, op, "expected non-null inv_scale and found_inf");
  std::int64_t largest = 0;
  for (std::int64_t t = 0; t < tensor_count; ++t) {
    const AmpTensor& a = tensors_host[t];
    ARCLIGHT_CHECK(a.count >= 0, op, "tensor ", t, ": expected count >= 0, got ", a.count);
    ARCLIGHT_CHECK(a.count == 0 || a.data != nullptr, op, "tensor ", t, ": expected non-null data for ", a.count,
                   " floats");
    if (a.count > largest) largest = a.count;
  }
  if (largest == 0) return;
  const unsigned grid = detail::elementwise_grid(detail::ceil_div(largest, 4), amp_detail::kAmpThreads);
  for (std::int64_t t0 = 0; t0 < tensor_count; t0 += amp_detail::kMaxAmpTensors) {
    amp_detail::AmpBatch b{};
    b.tensors = 0;
    for (std::int64_t t = t0; t < tensor_count && t < t0 + amp_detail::kMaxAmpTensors; ++t) {
      if (tensors_host[t].count == 0) continue;
      b.data[b.tensors] = tensors_host[t].data;
      b.count[b.tensors] = tensors_host[t].count;
      ++b.tensors;
    }
    if (b.tensors == 0) continue;
    amp_detail::amp_unscale_kernel<<<grid, amp_detail::kAmpThreads, 0, stream>>>(b, inv_scale, found_inf);
    detail::check_launch(op);
  }
}

}  // namespace arclight::kernels::cuda
