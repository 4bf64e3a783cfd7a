// CUDA kernels of the label-smoothing cross-entropy and of the fused ArcMargin → LS-CE head, plus the two
// composed-path ops (arc_margin_forward / _backward: cosine logits -> class logits and back), which are what
// the fused kernel is measured against. CPU twins: kernels/cpu/{cross_entropy, arc_margin,
// arc_margin_cross_entropy}.hpp; the math is kernels/common/{softmax_math, arc_margin_math}.hpp.
//
// One "softmax row" engine serves CE forward, CE backward and the fused head (template flags kArc: the input is
// cosines and the target logit is s·phi(c_y); kSub: sub-centres, a class's cosine is the max of its K). Per row:
//   head      thread 0 forms the row's constants in double: label check, the margin terms, z_y, phi'(c_y),
//             the smoothing coefficients (ls_ce_coeffs) and the gradient scale;
//   pass 1    online softmax (softmax_push / softmax_merge) and Σ w_j z_j over the row, reduced over the
//             block in a fixed tree; the row loss (ls_ce_row_loss) goes to row_loss[row];
//   pass 2    (when a gradient is asked) dl/dz_j = gs·(A·p_j − a_j) (ls_ce_grad), times s and phi' for the
//             fused head, written once.
// One block per row (grid-stride over rows) implements it; pass 1 reads the row front to back and pass 2
// re-reads it BACK TO FRONT, so the first columns pass 2 needs are the ones pass 1 read last (the most likely to
// still be in L2; a 100k-class row is 400 KB and a GPU keeps a hundred or more rows in flight). Plain rows
// (no sub-centres) take the vectorised kernel: float4 loads and stores on the 16-byte-aligned body of the row
// (a scalar head and tail handle any misalignment and widths that are not a multiple of 4), kStreamVec float4
// loads in flight per thread. Sub-centre rows take the scalar kernel (each class reads K cosines).
// That re-read makes the gradient pass move 12 bytes per element against the 8-byte floor, so the cached kernel
// (RowPath::kSmemCache / kSmemCacheWide) keeps the FRONT of the row, the part least likely to still be in L2, in
// dynamic shared memory during pass 1 (up to the SM's opt-in limit, queried per device) and reads only the rest
// again: a row that fits is read once, a 100k-class row about half. Same arithmetic as streaming.
// (An earlier sm_90 thread-block-cluster kernel that held the row in registers measured 2-4x slower than
// streaming on an H100 and was removed.)
// Bad labels: a row whose label is out of range gets a NaN loss and a NaN gradient row (no OOB access).
// Row losses of mean/sum reductions are summed in row order by one block (deterministic).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/common/arc_margin_math.hpp"
#include "kernels/common/softmax_math.hpp"
#include "kernels/cpu/arc_margin.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cuda/common.cuh"

namespace arclight::kernels::cuda {

namespace detail {

// Everything a row kernel needs, passed by value.
struct RowCeParams {
  const float* in = nullptr;             // logits [n, classes] or cos [n, classes*k]
  const std::int64_t* labels = nullptr;  // [n]
  const float* class_weights = nullptr;  // [classes] or null
  const float* class_margins = nullptr;  // [classes] or null (arc)
  const float* grad_loss = nullptr;      // [n] (none) or [1]; null = unit upstream gradient
  const float* sums = nullptr;           // [2] device: Σ_j w_j, Σ_i w_{y_i} (read only with class weights)
  float* row_loss = nullptr;             // [n] or null
  float* grad = nullptr;                 // [n, classes*k] or null
  std::int64_t n = 0, classes = 0, k = 1;
  double label_smoothing = 0.0;
  std::int32_t reduction = 1;
  // ArcMargin (kArc only)
  std::int32_t kind = 0;
  double scale = 1.0, margin = 0.0, additive_margin = 0.0, margin_scale = 1.0;
  bool easy_margin = false;
};

// The per-row constants (formed by one thread, shared by the block).
struct RowHead {
  float z_y;    // the target's logit (after the margin and scale for the fused head)
  float dphi;   // d z_y / d(s·c_y) factor: phi'(c_y) for the fused head, 1 otherwise
  float zscale; // s for the fused head, 1 for plain CE
  float gs;     // gradient scale of the row (upstream gradient, mean divisor)
  float sum_w;  // Σ_j w_j
  LsCeCoeffs<float> co;
  std::int64_t y;
  std::int64_t arg_y;  // winning sub-centre of the target
  int valid;
};

template <bool kArc, bool kSub>
__device__ __forceinline__ float class_value(const float* __restrict__ row, std::int64_t j, std::int64_t k,
                                             std::int64_t* arg) {
  if constexpr (kSub) {
    return sub_center_max(row + j * k, k, arg);
  } else {
    *arg = 0;
    return __ldg(row + j);
  }
}

template <bool kArc, bool kSub>
__device__ void row_head(const RowCeParams& P, std::int64_t row, const float* __restrict__ in_row, RowHead* h) {
  const std::int64_t y = P.labels[row];
  h->valid = (y >= 0 && y < P.classes) ? 1 : 0;
  h->y = h->valid ? y : 0;
  const bool weighted = P.class_weights != nullptr;
  const double w_y = weighted ? double(P.class_weights[h->y]) : 1.0;
  const double sum_w = weighted ? double(P.sums[0]) : double(P.classes);
  std::int64_t arg = 0;
  const double c_y = double(class_value<kArc, kSub>(in_row, h->y, P.k, &arg));
  h->arg_y = arg;
  if constexpr (kArc) {
    const double m = P.class_margins != nullptr ? double(P.class_margins[h->y]) : P.margin;
    const ArcMarginTerms<double> t =
        arc_margin_terms<double>(MarginKind(P.kind), m, P.additive_margin, P.margin_scale, P.easy_margin);
    h->z_y = float(P.scale * arc_margin_phi(c_y, t));
    h->dphi = float(arc_margin_phi_grad(c_y, t));
    h->zscale = float(P.scale);
  } else {
    h->z_y = float(c_y);
    h->dphi = 1.f;
    h->zscale = 1.f;
  }
  const LsCeCoeffs<double> co = ls_ce_coeffs(P.label_smoothing, double(P.classes), w_y, sum_w);
  h->co = LsCeCoeffs<float>{float(co.on), float(co.off), float(co.total)};
  h->sum_w = float(sum_w);
  double gs = 1.0;
  const Reduction red = Reduction(P.reduction);
  if (P.grad_loss != nullptr) gs = double(red == Reduction::kNone ? P.grad_loss[row] : P.grad_loss[0]);
  if (red == Reduction::kMean) gs /= weighted ? double(P.sums[1]) : double(P.n);
  h->gs = float(gs);
  if (!h->valid) h->gs = NAN;
}

// Merge of two online-softmax partials where either may be empty (sum 0: a thread with no columns).
__device__ __forceinline__ SoftmaxAccumulator<float> acc_merge(SoftmaxAccumulator<float> a,
                                                              SoftmaxAccumulator<float> b) {
  if (b.sum == 0.f) return a;
  if (a.sum == 0.f) return b;
  return softmax_merge(a, b);
}

struct RowStats {
  float max, sum, wz;
};

// Block-wide merge of every thread's (max, Σexp, Σwz) in a fixed tree; the result is returned to every thread.
// scratch: >= 3*33 floats of shared memory.
__device__ __forceinline__ RowStats block_row_stats(SoftmaxAccumulator<float> acc, float wz, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    SoftmaxAccumulator<float> other{__shfl_xor_sync(0xffffffffu, acc.max, o),
                                    __shfl_xor_sync(0xffffffffu, acc.sum, o)};
    acc = acc_merge(acc, other);
    wz += __shfl_xor_sync(0xffffffffu, wz, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) {
    scratch[warp] = acc.max;
    scratch[33 + warp] = acc.sum;
    scratch[66 + warp] = wz;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    SoftmaxAccumulator<float> t{scratch[0], scratch[33]};
    float tw = scratch[66];
    for (int w = 1; w < warps; ++w) {
      t = acc_merge(t, SoftmaxAccumulator<float>{scratch[w], scratch[33 + w]});
      tw += scratch[66 + w];
    }
    scratch[32] = t.max;
    scratch[65] = t.sum;
    scratch[98] = tw;
  }
  __syncthreads();
  RowStats r{scratch[32], scratch[65], scratch[98]};
  __syncthreads();
  return r;
}

// Logit of column j (the target's comes from the head).
__device__ __forceinline__ float column_logit(float c, std::int64_t j, const RowHead& h) {
  return j == h.y ? h.z_y : h.zscale * c;
}

// Gradient of column j given its logit.
__device__ __forceinline__ float column_grad(float z, std::int64_t j, float w_j, float shift, const RowHead& h) {
  const float p = __expf(z - shift);
  float g = h.gs * h.zscale * ls_ce_grad(h.co, p, w_j, j == h.y);
  if (j == h.y) g *= h.dphi;
  return g;
}

__device__ __forceinline__ float row_loss_value(const RowStats& st, const RowHead& h) {
  if (!h.valid) return NAN;
  return ls_ce_row_loss(h.co, logf(st.sum), h.z_y - st.max, st.wz - st.max * h.sum_w);
}

constexpr int kStreamThreadsWide = 512;
constexpr int kStreamThreadsNarrow = 128;
constexpr int kStreamUnroll = 4;

// Streaming row kernel: one block per row (grid-stride over rows).
template <bool kArc, bool kSub>
__global__ void __launch_bounds__(kStreamThreadsWide) softmax_row_stream_kernel(RowCeParams P) {
  __shared__ RowHead head;
  __shared__ float scratch[99];
  const std::int64_t kc = P.classes, k = P.k;
  const int bs = blockDim.x;
  for (std::int64_t row = blockIdx.x; row < P.n; row += gridDim.x) {
    const float* __restrict__ in_row = P.in + row * kc * k;
    if (threadIdx.x == 0) row_head<kArc, kSub>(P, row, in_row, &head);
    __syncthreads();
    const RowHead h = head;
    SoftmaxAccumulator<float> acc{-INFINITY, 0.f};
    float wz = 0.f;
    for (std::int64_t j0 = threadIdx.x; j0 < kc; j0 += std::int64_t(bs) * kStreamUnroll) {
      float c[kStreamUnroll];
#pragma unroll
      for (int u = 0; u < kStreamUnroll; ++u) {
        const std::int64_t j = j0 + std::int64_t(u) * bs;
        std::int64_t arg;
        c[u] = j < kc ? class_value<kArc, kSub>(in_row, j, k, &arg) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kStreamUnroll; ++u) {
        const std::int64_t j = j0 + std::int64_t(u) * bs;
        if (j < kc) {
          const float z = column_logit(c[u], j, h);
          softmax_push(acc, z);
          wz += (P.class_weights != nullptr ? __ldg(P.class_weights + j) : 1.f) * z;
        }
      }
    }
    const RowStats st = block_row_stats(acc, wz, scratch);
    if (threadIdx.x == 0 && P.row_loss != nullptr) P.row_loss[row] = row_loss_value(st, h);
    if (P.grad != nullptr) {
      const float shift = st.max + logf(st.sum);
      float* __restrict__ g_row = P.grad + row * kc * k;
      for (std::int64_t j0 = threadIdx.x; j0 < kc; j0 += std::int64_t(bs) * kStreamUnroll) {
        float c[kStreamUnroll];
        std::int64_t arg[kStreamUnroll];
#pragma unroll
        for (int u = 0; u < kStreamUnroll; ++u) {
          const std::int64_t j = j0 + std::int64_t(u) * bs;
          arg[u] = 0;
          c[u] = j < kc ? class_value<kArc, kSub>(in_row, j, k, &arg[u]) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < kStreamUnroll; ++u) {
          const std::int64_t j = j0 + std::int64_t(u) * bs;
          if (j < kc) {
            const float w_j = P.class_weights != nullptr ? __ldg(P.class_weights + j) : 1.f;
            const float g = column_grad(column_logit(c[u], j, h), j, w_j, shift, h);
            if constexpr (kSub) {
              for (std::int64_t q = 0; q < k; ++q) g_row[j * k + q] = q == arg[u] ? g : 0.f;
            } else {
              g_row[j] = g;
            }
          }
        }
      }
    }
    __syncthreads();  // `head` is rewritten for the next row
  }
}

constexpr int kStreamVec = 4;  // float4 loads in flight per thread per round (64 bytes)
constexpr int kCacheThreadsMax = 1024;
// Below this width a row stays in L1/L2 between the passes anyway: the cached kernels are not used.
constexpr std::int64_t kCacheMinClasses = 4096;

// Vectorised row engine for plain rows (k == 1): one block per row. With kCache, the first cache_cap4 float4s
// of the row's aligned body are kept in shared memory (`cache`, dynamic) as pass 1 reads them, and pass 2 takes
// them from there instead of re-reading global memory: a row that fits is read from DRAM once (8 bytes per
// element moved, the floor); a longer row re-reads only its uncached tail, back to front as before. Element i
// of the cache is written and read by the same thread (the same index mapping in both passes), so it needs no
// barrier of its own, and the arithmetic is the streaming kernel's, value for value.
template <bool kArc, bool kCache>
__device__ __forceinline__ void softmax_row_vec_body(const RowCeParams& P, float4* __restrict__ cache,
                                                     std::int64_t cache_cap4) {
  __shared__ RowHead head;
  __shared__ float scratch[99];
  const std::int64_t kc = P.classes;
  const std::int64_t bs = blockDim.x;
  const std::int64_t tid = threadIdx.x;
  const float* __restrict__ wts = P.class_weights;
  for (std::int64_t row = blockIdx.x; row < P.n; row += gridDim.x) {
    const float* __restrict__ in_row = P.in + row * kc;
    if (threadIdx.x == 0) row_head<kArc, false>(P, row, in_row, &head);
    __syncthreads();
    const RowHead h = head;
    // Columns [0, lead) and [tail0, kc) are scalar; [lead, tail0) is n4 aligned float4s.
    const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(in_row);
    std::int64_t lead = std::int64_t(((16u - (addr & 15u)) & 15u) >> 2);
    if (lead > kc) lead = kc;
    const std::int64_t n4 = (kc - lead) >> 2;
    const std::int64_t tail0 = lead + 4 * n4;
    const float4* __restrict__ in4 = reinterpret_cast<const float4*>(in_row + lead);
    const std::int64_t round = bs * kStreamVec;
    const std::int64_t rounds = (n4 + round - 1) / round;
    const std::int64_t cache_n4 = kCache ? (n4 < cache_cap4 ? n4 : cache_cap4) : 0;

    SoftmaxAccumulator<float> acc{-INFINITY, 0.f};
    float wz = 0.f;
    auto push = [&](float c, std::int64_t j) {
      const float z = column_logit(c, j, h);
      softmax_push(acc, z);
      wz += (wts != nullptr ? __ldg(wts + j) : 1.f) * z;
    };
    for (std::int64_t j = tid; j < lead; j += bs) push(__ldg(in_row + j), j);
    for (std::int64_t r = 0; r < rounds; ++r) {
      const std::int64_t i0 = r * round + tid;
      float4 v[kStreamVec];
#pragma unroll
      for (int u = 0; u < kStreamVec; ++u) {
        const std::int64_t i = i0 + std::int64_t(u) * bs;
        v[u] = i < n4 ? __ldg(in4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kStreamVec; ++u) {
        const std::int64_t i = i0 + std::int64_t(u) * bs;
        if (i < n4) {
          if constexpr (kCache) {
            if (i < cache_n4) cache[i] = v[u];
          }
          const std::int64_t j = lead + 4 * i;
          push(v[u].x, j);
          push(v[u].y, j + 1);
          push(v[u].z, j + 2);
          push(v[u].w, j + 3);
        }
      }
    }
    for (std::int64_t j = tail0 + tid; j < kc; j += bs) push(__ldg(in_row + j), j);

    const RowStats st = block_row_stats(acc, wz, scratch);
    if (threadIdx.x == 0 && P.row_loss != nullptr) P.row_loss[row] = row_loss_value(st, h);
    if (P.grad != nullptr) {
      const float shift = st.max + logf(st.sum);
      float* __restrict__ g_row = P.grad + row * kc;
      // float4 stores when the gradient row has the same alignment as the input row.
      const bool vec_out = ((reinterpret_cast<std::uintptr_t>(g_row) - addr) & 15u) == 0;
      auto grad_of = [&](float c, std::int64_t j) {
        return column_grad(column_logit(c, j, h), j, wts != nullptr ? __ldg(wts + j) : 1.f, shift, h);
      };
      for (std::int64_t j = tail0 + tid; j < kc; j += bs) g_row[j] = grad_of(__ldg(in_row + j), j);
      for (std::int64_t r = rounds - 1; r >= 0; --r) {  // back to front: the L2-warm end of the row first
        const std::int64_t i0 = r * round + tid;
        float4 v[kStreamVec];
#pragma unroll
        for (int u = 0; u < kStreamVec; ++u) {
          const std::int64_t i = i0 + std::int64_t(u) * bs;
          if (kCache && i < cache_n4) {
            v[u] = cache[i];
          } else {
            v[u] = i < n4 ? __ldg(in4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
          }
        }
#pragma unroll
        for (int u = 0; u < kStreamVec; ++u) {
          const std::int64_t i = i0 + std::int64_t(u) * bs;
          if (i < n4) {
            const std::int64_t j = lead + 4 * i;
            const float4 gv = make_float4(grad_of(v[u].x, j), grad_of(v[u].y, j + 1), grad_of(v[u].z, j + 2),
                                          grad_of(v[u].w, j + 3));
            if (vec_out) {
              reinterpret_cast<float4*>(g_row + lead)[i] = gv;
            } else {
              g_row[j] = gv.x;
              g_row[j + 1] = gv.y;
              g_row[j + 2] = gv.z;
              g_row[j + 3] = gv.w;
            }
          }
        }
      }
      for (std::int64_t j = tid; j < lead; j += bs) g_row[j] = grad_of(__ldg(in_row + j), j);
    }
    __syncthreads();  // `head` is rewritten for the next row
  }
}

// The streaming kernel (RowPath::kStreaming): 512 threads, two blocks per SM.
template <bool kArc>
__global__ void __launch_bounds__(kStreamThreadsWide, 2) softmax_row_vec_kernel(RowCeParams P) {
  softmax_row_vec_body<kArc, false>(P, nullptr, 0);
}

// The shared-memory-cached kernel (RowPath::kSmemCache with 512 threads, kSmemCacheWide with 1024); the cache is
// the dynamic shared memory, cache_cap4 float4s.
template <bool kArc>
__global__ void __launch_bounds__(kCacheThreadsMax) softmax_row_cached_kernel(RowCeParams P, std::int64_t cache_cap4) {
  extern __shared__ float4 row_cache[];
  softmax_row_vec_body<kArc, true>(P, row_cache, cache_cap4);
}

// One block: Σ_j w_j and Σ_i w_{y_i} (NaN when a label is out of range) into sums[0..1].
__global__ void ce_weight_sums_kernel(const float* __restrict__ w, std::int64_t classes,
                                      const std::int64_t* __restrict__ labels, std::int64_t n, float* sums) {
  __shared__ float scratch[33];
  float a = 0.f, b = 0.f;
  for (std::int64_t j = threadIdx.x; j < classes; j += blockDim.x) a += w[j];
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const std::int64_t y = labels[i];
    b += (y >= 0 && y < classes) ? w[y] : NAN;
  }
  a = block_sum(a, scratch);
  b = block_sum(b, scratch);
  if (threadIdx.x == 0) {
    sums[0] = a;
    sums[1] = b;
  }
}

// loss[0] = Σ_i row_loss[i] (sum) or that over the mean divisor (n, or sums[1] with class weights).
__global__ void ce_finish_kernel(const float* __restrict__ row_loss, std::int64_t n, std::int32_t reduction,
                                 const float* __restrict__ sums, float* __restrict__ loss) {
  __shared__ float scratch[33];
  float acc = 0.f;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += row_loss[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) {
    if (Reduction(reduction) == Reduction::kMean) acc /= sums != nullptr ? sums[1] : float(n);
    *loss = acc;
  }
}

// ---- composed-path ArcMargin ops ----------------------------------------------------------------------

constexpr int kEltThreads = 256;

inline dim3 row_grid(std::int64_t n, std::int64_t cols) {
  const std::int64_t bx = ceil_div(cols, kEltThreads);
  const std::int64_t by = n < 65535 ? n : 65535;
  return dim3(unsigned(bx < 1 ? 1 : bx), unsigned(by < 1 ? 1 : by));
}

template <bool kSub>
__global__ void arc_scale_kernel(const float* __restrict__ cos, std::int64_t n, std::int64_t kc, std::int64_t k,
                                 float s, float* __restrict__ logits) {
  const std::int64_t j = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= kc) return;
  for (std::int64_t row = blockIdx.y; row < n; row += gridDim.y) {
    std::int64_t arg;
    logits[row * kc + j] = s * class_value<true, kSub>(cos + row * kc * k, j, k, &arg);
  }
}

template <bool kSub>
__global__ void arc_scale_backward_kernel(const float* __restrict__ cos, const float* __restrict__ grad_logits,
                                          std::int64_t n, std::int64_t kc, std::int64_t k, float s,
                                          float* __restrict__ grad_cos) {
  const std::int64_t j = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= kc) return;
  for (std::int64_t row = blockIdx.y; row < n; row += gridDim.y) {
    const float g = s * __ldg(grad_logits + row * kc + j);
    if constexpr (kSub) {
      std::int64_t arg;
      class_value<true, true>(cos + row * kc * k, j, k, &arg);
      for (std::int64_t q = 0; q < k; ++q) grad_cos[(row * kc + j) * k + q] = q == arg ? g : 0.f;
    } else {
      grad_cos[row * kc + j] = g;
    }
  }
}

// One thread per row: the target's logit (forward) or the target's gradient (backward); a row with a bad
// label is filled with NaN.
template <bool kSub, bool kBackward>
__global__ void arc_target_fixup_kernel(RowCeParams P, const float* __restrict__ grad_logits, float* __restrict__ out) {
  const std::int64_t row = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= P.n) return;
  const std::int64_t kc = P.classes, k = P.k;
  const std::int64_t y = P.labels[row];
  const std::int64_t width = kBackward ? kc * k : kc;
  if (!(y >= 0 && y < kc)) {
    for (std::int64_t j = 0; j < width; ++j) out[row * width + j] = NAN;
    return;
  }
  std::int64_t arg;
  const double c = double(class_value<true, kSub>(P.in + row * kc * k, y, k, &arg));
  const double m = P.class_margins != nullptr ? double(P.class_margins[y]) : P.margin;
  const ArcMarginTerms<double> t =
      arc_margin_terms<double>(MarginKind(P.kind), m, P.additive_margin, P.margin_scale, P.easy_margin);
  if constexpr (kBackward) {
    out[row * width + y * k + arg] = float(P.scale * double(grad_logits[row * kc + y]) * arc_margin_phi_grad(c, t));
  } else {
    out[row * width + y] = float(P.scale * arc_margin_phi(c, t));
  }
}

// ---- host-side plumbing ------------------------------------------------------------------------------

inline void fill_arc(RowCeParams& P, const ArcMarginConfig& c, const float* class_margins) {
  P.kind = std::int32_t(c.kind);
  P.scale = c.scale;
  P.margin = c.margin;
  P.additive_margin = c.additive_margin;
  P.margin_scale = c.margin_scale;
  P.easy_margin = c.easy_margin;
  P.class_margins = class_margins;
}

// Validates a config without touching device data (labels, weights and margins are checked on the device).
inline void validate_arc(const char* op, const ArcMarginShape& s, const ArcMarginConfig& c) {
  ARCLIGHT_CHECK(s.n >= 0, op, "expected n >= 0 rows, got n=", s.n);
  cpu::detail::arc_margin_validate<float>(op, ArcMarginShape{0, s.classes, s.sub_centers}, c, nullptr, nullptr);
}
inline void validate_ce(const char* op, const CrossEntropyShape& s, const CrossEntropyConfig& c) {
  ARCLIGHT_CHECK(s.n >= 0, op, "expected n >= 0 rows, got n=", s.n);
  cpu::detail::cross_entropy_validate<float>(op, CrossEntropyShape{0, s.classes}, c, nullptr, nullptr);
}

// What RowPath::kAuto means for plain rows with a gradient pass (bench/device measures all paths side by side).
// H100 run 3 (bench/RESULTS.md): at 1024 x 100 000 the wide cache moved 68 % (CE backward) / 66 % (fused) of the
// copy bandwidth against 65 / 64 % for the 2-blocks-per-SM cache and 63 / 62 % streaming; at 256 rows 65 / 61 %
// against 60 / 57 % and 57 / 55 %. The wide cache is the fastest in every measured case.
constexpr RowPath kAutoRowPath = RowPath::kSmemCacheWide;

// Dynamic shared memory for the cached kernel at `blocks_per_sm` resident blocks of `threads`: what one SM holds,
// shared among them, less each block's static shared memory and the driver's per-block reservation, capped by
// the per-block opt-in limit and by what the widest row needs; 0 when the device cannot give a useful amount.
template <bool kArc>
std::int64_t row_cache_bytes(int blocks_per_sm, std::int64_t classes, const char* op) {
  int device = 0, per_sm = 0, optin = 0, reserved = 0;
  check_cuda(cudaGetDevice(&device), op, "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device), op,
             "cudaDeviceGetAttribute(MaxSharedMemoryPerMultiprocessor)");
  check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), op,
             "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  check_cuda(cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, device), op,
             "cudaDeviceGetAttribute(ReservedSharedMemoryPerBlock)");
  cudaFuncAttributes attr{};
  check_cuda(cudaFuncGetAttributes(&attr, softmax_row_cached_kernel<kArc>), op, "cudaFuncGetAttributes");
  const std::int64_t stat = std::int64_t(attr.sharedSizeBytes);
  // 1 KiB granules, so allocation rounding can never push `blocks_per_sm` blocks past the SM's capacity.
  std::int64_t bytes = (std::int64_t(per_sm) / blocks_per_sm - stat - reserved) / 1024 * 1024;
  if (bytes > std::int64_t(optin) - stat) bytes = (std::int64_t(optin) - stat) / 1024 * 1024;
  const std::int64_t need = (classes / 4) * 16;  // the aligned body of the widest row
  if (bytes > need) bytes = need;
  if (bytes < 16 * 1024) return 0;
  // Confirm the occupancy the size was chosen for (shrinking a little if the device disagrees).
  const int threads = blocks_per_sm == 1 ? kCacheThreadsMax : kStreamThreadsWide;
  check_cuda(cudaFuncSetAttribute(softmax_row_cached_kernel<kArc>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  int(bytes)),
             op, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  check_cuda(cudaFuncSetAttribute(softmax_row_cached_kernel<kArc>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                  int(cudaSharedmemCarveoutMaxShared)),
             op, "cudaFuncSetAttribute(PreferredSharedMemoryCarveout)");
  for (int attempt = 0; attempt < 4 && bytes >= 16 * 1024; ++attempt) {
    int resident = 0;
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, softmax_row_cached_kernel<kArc>, threads,
                                                             std::size_t(bytes)),
               op, "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    if (resident >= blocks_per_sm) return bytes;
    bytes -= 2048;
  }
  return 0;  // the streaming kernel then runs instead
}

template <bool kArc>
void run_rows(const RowCeParams& P, RowPath path, const char* op, Stream stream) {
  if (P.n == 0) return;
  const unsigned grid = unsigned(P.n < (1ll << 30) ? P.n : (1ll << 30));
  if (P.k != 1) {
    const int threads = P.classes * P.k >= 4096 ? kStreamThreadsWide : kStreamThreadsNarrow;
    softmax_row_stream_kernel<kArc, true><<<grid, threads, 0, stream>>>(P);
    check_launch(op);
    return;
  }
  // The cached kernels only pay off when a gradient pass re-reads a row too wide to stay in L1/L2.
  if (path == RowPath::kAuto) path = kAutoRowPath;
  const bool cached = (path == RowPath::kSmemCache || path == RowPath::kSmemCacheWide) && P.grad != nullptr &&
                      P.classes >= kCacheMinClasses;
  if (cached) {
    const bool wide = path == RowPath::kSmemCacheWide;
    const int threads = wide ? kCacheThreadsMax : kStreamThreadsWide;
    const std::int64_t bytes = row_cache_bytes<kArc>(wide ? 1 : 2, P.classes, op);
    if (bytes > 0) {  // (row_cache_bytes raised the kernel's dynamic shared memory limit to at least `bytes`)
      softmax_row_cached_kernel<kArc><<<grid, threads, std::size_t(bytes), stream>>>(P, bytes / 16);
      check_launch(op);
      return;
    }
  }
  const int threads = P.classes >= 4096 ? kStreamThreadsWide : kStreamThreadsNarrow;
  softmax_row_vec_kernel<kArc><<<grid, threads, 0, stream>>>(P);
  check_launch(op);
}

// The common driver of the four CE-family launchers.
template <bool kArc>
void softmax_rows(const char* op, RowCeParams P, const CrossEntropyConfig& ce, float* loss, float* workspace,
                  RowPath path, Stream stream) {
  ARCLIGHT_CHECK(path == RowPath::kAuto || path == RowPath::kStreaming || path == RowPath::kSmemCache ||
                     path == RowPath::kSmemCacheWide,
                 op, "unknown row path ", int(path), " (expected kAuto, kStreaming, kSmemCache or kSmemCacheWide)");
  P.label_smoothing = ce.label_smoothing;
  P.reduction = std::int32_t(ce.reduction);
  const bool want_loss = loss != nullptr;
  if (P.n == 0) {
    if (want_loss && ce.reduction != Reduction::kNone) {
      const float v = ce.reduction == Reduction::kSum ? 0.f : NAN;
      check_cuda(cudaMemcpyAsync(loss, &v, sizeof(float), cudaMemcpyHostToDevice, stream), op, "cudaMemcpyAsync");
      check_cuda(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");  // &v is a stack value
    }
    return;
  }
  ARCLIGHT_CHECK(P.in != nullptr && P.labels != nullptr, op, "expected non-null input and labels");
  ARCLIGHT_CHECK(workspace != nullptr, op, "expected a workspace of ", cross_entropy_workspace_floats(P.n),
                 " floats, got null");
  float* sums = workspace + P.n;
  if (P.class_weights != nullptr) {
    ce_weight_sums_kernel<<<1, 1024, 0, stream>>>(P.class_weights, P.classes, P.labels, P.n, sums);
    check_launch(op);
    P.sums = sums;
  }
  if (want_loss) P.row_loss = ce.reduction == Reduction::kNone ? loss : workspace;
  run_rows<kArc>(P, path, op, stream);
  if (want_loss && ce.reduction != Reduction::kNone) {
    ce_finish_kernel<<<1, 1024, 0, stream>>>(workspace, P.n, P.reduction,
                                             P.class_weights != nullptr ? sums : nullptr, loss);
    check_launch(op);
  }
}

}  // namespace detail

std::int64_t cross_entropy_workspace_floats(std::int64_t n) { return (n > 0 ? n : 0) + 2; }

void cross_entropy_forward(const CrossEntropyShape& shape, const CrossEntropyConfig& cfg, const float* logits,
                           const std::int64_t* labels, const float* class_weights, float* loss, float* workspace,
                           Stream stream, RowPath path) {
  const char* op = "cuda::cross_entropy_forward";
  detail::validate_ce(op, shape, cfg);
  ARCLIGHT_CHECK(loss != nullptr, op, "expected a non-null loss output");
  detail::RowCeParams P;
  P.in = logits;
  P.labels = labels;
  P.class_weights = class_weights;
  P.n = shape.n;
  P.classes = shape.classes;
  detail::softmax_rows<false>(op, P, cfg, loss, workspace, path, stream);
}

void cross_entropy_backward(const CrossEntropyShape& shape, const CrossEntropyConfig& cfg, const float* logits,
                            const std::int64_t* labels, const float* class_weights, const float* grad_loss,
                            float* grad_logits, float* workspace, Stream stream, RowPath path) {
  const char* op = "cuda::cross_entropy_backward";
  detail::validate_ce(op, shape, cfg);
  if (shape.n == 0) return;
  ARCLIGHT_CHECK(grad_loss != nullptr && grad_logits != nullptr, op, "expected non-null grad_loss and grad_logits");
  detail::RowCeParams P;
  P.in = logits;
  P.labels = labels;
  P.class_weights = class_weights;
  P.grad_loss = grad_loss;
  P.grad = grad_logits;
  P.n = shape.n;
  P.classes = shape.classes;
  detail::softmax_rows<false>(op, P, cfg, nullptr, workspace, path, stream);
}

void arc_margin_forward(const ArcMarginShape& shape, const ArcMarginConfig& cfg, const float* cos,
                        const std::int64_t* labels, const float* class_margins, float* logits, Stream stream) {
  const char* op = "cuda::arc_margin_forward";
  detail::validate_arc(op, shape, cfg);
  if (shape.n == 0) return;
  ARCLIGHT_CHECK(cos != nullptr && labels != nullptr && logits != nullptr, op,
                 "expected non-null cos, labels and logits");
  const dim3 grid = detail::row_grid(shape.n, shape.classes);
  if (shape.sub_centers == 1) {
    detail::arc_scale_kernel<false><<<grid, detail::kEltThreads, 0, stream>>>(cos, shape.n, shape.classes, 1,
                                                                              float(cfg.scale), logits);
  } else {
    detail::arc_scale_kernel<true><<<grid, detail::kEltThreads, 0, stream>>>(cos, shape.n, shape.classes,
                                                                             shape.sub_centers, float(cfg.scale), logits);
  }
  detail::check_launch(op);
  detail::RowCeParams P;
  P.in = cos;
  P.labels = labels;
  P.n = shape.n;
  P.classes = shape.classes;
  P.k = shape.sub_centers;
  detail::fill_arc(P, cfg, class_margins);
  const unsigned blocks = unsigned(detail::ceil_div(shape.n, 128));
  if (shape.sub_centers == 1) {
    detail::arc_target_fixup_kernel<false, false><<<blocks, 128, 0, stream>>>(P, nullptr, logits);
  } else {
    detail::arc_target_fixup_kernel<true, false><<<blocks, 128, 0, stream>>>(P, nullptr, logits);
  }
  detail::check_launch(op);
}

void arc_margin_backward(const ArcMarginShape& shape, const ArcMarginConfig& cfg, const float* cos,
                         const std::int64_t* labels, const float* class_margins, const float* grad_logits,
                         float* grad_cos, Stream stream) {
  const char* op = "cuda::arc_margin_backward";
  detail::validate_arc(op, shape, cfg);
  if (shape.n == 0) return;
  ARCLIGHT_CHECK(cos != nullptr && labels != nullptr && grad_logits != nullptr && grad_cos != nullptr, op,
                 "expected non-null cos, labels, grad_logits and grad_cos");
  const dim3 grid = detail::row_grid(shape.n, shape.classes);
  if (shape.sub_centers == 1) {
    detail::arc_scale_backward_kernel<false><<<grid, detail::kEltThreads, 0, stream>>>(
        cos, grad_logits, shape.n, shape.classes, 1, float(cfg.scale), grad_cos);
  } else {
    detail::arc_scale_backward_kernel<true><<<grid, detail::kEltThreads, 0, stream>>>(
        cos, grad_logits, shape.n, shape.classes, shape.sub_centers, float(cfg.scale), grad_cos);
  }
  detail::check_launch(op);
  detail::RowCeParams P;
  P.in = cos;
  P.labels = labels;
  P.n = shape.n;
  P.classes = shape.classes;
  P.k = shape.sub_centers;
  detail::fill_arc(P, cfg, class_margins);
  const unsigned blocks = unsigned(detail::ceil_div(shape.n, 128));
  if (shape.sub_centers == 1) {
    detail::arc_target_fixup_kernel<false, true><<<blocks, 128, 0, stream>>>(P, grad_logits, grad_cos);
  } else {
    detail::arc_target_fixup_kernel<true, true><<<blocks, 128, 0, stream>>>(P, grad_logits, grad_cos);
  }
  detail::check_launch(op);
}

void arc_margin_cross_entropy_forward(const ArcMarginShape& shape, const ArcMarginConfig& arc_cfg,
                                      const CrossEntropyConfig& ce_cfg, const float* cos, const std::int64_t* labels,
                                      const float* class_margins, const float* class_weights, float* loss,
                                      float* grad_cos, float* workspace, Stream stream, RowPath path) {
  const char* op = "cuda::arc_margin_cross_entropy_forward";
  detail::validate_arc(op, shape, arc_cfg);
  detail::validate_ce(op, CrossEntropyShape{shape.n, shape.classes}, ce_cfg);
  ARCLIGHT_CHECK(loss != nullptr, op, "expected a non-null loss output");
  detail::RowCeParams P;
  P.in = cos;
  P.labels = labels;
  P.class_weights = class_weights;
  P.grad = grad_cos;
  P.n = shape.n;
  P.classes = shape.classes;
  P.k = shape.sub_centers;
  detail::fill_arc(P, arc_cfg, class_margins);
  detail::softmax_rows<true>(op, P, ce_cfg, loss, workspace, path, stream);
}

void arc_margin_cross_entropy_backward(const ArcMarginShape& shape, const ArcMarginConfig& arc_cfg,
                                       const CrossEntropyConfig& ce_cfg, const float* cos,
                                       const std::int64_t* labels, const float* class_margins,
                                       const float* class_weights, const float* grad_loss, float* grad_cos,
                                       float* workspace, Stream stream, RowPath path) {
  const char* op = "cuda::arc_margin_cross_entropy_backward";
  detail::validate_arc(op, shape, arc_cfg);
  detail::validate_ce(op, CrossEntropyShape{shape.n, shape.classes}, ce_cfg);
  if (shape.n == 0) return;
  ARCLIGHT_CHECK(grad_loss != nullptr && grad_cos != nullptr, op, "expected non-null grad_loss and grad_cos");
  detail::RowCeParams P;
  P.in = cos;
  P.labels = labels;
  P.class_weights = class_weights;
  P.grad_loss = grad_loss;
  P.grad = grad_cos;
  P.n = shape.n;
  P.classes = shape.classes;
  P.k = shape.sub_centers;
  detail::fill_arc(P, arc_cfg, class_margins);
  detail::softmax_rows<true>(op, P, ce_cfg, nullptr, workspace, path, stream);
}

}  // namespace arclight::kernels::cuda
