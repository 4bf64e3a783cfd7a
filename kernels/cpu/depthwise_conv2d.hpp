// Direct CPU kernels of the depthwise convolution (groups == c_in, c_out = multiplier * c_in; output channel
// co reads input channel co / multiplier), forward and both backward passes. im2col + GEMM is a poor fit here
// (K = kh*kw is tiny, one skinny GEMM per channel). Two paths:
//   * channel lanes (multiplier 1, float/double, input planes up to 64x64 — every efficientnet_b0 depthwise
//     conv at 32-64 px inputs): blocks of L channels of one image (L = one 64-byte vector) are transposed
//     through register tiles into a [h][w][L] buffer, so each tap is one L-wide multiply-add across channels,
//     whatever the map size, stride, padding or dilation; each pixel visits only its valid taps. Forward and
//     backward data (a gather over the transposed taps, no scatter) accumulate in registers; backward weight
//     gives each thread whole channel blocks and walks the images in order. See detail::lanes_forward.
//   * rows (any multiplier, larger maps): for column stride 1 and a 3/5/7-wide kernel, the interior columns
//     accumulate a whole kernel row in registers, vectorised across output columns; border columns (and other
//     strides/dilations) go tap by tap over each tap's valid column range; backward data gathers for column
//     stride 1 and otherwise scatters conflict-free, one thread per input plane; backward weight keeps
//     per-tap lane accumulators.
// Both are parallel with OpenMP and deterministic: no floating-point reduction depends on the thread count.
// Called through conv2d_forward / conv2d_backward_* (kernels/cpu/conv2d.hpp) or directly.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cpu/conv2d.hpp"

namespace arclight::kernels::cpu {

namespace detail {
inline void check_depthwise(const Conv2dShape& s, const char* op) {
  check_conv2d_shape(s, op);
  ARCLIGHT_CHECK(is_depthwise(s), op, "expected a depthwise convolution (groups == input channels > 1), got ",
                 shape_str(s));
}

// The valid output-column range [lo[j], hi[j]) of every kernel column j (it does not depend on the row, so it
// is computed once per call instead of once per row and tap).
struct TapColumns {
  std::vector<std::int64_t> lo, hi, off;
  explicit TapColumns(const Conv2dShape& s)
      : lo(std::size_t(s.kw)), hi(std::size_t(s.kw)), off(std::size_t(s.kw)) {
    for (std::int64_t j = 0; j < s.kw; ++j) {
      const std::size_t u = std::size_t(j);
      off[u] = j * s.dilation_w - s.pad_left;
      valid_range(s.out_w, s.w, s.stride_w, off[u], lo[u], hi[u]);
    }
  }
};
// Interior of one output row for stride 1 / dilation 1: y[ow] = b + sum_r sum_j w_r[j] * row_r[ow + j] over
// ow in [a, e), where row_r already points pad_left columns before input row r. The tap width is a template
// parameter so the j loop unrolls and the ow loop vectorises with contiguous loads.
inline constexpr int kMaxFastTaps = 16;
template <int KW, typename T>
void depthwise_row_interior_kw(const T* const* rows, const T* const* wrows, int nrows, T b, T* yr, std::int64_t a,
                               std::int64_t e) {
  for (std::int64_t ow = a; ow < e; ++ow) yr[ow] = b;
  for (int r = 0; r < nrows; ++r) {
    const T* xr = rows[r];
    T wj[KW];
    for (int j = 0; j < KW; ++j) wj[j] = wrows[r][j];
#pragma omp simd
    for (std::int64_t ow = a; ow < e; ++ow) {
      T acc = yr[ow];
      for (int j = 0; j < KW; ++j) acc += wj[j] * xr[ow + j];
      yr[ow] = acc;
    }
  }
}
// One input-gradient row by gathering (stride_w 1, dilation_w 1): dxr[iw] = sum_r sum_j w_r[j] *
// dy_r[iw + pad_left - j], dy_r the contributing output rows. Interior [ia, ie) without bounds checks,
// vectorised across iw; the few border columns with checks. Overwrites dxr[0, w).
template <int KW, typename T>
void depthwise_row_gather_kw(const T* const* rows, const T* const* wrows, int nrows, std::int64_t pad_left,
                             std::int64_t out_w, T* dxr, std::int64_t ia, std::int64_t ie, std::int64_t w) {
  for (std::int64_t iw = 0; iw < w; ++iw) dxr[iw] = T(0);
  for (int r = 0; r < nrows; ++r) {
    const T* dyr = rows[r];
    T wj[KW];
    for (int j = 0; j < KW; ++j) wj[j] = wrows[r][j];
#pragma omp simd
    for (std::int64_t iw = ia; iw < ie; ++iw) {
      T acc = dxr[iw];
      for (int j = 0; j < KW; ++j) acc += wj[j] * dyr[iw + pad_left - j];
      dxr[iw] = acc;
    }
    auto border = [&](std::int64_t iw) {
      T acc = dxr[iw];
      for (int j = 0; j < KW; ++j) {
        const std::int64_t ow = iw + pad_left - j;
        if (ow >= 0 && ow < out_w) acc += wj[j] * dyr[ow];
      }
      dxr[iw] = acc;
    };
    for (std::int64_t iw = 0; iw < ia; ++iw) border(iw);
    for (std::int64_t iw = ie; iw < w; ++iw) border(iw);
  }
}
template <typename T>
void depthwise_row_gather(std::int64_t kw, const T* const* rows, const T* const* wrows, int nrows,
                          std::int64_t pad_left, std::int64_t out_w, T* dxr, std::int64_t ia, std::int64_t ie,
                          std::int64_t w) {
  switch (kw) {
    case 3: return depthwise_row_gather_kw<3>(rows, wrows, nrows, pad_left, out_w, dxr, ia, ie, w);
    case 5: return depthwise_row_gather_kw<5>(rows, wrows, nrows, pad_left, out_w, dxr, ia, ie, w);
    default: return depthwise_row_gather_kw<7>(rows, wrows, nrows, pad_left, out_w, dxr, ia, ie, w);
  }
}

template <typename T>
void depthwise_row_interior(std::int64_t kw, const T* const* rows, const T* const* wrows, int nrows, T b, T* yr,
                            std::int64_t a, std::int64_t e) {
  switch (kw) {
    case 3: return depthwise_row_interior_kw<3>(rows, wrows, nrows, b, yr, a, e);
    case 5: return depthwise_row_interior_kw<5>(rows, wrows, nrows, b, yr, a, e);
    default: return depthwise_row_interior_kw<7>(rows, wrows, nrows, b, yr, a, e);
  }
}
// Largest input plane (h * w) the channel-lane path takes: its per-thread [h][w][L] buffers stay in L2
// (64x64 floats x 16 lanes = 256 KiB). bench/bench_depthwise measured the lane path ahead of the row path on
// every efficientnet_b0 shape up to 32x32; larger maps (full-resolution training) keep the row path.
inline constexpr std::int64_t kLanesMaxPlane = 64 * 64;

// ---- channel-lane path ------------------------------------------------------------------------------------
// For the small maps of a late network stage (EfficientNet's 8x8 ... 1x1 at a 32 px input) a plane has too
// few columns to vectorise along a row, and per-row bookkeeping dominates. Instead a block of L consecutive
// channels of one image (L = 64 bytes / sizeof(T): one AVX-512 register of floats) is transposed into a
// thread-local [h][w][L] buffer, so every tap is one L-wide multiply-add across channels; each output pixel
// visits only its valid taps (ranges computed per row/column, no per-tap bounds check), then the [oh][ow][L]
// result is transposed back. The channel multiplier must be 1 (c_out == c_in). The backward-data pass
// scatters (conflict-free: the lanes are distinct channels) into a zeroed [h][w][L] buffer; the
// backward-weight pass gives each thread whole channel blocks and walks the images in order, so dw does not
// depend on the thread count.
// The lane vectors are GCC/Clang vector extensions of a fixed 64 bytes on every target (so the blocking, and
// with it the results, are the same in every build); without AVX-512 the compiler splits them into narrower
// registers. They never cross a function boundary (the load/store helpers are always inlined), which is why
// GCC's note about the vector-argument ABI (-Wpsabi) is silenced for the lane code.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
template <typename T>
struct LaneTraits {
  static constexpr bool kEnabled = false;
};
template <>
struct LaneTraits<float> {
  static constexpr bool kEnabled = true;
  static constexpr int L = 16;
  typedef float V __attribute__((vector_size(64)));
};
template <>
struct LaneTraits<double> {
  static constexpr bool kEnabled = true;
  static constexpr int L = 8;
  typedef double V __attribute__((vector_size(64)));
};
template <typename V, typename T>
inline __attribute__((always_inline)) V lane_load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline __attribute__((always_inline)) void lane_store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}
// A grow-only, 64-byte aligned scratch buffer per thread and slot (no allocation once it is large enough).
template <typename T, int Slot>
T* thread_scratch(std::size_t n) {
  thread_local std::vector<T> buf;
  constexpr std::size_t pad = 64 / sizeof(T);
  if (buf.size() < n + pad) buf.resize(n + pad);
  const auto addr = reinterpret_cast<std::uintptr_t>(buf.data());
  return buf.data() + ((64 - addr % 64) % 64) / sizeof(T);
}

// Taps k in [lo, hi) of one axis with 0 <= i0 + k * d < extent (i0 = output index * stride - pad).
ARCLIGHT_INLINE void tap_range(std::int64_t i0, std::int64_t extent, std::int64_t k, std::int64_t d,
                               std::int64_t& lo, std::int64_t& hi) {
  lo = i0 >= 0 ? 0 : (-i0 + d - 1) / d;
  hi = extent - i0 <= 0 ? 0 : std::min(k, (extent - i0 + d - 1) / d);
  if (hi < lo) hi = lo;
}

// The transposed view (dilation 1): taps k in [lo, hi), stepping by `stride`, that reach input index
// r - pad from an output o in [0, out): o * stride + k = r, 0 <= k < kernel. Empty when hi <= lo.
ARCLIGHT_INLINE void transposed_tap_range(std::int64_t r, std::int64_t out, std::int64_t kernel, std::int64_t stride,
                                          std::int64_t& lo, std::int64_t& hi) {
  lo = std::max<std::int64_t>(0, r - (out - 1) * stride);
  if (lo <= r) lo += (r - lo) % stride;
  hi = std::min(kernel, r + 1);
  if (hi < lo) hi = lo;
}

// In-register transpose of an L x L tile (L = lanes of V, a power of two): log2(L) butterfly stages; the stage
// of half-size h swaps the off-diagonal h x h blocks of every 2h x 2h block, two-source shuffles only.
template <int h, int L, std::size_t... I>
ARCLIGHT_INLINE void transpose_stage(typename LaneTraits<std::conditional_t<L == 16, float, double>>::V* r,
                                     std::index_sequence<I...>) {
  for (int a = 0; a < L; ++a) {
    if (a & h) continue;
    const auto x = r[a], y = r[a | h];
    r[a] = __builtin_shufflevector(x, y, (((int(I) & h) == 0) ? int(I) : L + int(I) - h)...);
    r[a | h] = __builtin_shufflevector(x, y, (((int(I) & h) == 0) ? int(I) + h : L + int(I))...);
  }
}
template <typename T>
inline __attribute__((always_inline)) void transpose_tile(typename LaneTraits<T>::V* r) {
  constexpr int L = LaneTraits<T>::L;
  using Seq = std::make_index_sequence<std::size_t(L)>;
  if constexpr (L >= 16) transpose_stage<8, L>(r, Seq{});
  transpose_stage<4, L>(r, Seq{});
  transpose_stage<2, L>(r, Seq{});
  transpose_stage<1, L>(r, Seq{});
}

// Per-column tap tables, built once per call on the calling thread and only read inside the parallel
// region (no division per pixel). forward: [out_w][2] = the tap range of output column ow; transposed:
// [w][3] = the tap range reaching input column iw and the output column of its first tap.
inline const std::int64_t* forward_column_taps(const Conv2dShape& s) {
  std::int64_t* t = thread_scratch<std::int64_t, 4>(std::size_t(2 * s.out_w));
  for (std::int64_t ow = 0; ow < s.out_w; ++ow)
    tap_range(ow * s.stride_w - s.pad_left, s.w, s.kw, s.dilation_w, t[2 * ow], t[2 * ow + 1]);
  return t;
}
inline const std::int64_t* transposed_column_taps(const Conv2dShape& s) {
  std::int64_t* t = thread_scratch<std::int64_t, 4>(std::size_t(3 * s.w));
  for (std::int64_t iw = 0; iw < s.w; ++iw) {
    transposed_tap_range(iw + s.pad_left, s.out_w, s.kw, s.stride_w, t[3 * iw], t[3 * iw + 1]);
    t[3 * iw + 2] = (iw + s.pad_left - t[3 * iw]) / s.stride_w;
  }
  return t;
}

// src holds nl planes of `plane` elements each (channel l at src + l * plane); dst[p * L + l] = src[l][p], the
// lanes l >= nl zero. Full blocks go through L x L register tiles.
template <int L, typename T>
void lanes_gather(const T* src, std::int64_t nl, std::int64_t plane, T* dst) {
  using V = typename LaneTraits<T>::V;
  std::int64_t p0 = 0;
  if (nl == L) {
    for (; p0 + L <= plane; p0 += L) {
      V r[L];
      for (int l = 0; l < L; ++l) r[l] = lane_load<V>(src + l * plane + p0);
      transpose_tile<T>(r);
      for (int q = 0; q < L; ++q) lane_store(dst + (p0 + q) * L, r[q]);
    }
  }
  for (std::int64_t p = p0; p < plane; ++p)
    for (int l = 0; l < L; ++l) dst[p * L + l] = l < nl ? src[l * plane + p] : T(0);
}
// The inverse: dst[l][p] = src[p * L + l] for l < nl.
template <int L, typename T>
void lanes_scatter(const T* src, std::int64_t nl, std::int64_t plane, T* dst) {
  using V = typename LaneTraits<T>::V;
  std::int64_t p0 = 0;
  if (nl == L) {
    for (; p0 + L <= plane; p0 += L) {
      V r[L];
      for (int q = 0; q < L; ++q) r[q] = lane_load<V>(src + (p0 + q) * L);
      transpose_tile<T>(r);
      for (int l = 0; l < L; ++l) lane_store(dst + l * plane + p0, r[l]);
    }
  }
  for (std::int64_t p = p0; p < plane; ++p)
    for (std::int64_t l = 0; l < nl; ++l) dst[l * plane + p] = src[p * L + l];
}

// Weights (and bias) re-laid per channel block: out[(b * K + k) * L + l] = w[(b * L + l) * K + k], zero past c.
template <int L, typename T>
void lanes_weights(const T* w, std::int64_t c, std::int64_t K, T* out) {
  const std::int64_t blocks = (c + L - 1) / L;
  for (std::int64_t b = 0; b < blocks; ++b)
    for (std::int64_t k = 0; k < K; ++k)
      for (int l = 0; l < L; ++l) {
        const std::int64_t ch = b * L + l;
        out[(b * K + k) * L + l] = ch < c ? w[ch * K + k] : T(0);
      }
}

// Whether the lane path handles this shape: channel multiplier 1, a lane type for T (float, double), an input
// plane of at most kLanesMaxPlane elements.
template <typename T>
bool use_lanes(const Conv2dShape& s) {
  if constexpr (!LaneTraits<T>::kEnabled) {
    return false;
  } else {
    return s.c_out == s.c_in && s.h * s.w <= kLanesMaxPlane;
  }
}

template <typename T>
void lanes_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  using V = typename LaneTraits<T>::V;
  constexpr int L = LaneTraits<T>::L;
  const std::int64_t C = s.c_in, HW = s.h * s.w, P = s.out_h * s.out_w, K = s.kh * s.kw;
  const std::int64_t blocks = (C + L - 1) / L;
  T* wt = thread_scratch<T, 2>(std::size_t((blocks * K + blocks) * L));
  T* bt = wt + blocks * K * L;
  lanes_weights<L>(w, C, K, wt);
  for (std::int64_t k = 0; k < blocks * L; ++k) bt[k] = (bias && k < C) ? bias[k] : T(0);
  const std::int64_t* ct = forward_column_taps(s);
#pragma omp parallel
  {
    T* xt = thread_scratch<T, 0>(std::size_t(HW * L));
    T* yt = thread_scratch<T, 1>(std::size_t(P * L));
#pragma omp for collapse(2) schedule(static)
    for (std::int64_t n = 0; n < s.n; ++n) {
      for (std::int64_t b = 0; b < blocks; ++b) {
        const std::int64_t c0 = b * L, nl = std::min<std::int64_t>(L, C - c0);
        lanes_gather<L>(x + (n * C + c0) * HW, nl, HW, xt);
        const T* wb = wt + b * K * L;
        const V vb = lane_load<V>(bt + b * L);
        for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
          const std::int64_t ih0 = oh * s.stride_h - s.pad_top;
          std::int64_t ilo, ihi;
          tap_range(ih0, s.h, s.kh, s.dilation_h, ilo, ihi);
          for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
            const std::int64_t iw0 = ow * s.stride_w - s.pad_left;
            const std::int64_t jlo = ct[2 * ow], jhi = ct[2 * ow + 1];
            V acc = vb;
            for (std::int64_t i = ilo; i < ihi; ++i) {
              const std::int64_t row = (ih0 + i * s.dilation_h) * s.w + iw0;
              for (std::int64_t j = jlo; j < jhi; ++j)
                acc += lane_load<V>(wb + (i * s.kw + j) * L) * lane_load<V>(xt + (row + j * s.dilation_w) * L);
            }
            lane_store(yt + (oh * s.out_w + ow) * L, acc);
          }
        }
        lanes_scatter<L>(yt, nl, P, y + (n * C + c0) * P);
      }
    }
  }
}

template <typename T>
void lanes_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  using V = typename LaneTraits<T>::V;
  constexpr int L = LaneTraits<T>::L;
  const std::int64_t C = s.c_in, HW = s.h * s.w, P = s.out_h * s.out_w, K = s.kh * s.kw;
  const std::int64_t blocks = (C + L - 1) / L;
  T* wt = thread_scratch<T, 2>(std::size_t(blocks * K * L));
  lanes_weights<L>(w, C, K, wt);
  const bool gather_form = s.dilation_h == 1 && s.dilation_w == 1;
  const std::int64_t* ct = gather_form ? nullptr : forward_column_taps(s);
  const std::int64_t* tt = gather_form ? transposed_column_taps(s) : nullptr;
#pragma omp parallel
  {
    T* dyt = thread_scratch<T, 0>(std::size_t(P * L));
    T* dxt = thread_scratch<T, 1>(std::size_t(HW * L));
#pragma omp for collapse(2) schedule(static)
    for (std::int64_t n = 0; n < s.n; ++n) {
      for (std::int64_t b = 0; b < blocks; ++b) {
        const std::int64_t c0 = b * L, nl = std::min<std::int64_t>(L, C - c0);
        lanes_gather<L>(dy + (n * C + c0) * P, nl, P, dyt);
        const T* wb = wt + b * K * L;
        if (gather_form) {
          // dx[ih, iw] = sum of w[i, j] * dy[oh, ow] over the taps with oh * stride_h + i = ih + pad_top and
          // ow * stride_w + j = iw + pad_left: accumulated in a register, one store per input pixel.
          for (std::int64_t ih = 0; ih < s.h; ++ih) {
            std::int64_t ilo, ihi;
            transposed_tap_range(ih + s.pad_top, s.out_h, s.kh, s.stride_h, ilo, ihi);
            for (std::int64_t iw = 0; iw < s.w; ++iw) {
              const std::int64_t jlo = tt[3 * iw], jhi = tt[3 * iw + 1], ow0 = tt[3 * iw + 2];
              V acc = V{};
              for (std::int64_t i = ilo, oh = (ih + s.pad_top - ilo) / s.stride_h; i < ihi; i += s.stride_h, --oh) {
                const T* dyr = dyt + (oh * s.out_w + ow0) * L;
                const T* wr = wb + (i * s.kw + jlo) * L;
                for (std::int64_t j = jlo, q = 0; j < jhi; j += s.stride_w, ++q)
                  acc += lane_load<V>(wr + (j - jlo) * L) * lane_load<V>(dyr - q * L);
              }
              lane_store(dxt + (ih * s.w + iw) * L, acc);
            }
          }
          lanes_scatter<L>(dxt, nl, HW, dx + (n * C + c0) * HW);
          continue;
        }
        // Dilated kernels: scatter each output gradient to its taps (conflict-free across lanes).
        std::fill(dxt, dxt + HW * L, T(0));
        for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
          const std::int64_t ih0 = oh * s.stride_h - s.pad_top;
          std::int64_t ilo, ihi;
          tap_range(ih0, s.h, s.kh, s.dilation_h, ilo, ihi);
          for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
            const std::int64_t iw0 = ow * s.stride_w - s.pad_left;
            const std::int64_t jlo = ct[2 * ow], jhi = ct[2 * ow + 1];
            const V g = lane_load<V>(dyt + (oh * s.out_w + ow) * L);
            for (std::int64_t i = ilo; i < ihi; ++i) {
              const std::int64_t row = (ih0 + i * s.dilation_h) * s.w + iw0;
              for (std::int64_t j = jlo; j < jhi; ++j) {
                T* d = dxt + (row + j * s.dilation_w) * L;
                lane_store(d, lane_load<V>(d) + lane_load<V>(wb + (i * s.kw + j) * L) * g);
              }
            }
          }
        }
        lanes_scatter<L>(dxt, nl, HW, dx + (n * C + c0) * HW);
      }
    }
  }
}

template <typename T>
void lanes_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw, T* dbias) {
  using V = typename LaneTraits<T>::V;
  constexpr int L = LaneTraits<T>::L;
  const std::int64_t C = s.c_in, HW = s.h * s.w, P = s.out_h * s.out_w, K = s.kh * s.kw;
  const std::int64_t blocks = (C + L - 1) / L;
  // Taps outside the rectangle [i0, i1) x [j0, j1) never meet the input (a 5x5 on a 1x1 map has one tap
  // inside): their gradient is 0 and they are skipped.
  std::int64_t i0 = s.kh, i1 = 0, j0 = s.kw, j1 = 0;
  for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
    std::int64_t lo, hi;
    tap_range(oh * s.stride_h - s.pad_top, s.h, s.kh, s.dilation_h, lo, hi);
    if (lo < hi) i0 = std::min(i0, lo), i1 = std::max(i1, hi);
  }
  for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
    std::int64_t lo, hi;
    tap_range(ow * s.stride_w - s.pad_left, s.w, s.kw, s.dilation_w, lo, hi);
    if (lo < hi) j0 = std::min(j0, lo), j1 = std::max(j1, hi);
  }
  const std::int64_t* ct = forward_column_taps(s);
#pragma omp parallel
  {
    T* xt = thread_scratch<T, 0>(std::size_t(HW * L));
    T* dyt = thread_scratch<T, 1>(std::size_t(P * L));
    T* part = thread_scratch<T, 2>(std::size_t((K + 1) * L));  // this image's per-tap sums, then the bias sum
    double* total = thread_scratch<double, 3>(std::size_t((K + 1) * L));
#pragma omp for schedule(static)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::int64_t c0 = b * L, nl = std::min<std::int64_t>(L, C - c0);
      std::fill(total, total + (K + 1) * L, 0.0);
      for (std::int64_t n = 0; n < s.n; ++n) {
        lanes_gather<L>(dy + (n * C + c0) * P, nl, P, dyt);
        V gsum = V{};
        for (std::int64_t p = 0; p < P; ++p) gsum += lane_load<V>(dyt + p * L);
        lane_store(part + K * L, gsum);
        if (dw) {
          lanes_gather<L>(x + (n * C + c0) * HW, nl, HW, xt);
          for (std::int64_t i = i0; i < i1; ++i)
            std::fill(part + (i * s.kw + j0) * L, part + (i * s.kw + j1) * L, T(0));
          for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
            const std::int64_t ih0 = oh * s.stride_h - s.pad_top;
            std::int64_t ilo, ihi;
            tap_range(ih0, s.h, s.kh, s.dilation_h, ilo, ihi);
            for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
              const std::int64_t iw0 = ow * s.stride_w - s.pad_left;
              const std::int64_t jlo = ct[2 * ow], jhi = ct[2 * ow + 1];
              const V g = lane_load<V>(dyt + (oh * s.out_w + ow) * L);
              for (std::int64_t i = ilo; i < ihi; ++i) {
                const std::int64_t row = (ih0 + i * s.dilation_h) * s.w + iw0;
                for (std::int64_t j = jlo; j < jhi; ++j) {
                  T* a = part + (i * s.kw + j) * L;
                  lane_store(a, lane_load<V>(a) + g * lane_load<V>(xt + (row + j * s.dilation_w) * L));
                }
              }
            }
          }
        }
        if (dw)
          for (std::int64_t i = i0; i < i1; ++i) {
            const std::int64_t a = (i * s.kw + j0) * L, e = (i * s.kw + j1) * L;
#pragma omp simd
            for (std::int64_t k = a; k < e; ++k) total[k] += double(part[k]);
          }
#pragma omp simd
        for (std::int64_t k = K * L; k < (K + 1) * L; ++k) total[k] += double(part[k]);
      }
      for (std::int64_t l = 0; l < nl; ++l) {
        if (dw)
          for (std::int64_t k = 0; k < K; ++k) dw[(c0 + l) * K + k] = T(total[k * L + l]);
        if (dbias) dbias[c0 + l] = T(total[K * L + l]);
      }
    }
  }
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}  // namespace detail

// Depthwise forward y = dwconv(x, w) + bias.
// Requires: s passes check_conv2d_shape with groups == c_in > 1; x [n, c_in, h, w], w [c_out, 1, kh, kw],
// bias [c_out] or null, y [n, c_out, out_h, out_w], no aliasing.
// Ensures: every element of y is written.
namespace detail {
// The row kernel (any map size and channel multiplier); depthwise_conv2d_forward runs it when the lane kernel does not apply.
// Same contract as depthwise_conv2d_forward.
template <typename T>
void depthwise_rows_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  constexpr const char* op = "depthwise_conv2d_forward";
  (void)op;
  const std::int64_t mult = s.c_out / s.c_in, HW = s.h * s.w, P = s.out_h * s.out_w;
  const std::int64_t sw = s.stride_w;
  const detail::TapColumns taps_cols(s);
  // Output columns whose every tap column is inside the input: [a, e).
  const std::int64_t a = *std::max_element(taps_cols.lo.begin(), taps_cols.lo.end());
  const std::int64_t e = std::max(a, *std::min_element(taps_cols.hi.begin(), taps_cols.hi.end()));
  const bool fast = sw == 1 && s.dilation_w == 1 && s.kh <= detail::kMaxFastTaps &&
                    (s.kw == 3 || s.kw == 5 || s.kw == 7);
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t n = 0; n < s.n; ++n) {
    for (std::int64_t co = 0; co < s.c_out; ++co) {
      const T* xp = x + (n * s.c_in + co / mult) * HW;
      const T* wp = w + co * s.kh * s.kw;
      T* yp = y + (n * s.c_out + co) * P;
      const T b = bias ? bias[co] : T(0);
      for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
        T* yr = yp + oh * s.out_w;
        // Interior columns [a, e), where every tap column is inside the input (column stride and dilation 1):
        // all taps accumulate in a register per output (vectorised across ow), one store per output.
        std::int64_t a_row = 0, e_row = 0;
        if (fast) {
          const T* rows[detail::kMaxFastTaps];
          const T* wrows[detail::kMaxFastTaps];
          int nrows = 0;
          for (std::int64_t i = 0; i < s.kh; ++i) {
            const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
            if (ih < 0 || ih >= s.h) continue;
            rows[nrows] = xp + ih * s.w - s.pad_left;
            wrows[nrows++] = wp + i * s.kw;
          }
          a_row = a;
          e_row = e;
          detail::depthwise_row_interior(s.kw, rows, wrows, nrows, b, yr, a, e);
        }
        // Border columns [0, a) and [e, out_w): tap by tap over each tap's valid range, clipped to the border.
        for (std::int64_t ow = 0; ow < a_row; ++ow) yr[ow] = b;
        for (std::int64_t ow = e_row; ow < s.out_w; ++ow) yr[ow] = b;
        if (a_row == 0 && e_row == s.out_w) continue;
        for (std::int64_t i = 0; i < s.kh; ++i) {
          const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
          if (ih < 0 || ih >= s.h) continue;
          const T* xr = xp + ih * s.w;  // indexed with + off: off may be < 0
          for (std::int64_t j = 0; j < s.kw; ++j) {
            const std::size_t u = std::size_t(j);
            const std::int64_t off = taps_cols.off[u], lo = taps_cols.lo[u], hi = taps_cols.hi[u];
            const T wv = wp[i * s.kw + j];
            for (std::int64_t ow = lo; ow < std::min(hi, a_row); ++ow) yr[ow] += wv * xr[ow * sw + off];
            for (std::int64_t ow = std::max(lo, e_row); ow < hi; ++ow) yr[ow] += wv * xr[ow * sw + off];
          }
        }
      }
    }
  }
}
}  // namespace detail

template <typename T>
void depthwise_conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  constexpr const char* op = "depthwise_conv2d_forward";
  detail::check_depthwise(s, op);
  detail::check_pointers(op, {{x, "input"}, {w, "weight"}, {y, "output"}});
  if (detail::use_lanes<T>(s)) return detail::lanes_forward(s, x, w, bias, y);
  detail::depthwise_rows_forward(s, x, w, bias, y);
}

// Depthwise backward to the input.
// Requires: as depthwise_conv2d_forward; dy [n, c_out, out_h, out_w], dx [n, c_in, h, w], no aliasing.
// Ensures: every element of dx is overwritten with the gradient.
namespace detail {
// The row kernel (any map size and channel multiplier); depthwise_conv2d_backward_data runs it when the lane kernel does not apply.
// Same contract as depthwise_conv2d_backward_data.
template <typename T>
void depthwise_rows_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  constexpr const char* op = "depthwise_conv2d_backward_data";
  (void)op;
  const std::int64_t mult = s.c_out / s.c_in, HW = s.h * s.w, P = s.out_h * s.out_w;
  const std::int64_t sw = s.stride_w;
  const detail::TapColumns taps_cols(s);
  // Column stride and dilation 1 with a 3/5/7-wide kernel: gather form, one input row at a time (below).
  const bool fast = sw == 1 && s.dilation_w == 1 && mult * s.kh <= detail::kMaxFastTaps &&
                    (s.kw == 3 || s.kw == 5 || s.kw == 7);
  if (fast) {
    // dx[ih, iw] = sum over (co, i, j) of w[co, i, j] * dy[co, oh, iw + pad_left - j] with oh * stride_h =
    // ih + pad_top - i * dilation_h. Interior columns [ia, ie) have every tap inside dy's row.
    const std::int64_t ia = std::min(s.w, std::max<std::int64_t>(0, s.kw - 1 - s.pad_left));
    const std::int64_t ie = std::max(ia, std::min(s.w, s.out_w - s.pad_left));
#pragma omp parallel for collapse(2) schedule(static)
    for (std::int64_t n = 0; n < s.n; ++n) {
      for (std::int64_t ci = 0; ci < s.c_in; ++ci) {
        T* dxp = dx + (n * s.c_in + ci) * HW;
        for (std::int64_t ih = 0; ih < s.h; ++ih) {
          const T* rows[detail::kMaxFastTaps];
          const T* wrows[detail::kMaxFastTaps];
          int nrows = 0;
          for (std::int64_t q = 0; q < mult; ++q) {
            const std::int64_t co = ci * mult + q;
            for (std::int64_t i = 0; i < s.kh; ++i) {
              const std::int64_t t_ = ih + s.pad_top - i * s.dilation_h;
              if (t_ < 0 || t_ % s.stride_h != 0 || t_ / s.stride_h >= s.out_h) continue;
              rows[nrows] = dy + (n * s.c_out + co) * P + (t_ / s.stride_h) * s.out_w;
              wrows[nrows++] = w + (co * s.kh + i) * s.kw;
            }
          }
          T* dxr = dxp + ih * s.w;
          detail::depthwise_row_gather(s.kw, rows, wrows, nrows, s.pad_left, s.out_w, dxr, ia, ie, s.w);
        }
      }
    }
    return;
  }
  // General case: scatter. One thread owns a whole input plane (all `mult` output channels that read it), so
  // the scatter is race-free.
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t n = 0; n < s.n; ++n) {
    for (std::int64_t ci = 0; ci < s.c_in; ++ci) {
      T* dxp = dx + (n * s.c_in + ci) * HW;
      for (std::int64_t k = 0; k < HW; ++k) dxp[k] = T(0);
      for (std::int64_t q = 0; q < mult; ++q) {
        const std::int64_t co = ci * mult + q;
        const T* dyp = dy + (n * s.c_out + co) * P;
        const T* wp = w + co * s.kh * s.kw;
        for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
          const T* dyr = dyp + oh * s.out_w;
          for (std::int64_t i = 0; i < s.kh; ++i) {
            const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
            if (ih < 0 || ih >= s.h) continue;
            for (std::int64_t j = 0; j < s.kw; ++j) {
              const std::size_t u = std::size_t(j);
              const std::int64_t off = taps_cols.off[u], lo = taps_cols.lo[u], hi = taps_cols.hi[u];
              const T wv = wp[i * s.kw + j];
              T* dxr = dxp + ih * s.w;
              if (sw == 1) {
#pragma omp simd
                for (std::int64_t ow = lo; ow < hi; ++ow) dxr[ow + off] += wv * dyr[ow];
              } else {
                // distinct ow hit distinct input columns, so this strided scatter has no conflicts
                for (std::int64_t ow = lo; ow < hi; ++ow) dxr[ow * sw + off] += wv * dyr[ow];
              }
            }
          }
        }
      }
    }
  }
}
}  // namespace detail

template <typename T>
void depthwise_conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  constexpr const char* op = "depthwise_conv2d_backward_data";
  detail::check_depthwise(s, op);
  detail::check_pointers(op, {{dy, "output gradient"}, {w, "weight"}, {dx, "input gradient"}});
  if (detail::use_lanes<T>(s)) return detail::lanes_backward_data(s, dy, w, dx);
  detail::depthwise_rows_backward_data(s, dy, w, dx);
}

// Depthwise backward to the weight and bias.
// Requires: as depthwise_conv2d_forward; dw [c_out, 1, kh, kw] or null, dbias [c_out] or null.
// Ensures: dw and dbias are overwritten with the gradient summed over the batch. Per-image partial sums are
// taken in T and the batch total in double, so float results stay accurate over large batches.
namespace detail {
// The row kernel (any map size and channel multiplier); depthwise_conv2d_backward_weight runs it when the lane kernel does not apply.
// Same contract as depthwise_conv2d_backward_weight.
template <typename T>
void depthwise_rows_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw, T* dbias) {
  constexpr const char* op = "depthwise_conv2d_backward_weight";
  (void)op;
  const std::int64_t mult = s.c_out / s.c_in, HW = s.h * s.w, P = s.out_h * s.out_w;
  const std::int64_t sw = s.stride_w, taps = s.kh * s.kw;
  const detail::TapColumns taps_cols(s);
  const std::int64_t OW = s.out_w;
#pragma omp parallel
  {
    // Per-tap lane accumulators (taps x out_w, in L1): each row adds dy * x lane by lane, with no horizontal
    // sum per row; lanes are folded into the double totals once per image.
    std::vector<T> lanes(std::size_t(taps * OW));
    std::vector<double> acc(std::size_t(taps), 0.0);
#pragma omp for schedule(static)
    for (std::int64_t co = 0; co < s.c_out; ++co) {
      std::fill(acc.begin(), acc.end(), 0.0);
      double acc_bias = 0.0;
      for (std::int64_t n = 0; n < s.n; ++n) {
        const T* xp = x + (n * s.c_in + co / mult) * HW;
        const T* dyp = dy + (n * s.c_out + co) * P;
        if (dbias) {
          T rs = T(0);
#pragma omp simd reduction(+ : rs)
          for (std::int64_t k = 0; k < P; ++k) rs += dyp[k];
          acc_bias += rs;
        }
        if (!dw) continue;
        std::fill(lanes.begin(), lanes.end(), T(0));
        for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
          const T* dyr = dyp + oh * OW;
          for (std::int64_t i = 0; i < s.kh; ++i) {
            const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
            if (ih < 0 || ih >= s.h) continue;
            const T* xr = xp + ih * s.w;  // indexed with + off: off may be < 0
            for (std::int64_t j = 0; j < s.kw; ++j) {
              const std::size_t u = std::size_t(j);
              const std::int64_t off = taps_cols.off[u], lo = taps_cols.lo[u], hi = taps_cols.hi[u];
              T* lane = lanes.data() + (i * s.kw + j) * OW;
              if (sw == 1) {
#pragma omp simd
                for (std::int64_t ow = lo; ow < hi; ++ow) lane[ow] += dyr[ow] * xr[ow + off];
              } else {
#pragma omp simd
                for (std::int64_t ow = lo; ow < hi; ++ow) lane[ow] += dyr[ow] * xr[ow * sw + off];
              }
            }
          }
        }
        for (std::int64_t k = 0; k < taps; ++k) {
          const T* lane = lanes.data() + k * OW;
          T sum = T(0);
#pragma omp simd reduction(+ : sum)
          for (std::int64_t ow = 0; ow < OW; ++ow) sum += lane[ow];
          acc[std::size_t(k)] += double(sum);
        }
      }
      if (dw)
        for (std::int64_t k = 0; k < taps; ++k) dw[co * taps + k] = T(acc[std::size_t(k)]);
      if (dbias) dbias[co] = T(acc_bias);
    }
  }
}
}  // namespace detail

template <typename T>
void depthwise_conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw, T* dbias) {
  constexpr const char* op = "depthwise_conv2d_backward_weight";
  detail::check_depthwise(s, op);
  detail::check_pointers(op, {{x, "input"}, {dy, "output gradient"}});
  if (!dw && !dbias) return;
  if (detail::use_lanes<T>(s)) return detail::lanes_backward_weight(s, x, dy, dw, dbias);
  detail::depthwise_rows_backward_weight(s, x, dy, dw, dbias);
}

}  // namespace arclight::kernels::cpu
