// CUDA kernels of GeM pooling, y[n,c] = (mean_hw max(x,eps)^p)^(1/p), and its backward to x and to the
// learnable exponent p (a device scalar, so the op is graph-capturable). The CPU twin is kernels/cpu/gem.hpp;
// the per-plane formulas come from kernels/common/gem_math.hpp.
//
// Layout: x is [planes = n*c, hw] row-major and hw is small in practice (7x7 .. 16x16), so a block stages a
// tile of whole planes (up to kGemTileFloats floats, 16 KB) into shared memory with wide unrolled coalesced
// loads — every byte of x is read from DRAM once, with many loads in flight — and then one warp reduces each
// plane out of shared memory. The backward writes gx from the same staged tile, so it moves the minimum
// 4 (x) + 4 (gx) bytes per element. Planes wider than a tile (hw > kGemTileFloats) take a block per plane,
// streaming from global memory (the backward then re-reads the plane, which is still in L2).
//
// Element math: xc^p is evaluated as exp2(p·log2 xc) with the SFU's log2 (one MUFU op each); the backward
// shares log2 xc between Σ xc^p, Σ xc^p·ln xc and xc^(p−1), as the CPU kernel shares its log. This keeps the
// kernel at the memory floor (an accurate powf per element would make it compute-bound on an H100).
//
// dL/dp is reduced deterministically: each warp accumulates its planes in a fixed order, each block writes
// one partial to `workspace`, and one block sums the partials in order (finish_sum_kernel). The grid size
// depends only on the shape, so the result is bitwise reproducible on any GPU.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/common/gem_math.hpp"
#include "kernels/cuda/common.cuh"

namespace arclight::kernels::cuda {

namespace detail {

constexpr int kGemThreads = 256;
constexpr int kGemWarps = kGemThreads / 32;
constexpr std::int64_t kGemTileFloats = 4096;
constexpr int kGemLoadUnroll = int(kGemTileFloats / kGemThreads);  // 16 loads in flight per thread
constexpr std::int64_t kGemMaxBlocks = 8192;
constexpr float kLn2 = 0.693147180559945309f;

struct GemPlan {
  std::int64_t planes = 0;
  std::int64_t planes_per_tile = 1;
  std::int64_t tiles = 0;
  bool staged = true;
  unsigned grid = 1;
};

inline GemPlan gem_plan(const GemShape& s) {
  GemPlan p;
  p.planes = s.n * s.c;
  p.staged = s.hw <= kGemTileFloats;
  p.planes_per_tile = p.staged ? kGemTileFloats / s.hw : 1;
  p.tiles = ceil_div(p.planes, p.planes_per_tile);
  const std::int64_t g = p.tiles < kGemMaxBlocks ? p.tiles : kGemMaxBlocks;
  p.grid = unsigned(g < 1 ? 1 : g);
  return p;
}

inline void gem_validate(const char* op, const GemShape& s, float eps) {
  ARCLIGHT_CHECK(s.n >= 0 && s.c >= 0, op, "expected n >= 0 and c >= 0, got n=", s.n, " c=", s.c);
  ARCLIGHT_CHECK(s.hw > 0, op, "expected a non-empty spatial extent (hw > 0), got hw=", s.hw);
  ARCLIGHT_CHECK(std::isfinite(eps) && eps > 0.f, op, "expected a finite clamp eps > 0, got eps=", eps);
}

// Copies `len` floats from global `src` into shared `dst` with kGemLoadUnroll independent loads per thread
// issued before any store (so they are all in flight together).
__device__ __forceinline__ void gem_stage(const float* __restrict__ src, std::int64_t len, float* dst) {
  for (std::int64_t i0 = 0; i0 < len; i0 += std::int64_t(kGemThreads) * kGemLoadUnroll) {
    float v[kGemLoadUnroll];
#pragma unroll
    for (int u = 0; u < kGemLoadUnroll; ++u) {
      const std::int64_t i = i0 + std::int64_t(u) * kGemThreads + threadIdx.x;
      v[u] = i < len ? __ldg(src + i) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kGemLoadUnroll; ++u) {
      const std::int64_t i = i0 + std::int64_t(u) * kGemThreads + threadIdx.x;
      if (i < len) dst[i] = v[u];
    }
  }
}

// log2 of the clamped value (NaN stays NaN, +inf stays +inf).
__device__ __forceinline__ float gem_log2_clamped(float x, float eps) { return __log2f(gem_clamp(x, eps)); }

__global__ void __launch_bounds__(kGemThreads)
    gem_forward_staged_kernel(const float* __restrict__ x, std::int64_t planes, std::int64_t hw,
                              std::int64_t planes_per_tile, std::int64_t tiles, const float* __restrict__ p_ptr,
                              float eps, float* __restrict__ y) {
  __shared__ float tile[kGemTileFloats];
  const float p = *p_ptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (std::int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const std::int64_t first = t * planes_per_tile;
    const std::int64_t count = planes - first < planes_per_tile ? planes - first : planes_per_tile;
    gem_stage(x + first * hw, count * hw, tile);
    __syncthreads();
    for (std::int64_t q = warp; q < count; q += kGemWarps) {
      const float* xq = tile + q * hw;
      float s = 0.f;
      for (std::int64_t h = lane; h < hw; h += 32) s += exp2f(p * gem_log2_clamped(xq[h], eps));
      s = warp_sum(s);
      if (lane == 0) y[first + q] = gem_output(s, float(hw), p);
    }
    __syncthreads();  // the tile is overwritten by the next iteration
  }
}

__global__ void __launch_bounds__(kGemThreads)
    gem_forward_plane_kernel(const float* __restrict__ x, std::int64_t planes, std::int64_t hw,
                             const float* __restrict__ p_ptr, float eps, float* __restrict__ y) {
  __shared__ float scratch[33];
  const float p = *p_ptr;
  for (std::int64_t q = blockIdx.x; q < planes; q += gridDim.x) {
    const float* xq = x + q * hw;
    float s = 0.f;
    for (std::int64_t h = threadIdx.x; h < hw; h += kGemThreads) s += exp2f(p * gem_log2_clamped(__ldg(xq + h), eps));
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) y[q] = gem_output(s, float(hw), p);
  }
}

// Per-plane backward given the plane's reduced sums: writes gx for the plane (from `xq`, staged or global)
// and returns the plane's dL/dp contribution (valid in the calling group's first thread).
__device__ __forceinline__ float gem_plane_backward(const float* xq, std::int64_t hw, std::int64_t h0,
                                                    std::int64_t h_step, float sum_pow, float sum_pow_log2, float g,
                                                    float p, float eps, float* __restrict__ gxq) {
  if (!(sum_pow > 0.f)) {
    // Every xc^p underflowed: y = 0 and no gradient flows (as the CPU kernel: avoids 0/0 below).
    if (gxq != nullptr)
      for (std::int64_t h = h0; h < hw; h += h_step) gxq[h] = 0.f;
    return 0.f;
  }
  const float y = gem_output(sum_pow, float(hw), p);
  if (gxq != nullptr) {
    const float coef = g * gem_grad_x_coef(y, sum_pow);
    for (std::int64_t h = h0; h < hw; h += h_step) {
      const float xv = xq[h];
      // gem_grad_x with xc^(p−1) = exp2((p−1)·log2 xc).
      gxq[h] = gem_active(xv, eps) ? coef * exp2f((p - 1.f) * gem_log2_clamped(xv, eps)) : 0.f;
    }
  }
  return g * gem_grad_p(y, sum_pow, sum_pow_log2 * kLn2, float(hw), p);
}

__global__ void __launch_bounds__(kGemThreads)
    gem_backward_staged_kernel(const float* __restrict__ x, const float* __restrict__ gy, std::int64_t planes,
                               std::int64_t hw, std::int64_t planes_per_tile, std::int64_t tiles,
                               const float* __restrict__ p_ptr, float eps, float* __restrict__ gx,
                               float* __restrict__ gp_partial) {
  __shared__ float tile[kGemTileFloats];
  __shared__ float scratch[33];
  const float p = *p_ptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float gp_acc = 0.f;  // this warp's planes, in a fixed order (meaningful in lane 0)
  for (std::int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const std::int64_t first = t * planes_per_tile;
    const std::int64_t count = planes - first < planes_per_tile ? planes - first : planes_per_tile;
    gem_stage(x + first * hw, count * hw, tile);
    __syncthreads();
    for (std::int64_t q = warp; q < count; q += kGemWarps) {
      const float* xq = tile + q * hw;
      float sp = 0.f, spl = 0.f;
      for (std::int64_t h = lane; h < hw; h += 32) {
        const float l2 = gem_log2_clamped(xq[h], eps);
        const float tp = exp2f(p * l2);
        sp += tp;
        spl += tp * l2;
      }
      sp = warp_sum(sp);
      spl = warp_sum(spl);
      const float g = __ldg(gy + first + q);
      gp_acc += gem_plane_backward(xq, hw, lane, 32, sp, spl, g, p, eps,
                                   gx != nullptr ? gx + (first + q) * hw : nullptr);
    }
    __syncthreads();
  }
  if (gp_partial != nullptr) {
    const float total = block_sum(lane == 0 ? gp_acc : 0.f, scratch);
    if (threadIdx.x == 0) gp_partial[blockIdx.x] = total;
  }
}

__global__ void __launch_bounds__(kGemThreads)
    gem_backward_plane_kernel(const float* __restrict__ x, const float* __restrict__ gy, std::int64_t planes,
                              std::int64_t hw, const float* __restrict__ p_ptr, float eps, float* __restrict__ gx,
                              float* __restrict__ gp_partial) {
  __shared__ float scratch[33];
  const float p = *p_ptr;
  float gp_acc = 0.f;  // thread 0's running sum over this block's planes
  for (std::int64_t q = blockIdx.x; q < planes; q += gridDim.x) {
    const float* xq = x + q * hw;
    float sp = 0.f, spl = 0.f;
    for (std::int64_t h = threadIdx.x; h < hw; h += kGemThreads) {
      const float l2 = gem_log2_clamped(__ldg(xq + h), eps);
      const float tp = exp2f(p * l2);
      sp += tp;
      spl += tp * l2;
    }
    sp = block_sum(sp, scratch);
    spl = block_sum(spl, scratch);
    const float c = gem_plane_backward(xq, hw, threadIdx.x, kGemThreads, sp, spl, __ldg(gy + q), p, eps,
                                       gx != nullptr ? gx + q * hw : nullptr);
    if (threadIdx.x == 0) gp_acc += c;
  }
  if (gp_partial != nullptr && threadIdx.x == 0) gp_partial[blockIdx.x] = gp_acc;
}

}  // namespace detail

void gem_forward(const GemShape& shape, const float* x, const float* p, float eps, float* y, Stream stream) {
  const char* op = "cuda::gem_forward";
  detail::gem_validate(op, shape, eps);
  const detail::GemPlan plan = detail::gem_plan(shape);
  if (plan.planes == 0) return;
  ARCLIGHT_CHECK(x != nullptr && y != nullptr && p != nullptr, op, "expected non-null x, p and y");
  if (plan.staged) {
    detail::gem_forward_staged_kernel<<<plan.grid, detail::kGemThreads, 0, stream>>>(
        x, plan.planes, shape.hw, plan.planes_per_tile, plan.tiles, p, eps, y);
  } else {
    detail::gem_forward_plane_kernel<<<plan.grid, detail::kGemThreads, 0, stream>>>(x, plan.planes, shape.hw, p,
                                                                                    eps, y);
  }
  detail::check_launch(op);
}

std::int64_t gem_backward_workspace_floats(const GemShape& shape) {
  if (shape.n <= 0 || shape.c <= 0 || shape.hw <= 0) return 1;
  return detail::gem_plan(shape).grid;
}

void gem_backward(const GemShape& shape, const float* x, const float* gy, const float* p, float eps, float* gx,
                  float* gp, float* workspace, Stream stream) {
  const char* op = "cuda::gem_backward";
  detail::gem_validate(op, shape, eps);
  const detail::GemPlan plan = detail::gem_plan(shape);
  if (plan.planes == 0) {
    if (gp != nullptr) detail::check_cuda(cudaMemsetAsync(gp, 0, sizeof(float), stream), op, "cudaMemsetAsync");
    return;
  }
  ARCLIGHT_CHECK(x != nullptr && gy != nullptr && p != nullptr, op, "expected non-null x, gy and p");
  ARCLIGHT_CHECK(gp == nullptr || workspace != nullptr, op, "dL/dp needs a workspace of ",
                 gem_backward_workspace_floats(shape), " floats, got null");
  if (gx == nullptr && gp == nullptr) return;
  float* partial = gp != nullptr ? workspace : nullptr;
  if (plan.staged) {
    detail::gem_backward_staged_kernel<<<plan.grid, detail::kGemThreads, 0, stream>>>(
        x, gy, plan.planes, shape.hw, plan.planes_per_tile, plan.tiles, p, eps, gx, partial);
  } else {
    detail::gem_backward_plane_kernel<<<plan.grid, detail::kGemThreads, 0, stream>>>(x, gy, plan.planes, shape.hw,
                                                                                     p, eps, gx, partial);
  }
  detail::check_launch(op);
  if (gp != nullptr) {
    detail::finish_sum_kernel<<<1, 1024, 0, stream>>>(partial, plan.grid, 1.f, gp);
    detail::check_launch(op);
  }
}

}  // namespace arclight::kernels::cuda
