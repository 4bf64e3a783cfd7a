// CUDA kernels of the conv-block layer (declared in kernels/cuda/launchers_ops.hpp): batch norm with a fused
// pointwise activation (train / eval, forward / backward), the activations alone, squeeze-excite gate scaling,
// global average pooling and NFNet's scaled weight standardisation. Each launcher has the semantics of its CPU
// twin (kernels/cpu/batch_norm.hpp, activation.hpp, squeeze_excite.hpp, pooling.hpp, weight_standardization.hpp)
// and shares the scalar activation math of kernels/common/activation_math.hpp.
//
// Batch norm over x [n, c, inner]: channel ci owns the M = n·inner elements x[(ni·c + ci)·inner + k]. Its
// statistics are a deterministic two-level reduction: a (c, S) grid where block (ci, s) reduces chunk s (a
// fixed range of the channel's M elements, ~kBnChunk of them) to (mean, M2) — per-thread sums shifted by the
// channel's first element, then Chan's parallel merge over a fixed tree — into the workspace; then one thread
// per channel merges its S partials in chunk order (in double), writes save_mean / save_invstd, updates the
// running statistics and a small per-channel table; an elementwise pass applies y = act((x − mean)·w·invstd + b)
// (the mean kept as two floats, so a channel with |mean| >> std loses no precision). The backward has the same
// shape: per-chunk Σdz and Σdz·(x − mean) (dz = dy·act'(z), z recomputed from x), an ordered per-channel merge
// (d_weight, d_bias and the two means dx needs), then dx elementwise. The reduction grids and chunk sizes depend
// on the shape only, so results are bitwise reproducible on any GPU. The BN kernels move float4 when
// inner % 4 == 0 and every pointer involved is 16-byte aligned, floats otherwise. Workspace layout (floats):
// [2·c·S partials | 8·c per-channel table]; the forward and the backward reuse it at different times.
// Known limits: statistics are float per thread and block (double only in the per-channel merge), matching the
// CPU's double statistics to ~1e-6 relative; se_scale / global-average-pool reductions are float, fixed order.
//
// The elementwise passes walk a flat index with a (k, channel) cursor that is advanced by a precomputed
// (Δk, Δchannel) step, so no integer division runs per element.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/common/activation_math.hpp"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers_ops.hpp"

namespace arclight::kernels::cuda {

namespace cb {

constexpr int kThreads = 256;  // every kernel of this file: 8 warps
constexpr int kWarps = kThreads / 32;
// Target floats per block of the BN reductions (a multiple of 4, so chunks are whole float4 units).
constexpr std::int64_t kBnChunk = 16384;
constexpr std::int64_t kMaxGridY = 65535;
constexpr std::int64_t kMaxGridX = 2147483647;
// Per-channel table the BN merge kernels write after the partials (floats per channel).
constexpr std::int64_t kBnTableStride = 8;
// Warp-per-plane kernels: blocks in flight at most (grid-stride beyond).
constexpr std::int64_t kMaxPlaneBlocks = 65535;

// ---- host-side planning and validation ----------------------------------------------------------------

struct BnPlan {
  std::int64_t M = 0;      // elements per channel, n·inner
  std::int64_t L = 0;      // floats per chunk (a multiple of 4)
  std::int64_t S = 0;      // chunks per channel, ceil(M / L) <= kMaxGridY
  std::int64_t total = 0;  // n·c·inner
};

inline BnPlan bn_plan(const BatchNormDims& d) {
  BnPlan p;
  p.M = d.n * d.inner;
  p.total = p.M * d.c;
  p.L = kBnChunk;
  p.S = detail::ceil_div(p.M, p.L);
  if (p.S > kMaxGridY) {
    p.L = detail::ceil_div(p.M, kMaxGridY);
    p.L = detail::ceil_div(p.L, 4) * 4;
    p.S = detail::ceil_div(p.M, p.L);
  }
  return p;
}

inline void check_bn_dims(const BatchNormDims& d, const char* op) {
  ARCLIGHT_CHECK(d.n >= 1 && d.c >= 1 && d.inner >= 1, op, "expected input sizes [n >= 1, c >= 1, inner >= 1], got [",
                 d.n, ", ", d.c, ", ", d.inner, "]");
  // n·c·inner must fit int64 with room to spare (indices are int64 everywhere).
  constexpr std::int64_t kLimit = std::int64_t(1) << 52;
  ARCLIGHT_CHECK(d.n <= kLimit / d.c && d.n * d.c <= kLimit / d.inner, op, "input [", d.n, ", ", d.c, ", ", d.inner,
                 "] has too many elements (at most 2^52)");
  ARCLIGHT_CHECK(d.c <= kMaxGridX, op, "at most ", kMaxGridX, " channels are supported, got ", d.c);
  // Per-block element counts are int: chunks stay below 2^31 elements up to this many per channel.
  ARCLIGHT_CHECK(d.n * d.inner <= (std::int64_t(1) << 40), op, "at most 2^40 elements per channel, got n*inner = ",
                 d.n * d.inner);
}

inline void check_activation_id(Activation act, const char* op) {
  const int a = static_cast<int>(act);
  ARCLIGHT_CHECK(a >= 0 && a <= static_cast<int>(Activation::Sigmoid), op, "unknown activation id ", a,
                 " (expected 0..4: identity, relu, silu, gelu, sigmoid)");
}

inline void check_eps(double eps, const char* op) {
  ARCLIGHT_CHECK(eps >= 0.0 && std::isfinite(eps), op, "eps must be finite and >= 0, got ", eps);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// ---- device helpers -----------------------------------------------------------------------------------

// V floats at unit u of p (V = 1: p[u]; V = 4: the float4 at p + 4u, which the caller guarantees is aligned).
template <int V>
__device__ __forceinline__ void load_units(const float* p, std::int64_t u, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 t = reinterpret_cast<const float4*>(p)[u];
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
  } else {
    v[0] = p[u];
  }
}
template <int V>
__device__ __forceinline__ void store_units(float* p, std::int64_t u, const float (&v)[V]) {
  if constexpr (V == 4) {
    reinterpret_cast<float4*>(p)[u] = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    p[u] = v[0];
  }
}

// dz = dy·act'(z) exactly as the CPU's fused backward (ReLU selects dy, so an inf/NaN dy at z <= 0 gives 0).
__device__ __forceinline__ float act_grad_times(Activation act, float z, float dy) {
  if (act == Activation::ReLU) return z > 0.f ? dy : 0.f;
  if (act == Activation::Identity) return dy;
  return dy * activation_derivative(act, z);
}

// The index space of an elementwise pass over units i = plane·inner_u + k, plane = ni·c + ci, walked by a
// grid-stride loop of `grid` blocks: the stride split as (Δk, Δchannel) is computed once on the host.
struct FlatWalk {
  std::int64_t total_u = 0, inner_u = 1, c = 1;
  std::int64_t dk = 0, dci = 0;
  unsigned grid = 1;
};

// Flat-index cursor: tracks k and the channel ci while i advances by the grid stride, with no division per
// step. (With `c` = the plane count it tracks the plane.)
struct Cursor {
  std::int64_t k = 0, ci = 0;    // position
  std::int64_t dk = 0, dci = 0;  // stride split as (Δk, Δchannel)
  std::int64_t inner_u = 1, c = 1;
  __device__ __forceinline__ void init(std::int64_t i, const FlatWalk& fw) {
    inner_u = fw.inner_u;
    c = fw.c;
    const std::int64_t plane = i / inner_u;
    k = i - plane * inner_u;
    ci = plane % c;
    dk = fw.dk;
    dci = fw.dci;
  }
  __device__ __forceinline__ void advance() {
    k += dk;
    std::int64_t carry = 0;
    if (k >= inner_u) {
      k -= inner_u;
      carry = 1;
    }
    ci += dci + carry;  // <= 2c − 1
    if (ci >= c) ci -= c;
  }
};

// The chunking of a BN reduction in units (V floats): channel ci's Mu units j = ni·inner_u + k, chunk s =
// [s·Lu, min(Mu, (s + 1)·Lu)), threads striding by kThreads, whose split (Δni, Δk) is computed on the host.
struct ChunkWalk {
  std::int64_t c = 1, inner_u = 1, Mu = 0, Lu = 1, S = 1;
  std::int64_t dni = 0, dk = 0;
};

// Cursor over one channel's element sequence j = ni·inner_u + k (units), with the unit address of element j.
struct ChannelWalk {
  std::int64_t ni = 0, k = 0;
  std::int64_t dni = 0, dk = 0;
  std::int64_t inner_u = 1;
  __device__ __forceinline__ void init(std::int64_t j, const ChunkWalk& cw) {
    inner_u = cw.inner_u;
    ni = j / inner_u;
    k = j - ni * inner_u;
    dni = cw.dni;
    dk = cw.dk;
  }
  __device__ __forceinline__ std::int64_t address(std::int64_t c, std::int64_t ci) const {
    return (ni * c + ci) * inner_u + k;
  }
  __device__ __forceinline__ void advance() {
    k += dk;
    ni += dni;
    if (k >= inner_u) {
      k -= inner_u;
      ++ni;
    }
  }
};

// Blocks of a cursor-walked elementwise pass: enough to fill a large GPU several times over, few enough that
// each thread walks many elements (its start costs 64-bit divisions). The result does not depend on the grid.
constexpr std::int64_t kCursorGridCap = 4096;

inline FlatWalk flat_walk(std::int64_t total_u, std::int64_t inner_u, std::int64_t c) {
  FlatWalk fw;
  fw.total_u = total_u;
  fw.inner_u = inner_u;
  fw.c = c;
  std::int64_t blocks = detail::ceil_div(total_u, kThreads);
  blocks = blocks < 1 ? 1 : (blocks > kCursorGridCap ? kCursorGridCap : blocks);
  fw.grid = unsigned(blocks);
  const std::int64_t stride = blocks * kThreads;
  fw.dk = stride % inner_u;
  fw.dci = (stride / inner_u) % c;
  return fw;
}

// Chan's merge of (n, mean, M2) summaries: a ← a ∪ b.
__device__ __forceinline__ void chan_merge(int& na, float& ma, float& m2a, int nb, float mb, float m2b) {
  if (nb == 0) return;
  if (na == 0) {
    na = nb, ma = mb, m2a = m2b;
    return;
  }
  const int n = na + nb;
  const float delta = mb - ma;
  const float fb = float(nb) / float(n);
  ma = ma + delta * fb;
  m2a = m2a + m2b + delta * delta * float(na) * fb;
  na = n;
}

// Deterministic block-wide Chan merge (fixed shuffle-down tree per warp, then warps in order by thread 0).
// The result is valid in thread 0 only. scratch: shared arrays of kWarps entries.
__device__ __forceinline__ void block_chan_merge(int& n, float& mean, float& m2, int* sn, float* smean, float* sm2) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const int nb = __shfl_down_sync(0xffffffffu, n, off);
    const float mb = __shfl_down_sync(0xffffffffu, mean, off);
    const float m2b = __shfl_down_sync(0xffffffffu, m2, off);
    if (lane + off < 32) chan_merge(n, mean, m2, nb, mb, m2b);
  }
  if (lane == 0) sn[warp] = n, smean[warp] = mean, sm2[warp] = m2;
  __syncthreads();
  if (threadIdx.x == 0) {
    n = sn[0], mean = smean[0], m2 = sm2[0];
    for (int w = 1; w < kWarps; ++w) chan_merge(n, mean, m2, sn[w], smean[w], sm2[w]);
  }
}

// Deterministic block sum in double (shuffle-down tree, warps in order), returned to every thread.
// scratch: >= kWarps + 1 doubles of shared memory; reusable after the call returns.
__device__ __forceinline__ double block_sum_double(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0;
    for (int w = 0; w < kWarps; ++w) t += scratch[w];
    scratch[kWarps] = t;
  }
  __syncthreads();
  const double r = scratch[kWarps];
  __syncthreads();
  return r;
}

// ---- batch norm ---------------------------------------------------------------------------------------

// Per-channel constants of the affine + activation. The pre-activation is evaluated as
// z = xc·zs + b with xc = (x − mean_hi) − mean_lo (the double mean split into two floats) and zs = w·invstd:
// the same value as the CPU's x·zs + (b − mean·zs), without its cancellation when |mean| >> std.
struct BnChannel {
  double mean, invstd, w, b;
  __device__ __forceinline__ float zs() const { return float(w * invstd); }
  __device__ __forceinline__ float bias() const { return float(b); }
  __device__ __forceinline__ float mean_hi() const { return float(mean); }
  __device__ __forceinline__ float mean_lo() const { return float(mean - double(float(mean))); }
};

// x − mean from the two-float mean: x − hi is exact when x is near the mean (Sterbenz), then the small lo.
__device__ __forceinline__ float centred(float x, float hi, float lo) { return (x - hi) - lo; }

// Where a kernel gets a channel's mean / invstd: the saved batch statistics (train) or the running ones (eval).
struct BnStatsSource {
  const float* mean = nullptr;    // save_mean or running_mean
  const float* invstd = nullptr;  // save_invstd (train) or null (eval: from var)
  const float* var = nullptr;     // running_var (eval) or null
  const float* weight = nullptr;
  const float* bias = nullptr;
  float eps = 0.f;
  __device__ __forceinline__ BnChannel channel(std::int64_t ci) const {
    BnChannel ch;
    ch.mean = double(mean[ci]);
    ch.invstd = invstd ? double(invstd[ci]) : 1.0 / sqrt(double(var[ci]) + double(eps));
    ch.w = weight ? double(weight[ci]) : 1.0;
    ch.b = bias ? double(bias[ci]) : 0.0;
    return ch;
  }
};

// Block (ci, s): (mean − K, M2) of chunk s of channel ci into partials[(ci·S + s)·2 + {0, 1}], K = the
// channel's first element (x[ci·inner]).
template <int V>
__global__ void __launch_bounds__(kThreads)
    bn_stats_partial_kernel(const float* x, ChunkWalk cw, float* __restrict__ partials) {
  __shared__ int sn[kWarps];
  __shared__ float smean[kWarps], sm2[kWarps];
  const std::int64_t ci = blockIdx.x, s = blockIdx.y;
  const float K = x[ci * cw.inner_u * V];
  const std::int64_t j0 = s * cw.Lu;
  const std::int64_t j_end = cw.Mu < j0 + cw.Lu ? cw.Mu : j0 + cw.Lu;
  float s1 = 0.f, s2 = 0.f;
  int cnt = 0;
  std::int64_t j = j0 + threadIdx.x;
  if (j < j_end) {
    ChannelWalk w;
    w.init(j, cw);
    for (; j < j_end; j += kThreads) {
      float v[V];
      load_units<V>(x, w.address(cw.c, ci), v);
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const float d = v[q] - K;
        s1 += d;
        s2 += d * d;
      }
      cnt += V;
      w.advance();
    }
  }
  float mean = 0.f, m2 = 0.f;
  if (cnt > 0) {
    mean = s1 / float(cnt);
    m2 = fmaxf(0.f, s2 - s1 * mean);
  }
  block_chan_merge(cnt, mean, m2, sn, smean, sm2);
  if (threadIdx.x == 0) {
    partials[(ci * cw.S + s) * 2 + 0] = mean;
    partials[(ci * cw.S + s) * 2 + 1] = m2;
  }
}

// One thread per channel: merges the S partials in order (double), writes the saved and running statistics and
// table[ci] = [zs, b, mean_hi, mean_lo] for the apply pass.
__global__ void bn_stats_merge_kernel(const float* x, std::int64_t c, std::int64_t inner, std::int64_t M,
                                      std::int64_t L, std::int64_t S, const float* __restrict__ partials,
                                      const float* weight, const float* bias, float eps, float momentum,
                                      float* running_mean, float* running_var, float* save_mean, float* save_invstd,
                                      float* __restrict__ table) {
  const std::int64_t ci = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ci >= c) return;
  const double K = double(x[ci * inner]);
  double n = 0.0, mean = 0.0, m2 = 0.0;  // mean relative to K
  for (std::int64_t s = 0; s < S; ++s) {
    const std::int64_t b0 = s * L;
    const std::int64_t b1 = M < b0 + L ? M : b0 + L;
    const double nb = double(b1 - b0);
    if (nb <= 0.0) continue;
    const double mb = double(partials[(ci * S + s) * 2 + 0]);
    const double m2b = double(partials[(ci * S + s) * 2 + 1]);
    const double nt = n + nb;
    const double delta = mb - mean;
    mean += delta * nb / nt;
    m2 += m2b + delta * delta * n * nb / nt;
    n = nt;
  }
  const double Md = double(M);
  const double batch_mean = K + mean;
  const double var = m2 > 0.0 ? m2 / Md : 0.0;
  const double invstd = 1.0 / sqrt(var + double(eps));
  const double w = weight ? double(weight[ci]) : 1.0, b = bias ? double(bias[ci]) : 0.0;
  if (save_mean) save_mean[ci] = float(batch_mean);
  if (save_invstd) save_invstd[ci] = float(invstd);
  if (running_mean) {
    const double mom = double(momentum);
    running_mean[ci] = float((1.0 - mom) * double(running_mean[ci]) + mom * batch_mean);
    running_var[ci] = float((1.0 - mom) * double(running_var[ci]) + mom * var * Md / (Md - 1.0));
  }
  const BnChannel ch{batch_mean, invstd, w, b};
  float* t = table + ci * kBnTableStride;
  t[0] = ch.zs();
  t[1] = ch.bias();
  t[2] = ch.mean_hi();
  t[3] = ch.mean_lo();
}

// y = act((x − mean)·zs + b) over all n·c·inner elements (y may alias x). The channel constants come from
// `table` (train: [zs, b, mean_hi, mean_lo]) or from the running statistics in `src` (eval, table null).
template <int V>
__global__ void __launch_bounds__(kThreads)
    bn_apply_kernel(const float* x, FlatWalk fw, const float* __restrict__ table, BnStatsSource src, Activation act,
                    float* y) {
  const std::int64_t total_u = fw.total_u;
  std::int64_t i = std::int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= total_u) return;
  const std::int64_t stride = std::int64_t(gridDim.x) * kThreads;
  Cursor cur;
  cur.init(i, fw);
  std::int64_t cached = -1;
  float zs = 0.f, bb = 0.f, hi = 0.f, lo = 0.f;
  for (; i < total_u; i += stride) {
    if (cur.ci != cached) {
      cached = cur.ci;
      if (table) {
        const float* t = table + cached * kBnTableStride;
        zs = t[0], bb = t[1], hi = t[2], lo = t[3];
      } else {
        const BnChannel ch = src.channel(cached);
        zs = ch.zs(), bb = ch.bias(), hi = ch.mean_hi(), lo = ch.mean_lo();
      }
    }
    float v[V];
    load_units<V>(x, i, v);
#pragma unroll
    for (int q = 0; q < V; ++q) v[q] = activation_apply(act, centred(v[q], hi, lo) * zs + bb);
    store_units<V>(y, i, v);
    cur.advance();
  }
}

// Block (ci, s): Σdz and Σdz·(x − mean) over chunk s of channel ci into partials[(ci·S + s)·2 + {0, 1}].
template <int V>
__global__ void __launch_bounds__(kThreads)
    bn_backward_partial_kernel(const float* x, const float* dy, ChunkWalk cw, BnStatsSource src, Activation act,
                               float* __restrict__ partials) {
  __shared__ float scratch[33];
  const std::int64_t ci = blockIdx.x, s = blockIdx.y;
  const BnChannel ch = src.channel(ci);
  const float zs = ch.zs(), bb = ch.bias(), hi = ch.mean_hi(), lo = ch.mean_lo();
  const std::int64_t j0 = s * cw.Lu;
  const std::int64_t j_end = cw.Mu < j0 + cw.Lu ? cw.Mu : j0 + cw.Lu;
  float s0 = 0.f, s1 = 0.f;
  std::int64_t j = j0 + threadIdx.x;
  if (j < j_end) {
    ChannelWalk w;
    w.init(j, cw);
    for (; j < j_end; j += kThreads) {
      const std::int64_t u = w.address(cw.c, ci);
      float xv[V], gv[V];
      load_units<V>(x, u, xv);
      load_units<V>(dy, u, gv);
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const float xc = centred(xv[q], hi, lo);
        const float dz = act_grad_times(act, xc * zs + bb, gv[q]);
        s0 += dz;
        s1 += dz * xc;
      }
      w.advance();
    }
  }
  s0 = detail::block_sum(s0, scratch);
  s1 = detail::block_sum(s1, scratch);
  if (threadIdx.x == 0) {
    partials[(ci * cw.S + s) * 2 + 0] = s0;
    partials[(ci * cw.S + s) * 2 + 1] = s1;
  }
}

// One thread per channel: the table the dx pass reads, [zs, b, mean_hi, mean_lo, invstd, mean(dz), mean(dz·x̂)]
// (the two means are 0 in eval mode), and d_weight / d_bias from the S partials merged in order (double), when present.
__global__ void bn_backward_merge_kernel(std::int64_t c, std::int64_t M, std::int64_t S,
                                         const float* __restrict__ partials, BnStatsSource src, bool train,
                                         float* d_weight, float* d_bias, float* __restrict__ table) {
  const std::int64_t ci = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ci >= c) return;
  const BnChannel ch = src.channel(ci);
  float m_dz = 0.f, m_dzx = 0.f;
  if (partials) {
    double sum_dz = 0.0, sum_dz_xc = 0.0;
    for (std::int64_t s = 0; s < S; ++s) {
      sum_dz += double(partials[(ci * S + s) * 2 + 0]);
      sum_dz_xc += double(partials[(ci * S + s) * 2 + 1]);
    }
    const double sum_dz_xhat = sum_dz_xc * ch.invstd;
    if (d_weight) d_weight[ci] = float(sum_dz_xhat);
    if (d_bias) d_bias[ci] = float(sum_dz);
    if (train) {
      m_dz = float(sum_dz / double(M));
      m_dzx = float(sum_dz_xhat / double(M));
    }
  }
  float* t = table + ci * kBnTableStride;
  t[0] = ch.zs();
  t[1] = ch.bias();
  t[2] = ch.mean_hi();
  t[3] = ch.mean_lo();
  t[4] = float(ch.invstd);
  t[5] = m_dz;
  t[6] = m_dzx;
}

// dx = zs·(dz − mean(dz) − (x − mean)·invstd·mean(dz·x̂)) elementwise (dx may alias dy, not x).
template <int V>
__global__ void __launch_bounds__(kThreads)
    bn_backward_dx_kernel(const float* x, const float* dy, FlatWalk fw, const float* __restrict__ table,
                          Activation act, float* dx) {
  const std::int64_t total_u = fw.total_u;
  std::int64_t i = std::int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= total_u) return;
  const std::int64_t stride = std::int64_t(gridDim.x) * kThreads;
  Cursor cur;
  cur.init(i, fw);
  std::int64_t cached = -1;
  float zs = 0.f, bb = 0.f, hi = 0.f, lo = 0.f, tis = 0.f, m_dz = 0.f, m_dzx = 0.f;
  for (; i < total_u; i += stride) {
    if (cur.ci != cached) {
      cached = cur.ci;
      const float* t = table + cached * kBnTableStride;
      zs = t[0], bb = t[1], hi = t[2], lo = t[3], tis = t[4], m_dz = t[5], m_dzx = t[6];
    }
    float xv[V], gv[V];
    load_units<V>(x, i, xv);
    load_units<V>(dy, i, gv);
#pragma unroll
    for (int q = 0; q < V; ++q) {
      const float xc = centred(xv[q], hi, lo);
      const float dz = act_grad_times(act, xc * zs + bb, gv[q]);
      gv[q] = zs * (dz - m_dz - xc * tis * m_dzx);
    }
    store_units<V>(dx, i, gv);
    cur.advance();
  }
}

inline unsigned channel_grid(std::int64_t c) { return unsigned(detail::ceil_div(c, kThreads)); }

// The chunk walk of a BN reduction for V-float units (V divides inner and L).
inline ChunkWalk chunk_walk(const BatchNormDims& d, const BnPlan& p, int V) {
  ChunkWalk cw;
  cw.c = d.c;
  cw.inner_u = d.inner / V;
  cw.Mu = p.M / V;
  cw.Lu = p.L / V;
  cw.S = p.S;
  cw.dni = kThreads / cw.inner_u;
  cw.dk = kThreads % cw.inner_u;
  return cw;
}

// Runs the BN backward (train or eval) once validated: partials (when sums are needed), merge, dx.
template <int V>
void bn_backward_run(const BatchNormDims& d, const BnPlan& p, const float* x, const float* dy, BnStatsSource src,
                     bool train, float* dx, float* d_weight, float* d_bias, Activation act, float* workspace,
                     Stream stream, const char* op) {
  float* partials = workspace;
  float* table = workspace + 2 * d.c * p.S;
  const bool need_sums = (train && dx) || d_weight || d_bias;
  if (need_sums) {
    bn_backward_partial_kernel<V><<<dim3(unsigned(d.c), unsigned(p.S)), kThreads, 0, stream>>>(
        x, dy, chunk_walk(d, p, V), src, act, partials);
    detail::check_launch(op);
  }
  bn_backward_merge_kernel<<<channel_grid(d.c), kThreads, 0, stream>>>(d.c, p.M, p.S, need_sums ? partials : nullptr,
                                                                       src, train, d_weight, d_bias, table);
  detail::check_launch(op);
  if (dx) {
    const FlatWalk fw = flat_walk(p.total / V, d.inner / V, d.c);
    bn_backward_dx_kernel<V><<<fw.grid, kThreads, 0, stream>>>(x, dy, fw, table, act, dx);
    detail::check_launch(op);
  }
}

// ---- pointwise / per-plane kernels --------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads)
    activation_forward_kernel(Activation act, std::int64_t count, const float* x, float* y) {
  const std::int64_t stride = std::int64_t(gridDim.x) * kThreads;
  for (std::int64_t i = std::int64_t(blockIdx.x) * kThreads + threadIdx.x; i < count; i += stride)
    y[i] = activation_apply(act, x[i]);
}

__global__ void __launch_bounds__(kThreads)
    activation_backward_kernel(Activation act, std::int64_t count, const float* x, const float* dy, float* dx) {
  const std::int64_t stride = std::int64_t(gridDim.x) * kThreads;
  for (std::int64_t i = std::int64_t(blockIdx.x) * kThreads + threadIdx.x; i < count; i += stride) {
    const float g = dy[i];
    dx[i] = act == Activation::Identity ? g : g * activation_derivative(act, x[i]);
  }
}

// out[p, k] = a[p, k]·s[p] (+ nothing) over planes of hw elements; a null `a` means 1 (out[p, k] = s[p]·scale):
// covers se_scale_forward (a = x, s = gate), se_scale_backward's dx (a = dy, s = gate) and
// global_avg_pool_backward (a = null, s = dy, scale = 1/hw as a division).
__global__ void __launch_bounds__(kThreads)
    plane_scale_kernel(const float* a, const float* s, FlatWalk fw, float divisor, float* out) {
  const std::int64_t total = fw.total_u;
  std::int64_t i = std::int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= total) return;
  const std::int64_t stride = std::int64_t(gridDim.x) * kThreads;
  Cursor cur;
  cur.init(i, fw);
  for (; i < total; i += stride) {
    const float g = s[cur.ci];
    out[i] = a ? a[i] * g : g / divisor;
    cur.advance();
  }
}

// One warp per plane: dgate[p] = Σ_k dy·x in a fixed order, and dx = dy·gate when dx is non-null (each lane
// reads its dy elements before writing dx there, so dx may alias dy).
__global__ void __launch_bounds__(kThreads)
    se_scale_backward_kernel(std::int64_t planes, std::int64_t hw, const float* x, const float* gate, const float* dy,
                             float* dx, float* __restrict__ dgate) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (std::int64_t p = std::int64_t(blockIdx.x) * kWarps + warp; p < planes; p += std::int64_t(gridDim.x) * kWarps) {
    const float g = gate[p];
    const float* xp = x + p * hw;
    const float* dp = dy + p * hw;
    float* dxp = dx ? dx + p * hw : nullptr;
    float acc = 0.f;
    for (std::int64_t k = lane; k < hw; k += 32) {
      const float d = dp[k];
      acc += d * xp[k];
      if (dxp) dxp[k] = d * g;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) dgate[p] = acc;
  }
}

// One warp per plane: y[p] = (Σ_k x) / hw, fixed order.
__global__ void __launch_bounds__(kThreads)
    global_avg_pool_forward_kernel(std::int64_t planes, std::int64_t hw, const float* __restrict__ x,
                                   float* __restrict__ y) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (std::int64_t p = std::int64_t(blockIdx.x) * kWarps + warp; p < planes; p += std::int64_t(gridDim.x) * kWarps) {
    const float* xp = x + p * hw;
    float acc = 0.f;
    for (std::int64_t k = lane; k < hw; k += 32) acc += xp[k];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) y[p] = acc / float(hw);
  }
}

inline unsigned plane_grid(std::int64_t planes) {
  const std::int64_t b = detail::ceil_div(planes, kWarps);
  return unsigned(b < 1 ? 1 : (b > kMaxPlaneBlocks ? kMaxPlaneBlocks : b));
}

// ---- scaled weight standardisation (one block per output row, statistics in double) ---------------------

// Row mean and 1/sqrt(Σ(w − mean)² + eps), two passes, returned to every thread.
__device__ __forceinline__ void ws_row_stats(const float* row, std::int64_t fan_in, float eps, double* scratch,
                                             double& mean, double& inv) {
  double s = 0.0;
  for (std::int64_t k = threadIdx.x; k < fan_in; k += kThreads) s += double(row[k]);
  mean = block_sum_double(s, scratch) / double(fan_in);
  double ss = 0.0;
  for (std::int64_t k = threadIdx.x; k < fan_in; k += kThreads) {
    const double u = double(row[k]) - mean;
    ss += u * u;
  }
  ss = block_sum_double(ss, scratch);
  inv = 1.0 / sqrt(ss + double(eps));
}

__global__ void __launch_bounds__(kThreads)
    ws_forward_kernel(std::int64_t fan_in, const float* __restrict__ w, const float* __restrict__ gain, float gamma,
                      float eps, float* __restrict__ w_hat) {
  __shared__ double scratch[kWarps + 1];
  const std::int64_t o = blockIdx.x;
  const float* row = w + o * fan_in;
  double mean, inv;
  ws_row_stats(row, fan_in, eps, scratch, mean, inv);
  const double scale = double(gamma) * (gain ? double(gain[o]) : 1.0) * inv;
  float* out = w_hat + o * fan_in;
  for (std::int64_t k = threadIdx.x; k < fan_in; k += kThreads) out[k] = float((double(row[k]) - mean) * scale);
}

__global__ void __launch_bounds__(kThreads)
    ws_backward_kernel(std::int64_t fan_in, const float* __restrict__ w, const float* __restrict__ gain, float gamma,
                       float eps, const float* __restrict__ dw_hat, float* __restrict__ dw,
                       float* __restrict__ dgain) {
  __shared__ double scratch[kWarps + 1];
  const std::int64_t o = blockIdx.x;
  const float* row = w + o * fan_in;
  const float* dh = dw_hat + o * fan_in;
  double mean, inv;
  ws_row_stats(row, fan_in, eps, scratch, mean, inv);
  const double a = double(gamma) * (gain ? double(gain[o]) : 1.0);
  double s_dh = 0.0, s_dh_u = 0.0;
  for (std::int64_t k = threadIdx.x; k < fan_in; k += kThreads) {
    const double g = double(dh[k]);
    s_dh += g;
    s_dh_u += g * (double(row[k]) - mean);
  }
  s_dh = block_sum_double(s_dh, scratch);
  s_dh_u = block_sum_double(s_dh_u, scratch);
  const double mean_g = a * s_dh / double(fan_in);
  const double proj = a * s_dh_u * inv * inv * inv;
  float* out = dw + o * fan_in;
  for (std::int64_t k = threadIdx.x; k < fan_in; k += kThreads)
    out[k] = float((a * double(dh[k]) - mean_g) * inv - (double(row[k]) - mean) * proj);
  if (dgain && threadIdx.x == 0) dgain[o] = float(double(gamma) * s_dh_u * inv);
}

}  // namespace cb

// ---- launchers ----------------------------------------------------------------------------------------

std::int64_t batch_norm_workspace_floats(const BatchNormDims& d) {
  cb::check_bn_dims(d, "batch_norm_workspace_floats");
  const cb::BnPlan p = cb::bn_plan(d);
  // Forward and backward use the same layout at different times: 2 floats per (channel, chunk), then the
  // per-channel table.
  return 2 * d.c * p.S + cb::kBnTableStride * d.c;
}

void batch_norm_forward_train(const BatchNormDims& d, const float* x, const float* weight, const float* bias,
                              float eps, float momentum, float* running_mean, float* running_var, float* y,
                              float* save_mean, float* save_invstd, Activation act, float* workspace, Stream stream) {
  constexpr const char* op = "batch_norm_forward_train";
  cb::check_bn_dims(d, op);
  cb::check_activation_id(act, op);
  cb::check_eps(eps, op);
  ARCLIGHT_CHECK(d.n * d.inner > 1, op, "expected more than 1 value per channel when training, got input [", d.n,
                 ", ", d.c, ", ", d.inner, "]");
  ARCLIGHT_CHECK(momentum >= 0.f && momentum <= 1.f, op, "momentum must be in [0, 1], got ", momentum);
  ARCLIGHT_CHECK((running_mean == nullptr) == (running_var == nullptr), op,
                 "running_mean and running_var must be given together (got ", running_mean ? "non-null" : "null",
                 " and ", running_var ? "non-null" : "null", ")");
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, op, "input and output pointers must not be null");
  ARCLIGHT_CHECK(workspace != nullptr, op, "workspace must not be null (batch_norm_workspace_floats = ",
                 batch_norm_workspace_floats(d), " floats)");
  const cb::BnPlan p = cb::bn_plan(d);
  float* table = workspace + 2 * d.c * p.S;
  const bool vec = d.inner % 4 == 0 && cb::aligned16(x) && cb::aligned16(y);
  const dim3 grid(unsigned(d.c), unsigned(p.S));
  if (vec)
    cb::bn_stats_partial_kernel<4><<<grid, cb::kThreads, 0, stream>>>(x, cb::chunk_walk(d, p, 4), workspace);
  else
    cb::bn_stats_partial_kernel<1><<<grid, cb::kThreads, 0, stream>>>(x, cb::chunk_walk(d, p, 1), workspace);
  detail::check_launch(op);
  cb::bn_stats_merge_kernel<<<cb::channel_grid(d.c), cb::kThreads, 0, stream>>>(
      x, d.c, d.inner, p.M, p.L, p.S, workspace, weight, bias, eps, momentum, running_mean, running_var, save_mean,
      save_invstd, table);
  detail::check_launch(op);
  const cb::BnStatsSource none{};
  if (vec) {
    const cb::FlatWalk fw = cb::flat_walk(p.total / 4, d.inner / 4, d.c);
    cb::bn_apply_kernel<4><<<fw.grid, cb::kThreads, 0, stream>>>(x, fw, table, none, act, y);
  } else {
    const cb::FlatWalk fw = cb::flat_walk(p.total, d.inner, d.c);
    cb::bn_apply_kernel<1><<<fw.grid, cb::kThreads, 0, stream>>>(x, fw, table, none, act, y);
  }
  detail::check_launch(op);
}

void batch_norm_forward_eval(const BatchNormDims& d, const float* x, const float* weight, const float* bias, float eps,
                             const float* running_mean, const float* running_var, float* y, Activation act,
                             Stream stream) {
  constexpr const char* op = "batch_norm_forward_eval";
  cb::check_bn_dims(d, op);
  cb::check_activation_id(act, op);
  cb::check_eps(eps, op);
  ARCLIGHT_CHECK(running_mean != nullptr && running_var != nullptr, op,
                 "eval mode needs running_mean and running_var");
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, op, "input and output pointers must not be null");
  const cb::BnStatsSource src{running_mean, nullptr, running_var, weight, bias, eps};
  const std::int64_t total = d.n * d.c * d.inner;
  if (d.inner % 4 == 0 && cb::aligned16(x) && cb::aligned16(y)) {
    const cb::FlatWalk fw = cb::flat_walk(total / 4, d.inner / 4, d.c);
    cb::bn_apply_kernel<4><<<fw.grid, cb::kThreads, 0, stream>>>(x, fw, nullptr, src, act, y);
  } else {
    const cb::FlatWalk fw = cb::flat_walk(total, d.inner, d.c);
    cb::bn_apply_kernel<1><<<fw.grid, cb::kThreads, 0, stream>>>(x, fw, nullptr, src, act, y);
  }
  detail::check_launch(op);
}

namespace cb {
// The shared tail of both backward launchers: the alias rule, nothing to do when every output is null, the plan,
// and the float4 path when inner % 4 == 0 and every pointer is 16-byte aligned.
inline void bn_backward_launch(const BatchNormDims& d, const float* x, const float* dy, const BnStatsSource& src,
                               bool train, float* dx, float* dweight, float* dbias, Activation act, float* workspace,
                               Stream stream, const char* op) {
  ARCLIGHT_CHECK(dx != x || dx == nullptr, op, "dx must not alias x (it may alias dy)");
  if (!dx && !dweight && !dbias) return;
  const BnPlan p = bn_plan(d);
  if (d.inner % 4 == 0 && aligned16(x) && aligned16(dy) && aligned16(dx))
    bn_backward_run<4>(d, p, x, dy, src, train, dx, dweight, dbias, act, workspace, stream, op);
  else
    bn_backward_run<1>(d, p, x, dy, src, train, dx, dweight, dbias, act, workspace, stream, op);
}
}  // namespace cb

void batch_norm_backward_train(const BatchNormDims& d, const float* x, const float* dy, const float* weight,
                               const float* bias, const float* save_mean, const float* save_invstd, float* dx,
                               float* dweight, float* dbias, Activation act, float* workspace, Stream stream) {
  constexpr const char* op = "batch_norm_backward_train";
  cb::check_bn_dims(d, op);
  cb::check_activation_id(act, op);
  ARCLIGHT_CHECK(x != nullptr && dy != nullptr && save_mean != nullptr && save_invstd != nullptr, op,
                 "input, output gradient and the saved statistics must not be null");
  ARCLIGHT_CHECK(workspace != nullptr, op, "workspace must not be null (batch_norm_workspace_floats = ",
                 batch_norm_workspace_floats(d), " floats)");
  cb::bn_backward_launch(d, x, dy, {save_mean, save_invstd, nullptr, weight, bias, 0.f}, true, dx, dweight, dbias, act,
                         workspace, stream, op);
}

void batch_norm_backward_eval(const BatchNormDims& d, const float* x, const float* dy, const float* weight,
                              const float* bias, float eps, const float* running_mean, const float* running_var,
                              float* dx, float* dweight, float* dbias, Activation act, float* workspace,
                              Stream stream) {
  constexpr const char* op = "batch_norm_backward_eval";
  cb::check_bn_dims(d, op);
  cb::check_activation_id(act, op);
  cb::check_eps(eps, op);
  ARCLIGHT_CHECK(x != nullptr && dy != nullptr && running_mean != nullptr && running_var != nullptr, op,
                 "input, output gradient and the running statistics must not be null");
  ARCLIGHT_CHECK(workspace != nullptr, op, "workspace must not be null (batch_norm_workspace_floats = ",
                 batch_norm_workspace_floats(d), " floats)");
  cb::bn_backward_launch(d, x, dy, {running_mean, nullptr, running_var, weight, bias, eps}, false, dx, dweight, dbias,
                         act, workspace, stream, op);
}

void activation_forward(Activation act, std::int64_t count, const float* x, float* y, Stream stream) {
  constexpr const char* op = "activation_forward";
  cb::check_activation_id(act, op);
  ARCLIGHT_CHECK(count >= 0, op, "element count must be >= 0, got ", count);
  if (count == 0) return;
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, op, "input and output pointers must not be null");
  cb::activation_forward_kernel<<<detail::elementwise_grid(count, cb::kThreads), cb::kThreads, 0, stream>>>(act, count,
                                                                                                         x, y);
  detail::check_launch(op);
}

void activation_backward(Activation act, std::int64_t count, const float* x, const float* dy, float* dx,
                         Stream stream) {
  constexpr const char* op = "activation_backward";
  cb::check_activation_id(act, op);
  ARCLIGHT_CHECK(count >= 0, op, "element count must be >= 0, got ", count);
  if (count == 0) return;
  ARCLIGHT_CHECK(x != nullptr && dy != nullptr && dx != nullptr, op,
                 "input, output gradient and input gradient pointers must not be null");
  cb::activation_backward_kernel<<<detail::elementwise_grid(count, cb::kThreads), cb::kThreads, 0, stream>>>(
      act, count, x, dy, dx);
  detail::check_launch(op);
}

namespace cb {
inline void check_se_sizes(const char* op, std::int64_t n, std::int64_t c, std::int64_t hw) {
  ARCLIGHT_CHECK(n >= 0 && c >= 0 && hw >= 0, op, "sizes must be >= 0, got n ", n, ", c ", c, ", h*w ", hw);
  constexpr std::int64_t kLimit = std::int64_t(1) << 52;
  ARCLIGHT_CHECK(n == 0 || c == 0 || hw == 0 || (n <= kLimit / c && n * c <= kLimit / hw), op, "[", n, ", ", c,
                 ", ", hw, "] has too many elements (at most 2^52)");
}
}  // namespace cb

void se_scale_forward(std::int64_t n, std::int64_t c, std::int64_t hw, const float* x, const float* gate, float* y,
                      Stream stream) {
  constexpr const char* op = "se_scale_forward";
  cb::check_se_sizes(op, n, c, hw);
  ARCLIGHT_CHECK(x != nullptr && gate != nullptr && y != nullptr, op, "pointers must not be null");
  const std::int64_t planes = n * c, total = planes * hw;
  if (total == 0) return;
  const cb::FlatWalk fw = cb::flat_walk(total, hw, planes);
  cb::plane_scale_kernel<<<fw.grid, cb::kThreads, 0, stream>>>(x, gate, fw, 1.f, y);
  detail::check_launch(op);
}

void se_scale_backward(std::int64_t n, std::int64_t c, std::int64_t hw, const float* x, const float* gate,
                       const float* dy, float* dx, float* dgate, Stream stream) {
  constexpr const char* op = "se_scale_backward";
  cb::check_se_sizes(op, n, c, hw);
  ARCLIGHT_CHECK(x != nullptr && gate != nullptr && dy != nullptr, op, "pointers must not be null");
  const std::int64_t planes = n * c, total = planes * hw;
  if (dgate && planes > 0) {
    // Also writes dx (an empty plane gives dgate 0).
    cb::se_scale_backward_kernel<<<cb::plane_grid(planes), cb::kThreads, 0, stream>>>(planes, hw, x, gate, dy, dx,
                                                                                      dgate);
    detail::check_launch(op);
  } else if (dx && total > 0) {
    const cb::FlatWalk fw = cb::flat_walk(total, hw, planes);
    cb::plane_scale_kernel<<<fw.grid, cb::kThreads, 0, stream>>>(dy, gate, fw, 1.f, dx);
    detail::check_launch(op);
  }
}

namespace cb {
inline void check_pool_sizes(const char* op, std::int64_t planes, std::int64_t hw) {
  ARCLIGHT_CHECK(planes >= 1 && hw >= 1, op, "expected planes (n*c) >= 1 and h*w >= 1, got ", planes, " and ", hw);
  ARCLIGHT_CHECK(planes <= (std::int64_t(1) << 52) / hw, op, "too many elements: ", planes, " planes of ", hw);
}
}  // namespace cb

void global_avg_pool_forward(std::int64_t planes, std::int64_t hw, const float* x, float* y, Stream stream) {
  constexpr const char* op = "global_avg_pool_forward";
  cb::check_pool_sizes(op, planes, hw);
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, op, "input and output pointers must not be null");
  cb::global_avg_pool_forward_kernel<<<cb::plane_grid(planes), cb::kThreads, 0, stream>>>(planes, hw, x, y);
  detail::check_launch(op);
}

void global_avg_pool_backward(std::int64_t planes, std::int64_t hw, const float* dy, float* dx, Stream stream) {
  constexpr const char* op = "global_avg_pool_backward";
  cb::check_pool_sizes(op, planes, hw);
  ARCLIGHT_CHECK(dy != nullptr && dx != nullptr, op, "gradient pointers must not be null");
  const std::int64_t total = planes * hw;
  const cb::FlatWalk fw = cb::flat_walk(total, hw, planes);
  cb::plane_scale_kernel<<<fw.grid, cb::kThreads, 0, stream>>>(nullptr, dy, fw, float(hw), dx);
  detail::check_launch(op);
}

namespace cb {
inline void check_ws_args(const char* op, std::int64_t c_out, std::int64_t fan_in, float eps, const void* w,
                          const void* out) {
  ARCLIGHT_CHECK(c_out > 0 && fan_in > 0, op, "expected a weight with c_out > 0 and fan_in > 0, got c_out ", c_out,
                 ", fan_in ", fan_in);
  ARCLIGHT_CHECK(c_out <= kMaxGridX, op, "at most ", kMaxGridX, " output channels are supported, got ", c_out);
  ARCLIGHT_CHECK(c_out <= (std::int64_t(1) << 52) / fan_in, op, "too many weights: ", c_out, " x ", fan_in);
  check_eps(eps, op);
  ARCLIGHT_CHECK(w != nullptr && out != nullptr, op, "weight and output pointers must not be null");
}
}  // namespace cb

void ws_forward(std::int64_t c_out, std::int64_t fan_in, const float* w, const float* gain, float gamma, float eps,
                float* w_hat, Stream stream) {
  constexpr const char* op = "ws_forward";
  cb::check_ws_args(op, c_out, fan_in, eps, w, w_hat);
  ARCLIGHT_CHECK(w_hat != w, op, "w_hat must not alias w");
  cb::ws_forward_kernel<<<unsigned(c_out), cb::kThreads, 0, stream>>>(fan_in, w, gain, gamma, eps, w_hat);
  detail::check_launch(op);
}

void ws_backward(std::int64_t c_out, std::int64_t fan_in, const float* w, const float* gain, float gamma, float eps,
                 const float* dw_hat, float* dw, float* dgain, Stream stream) {
  constexpr const char* op = "ws_backward";
  cb::check_ws_args(op, c_out, fan_in, eps, w, dw);
  ARCLIGHT_CHECK(dw_hat != nullptr, op, "the gradient of the standardised weight must not be null");
  ARCLIGHT_CHECK(dgain == nullptr || gain != nullptr, op, "dgain requested but no gain was given");
  ARCLIGHT_CHECK(dw != w && dw != dw_hat, op, "dw must not alias w or dw_hat");
  cb::ws_backward_kernel<<<unsigned(c_out), cb::kThreads, 0, stream>>>(fan_in, w, gain, gamma, eps, dw_hat, dw, dgain);
  detail::check_launch(op);
}

}  // namespace arclight::kernels::cuda
