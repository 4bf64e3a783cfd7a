// CUDA kernels of depthwise convolution (declared in kernels/cuda/launchers_ops.hpp): groups == c_in == c_out
// (channel multiplier 1), any kernel size, stride, dilation and explicit — possibly asymmetric — padding, NCHW
// float32, the contract of kernels/cpu/conv2d.hpp. EfficientNet's depthwise layers are memory-bound and cuDNN's
// NCHW float32 depthwise passes are slow (its backward-filter at 112×112 measured 0.1 TFLOP/s on the H100, the
// outlier of bench_device_dnn), so the op layer routes multiplier-1 depthwise convolutions here.
//
// Two paths, chosen per call by the launchers:
//  * tiled (square 3×3 and 5×5 kernels with equal strides 1 or 2 — every depthwise layer of EfficientNet): a block
//    stages one tile of the source planes (input rows and columns with their halo, zero outside the image) in
//    shared memory and computes a tile of up to kTileOutputs results from it, with the taps and the stride known
//    at compile time and 32-bit index arithmetic inside a plane. Small planes (7×7, 14×14) are packed several to a
//    block so a block never idles most of its threads.
//      forward:         tile of outputs of `planes` consecutive (n, c) planes, source = x;
//      backward-data:   tile of dx of consecutive planes, source = the dy rows and columns whose windows reach it
//                       (gathered, no atomics);
//      backward-filter: block (slice, channel) walks a fixed, strided set of work items (a group of images × an
//                       output tile of that channel), accumulating Σ dy·x per tap (and Σ dy) in registers; one
//                       block reduction at the end writes its partials; a second kernel adds each (channel, tap)'s
//                       partials in slice order — deterministic (fixed launch shape, fixed orders).
//  * generic (any other kernel size, unequal strides, or a tile whose halo would not fit the shared-memory
//    budget, e.g. extreme dilation): one thread per output / per input element, the taps through the cache; the
//    backward-filter as a two-level reduction over chunks of kChunk output positions.
#pragma once

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers_ops.hpp"

#include <algorithm>

namespace arclight::kernels::cuda {

namespace dw {

constexpr int kThreads = 256;
constexpr std::int64_t kChunk = 4096;  // output positions (over n, out_h, out_w) per backward-filter block

inline std::int64_t chunks(const Conv2dShape& s) { return detail::ceil_div(s.n * s.out_h * s.out_w, kChunk); }

__global__ void forward_kernel(Conv2dShape s, const float* __restrict__ x, const float* __restrict__ w,
                               const float* __restrict__ bias, float* __restrict__ y) {
  const std::int64_t total = s.output_numel();
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t ow = i % s.out_w, oh = (i / s.out_w) % s.out_h, nc = i / (s.out_w * s.out_h);
    const std::int64_t c = nc % s.c_out;
    const float* xp = x + nc * s.h * s.w;
    const float* wp = w + c * s.kh * s.kw;
    const std::int64_t h0 = oh * s.stride_h - s.pad_top, w0 = ow * s.stride_w - s.pad_left;
    float acc = bias ? bias[c] : 0.f;
    for (std::int64_t ky = 0; ky < s.kh; ++ky) {
      const std::int64_t ih = h0 + ky * s.dilation_h;
      if (ih < 0 || ih >= s.h) continue;
      for (std::int64_t kx = 0; kx < s.kw; ++kx) {
        const std::int64_t iw = w0 + kx * s.dilation_w;
        if (iw >= 0 && iw < s.w) acc += xp[ih * s.w + iw] * wp[ky * s.kw + kx];
      }
    }
    y[i] = acc;
  }
}

__global__ void backward_data_kernel(Conv2dShape s, const float* __restrict__ dy, const float* __restrict__ w,
                                     float* __restrict__ dx) {
  const std::int64_t total = s.input_numel();
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t iw = i % s.w, ih = (i / s.w) % s.h, nc = i / (s.w * s.h);
    const std::int64_t c = nc % s.c_in;
    const float* dyp = dy + nc * s.out_h * s.out_w;
    const float* wp = w + c * s.kh * s.kw;
    float acc = 0.f;
    for (std::int64_t ky = 0; ky < s.kh; ++ky) {
      const std::int64_t th = ih + s.pad_top - ky * s.dilation_h;  // = oh·stride_h
      if (th < 0 || th % s.stride_h != 0) continue;
      const std::int64_t oh = th / s.stride_h;
      if (oh >= s.out_h) continue;
      for (std::int64_t kx = 0; kx < s.kw; ++kx) {
        const std::int64_t tw = iw + s.pad_left - kx * s.dilation_w;
        if (tw < 0 || tw % s.stride_w != 0) continue;
        const std::int64_t ow = tw / s.stride_w;
        if (ow < s.out_w) acc += dyp[oh * s.out_w + ow] * wp[ky * s.kw + kx];
      }
    }
    dx[i] = acc;
  }
}

// Block (chunk, channel): partial[(c·chunks + chunk)·(taps + 1) + t] = Σ over the chunk's output positions of
// dy·x at tap t, and at t = taps the plain Σ dy (the bias gradient).
__global__ void backward_filter_partial_kernel(Conv2dShape s, const float* __restrict__ x,
                                               const float* __restrict__ dy, std::int64_t n_chunks,
                                               bool with_weight, float* __restrict__ partial) {
  __shared__ float scratch[33];
  const std::int64_t c = blockIdx.y, chunk = blockIdx.x;
  const std::int64_t plane_out = s.out_h * s.out_w, positions = s.n * plane_out;
  const std::int64_t p0 = chunk * kChunk, p1 = min(p0 + kChunk, positions);
  const std::int64_t taps = s.kh * s.kw;
  float* out = partial + (c * n_chunks + chunk) * (taps + 1);
  // The bias sum first.
  float acc = 0.f;
  for (std::int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    const std::int64_t n = p / plane_out, o = p % plane_out;
    acc += dy[(n * s.c_out + c) * plane_out + o];
  }
  acc = detail::block_sum(acc, scratch);
  if (threadIdx.x == 0) out[taps] = acc;
  if (!with_weight) return;
  for (std::int64_t t = 0; t < taps; ++t) {
    const std::int64_t ky = t / s.kw, kx = t % s.kw;
    acc = 0.f;
    for (std::int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
      const std::int64_t n = p / plane_out, o = p % plane_out;
      const std::int64_t oh = o / s.out_w, ow = o % s.out_w;
      const std::int64_t ih = oh * s.stride_h - s.pad_top + ky * s.dilation_h;
      const std::int64_t iw = ow * s.stride_w - s.pad_left + kx * s.dilation_w;
      if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
      acc += dy[(n * s.c_out + c) * plane_out + o] * x[((n * s.c_in + c) * s.h + ih) * s.w + iw];
    }
    acc = detail::block_sum(acc, scratch);
    if (threadIdx.x == 0) out[t] = acc;
  }
}

// One thread per (channel, tap): the partials of the channel's chunks added in chunk order.
__global__ void backward_filter_finish_kernel(std::int64_t channels, std::int64_t taps, std::int64_t n_chunks,
                                              const float* __restrict__ partial, float* __restrict__ dw,
                                              float* __restrict__ dbias) {
  const std::int64_t total = channels * (taps + 1);
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t c = i / (taps + 1), t = i % (taps + 1);
    float* dst = t == taps ? (dbias ? dbias + c : nullptr) : (dw ? dw + c * taps + t : nullptr);
    if (!dst) continue;
    float acc = 0.f;
    for (std::int64_t k = 0; k < n_chunks; ++k) acc += partial[(c * n_chunks + k) * (taps + 1) + t];
    *dst = acc;
  }
}

// ---- the tiled path ----------------------------------------------------------------------------------------------

constexpr int kTileOutputs = 1024;             // results per block pass (4 per thread)
constexpr std::int64_t kSmemBudget = 40 * 1024;  // dynamic shared memory per block: with the static, no opt-in
constexpr std::int64_t kFilterBlocks = 2048;   // backward-filter: about this many blocks (slices × channels)

// How a launch cuts the work (host-side, passed by value). A block pass covers `planes` source planes × one tile of
// th × tw results; the source tile of a plane is src_h × src_w floats.
struct Tiling {
  Conv2dShape s;
  int th = 0, tw = 0, tiles_w = 0, tiles_per_plane = 0;
  int planes = 0;
  int src_h = 0, src_w = 0;
  std::int64_t groups = 0;  // ceil(plane count / planes): plane groups (forward, backward-data) or image groups
  std::int64_t slices = 1;  // backward-filter: blocks per channel
};

// The tiled kernels' shapes: 3×3 or 5×5, equal strides 1 or 2, and planes whose index fits 32-bit arithmetic.
inline bool tiled_kernel_size(const Conv2dShape& s) {
  return s.kh == s.kw && (s.kh == 3 || s.kh == 5) && s.stride_h == s.stride_w && (s.stride_h == 1 || s.stride_h == 2) &&
         s.h * s.w <= 0x7FFFFFFF && s.out_h * s.out_w <= 0x7FFFFFFF;
}

// Source rows (or columns) a tile of `t` results needs. Over outputs (forward, backward-filter): the window span.
// Over inputs (backward-data): every output whose window reaches the tile, at most floor(span / stride) + 2 of them.
inline std::int64_t src_extent(std::int64_t t, std::int64_t k, std::int64_t stride, std::int64_t dilation,
                               bool over_inputs) {
  return over_inputs ? (t - 1 + (k - 1) * dilation) / stride + 2 : (t - 1) * stride + (k - 1) * dilation + 1;
}

// The tiling of a pass: result planes rh × rw, `plane_count` planes in all. `fits` is false when even a 1 × 1 tile's
// source does not fit the shared-memory budget (then the generic kernels run).
inline bool make_tiling(const Conv2dShape& s, std::int64_t rh, std::int64_t rw, std::int64_t plane_count,
                        bool over_inputs, Tiling& t) {
  if (!tiled_kernel_size(s)) return false;
  const std::int64_t taps = s.kh * s.kw;
  std::int64_t tw = std::min<std::int64_t>(rw, 64);
  std::int64_t th = std::min<std::int64_t>(rh, std::max<std::int64_t>(1, kTileOutputs / tw));
  std::int64_t planes = std::min<std::int64_t>(plane_count, std::max<std::int64_t>(1, kTileOutputs / (th * tw)));
  for (;;) {
    const std::int64_t sh = src_extent(th, s.kh, s.stride_h, s.dilation_h, over_inputs);
    const std::int64_t sw = src_extent(tw, s.kw, s.stride_w, s.dilation_w, over_inputs);
    if (planes * (sh * sw + taps + 1) * std::int64_t(sizeof(float)) <= kSmemBudget) {
      t.s = s;
      t.th = int(th), t.tw = int(tw), t.planes = int(planes), t.src_h = int(sh), t.src_w = int(sw);
      t.tiles_w = int(detail::ceil_div(rw, tw));
      t.tiles_per_plane = int(detail::ceil_div(rh, th) * t.tiles_w);
      t.groups = detail::ceil_div(plane_count, planes);
      return true;
    }
    if (planes > 1) {
      planes = (planes + 1) / 2;
    } else if (th > 1) {
      th = (th + 1) / 2;
    } else if (tw > 1) {
      tw = (tw + 1) / 2;
    } else {
      return false;
    }
  }
}

inline std::size_t smem_bytes(const Tiling& t) {
  return std::size_t(t.planes) * std::size_t(t.src_h * t.src_w + t.s.kh * t.s.kw + 1) * sizeof(float);
}

// Stages planes [0, np) of a source tile in shared memory: dst[q][r][c] = src plane q at (row0 + r, col0 + c), zero
// outside rows × cols. Plane q's data starts at src + plane_base(q).
template <class PlaneBase>
__device__ __forceinline__ void stage_tile(float* __restrict__ dst, const float* __restrict__ src, int np, int src_h,
                                           int src_w, int row0, int col0, int rows, int cols, PlaneBase plane_base) {
  const int per_plane = src_h * src_w;
  for (int e = threadIdx.x; e < np * per_plane; e += blockDim.x) {
    const int q = e / per_plane, rc = e - q * per_plane, r = rc / src_w, c = rc - r * src_w;
    const int row = row0 + r, col = col0 + c;
    dst[e] = (row >= 0 && row < rows && col >= 0 && col < cols) ? src[plane_base(q) + row * cols + col] : 0.f;
  }
}

// Where a block pass (or a backward-filter work item) falls: planes [plane0, plane0 + np) of the `count` planes, and
// the tile whose first result row / column is (r0, c0).
struct TilePlace {
  std::int64_t plane0;
  int np, r0, c0;
};
__device__ __forceinline__ TilePlace tile_place(const Tiling& T, std::int64_t index, std::int64_t count) {
  const std::int64_t group = index / T.tiles_per_plane;
  const int tile = int(index - group * T.tiles_per_plane);
  TilePlace p;
  p.plane0 = group * T.planes;
  p.np = int(min(std::int64_t(T.planes), count - p.plane0));
  p.r0 = (tile / T.tiles_w) * T.th;
  p.c0 = (tile % T.tiles_w) * T.tw;
  return p;
}

// wsm[q·K·K + t] = tap t of plane (plane0 + q)'s channel.
template <int K>
__device__ __forceinline__ void stage_weights(float* __restrict__ wsm, const float* __restrict__ w,
                                              std::int64_t plane0, int np, std::int64_t channels) {
  for (int e = threadIdx.x; e < np * K * K; e += blockDim.x) {
    const int q = e / (K * K);
    wsm[e] = w[((plane0 + q) % channels) * (K * K) + (e - q * K * K)];
  }
}

template <int K, int S>
__global__ void __launch_bounds__(kThreads) forward_tiled_kernel(Tiling T, const float* __restrict__ x,
                                                                 const float* __restrict__ w,
                                                                 const float* __restrict__ bias, float* __restrict__ y) {
  extern __shared__ float dw_smem[];
  const int H = int(T.s.h), W = int(T.s.w), OH = int(T.s.out_h), OW = int(T.s.out_w);
  const int dh = int(T.s.dilation_h), dwl = int(T.s.dilation_w);
  const std::int64_t C = T.s.c_in;
  const TilePlace tp = tile_place(T, blockIdx.x, T.s.n * C);
  const std::int64_t plane0 = tp.plane0;
  const int np = tp.np, oh0 = tp.r0, ow0 = tp.c0;
  const int per_plane = T.src_h * T.src_w;
  float* src = dw_smem;
  float* wsm = src + T.planes * per_plane;  // np × K·K taps, then np biases
  float* bsm = wsm + T.planes * K * K;
  stage_tile(src, x, np, T.src_h, T.src_w, oh0 * S - int(T.s.pad_top), ow0 * S - int(T.s.pad_left), H, W,
             [&](int q) { return (plane0 + q) * std::int64_t(H) * W; });
  stage_weights<K>(wsm, w, plane0, np, C);
  for (int q = threadIdx.x; q < np; q += blockDim.x) bsm[q] = bias ? bias[(plane0 + q) % C] : 0.f;
  __syncthreads();
  const int per_tile = T.th * T.tw;
  for (int e = threadIdx.x; e < np * per_tile; e += blockDim.x) {
    const int q = e / per_tile, rc = e - q * per_tile, r = rc / T.tw, c = rc - r * T.tw;
    if (oh0 + r >= OH || ow0 + c >= OW) continue;
    const float* sp = src + q * per_plane + (r * S) * T.src_w + c * S;
    const float* wp = wsm + q * K * K;
    float acc = bsm[q];
#pragma unroll
    for (int ky = 0; ky < K; ++ky) {
#pragma unroll
      for (int kx = 0; kx < K; ++kx) acc += sp[ky * dh * T.src_w + kx * dwl] * wp[ky * K + kx];
    }
    y[(plane0 + q) * std::int64_t(OH) * OW + (oh0 + r) * OW + (ow0 + c)] = acc;
  }
}

// Floor division for a possibly negative numerator (positive divisor).
__host__ __device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

template <int K, int S>
__global__ void __launch_bounds__(kThreads) backward_data_tiled_kernel(Tiling T, const float* __restrict__ dy,
                                                                       const float* __restrict__ w,
                                                                       float* __restrict__ dx) {
  extern __shared__ float dw_smem[];
  const int H = int(T.s.h), W = int(T.s.w), OH = int(T.s.out_h), OW = int(T.s.out_w);
  const int dh = int(T.s.dilation_h), dwl = int(T.s.dilation_w), pt = int(T.s.pad_top), pl = int(T.s.pad_left);
  const TilePlace tp = tile_place(T, blockIdx.x, T.s.n * T.s.c_in);
  const std::int64_t plane0 = tp.plane0;
  const int np = tp.np, ih0 = tp.r0, iw0 = tp.c0;
  const int per_plane = T.src_h * T.src_w;
  // The first output row / column whose window can reach the tile; rows before it contribute nothing.
  const int oh_lo = floor_div(ih0 + pt - (K - 1) * dh, S), ow_lo = floor_div(iw0 + pl - (K - 1) * dwl, S);
  float* src = dw_smem;
  float* wsm = src + T.planes * per_plane;
  stage_tile(src, dy, np, T.src_h, T.src_w, oh_lo, ow_lo, OH, OW,
             [&](int q) { return (plane0 + q) * std::int64_t(OH) * OW; });
  stage_weights<K>(wsm, w, plane0, np, T.s.c_in);
  __syncthreads();
  const int per_tile = T.th * T.tw;
  for (int e = threadIdx.x; e < np * per_tile; e += blockDim.x) {
    const int q = e / per_tile, rc = e - q * per_tile, r = rc / T.tw, c = rc - r * T.tw;
    const int ih = ih0 + r, iw = iw0 + c;
    if (ih >= H || iw >= W) continue;
    // Output row oh reaches ih through tap ky when oh·S = ih + pt − ky·dh; u = that minus oh_lo·S is >= 0.
    const int ur = ih + pt - oh_lo * S, uc = iw + pl - ow_lo * S;
    const float* sp = src + q * per_plane;
    const float* wp = wsm + q * K * K;
    float acc = 0.f;
#pragma unroll
    for (int ky = 0; ky < K; ++ky) {
      const int u = ur - ky * dh;
      if (u % S != 0) continue;
#pragma unroll
      for (int kx = 0; kx < K; ++kx) {
        const int v = uc - kx * dwl;
        if (v % S != 0) continue;
        acc += sp[(u / S) * T.src_w + v / S] * wp[ky * K + kx];
      }
    }
    dx[(plane0 + q) * std::int64_t(H) * W + ih * W + iw] = acc;
  }
}

// Block (slice, channel c): work items item = slice, slice + slices, ... of (image group × output tile); per item the
// group's x tiles of channel c are staged, and each thread adds dy·x for every tap (and dy) of its results into
// registers. partial[(c·slices + slice)·(K·K + 1) + t] = the block's sum for tap t (t = K·K: Σ dy).
template <int K, int S>
__global__ void __launch_bounds__(kThreads) backward_filter_tiled_kernel(Tiling T, const float* __restrict__ x,
                                                                         const float* __restrict__ dy, bool with_weight,
                                                                         float* __restrict__ partial) {
  extern __shared__ float dw_smem[];
  __shared__ float red[(K * K + 1) * (kThreads / 32)];
  const int H = int(T.s.h), W = int(T.s.w), OH = int(T.s.out_h), OW = int(T.s.out_w);
  const std::int64_t C = T.s.c_in, c = blockIdx.y, slice = blockIdx.x;
  const int dh = int(T.s.dilation_h), dwl = int(T.s.dilation_w);
  const int per_plane = T.src_h * T.src_w, per_tile = T.th * T.tw;
  float acc[K * K + 1];
#pragma unroll
  for (int t = 0; t <= K * K; ++t) acc[t] = 0.f;
  const std::int64_t items = T.groups * T.tiles_per_plane;
  for (std::int64_t item = slice; item < items; item += T.slices) {
    const TilePlace tp = tile_place(T, item, T.s.n);  // planes = images here
    const std::int64_t n0 = tp.plane0;
    const int np = tp.np, oh0 = tp.r0, ow0 = tp.c0;
    if (with_weight) {
      __syncthreads();  // the previous item's reads of the staged tile are done
      stage_tile(dw_smem, x, np, T.src_h, T.src_w, oh0 * S - int(T.s.pad_top), ow0 * S - int(T.s.pad_left), H, W,
                 [&](int q) { return ((n0 + q) * C + c) * std::int64_t(H) * W; });
      __syncthreads();
    }
    for (int e = threadIdx.x; e < np * per_tile; e += blockDim.x) {
      const int q = e / per_tile, rc = e - q * per_tile, r = rc / T.tw, cc = rc - r * T.tw;
      if (oh0 + r >= OH || ow0 + cc >= OW) continue;
      const float g = dy[((n0 + q) * C + c) * std::int64_t(OH) * OW + (oh0 + r) * OW + (ow0 + cc)];
      acc[K * K] += g;
      if (!with_weight) continue;
      const float* sp = dw_smem + q * per_plane + (r * S) * T.src_w + cc * S;
#pragma unroll
      for (int ky = 0; ky < K; ++ky) {
#pragma unroll
        for (int kx = 0; kx < K; ++kx) acc[ky * K + kx] += g * sp[ky * dh * T.src_w + kx * dwl];
      }
    }
  }
  // Block reduction of every accumulator: fixed shuffle trees, then the warps' sums in warp order.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int t = 0; t <= K * K; ++t) {
    const float v = detail::warp_sum(acc[t]);
    if (lane == 0) red[t * (kThreads / 32) + warp] = v;
  }
  __syncthreads();
  for (int t = threadIdx.x; t <= K * K; t += blockDim.x) {
    float sum = 0.f;
    for (int k = 0; k < warps; ++k) sum += red[t * (kThreads / 32) + k];
    partial[(c * T.slices + slice) * (K * K + 1) + t] = sum;
  }
}

// The backward-filter tiling (image groups × output tiles of one channel, `slices` blocks per channel), or false
// for the generic path.
inline bool filter_tiling(const Conv2dShape& s, Tiling& t) {
  if (!make_tiling(s, s.out_h, s.out_w, s.n, false, t)) return false;
  const std::int64_t items = t.groups * t.tiles_per_plane;
  t.slices = std::clamp<std::int64_t>(detail::ceil_div(kFilterBlocks, s.c_in), 1, items);
  return true;
}

// Launches kernel<K, S> for the tiling's (3 or 5, 1 or 2).
template <template <int, int> class Launch, class... Args>
void dispatch_tiled(const Conv2dShape& s, Args&&... args) {
  const bool k5 = s.kh == 5, s2 = s.stride_h == 2;
  if (k5) {
    s2 ? Launch<5, 2>::run(args...) : Launch<5, 1>::run(args...);
  } else {
    s2 ? Launch<3, 2>::run(args...) : Launch<3, 1>::run(args...);
  }
}

template <int K, int S>
struct LaunchForward {
  static void run(const Tiling& t, const float* x, const float* w, const float* bias, float* y, Stream stream) {
    forward_tiled_kernel<K, S><<<unsigned(t.groups * t.tiles_per_plane), kThreads, smem_bytes(t), stream>>>(t, x, w,
                                                                                                           bias, y);
  }
};
template <int K, int S>
struct LaunchBackwardData {
  static void run(const Tiling& t, const float* dy, const float* w, float* dx, Stream stream) {
    backward_data_tiled_kernel<K, S><<<unsigned(t.groups * t.tiles_per_plane), kThreads, smem_bytes(t), stream>>>(
        t, dy, w, dx);
  }
};
template <int K, int S>
struct LaunchBackwardFilter {
  static void run(const Tiling& t, const float* x, const float* dy, bool with_weight, float* partial, Stream stream) {
    const dim3 grid(unsigned(t.slices), unsigned(t.s.c_in));
    backward_filter_tiled_kernel<K, S><<<grid, kThreads, smem_bytes(t), stream>>>(t, x, dy, with_weight, partial);
  }
};

inline void check_shape(const Conv2dShape& s, const char* op) {
  ARCLIGHT_CHECK(s.n >= 1 && s.c_in >= 1 && s.h >= 1 && s.w >= 1 && s.kh >= 1 && s.kw >= 1, op,
                 "expected positive sizes, got input [", s.n, ", ", s.c_in, ", ", s.h, ", ", s.w, "], kernel ", s.kh,
                 "x", s.kw);
  ARCLIGHT_CHECK(s.groups == s.c_in && s.c_out == s.c_in, op,
                 "expected a depthwise convolution with channel multiplier 1 (groups == c_in == c_out), got groups ",
                 s.groups, ", c_in ", s.c_in, ", c_out ", s.c_out);
  ARCLIGHT_CHECK(s.stride_h >= 1 && s.stride_w >= 1 && s.dilation_h >= 1 && s.dilation_w >= 1 && s.pad_top >= 0 &&
                     s.pad_left >= 0 && s.pad_bottom >= 0 && s.pad_right >= 0,
                 op, "expected strides and dilations >= 1 and pads >= 0");
  ARCLIGHT_CHECK(s.out_h == conv_out_size(s.h, s.kh, s.stride_h, s.pad_top, s.pad_bottom, s.dilation_h) &&
                     s.out_w == conv_out_size(s.w, s.kw, s.stride_w, s.pad_left, s.pad_right, s.dilation_w) &&
                     s.out_h >= 1 && s.out_w >= 1,
                 op, "output size ", s.out_h, "x", s.out_w, " does not follow from the input, kernel, stride and pads");
  ARCLIGHT_CHECK(s.c_in <= 65535, op, "at most 65535 channels (the backward-filter grid's y dimension), got ", s.c_in);
}

}  // namespace dw

// The tiled path's launch shape, or false for the generic kernels (see the file comment). Also false when the
// block count would pass the 32-bit grid limit.
namespace dw {
inline bool tiled_forward(const Conv2dShape& s, Tiling& t) {
  return make_tiling(s, s.out_h, s.out_w, s.n * s.c_in, false, t) && t.groups * t.tiles_per_plane <= 0x7FFFFFFF;
}
inline bool tiled_backward_data(const Conv2dShape& s, Tiling& t) {
  return make_tiling(s, s.h, s.w, s.n * s.c_in, true, t) && t.groups * t.tiles_per_plane <= 0x7FFFFFFF;
}
}  // namespace dw

std::int64_t depthwise_conv2d_backward_filter_workspace_floats(const Conv2dShape& s) {
  dw::Tiling t;
  const std::int64_t blocks_per_channel = dw::filter_tiling(s, t) ? t.slices : dw::chunks(s);
  return s.c_in * blocks_per_channel * (s.kh * s.kw + 1);
}

void depthwise_conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y,
                              Stream stream) {
  constexpr const char* op = "depthwise_conv2d_forward";
  dw::check_shape(s, op);
  ARCLIGHT_CHECK(x != nullptr && w != nullptr && y != nullptr, op, "input, weight and output must not be null");
  dw::Tiling t;
  if (dw::tiled_forward(s, t)) {
    dw::dispatch_tiled<dw::LaunchForward>(s, t, x, w, bias, y, stream);
  } else {
    dw::forward_kernel<<<detail::elementwise_grid(s.output_numel(), dw::kThreads), dw::kThreads, 0, stream>>>(
        s, x, w, bias, y);
  }
  detail::check_launch(op);
}

void depthwise_conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx, Stream stream) {
  constexpr const char* op = "depthwise_conv2d_backward_data";
  dw::check_shape(s, op);
  ARCLIGHT_CHECK(dy != nullptr && w != nullptr && dx != nullptr, op, "dy, weight and dx must not be null");
  dw::Tiling t;
  if (dw::tiled_backward_data(s, t)) {
    dw::dispatch_tiled<dw::LaunchBackwardData>(s, t, dy, w, dx, stream);
  } else {
    dw::backward_data_kernel<<<detail::elementwise_grid(s.input_numel(), dw::kThreads), dw::kThreads, 0, stream>>>(
        s, dy, w, dx);
  }
  detail::check_launch(op);
}

void depthwise_conv2d_backward_filter(const Conv2dShape& s, const float* x, const float* dy, float* dw_out,
                                      float* dbias, float* workspace, Stream stream) {
  constexpr const char* op = "depthwise_conv2d_backward_filter";
  dw::check_shape(s, op);
  ARCLIGHT_CHECK(dy != nullptr && (x != nullptr || dw_out == nullptr), op,
                 "dy (and x when dw is wanted) must not be null");
  if (dw_out == nullptr && dbias == nullptr) return;
  ARCLIGHT_CHECK(workspace != nullptr, op, "workspace must not be null (",
                 depthwise_conv2d_backward_filter_workspace_floats(s), " floats)");
  const std::int64_t taps = s.kh * s.kw;
  dw::Tiling t;
  std::int64_t partials_per_channel = 0;
  if (dw::filter_tiling(s, t)) {
    partials_per_channel = t.slices;
    dw::dispatch_tiled<dw::LaunchBackwardFilter>(s, t, x, dy, dw_out != nullptr, workspace, stream);
  } else {
    partials_per_channel = dw::chunks(s);
    ARCLIGHT_CHECK(partials_per_channel <= 0x7FFFFFFF, op, "too many output positions: ", s.n * s.out_h * s.out_w);
    const dim3 grid(unsigned(partials_per_channel), unsigned(s.c_in));
    dw::backward_filter_partial_kernel<<<grid, dw::kThreads, 0, stream>>>(s, x, dy, partials_per_channel,
                                                                          dw_out != nullptr, workspace);
  }
  detail::check_launch(op);
  const std::int64_t total = s.c_in * (taps + 1);
  dw::backward_filter_finish_kernel<<<detail::elementwise_grid(total, dw::kThreads), dw::kThreads, 0, stream>>>(
      s.c_in, taps, partials_per_channel, workspace, dw_out, dbias);
  detail::check_launch(op);
}

}  // namespace arclight::kernels::cuda
