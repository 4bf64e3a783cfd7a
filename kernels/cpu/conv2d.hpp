// CPU kernels of the 2-D convolution (NCHW, weights [c_out, c_in/groups, kh, kw]): forward, backward to the
// input and backward to the weight and bias, for any stride, explicit or TF-"same" padding, dilation and
// groups. Three algorithms sit behind one entry point per pass:
//   * 1x1, stride 1, unpadded: a plain GEMM on the NCHW image itself (no copy): y_n = W . x_n per group;
//   * depthwise (groups == c_in, any channel multiplier): a direct kernel (kernels/cpu/depthwise_conv2d.hpp);
//   * everything else: im2col + GEMM. The column buffer is bounded (kConvColumnBudgetBytes, 64 MiB by default):
//     whole images are batched into it while they fit, and an image whose columns do not fit is split into
//     bands of output rows, each band's GEMM writing straight into the NCHW output (ldc = out_h * out_w).
// GEMMs go through cblas (OpenBLAS); transposes are passed to BLAS, never materialised. Loops that are not
// GEMMs (im2col, col2im, bias, reductions) use OpenMP; BLAS is never called from inside a parallel region
// (OpenBLAS threads itself). The op layer (include/arclight/ops/conv2d.hpp) validates tensors with
// make_conv2d_shape and calls these; the kernels re-check the shape struct and throw arclight::Error.
#pragma once

#include <cblas.h>

#include "kernels/cpu/gemm.hpp"

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <initializer_list>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "arclight/core/error.hpp"
#include "kernels/common/conv_shape.hpp"

namespace arclight::kernels::cpu {

using kernels::Conv2dParams;
using kernels::Conv2dShape;
using kernels::PadMode;

// Default bound on the im2col column buffer: 64 MiB. Large enough that the GEMMs of every EfficientNet/NFNet
// layer at 224-300 px see whole images (so N = out_h*out_w stays large and BLAS runs near peak), small
// enough to stay far from the memory of a 2-core box. The buffer never exceeds max(budget, the columns of one
// output row of one image).
inline constexpr std::size_t kConvColumnBudgetBytes = std::size_t(64) << 20;

// 1x1 convolutions on maps of at most this many pixels fold the batch into one GEMM (see fold_batch_for_1x1).
inline constexpr std::int64_t kFoldBatchMaxPlane = 4;

// Which algorithm a convolution pass runs. Auto picks: Depthwise when groups == c_in > 1, Gemm1x1 for a
// 1x1 stride-1 unpadded kernel, Im2col otherwise. Forcing an algorithm the shape does not allow throws.
enum class ConvAlgo : int { Auto = 0, Gemm1x1 = 1, Im2col = 2, Depthwise = 3 };

struct Conv2dOptions {
  ConvAlgo algo = ConvAlgo::Auto;
  std::size_t column_budget_bytes = kConvColumnBudgetBytes;  // bound of the im2col buffer (see above)
};

namespace detail {

inline std::string dims_str(std::span<const std::int64_t> d) {
  std::string s = "[";
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

inline std::string shape_str(const Conv2dShape& s) {
  return str_cat("input [", s.n, ", ", s.c_in, ", ", s.h, ", ", s.w, "], weight [", s.c_out, ", ",
                 s.groups > 0 ? s.c_in / s.groups : s.c_in, ", ", s.kh, ", ", s.kw, "], stride (", s.stride_h, ", ",
                 s.stride_w, "), padding (top ", s.pad_top, ", bottom ", s.pad_bottom, ", left ", s.pad_left,
                 ", right ", s.pad_right, "), dilation (", s.dilation_h, ", ", s.dilation_w, "), groups ", s.groups);
}

using cpu::gemm;  // kernels/cpu/gemm.hpp: the one CBLAS entry point

// The output positions ow in [lo, hi) whose input column ow*stride + off falls inside [0, in_w).
// Ensures 0 <= lo <= hi <= out_w: callers fill [0, lo) and [hi, out_w) with padding values, so lo must never
// pass the row's end. (A tap that never reaches the input — a kernel wider than the map, e.g. a 5x5 on a 1x1
// map — has an empty range at out_w; before the clamp lo could exceed out_w and the callers wrote into the
// next row/plane: a race between threads and an overflow past the last plane.)
inline void valid_range(std::int64_t out_w, std::int64_t in_w, std::int64_t stride, std::int64_t off,
                        std::int64_t& lo, std::int64_t& hi) {
  lo = std::min(out_w, off >= 0 ? std::int64_t{0} : (-off + stride - 1) / stride);
  hi = (in_w - 1 - off) >= 0 ? std::min(out_w, (in_w - 1 - off) / stride + 1) : 0;
  if (hi < lo) hi = lo;
}

}  // namespace detail

// Validates a filled Conv2dShape. Requires nothing; ensures (or throws arclight::Error "<op>: ...") that all
// sizes are positive, strides/dilations >= 1, pads >= 0, groups divide both channel counts, the output is at
// least 1x1 and every GEMM dimension fits BLAS's int.
inline void check_conv2d_shape(const Conv2dShape& s, const char* op = "conv2d") {
  ARCLIGHT_CHECK(s.n > 0 && s.c_in > 0 && s.h > 0 && s.w > 0 && s.c_out > 0 && s.kh > 0 && s.kw > 0, op,
                 "all sizes must be positive, got ", detail::shape_str(s));
  ARCLIGHT_CHECK(s.stride_h >= 1 && s.stride_w >= 1, op, "stride must be >= 1, got (", s.stride_h, ", ", s.stride_w,
                 ")");
  ARCLIGHT_CHECK(s.dilation_h >= 1 && s.dilation_w >= 1, op, "dilation must be >= 1, got (", s.dilation_h, ", ",
                 s.dilation_w, ")");
  ARCLIGHT_CHECK(s.pad_top >= 0 && s.pad_bottom >= 0 && s.pad_left >= 0 && s.pad_right >= 0, op,
                 "padding must be >= 0, got (top ", s.pad_top, ", bottom ", s.pad_bottom, ", left ", s.pad_left,
                 ", right ", s.pad_right, ")");
  ARCLIGHT_CHECK(s.groups >= 1, op, "groups must be >= 1, got ", s.groups);
  ARCLIGHT_CHECK(s.c_in % s.groups == 0, op, "groups (", s.groups, ") must divide the input channels (", s.c_in,
                 ")");
  ARCLIGHT_CHECK(s.c_out % s.groups == 0, op, "groups (", s.groups, ") must divide the output channels (", s.c_out,
                 ")");
  ARCLIGHT_CHECK(s.out_h >= 1 && s.out_w >= 1, op, "output size must be positive, got ", s.out_h, "x", s.out_w,
                 " for ", detail::shape_str(s), "; expected the dilated kernel to fit in the padded input");
  const std::int64_t big = std::max({s.fan_in(), s.out_h * s.out_w, s.c_out, s.c_in});
  ARCLIGHT_CHECK(big <= INT_MAX, op, "a GEMM dimension (", big, ") exceeds BLAS's int range");
}

// Builds and validates the shape of a convolution from tensor dims, as the op layer sees them. Requires
// input_dims = [N, C_in, H, W], weight_dims = [C_out, C_in/groups, kh, kw], bias_numel = C_out or -1 for no
// bias. Ensures a checked Conv2dShape (pads resolved for PadMode::Same) or throws arclight::Error naming op,
// what was found and what was expected (wrong rank, channel mismatch, groups not dividing, empty output).
inline Conv2dShape make_conv2d_shape(std::span<const std::int64_t> input_dims,
                                     std::span<const std::int64_t> weight_dims, const Conv2dParams& p,
                                     std::int64_t bias_numel = -1, const char* op = "conv2d") {
  ARCLIGHT_CHECK(input_dims.size() == 4, op, "input must have rank 4 [N, C, H, W], got rank ", input_dims.size(),
                 " ", detail::dims_str(input_dims));
  ARCLIGHT_CHECK(weight_dims.size() == 4, op, "weight must have rank 4 [C_out, C_in/groups, kH, kW], got rank ",
                 weight_dims.size(), " ", detail::dims_str(weight_dims));
  ARCLIGHT_CHECK(p.groups >= 1, op, "groups must be >= 1, got ", p.groups);
  const std::int64_t c_in = input_dims[1], c_out = weight_dims[0];
  ARCLIGHT_CHECK(c_in % p.groups == 0, op, "groups (", p.groups, ") must divide the input channels (", c_in, ")");
  ARCLIGHT_CHECK(c_out % p.groups == 0, op, "groups (", p.groups, ") must divide the output channels (", c_out,
                 ")");
  ARCLIGHT_CHECK(weight_dims[1] * p.groups == c_in, op, "channel mismatch: input ", detail::dims_str(input_dims),
                 " has ", c_in, " channels but weight ", detail::dims_str(weight_dims), " with groups=", p.groups,
                 " expects ", weight_dims[1] * p.groups);
  ARCLIGHT_CHECK(bias_numel < 0 || bias_numel == c_out, op, "bias has ", bias_numel, " elements, expected ", c_out,
                 " (one per output channel)");
  if (p.pad_mode == PadMode::Explicit) {
    ARCLIGHT_CHECK(p.pad_top >= 0 && p.pad_bottom >= 0 && p.pad_left >= 0 && p.pad_right >= 0, op,
                   "padding must be >= 0, got (top ", p.pad_top, ", bottom ", p.pad_bottom, ", left ", p.pad_left,
                   ", right ", p.pad_right, ")");
  }
  ARCLIGHT_CHECK(p.stride_h >= 1 && p.stride_w >= 1, op, "stride must be >= 1, got (", p.stride_h, ", ", p.stride_w,
                 ")");
  const Conv2dShape s = kernels::conv2d_shape(input_dims[0], c_in, input_dims[2], input_dims[3], c_out,
                                              weight_dims[2], weight_dims[3], p);
  check_conv2d_shape(s, op);
  return s;
}

// True when the direct depthwise kernel applies: one group per input channel (c_out = multiplier * c_in).
inline bool is_depthwise(const Conv2dShape& s) { return s.groups == s.c_in && s.groups > 1; }

// True when the conv is a plain GEMM on the image: 1x1 kernel, stride 1, no padding (dilation is moot).
inline bool is_pointwise_gemm(const Conv2dShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 && s.pad_bottom == 0 &&
         s.pad_left == 0 && s.pad_right == 0;
}

// The algorithm a pass will run for this shape and these options; throws when a forced one does not apply.
inline ConvAlgo resolve_conv_algo(const Conv2dShape& s, ConvAlgo requested, const char* op = "conv2d") {
  if (requested == ConvAlgo::Auto) {
    if (is_depthwise(s)) return ConvAlgo::Depthwise;
    if (is_pointwise_gemm(s)) return ConvAlgo::Gemm1x1;
    return ConvAlgo::Im2col;
  }
  ARCLIGHT_CHECK(requested != ConvAlgo::Depthwise || is_depthwise(s), op,
                 "the depthwise algorithm needs groups == input channels > 1, got ", detail::shape_str(s));
  ARCLIGHT_CHECK(requested != ConvAlgo::Gemm1x1 || is_pointwise_gemm(s), op,
                 "the 1x1 GEMM algorithm needs a 1x1 kernel, stride 1 and no padding, got ", detail::shape_str(s));
  return requested;
}

// How the im2col buffer is tiled: `images` whole images at a time, or (images == 1) bands of `rows` output
// rows of one image; `elems` is the buffer size in elements.
struct ColumnTiling {
  std::int64_t images = 1;
  std::int64_t rows = 1;
  std::int64_t elems = 0;
};

inline ColumnTiling plan_column_tiling(const Conv2dShape& s, std::size_t elem_size, std::size_t budget_bytes) {
  ColumnTiling t;
  const std::int64_t rows_k = s.c_in * s.kh * s.kw;  // column-matrix rows, all groups
  const std::int64_t per_image = rows_k * s.out_h * s.out_w;
  const std::int64_t budget = std::int64_t(budget_bytes / elem_size);
  if (per_image <= budget) {
    t.images = std::max<std::int64_t>(1, std::min(s.n, budget / per_image));
    t.rows = s.out_h;
  } else {
    t.images = 1;
    t.rows = std::clamp<std::int64_t>(budget / (rows_k * s.out_w), 1, s.out_h);
  }
  t.elems = t.images * rows_k * t.rows * s.out_w;
  return t;
}

// Elements of scratch a pass needs when the caller supplies the workspace (0 for the 1x1 and depthwise paths).
// The same size serves forward, backward-data and backward-weight.
template <typename T>
std::int64_t conv2d_workspace_elems(const Conv2dShape& s, const Conv2dOptions& opt = {}) {
  if (resolve_conv_algo(s, opt.algo) != ConvAlgo::Im2col) return 0;
  return plan_column_tiling(s, sizeof(T), opt.column_budget_bytes).elems;
}

// im2col of output rows [r0, r1) of one image x_img [c_in, h, w] into col [c_in*kh*kw, (r1-r0)*out_w]
// (row index (c*kh + i)*kw + j); zero where the window reads padding. Channels [c0, c1) only.
template <typename T>
void im2col_rows(const Conv2dShape& s, const T* x_img, std::int64_t r0, std::int64_t r1, std::int64_t c0,
                 std::int64_t c1, T* col) {
  const std::int64_t band = (r1 - r0) * s.out_w;
  for (std::int64_t c = c0; c < c1; ++c) {
    const T* xc = x_img + c * s.h * s.w;
    for (std::int64_t i = 0; i < s.kh; ++i) {
      for (std::int64_t j = 0; j < s.kw; ++j) {
        T* dst = col + ((c * s.kh + i) * s.kw + j) * band;
        const std::int64_t off = j * s.dilation_w - s.pad_left;
        std::int64_t lo, hi;
        detail::valid_range(s.out_w, s.w, s.stride_w, off, lo, hi);
        for (std::int64_t oh = r0; oh < r1; ++oh) {
          T* d = dst + (oh - r0) * s.out_w;
          const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
          if (ih < 0 || ih >= s.h) {
            for (std::int64_t ow = 0; ow < s.out_w; ++ow) d[ow] = T(0);
            continue;
          }
          const T* xr = xc + ih * s.w;  // indexed with + off: off may be < 0
          for (std::int64_t ow = 0; ow < lo; ++ow) d[ow] = T(0);
          if (s.stride_w == 1) {
#pragma omp simd
            for (std::int64_t ow = lo; ow < hi; ++ow) d[ow] = xr[ow + off];
          } else {
            for (std::int64_t ow = lo; ow < hi; ++ow) d[ow] = xr[ow * s.stride_w + off];
          }
          for (std::int64_t ow = hi; ow < s.out_w; ++ow) d[ow] = T(0);
        }
      }
    }
  }
}

// col2im: the adjoint of im2col_rows. Accumulates (+=) col into dx_img for channels [c0, c1).
template <typename T>
void col2im_rows_accumulate(const Conv2dShape& s, const T* col, std::int64_t r0, std::int64_t r1, std::int64_t c0,
                            std::int64_t c1, T* dx_img) {
  const std::int64_t band = (r1 - r0) * s.out_w;
  for (std::int64_t c = c0; c < c1; ++c) {
    T* dxc = dx_img + c * s.h * s.w;
    for (std::int64_t i = 0; i < s.kh; ++i) {
      for (std::int64_t j = 0; j < s.kw; ++j) {
        const T* src = col + ((c * s.kh + i) * s.kw + j) * band;
        const std::int64_t off = j * s.dilation_w - s.pad_left;
        std::int64_t lo, hi;
        detail::valid_range(s.out_w, s.w, s.stride_w, off, lo, hi);
        for (std::int64_t oh = r0; oh < r1; ++oh) {
          const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
          if (ih < 0 || ih >= s.h) continue;
          const T* sr = src + (oh - r0) * s.out_w;
          T* dr = dxc + ih * s.w;
          if (s.stride_w == 1) {
#pragma omp simd
            for (std::int64_t ow = lo; ow < hi; ++ow) dr[ow + off] += sr[ow];
          } else {
            for (std::int64_t ow = lo; ow < hi; ++ow) dr[ow * s.stride_w + off] += sr[ow];
          }
        }
      }
    }
  }
}

namespace detail {

// The im2col buffer: the caller's workspace when one is given (checked for size), else a local allocation.
// Per-thread scratch memory for kernel temporaries (im2col columns, folded operands): `slot` 0..2 name
// independent buffers; each grows to the largest size asked for and is kept for the thread's life, so the
// steady state of a training loop allocates nothing. Contents are uninitialised.
template <typename T>
T* scratch(int slot, std::int64_t elems) {
  thread_local std::unique_ptr<T[]> bufs[3];
  thread_local std::int64_t caps[3] = {0, 0, 0};
  if (caps[slot] < elems) {
    bufs[slot].reset();
    bufs[slot].reset(new T[std::size_t(elems)]);
    caps[slot] = elems;
  }
  return bufs[slot].get();
}

template <typename T>
struct ColumnBuffer {
  T* data = nullptr;
  ColumnBuffer(std::int64_t elems, std::span<T> workspace, const char* op) {
    if (!workspace.empty()) {
      ARCLIGHT_CHECK(std::int64_t(workspace.size()) >= elems, op, "workspace has ", workspace.size(),
                     " elements, the column buffer needs ", elems, " (see conv2d_workspace_elems)");
      data = workspace.data();
    } else {
      data = scratch<T>(0, elems);
    }
  }
};

// y [n, c] += bias[c] per row.
template <typename T>
void add_row_bias(T* y, std::int64_t n, std::int64_t c, const T* bias) {
  for (std::int64_t b = 0; b < n; ++b) {
    T* row = y + b * c;
#pragma omp simd
    for (std::int64_t ch = 0; ch < c; ++ch) row[ch] += bias[ch];
  }
}

// [n, c, P] → [c, n·P] (the batch folded into the GEMM's column dimension). Parallel over channels.
template <typename T>
void fold_batch(const T* x, std::int64_t n, std::int64_t c, std::int64_t P, T* out) {
#pragma omp parallel for schedule(static) if (n * c * P >= (1 << 14))
  for (std::int64_t ch = 0; ch < c; ++ch)
    for (std::int64_t b = 0; b < n; ++b) std::memcpy(out + (ch * n + b) * P, x + (b * c + ch) * P, std::size_t(P) * sizeof(T));
}

// [c, n·P] → [n, c, P], adding bias[ch] when given.
template <typename T>
void unfold_batch(const T* in, std::int64_t n, std::int64_t c, std::int64_t P, const T* bias, T* y) {
#pragma omp parallel for collapse(2) schedule(static) if (n * c * P >= (1 << 14))
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t ch = 0; ch < c; ++ch) {
      const T* src = in + (ch * n + b) * P;
      T* dst = y + (b * c + ch) * P;
      const T v = bias ? bias[ch] : T(0);
#pragma omp simd
      for (std::int64_t p = 0; p < P; ++p) dst[p] = src[p] + v;
    }
}

// Whether a 1x1 pass folds the batch into one GEMM instead of one GEMM per image. On 1x1 maps (P = 1) the
// tensors already are [n, c] matrices and one GEMM replaces n matrix-vector products with no copy; on 2x2
// maps the operands are copied to [c, n·P] and back, which costs less than n very skinny GEMMs (OpenBLAS
// measured up to 8x slower on 128 per-image [320 x 4 x 1152] products than on the folded one). From 3x3 up
// the copies cost more than they save (measured with /tmp-style side-by-side runs of both paths; see
// bench/RESULTS.md, "1x1 convolutions").
inline bool fold_batch_for_1x1(const Conv2dShape& s) {
  return s.groups == 1 && s.n > 1 && s.out_h * s.out_w <= kFoldBatchMaxPlane;
}

// Whether an im2col pass runs one task per image (gemm_tasks: OpenMP threads over images, each with its own
// whole-image column buffer and a single-threaded GEMM) instead of the tiled loop that hands each GEMM to a
// multi-threaded BLAS: when no caller workspace is imposed, the batch has two or more images, and one image's
// columns take at most 1/8 of the column budget (each thread holds one such buffer). Per-image GEMMs at
// 28–56 px are too small for BLAS's own threading to pay (bench/RESULTS.md, "CPU train step": 2–5x on the
// retrieval app's 3x3 convs). The choice does not depend on the thread count, so neither do the results.
inline bool image_tasks(const Conv2dShape& s, std::size_t elem_size, const Conv2dOptions& opt, bool no_workspace) {
  const std::size_t per_image = std::size_t(s.fan_in() * s.groups * s.out_h * s.out_w) * elem_size;
  return no_workspace && s.n >= 2 && per_image <= opt.column_budget_bytes / 8;
}

// Images per chunk of a weight-gradient sum: dW = Σ_chunks (Σ_{n in chunk} per-image terms), with
// min(n, kWeightGradChunks) contiguous chunks summed in order — the same rounding for any thread count.
inline constexpr std::int64_t kWeightGradChunks = 8;

// Runs term(n, dwc, first) for every image n, accumulating into chunk-private buffers dwc (first: overwrite),
// chunks spread over threads by gemm_tasks, then dw = the chunk buffers summed in chunk order.
template <typename T, typename F>
void weight_grad_chunks(const Conv2dShape& s, T* dw, F&& term) {
  const std::int64_t chunks = std::min<std::int64_t>(s.n, kWeightGradChunks), wn = s.weight_numel();
  T* part = scratch<T>(2, chunks * wn);
  gemm_tasks(chunks, [&](std::int64_t c) {
    const std::int64_t b0 = c * s.n / chunks, b1 = (c + 1) * s.n / chunks;
    for (std::int64_t n = b0; n < b1; ++n) term(n, part + c * wn, n == b0);
  });
#pragma omp parallel for schedule(static) if (wn >= (1 << 14))
  for (std::int64_t i = 0; i < wn; ++i) {
    T acc = part[i];
    for (std::int64_t c = 1; c < chunks; ++c) acc += part[c * wn + i];
    dw[i] = acc;
  }
}

// Visits the tiles of the im2col plan: f(n0, nb, r0, r1).
template <typename F>
void for_each_tile(const Conv2dShape& s, const ColumnTiling& t, F&& f) {
  for (std::int64_t n0 = 0; n0 < s.n; n0 += t.images) {
    const std::int64_t nb = std::min(t.images, s.n - n0);
    for (std::int64_t r0 = 0; r0 < s.out_h; r0 += t.rows) f(n0, nb, r0, std::min(r0 + t.rows, s.out_h));
  }
}

inline void check_pointers(const char* op, std::initializer_list<std::pair<const void*, const char*>> ptrs) {
  for (const auto& [p, name] : ptrs) ARCLIGHT_CHECK(p != nullptr, op, name, " must not be null");
}

// Writes bias[co] into rows [r0, r1) of every output channel of images [n0, n0+nb) (or zero when bias is
// null): the GEMMs then accumulate with beta = 1.
template <typename T>
void fill_output_rows(const Conv2dShape& s, const T* bias, std::int64_t n0, std::int64_t nb, std::int64_t r0,
                      std::int64_t r1, T* y) {
  const std::int64_t plane = s.out_h * s.out_w;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t b = 0; b < nb; ++b) {
    for (std::int64_t co = 0; co < s.c_out; ++co) {
      T* yr = y + ((n0 + b) * s.c_out + co) * plane + r0 * s.out_w;
      const T v = bias ? bias[co] : T(0);
      for (std::int64_t k = 0; k < (r1 - r0) * s.out_w; ++k) yr[k] = v;
    }
  }
}

}  // namespace detail

// Forward declarations of the direct depthwise kernels (defined in kernels/cpu/depthwise_conv2d.hpp, which
// this header includes at its end).
template <typename T>
void depthwise_conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);
template <typename T>
void depthwise_conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx);
template <typename T>
void depthwise_conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw, T* dbias);

// Forward convolution y = conv(x, w) + bias.
// Requires: s passes check_conv2d_shape; x [n, c_in, h, w], w [c_out, c_in/groups, kh, kw], bias [c_out] or
// null, y [n, c_out, out_h, out_w], contiguous, y not aliasing the inputs; workspace empty (allocated
// internally) or at least conv2d_workspace_elems<T>(s, opt) elements (else throws; its contents are ignored).
// Ensures: every element of y is written (its previous contents are ignored).
template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y, const Conv2dOptions& opt = {},
                    std::type_identity_t<std::span<T>> workspace = {}) {
  constexpr const char* op = "conv2d_forward";
  check_conv2d_shape(s, op);
  detail::check_pointers(op, {{x, "input"}, {w, "weight"}, {y, "output"}});
  const ConvAlgo algo = resolve_conv_algo(s, opt.algo, op);
  if (algo == ConvAlgo::Depthwise) return depthwise_conv2d_forward(s, x, w, bias, y);

  const std::int64_t G = s.groups, cig = s.c_in_per_group(), cog = s.c_out_per_group();
  const std::int64_t K = s.fan_in(), P = s.out_h * s.out_w;
  if (algo == ConvAlgo::Gemm1x1 && detail::fold_batch_for_1x1(s)) {
    if (P == 1) {  // Y [n, c_out] = X [n, c_in] . W^T, then the bias
      detail::gemm<T>(false, true, s.n, s.c_out, s.c_in, T(1), x, s.c_in, w, K, T(0), y, s.c_out);
      if (bias) detail::add_row_bias(y, s.n, s.c_out, bias);
      return;
    }
    // Y (c_out x n·P) = W (c_out x c_in) . X (c_in x n·P), with X and Y the batch-folded copies.
    T* xf = detail::scratch<T>(1, s.c_in * s.n * P);
    T* yf = detail::scratch<T>(2, s.c_out * s.n * P);
    detail::fold_batch(x, s.n, s.c_in, P, xf);
    detail::gemm<T>(false, false, s.c_out, s.n * P, s.c_in, T(1), w, K, xf, s.n * P, T(0), yf, s.n * P);
    detail::unfold_batch(yf, s.n, s.c_out, P, bias, y);
    return;
  }
  if (algo == ConvAlgo::Gemm1x1) {
    // y_n[g] (cog x P) = W[g] (cog x cig) . x_n[g] (cig x P): the image is already the column matrix.
    if (bias) detail::fill_output_rows(s, bias, 0, s.n, 0, s.out_h, y);
    gemm_tasks(s.n * G, [&](std::int64_t i) {
      const std::int64_t n = i / G, g = i % G;
      detail::gemm<T>(false, false, cog, P, cig, T(1), w + g * cog * K, K, x + (n * s.c_in + g * cig) * P, P,
                      bias ? T(1) : T(0), y + (n * s.c_out + g * cog) * P, P);
    });
    return;
  }

  if (detail::image_tasks(s, sizeof(T), opt, workspace.empty())) {
    // One task per image on its thread's own column buffer: im2col, then the GEMM(s) (single-threaded BLAS).
    if (bias) detail::fill_output_rows(s, bias, 0, s.n, 0, s.out_h, y);
    gemm_tasks(s.n, [&](std::int64_t n) {
      T* col = detail::scratch<T>(0, s.fan_in() * s.groups * P);
      im2col_rows(s, x + n * s.c_in * s.h * s.w, 0, s.out_h, 0, s.c_in, col);
      for (std::int64_t g = 0; g < G; ++g)
        detail::gemm<T>(false, false, cog, P, K, T(1), w + g * cog * K, K, col + g * K * P, P, bias ? T(1) : T(0),
                        y + (n * s.c_out + g * cog) * P, P);
    });
    return;
  }
  const ColumnTiling t = plan_column_tiling(s, sizeof(T), opt.column_budget_bytes);
  detail::ColumnBuffer<T> buf(t.elems, workspace, op);
  const std::int64_t rows_k = s.c_in * s.kh * s.kw;
  detail::for_each_tile(s, t, [&](std::int64_t n0, std::int64_t nb, std::int64_t r0, std::int64_t r1) {
    const std::int64_t band = (r1 - r0) * s.out_w;
#pragma omp parallel for collapse(2) schedule(static)
    for (std::int64_t b = 0; b < nb; ++b)
      for (std::int64_t c = 0; c < s.c_in; ++c)
        im2col_rows(s, x + (n0 + b) * s.c_in * s.h * s.w, r0, r1, c, c + 1, buf.data + b * rows_k * band);
    if (bias) detail::fill_output_rows(s, bias, n0, nb, r0, r1, y);
    for (std::int64_t b = 0; b < nb; ++b)
      for (std::int64_t g = 0; g < G; ++g)
        detail::gemm<T>(false, false, cog, band, K, T(1), w + g * cog * K, K, buf.data + (b * rows_k + g * K) * band,
                        band, bias ? T(1) : T(0), y + ((n0 + b) * s.c_out + g * cog) * P + r0 * s.out_w, P);
  });
}

// Backward to the input: dx = conv_transpose(dy, w).
// Requires: as conv2d_forward; dy [n, c_out, out_h, out_w], dx [n, c_in, h, w] not aliasing dy or w.
// Ensures: every element of dx is written (overwritten, not accumulated).
template <typename T>
void conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx, const Conv2dOptions& opt = {},
                          std::type_identity_t<std::span<T>> workspace = {}) {
  constexpr const char* op = "conv2d_backward_data";
  check_conv2d_shape(s, op);
  detail::check_pointers(op, {{dy, "output gradient"}, {w, "weight"}, {dx, "input gradient"}});
  const ConvAlgo algo = resolve_conv_algo(s, opt.algo, op);
  if (algo == ConvAlgo::Depthwise) return depthwise_conv2d_backward_data(s, dy, w, dx);

  const std::int64_t G = s.groups, cig = s.c_in_per_group(), cog = s.c_out_per_group();
  const std::int64_t K = s.fan_in(), P = s.out_h * s.out_w, HW = s.h * s.w;
  if (algo == ConvAlgo::Gemm1x1 && detail::fold_batch_for_1x1(s)) {
    if (P == 1) {  // dX [n, c_in] = dY [n, c_out] . W
      detail::gemm<T>(false, false, s.n, s.c_in, s.c_out, T(1), dy, s.c_out, w, K, T(0), dx, s.c_in);
      return;
    }
    // dX (c_in x n·P) = W^T (c_in x c_out) . dY (c_out x n·P), batch-folded.
    T* dyf = detail::scratch<T>(1, s.c_out * s.n * P);
    T* dxf = detail::scratch<T>(2, s.c_in * s.n * P);
    detail::fold_batch(dy, s.n, s.c_out, P, dyf);
    detail::gemm<T>(true, false, s.c_in, s.n * P, s.c_out, T(1), w, K, dyf, s.n * P, T(0), dxf, s.n * P);
    detail::unfold_batch<T>(dxf, s.n, s.c_in, P, nullptr, dx);
    return;
  }
  if (algo == ConvAlgo::Gemm1x1) {
    // dx_n[g] (cig x P) = W[g]^T (cig x cog) . dy_n[g] (cog x P).
    gemm_tasks(s.n * G, [&](std::int64_t i) {
      const std::int64_t n = i / G, g = i % G;
      detail::gemm<T>(true, false, cig, P, cog, T(1), w + g * cog * K, K, dy + (n * s.c_out + g * cog) * P, P, T(0),
                      dx + (n * s.c_in + g * cig) * P, P);
    });
    return;
  }

  if (detail::image_tasks(s, sizeof(T), opt, workspace.empty())) {
    // One task per image: dcol = W^T · dy_n on the thread's own buffer, then col2im into its dx_n.
    gemm_tasks(s.n, [&](std::int64_t n) {
      T* col = detail::scratch<T>(0, s.fan_in() * s.groups * P);
      for (std::int64_t g = 0; g < G; ++g)
        detail::gemm<T>(true, false, K, P, cog, T(1), w + g * cog * K, K, dy + (n * s.c_out + g * cog) * P, P, T(0),
                        col + g * K * P, P);
      T* dxn = dx + n * s.c_in * HW;
      std::fill(dxn, dxn + s.c_in * HW, T(0));
      col2im_rows_accumulate(s, col, 0, s.out_h, 0, s.c_in, dxn);
    });
    return;
  }
  const ColumnTiling t = plan_column_tiling(s, sizeof(T), opt.column_budget_bytes);
  detail::ColumnBuffer<T> buf(t.elems, workspace, op);
  const std::int64_t rows_k = s.c_in * s.kh * s.kw;
  const std::int64_t total = s.n * s.c_in * HW;
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < total; ++i) dx[i] = T(0);
  detail::for_each_tile(s, t, [&](std::int64_t n0, std::int64_t nb, std::int64_t r0, std::int64_t r1) {
    const std::int64_t band = (r1 - r0) * s.out_w;
    // dcol[g] (K x band) = W[g]^T (K x cog) . dy[g] (cog x band)
    for (std::int64_t b = 0; b < nb; ++b)
      for (std::int64_t g = 0; g < G; ++g)
        detail::gemm<T>(true, false, K, band, cog, T(1), w + g * cog * K, K,
                        dy + ((n0 + b) * s.c_out + g * cog) * P + r0 * s.out_w, P, T(0),
                        buf.data + (b * rows_k + g * K) * band, band);
#pragma omp parallel for collapse(2) schedule(static)
    for (std::int64_t b = 0; b < nb; ++b)
      for (std::int64_t c = 0; c < s.c_in; ++c)
        col2im_rows_accumulate(s, buf.data + b * rows_k * band, r0, r1, c, c + 1, dx + (n0 + b) * s.c_in * HW);
  });
}

// Backward to the weight and bias: dw = sum_n dy_n . col(x_n)^T, dbias[co] = sum over n, out_h, out_w of dy.
// Requires: as conv2d_forward; dw [c_out, c_in/groups, kh, kw] or null (skipped), dbias [c_out] or null.
// Ensures: dw and dbias are overwritten with the gradient summed over the batch (not accumulated into).
template <typename T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw, T* dbias,
                            const Conv2dOptions& opt = {}, std::type_identity_t<std::span<T>> workspace = {}) {
  constexpr const char* op = "conv2d_backward_weight";
  check_conv2d_shape(s, op);
  detail::check_pointers(op, {{x, "input"}, {dy, "output gradient"}});
  const ConvAlgo algo = resolve_conv_algo(s, opt.algo, op);
  if (algo == ConvAlgo::Depthwise) return depthwise_conv2d_backward_weight(s, x, dy, dw, dbias);

  const std::int64_t G = s.groups, cig = s.c_in_per_group(), cog = s.c_out_per_group();
  const std::int64_t K = s.fan_in(), P = s.out_h * s.out_w;
  if (dbias) {
#pragma omp parallel for schedule(static)
    for (std::int64_t co = 0; co < s.c_out; ++co) {
      double acc = 0;  // double: the sum runs over n*out_h*out_w terms
      for (std::int64_t n = 0; n < s.n; ++n) {
        const T* d = dy + (n * s.c_out + co) * P;
        for (std::int64_t p = 0; p < P; ++p) acc += d[p];
      }
      dbias[co] = T(acc);
    }
  }
  if (!dw) return;
  if (algo == ConvAlgo::Gemm1x1 && detail::fold_batch_for_1x1(s)) {
    if (P == 1) {  // dW [c_out, c_in] = dY^T . X
      detail::gemm<T>(true, false, s.c_out, s.c_in, s.n, T(1), dy, s.c_out, x, s.c_in, T(0), dw, K);
      return;
    }
    // dW (c_out x c_in) = dY (c_out x n·P) . X^T (n·P x c_in), batch-folded: one GEMM with k = n·P.
    T* dyf = detail::scratch<T>(1, s.c_out * s.n * P);
    T* xf = detail::scratch<T>(2, s.c_in * s.n * P);
    detail::fold_batch(dy, s.n, s.c_out, P, dyf);
    detail::fold_batch(x, s.n, s.c_in, P, xf);
    detail::gemm<T>(false, true, s.c_out, s.c_in, s.n * P, T(1), dyf, s.n * P, xf, s.n * P, T(0), dw, K);
    return;
  }
  if (algo == ConvAlgo::Gemm1x1) {
    // dW[g] (cog x cig) = Σ_n dy_n[g] (cog x P) . x_n[g]^T (P x cig), summed in fixed chunks of images.
    detail::weight_grad_chunks(s, dw, [&](std::int64_t n, T* dwc, bool first) {
      for (std::int64_t g = 0; g < G; ++g)
        detail::gemm<T>(false, true, cog, cig, P, T(1), dy + (n * s.c_out + g * cog) * P, P,
                        x + (n * s.c_in + g * cig) * P, P, first ? T(0) : T(1), dwc + g * cog * K, K);
    });
    return;
  }
  if (detail::image_tasks(s, sizeof(T), opt, workspace.empty())) {
    // dW[g] = Σ_n dy_n[g] . col(x_n)[g]^T, each chunk of images on one thread with its own column buffer.
    detail::weight_grad_chunks(s, dw, [&](std::int64_t n, T* dwc, bool first) {
      T* col = detail::scratch<T>(0, s.fan_in() * s.groups * P);
      im2col_rows(s, x + n * s.c_in * s.h * s.w, 0, s.out_h, 0, s.c_in, col);
      for (std::int64_t g = 0; g < G; ++g)
        detail::gemm<T>(false, true, cog, K, P, T(1), dy + (n * s.c_out + g * cog) * P, P, col + g * K * P, P,
                        first ? T(0) : T(1), dwc + g * cog * K, K);
    });
    return;
  }
  for (std::int64_t i = 0; i < s.weight_numel(); ++i) dw[i] = T(0);

  const ColumnTiling t = plan_column_tiling(s, sizeof(T), opt.column_budget_bytes);
  detail::ColumnBuffer<T> buf(t.elems, workspace, op);
  const std::int64_t rows_k = s.c_in * s.kh * s.kw;
  detail::for_each_tile(s, t, [&](std::int64_t n0, std::int64_t nb, std::int64_t r0, std::int64_t r1) {
    const std::int64_t band = (r1 - r0) * s.out_w;
#pragma omp parallel for collapse(2) schedule(static)
    for (std::int64_t b = 0; b < nb; ++b)
      for (std::int64_t c = 0; c < s.c_in; ++c)
        im2col_rows(s, x + (n0 + b) * s.c_in * s.h * s.w, r0, r1, c, c + 1, buf.data + b * rows_k * band);
    // dW[g] (cog x K) += dy[g] (cog x band) . col[g]^T (band x K)
    for (std::int64_t b = 0; b < nb; ++b)
      for (std::int64_t g = 0; g < G; ++g)
        detail::gemm<T>(false, true, cog, K, band, T(1), dy + ((n0 + b) * s.c_out + g * cog) * P + r0 * s.out_w, P,
                        buf.data + (b * rows_k + g * K) * band, band, T(1), dw + g * cog * K, K);
  });
}

}  // namespace arclight::kernels::cpu

#include "kernels/cpu/depthwise_conv2d.hpp"
