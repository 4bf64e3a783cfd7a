// CUDA kernels of GeM pooling, y[n,c] = (mean_hw max(x,eps)^p)^(1/p), and its backward to x and to the
// learnable exponent p (a device scalar, so the op is graph-capturable). The CPU twin is kernels/cpu/gem.hpp;
// the per-plane formulas come from kernels/common/gem_math.hpp.
//
// Layout: x is [planes = n*c, hw] row-major and hw is small in practice (7x7 .. 16x16). Three paths:
//   thread-per-plane (hw <= kGemSmallHw, the common 7x7 / 8x8 case): a block of kGemSmallThreads threads copies a
//             tile of kGemSmallThreads whole planes — one contiguous span of x — into shared memory with
//             coalesced (float4 where aligned) loads, then each thread reduces ONE plane sequentially out of
//             shared memory (planes are stored with an odd stride, hw | 1, so the 32 threads of a warp hit 32
//             different banks). All lanes do useful work and the per-plane epilogue (a powf) runs once per
//             thread instead of once per warp. The backward writes each plane's gx over its staged x, then the
//             block copies the tile back to gx with coalesced (float4) stores: 4 (x) + 4 (gx) bytes per element.
//   warp-per-plane (kGemSmallHw < hw <= kGemTileFloats): a block stages a tile of whole planes and one warp
//             reduces each plane (the row is wide enough to keep 32 lanes busy).
//   block-per-plane (hw > kGemTileFloats): streaming from global memory (the backward re-reads the plane,
//             which is still in L2).
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

// Thread-per-plane path: planes of up to kGemSmallHw floats, kGemSmallThreads planes per tile, stored in shared
// memory with the odd stride hw | 1 (so at most kGemSmallThreads * (kGemSmallHw + 1) floats, 33 KB).
constexpr int kGemSmallThreads = 128;
constexpr int kGemSmallHw = 64;
constexpr int kGemSmallTileFloats = kGemSmallThreads * (kGemSmallHw + 1);
constexpr int kGemSmallUnroll = 8;  // float4 loads in flight per thread while staging

enum class GemPath { kThreadPerPlane, kWarpPerPlane, kBlockPerPlane };

struct GemPlan {
  std::int64_t planes = 0;
  std::int64_t planes_per_tile = 1;
  std::int64_t tiles = 0;
  GemPath path = GemPath::kThreadPerPlane;
  bool staged = true;  // warp-per-plane
  unsigned grid = 1;
};

inline GemPlan gem_plan(const GemShape& s) {
  GemPlan p;
  p.planes = s.n * s.c;
  p.path = s.hw <= kGemSmallHw      ? GemPath::kThreadPerPlane
           : s.hw <= kGemTileFloats ? GemPath::kWarpPerPlane
                                    : GemPath::kBlockPerPlane;
  p.staged = p.path == GemPath::kWarpPerPlane;
  p.planes_per_tile = p.path == GemPath::kThreadPerPlane ? kGemSmallThreads
                      : p.staged                         ? kGemTileFloats / s.hw
                                                         : 1;
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

// ---- thread-per-plane path (hw <= kGemSmallHw) ------------------------------------------------------------

// Shared-memory slot of element e (0 <= e < planes_in_tile * hw) of a tile of consecutive planes stored with
// stride hw_pad. e / hw is formed in float (e < 2^14, so the quotient is off by at most one when e is an exact
// multiple of hw) and corrected with the remainder.
__device__ __forceinline__ int gem_slot(int e, int hw, int hw_pad, float inv_hw) {
  if (hw == hw_pad) return e;
  int q = __float2int_rz(__fmul_rn(float(e), inv_hw));
  int r = e - q * hw;
  if (r >= hw) {
    r -= hw;
    ++q;
  } else if (r < 0) {
    r += hw;
    --q;
  }
  return q * hw_pad + r;
}

// Copies the `len` consecutive floats at src into the padded tile. vec: src is 16-byte aligned (then float4
// loads; and float4 shared stores when the stride is unpadded).
__device__ __forceinline__ void gem_small_stage(const float* __restrict__ src, int len, int hw, int hw_pad,
                                                float inv_hw, bool vec, float* tile) {
  const int tid = threadIdx.x;
  int done = 0;
  if (vec) {
    const int n4 = len >> 2;
    const float4* __restrict__ s4 = reinterpret_cast<const float4*>(src);
    for (int i0 = tid; i0 < n4; i0 += kGemSmallThreads * kGemSmallUnroll) {
      float4 v[kGemSmallUnroll];
#pragma unroll
      for (int u = 0; u < kGemSmallUnroll; ++u) {
        const int i = i0 + u * kGemSmallThreads;
        v[u] = i < n4 ? __ldg(s4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kGemSmallUnroll; ++u) {
        const int i = i0 + u * kGemSmallThreads;
        if (i < n4) {
          if (hw == hw_pad) {
            reinterpret_cast<float4*>(tile)[i] = v[u];
          } else {
            const int e = 4 * i;
            tile[gem_slot(e, hw, hw_pad, inv_hw)] = v[u].x;
            tile[gem_slot(e + 1, hw, hw_pad, inv_hw)] = v[u].y;
            tile[gem_slot(e + 2, hw, hw_pad, inv_hw)] = v[u].z;
            tile[gem_slot(e + 3, hw, hw_pad, inv_hw)] = v[u].w;
          }
        }
      }
    }
    done = n4 << 2;
  }
  for (int e = done + tid; e < len; e += kGemSmallThreads) tile[gem_slot(e, hw, hw_pad, inv_hw)] = __ldg(src + e);
}

// The inverse of gem_small_stage: the padded tile back to `len` consecutive floats at dst (vec: dst 16-byte
// aligned).
__device__ __forceinline__ void gem_small_unstage(const float* tile, int len, int hw, int hw_pad, float inv_hw,
                                                  bool vec, float* __restrict__ dst) {
  const int tid = threadIdx.x;
  int done = 0;
  if (vec) {
    const int n4 = len >> 2;
    float4* __restrict__ d4 = reinterpret_cast<float4*>(dst);
    for (int i = tid; i < n4; i += kGemSmallThreads) {
      float4 v;
      if (hw == hw_pad) {
        v = reinterpret_cast<const float4*>(tile)[i];
      } else {
        const int e = 4 * i;
        v.x = tile[gem_slot(e, hw, hw_pad, inv_hw)];
        v.y = tile[gem_slot(e + 1, hw, hw_pad, inv_hw)];
        v.z = tile[gem_slot(e + 2, hw, hw_pad, inv_hw)];
        v.w = tile[gem_slot(e + 3, hw, hw_pad, inv_hw)];
      }
      d4[i] = v;
    }
    done = n4 << 2;
  }
  for (int e = done + tid; e < len; e += kGemSmallThreads) dst[e] = tile[gem_slot(e, hw, hw_pad, inv_hw)];
}

__global__ void __launch_bounds__(kGemSmallThreads)
    gem_forward_small_kernel(const float* __restrict__ x, std::int64_t planes, int hw, std::int64_t tiles,
                             const float* __restrict__ p_ptr, float eps, float* __restrict__ y) {
  __shared__ __align__(16) float tile[kGemSmallTileFloats];
  const float p = *p_ptr;
  const int hw_pad = hw | 1;
  const float inv_hw = 1.f / float(hw);
  const bool vec = (reinterpret_cast<std::uintptr_t>(x) & 15u) == 0;  // every tile starts at a multiple of 4
  for (std::int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const std::int64_t first = t * kGemSmallThreads;
    const int count = int(planes - first < kGemSmallThreads ? planes - first : kGemSmallThreads);
    gem_small_stage(x + first * hw, count * hw, hw, hw_pad, inv_hw, vec, tile);
    __syncthreads();
    if (int(threadIdx.x) < count) {
      const float* xq = tile + threadIdx.x * hw_pad;
      float s = 0.f;
      for (int h = 0; h < hw; ++h) s += exp2f(p * gem_log2_clamped(xq[h], eps));
      y[first + threadIdx.x] = gem_output(s, float(hw), p);
    }
    __syncthreads();  // the tile is overwritten by the next iteration
  }
}

__global__ void __launch_bounds__(kGemSmallThreads)
    gem_backward_small_kernel(const float* __restrict__ x, const float* __restrict__ gy, std::int64_t planes, int hw,
                              std::int64_t tiles, const float* __restrict__ p_ptr, float eps, float* __restrict__ gx,
                              float* __restrict__ gp_partial) {
  __shared__ __align__(16) float tile[kGemSmallTileFloats];
  __shared__ float scratch[33];
  const float p = *p_ptr;
  const int hw_pad = hw | 1;
  const float inv_hw = 1.f / float(hw);
  const bool vec_in = (reinterpret_cast<std::uintptr_t>(x) & 15u) == 0;
  const bool vec_out = (reinterpret_cast<std::uintptr_t>(gx) & 15u) == 0;
  float gp_acc = 0.f;  // this thread's planes, in a fixed order
  for (std::int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const std::int64_t first = t * kGemSmallThreads;
    const int count = int(planes - first < kGemSmallThreads ? planes - first : kGemSmallThreads);
    gem_small_stage(x + first * hw, count * hw, hw, hw_pad, inv_hw, vec_in, tile);
    __syncthreads();
    if (int(threadIdx.x) < count) {
      float* xq = tile + threadIdx.x * hw_pad;  // x in, this plane's gx out (same thread, same slots)
      float sp = 0.f, spl = 0.f;
      for (int h = 0; h < hw; ++h) {
        const float l2 = gem_log2_clamped(xq[h], eps);
        const float tp = exp2f(p * l2);
        sp += tp;
        spl += tp * l2;
      }
      const float g = __ldg(gy + first + threadIdx.x);
      if (!(sp > 0.f)) {
        // Every xc^p underflowed: y = 0 and no gradient flows (as gem_plane_backward and the CPU kernel).
        if (gx != nullptr)
          for (int h = 0; h < hw; ++h) xq[h] = 0.f;
      } else {
        const float yv = gem_output(sp, float(hw), p);
        if (gx != nullptr) {
          const float coef = g * gem_grad_x_coef(yv, sp);
          for (int h = 0; h < hw; ++h) {
            const float xv = xq[h];
            xq[h] = gem_active(xv, eps) ? coef * exp2f((p - 1.f) * gem_log2_clamped(xv, eps)) : 0.f;
          }
        }
        gp_acc += g * gem_grad_p(yv, sp, spl * kLn2, float(hw), p);
      }
    }
    __syncthreads();
    if (gx != nullptr) gem_small_unstage(tile, count * hw, hw, hw_pad, inv_hw, vec_out, gx + first * hw);
    __syncthreads();  // the tile is overwritten by the next iteration
  }
  if (gp_partial != nullptr) {
    const float total = block_sum(gp_acc, scratch);
    if (threadIdx.x == 0) gp_partial[blockIdx.x] = total;
  }
}

}  // namespace detail

void gem_forward(const GemShape& shape, const float* x, const float* p, float eps, float* y, Stream stream) {
  const char* op = "cuda::gem_forward";
  detail::gem_validate(op, shape, eps);
  const detail::GemPlan plan = detail::gem_plan(shape);
  if (plan.planes == 0) return;
  ARCLIGHT_CHECK(x != nullptr && y != nullptr && p != nullptr, op, "expected non-null x, p and y");
  if (plan.path == detail::GemPath::kThreadPerPlane) {
    detail::gem_forward_small_kernel<<<plan.grid, detail::kGemSmallThreads, 0, stream>>>(
        x, plan.planes, int(shape.hw), plan.tiles, p, eps, y);
  } else if (plan.staged) {
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
  if (plan.path == detail::GemPath::kThreadPerPlane) {
    detail::gem_backward_small_kernel<<<plan.grid, detail::kGemSmallThreads, 0, stream>>>(
        x, gy, plan.planes, int(shape.hw), plan.tiles, p, eps, gx, partial);
  } else if (plan.staged) {
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
