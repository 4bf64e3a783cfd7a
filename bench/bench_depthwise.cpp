// Benchmarks of the CPU depthwise convolution (kernels/cpu/depthwise_conv2d.hpp) on every depthwise conv of
// efficientnet_b0 (timm padding: symmetric k/2-style pads; 3x3 and 5x5; stride 1 and 2) at the train-step
// benchmark's sizes: img 32 / batch 128 (maps 16x16 ... 1x1) and img 64 / batch 64 (32x32 ... 2x2). Each shape
// is timed forward, backward-data and backward-weight with the production kernel ("new") and, right after it,
// with a verbatim copy of the previous kernel ("old", below, kept here only as the baseline). The "B0All"
// rows run the 16 depthwise convs of one b0 pass in sequence, so their time is what a training step spends
// in the kernel. Run with OMP_NUM_THREADS=2 (the setting):
//   OMP_NUM_THREADS=2 build-dw/bench/bench_depthwise --benchmark_time_unit=ms
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "arclight/core/rng.hpp"
#include "kernels/cpu/conv2d.hpp"

// ---- the previous kernel, verbatim (namespace renamed), for the old-vs-new comparison only ----------------
namespace old_dw {
using namespace arclight::kernels;
using namespace arclight::kernels::cpu;

namespace detail {
using namespace arclight::kernels::cpu::detail;
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
}  // namespace detail

// Depthwise forward y = dwconv(x, w) + bias.
// Requires: s passes check_conv2d_shape with groups == c_in > 1; x [n, c_in, h, w], w [c_out, 1, kh, kw],
// bias [c_out] or null, y [n, c_out, out_h, out_w], no aliasing.
// Ensures: every element of y is written.
template <typename T>
void depthwise_conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  constexpr const char* op = "depthwise_conv2d_forward";
  detail::check_depthwise(s, op);
  detail::check_pointers(op, {{x, "input"}, {w, "weight"}, {y, "output"}});
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

// Depthwise backward to the input.
// Requires: as depthwise_conv2d_forward; dy [n, c_out, out_h, out_w], dx [n, c_in, h, w], no aliasing.
// Ensures: every element of dx is overwritten with the gradient.
template <typename T>
void depthwise_conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  constexpr const char* op = "depthwise_conv2d_backward_data";
  detail::check_depthwise(s, op);
  detail::check_pointers(op, {{dy, "output gradient"}, {w, "weight"}, {dx, "input gradient"}});
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

// Depthwise backward to the weight and bias.
// Requires: as depthwise_conv2d_forward; dw [c_out, 1, kh, kw] or null, dbias [c_out] or null.
// Ensures: dw and dbias are overwritten with the gradient summed over the batch. Per-image partial sums are
// taken in T and the batch total in double, so float results stay accurate over large batches.
template <typename T>
void depthwise_conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw, T* dbias) {
  constexpr const char* op = "depthwise_conv2d_backward_weight";
  detail::check_depthwise(s, op);
  detail::check_pointers(op, {{x, "input"}, {dy, "output gradient"}});
  if (!dw && !dbias) return;
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

}  // namespace old_dw

namespace {

namespace cpu = arclight::kernels::cpu;
using arclight::kernels::Conv2dParams;
using arclight::kernels::Conv2dShape;

struct DwConv {
  std::int64_t c, map, k, stride;
};
// efficientnet_b0's depthwise convs at a 32 px input (input map sizes); at 64 px every map doubles.
const std::vector<DwConv>& b0_convs_img32() {
  static const std::vector<DwConv> v = {
      {32, 16, 3, 1},  {96, 16, 3, 2},  {144, 8, 3, 1},  {144, 8, 5, 2},  {240, 4, 5, 1},  {240, 4, 3, 2},
      {480, 2, 3, 1},  {480, 2, 3, 1},  {480, 2, 5, 1},  {672, 2, 5, 1},  {672, 2, 5, 1},  {672, 2, 5, 2},
      {1152, 1, 5, 1}, {1152, 1, 5, 1}, {1152, 1, 5, 1}, {1152, 1, 3, 1}};
  return v;
}

Conv2dShape make_shape(std::int64_t n, const DwConv& d, std::int64_t scale) {
  Conv2dParams p;
  p.stride_h = p.stride_w = d.stride;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = ((d.stride - 1) + (d.k - 1)) / 2;  // timm get_padding
  p.groups = d.c;
  const std::int64_t in[4] = {n, d.c, d.map * scale, d.map * scale};
  const std::int64_t wt[4] = {d.c, 1, d.k, d.k};
  return cpu::make_conv2d_shape(in, wt, p, -1, "bench_depthwise");
}

std::vector<float> random_floats(std::int64_t n, std::uint64_t seed) {
  arclight::RandomStream rs(seed, 3);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& e : v) e = float(rs.uniform(-1.0, 1.0));
  return v;
}

enum class Pass { Fwd, BwdData, BwdWeight };

struct Buffers {
  std::vector<float> x, w, b, y, dy, dx, dw, db;
  explicit Buffers(const Conv2dShape& s)
      : x(random_floats(s.input_numel(), 1)),
        w(random_floats(s.weight_numel(), 2)),
        b(random_floats(s.c_out, 3)),
        y(std::size_t(s.output_numel())),
        dy(random_floats(s.output_numel(), 4)),
        dx(std::size_t(s.input_numel())),
        dw(std::size_t(s.weight_numel())),
        db(std::size_t(s.c_out)) {}
};

template <bool kNew>
void run_pass(Pass pass, const Conv2dShape& s, Buffers& B) {
  switch (pass) {
    case Pass::Fwd:
      if constexpr (kNew) cpu::depthwise_conv2d_forward<float>(s, B.x.data(), B.w.data(), B.b.data(), B.y.data());
      else old_dw::depthwise_conv2d_forward<float>(s, B.x.data(), B.w.data(), B.b.data(), B.y.data());
      benchmark::DoNotOptimize(B.y.data());
      break;
    case Pass::BwdData:
      if constexpr (kNew) cpu::depthwise_conv2d_backward_data<float>(s, B.dy.data(), B.w.data(), B.dx.data());
      else old_dw::depthwise_conv2d_backward_data<float>(s, B.dy.data(), B.w.data(), B.dx.data());
      benchmark::DoNotOptimize(B.dx.data());
      break;
    case Pass::BwdWeight:
      if constexpr (kNew)
        cpu::depthwise_conv2d_backward_weight<float>(s, B.x.data(), B.dy.data(), B.dw.data(), nullptr);
      else
        old_dw::depthwise_conv2d_backward_weight<float>(s, B.x.data(), B.dy.data(), B.dw.data(), nullptr);
      benchmark::DoNotOptimize(B.dw.data());
      break;
  }
  benchmark::ClobberMemory();
}

template <bool kNew>
void bench_one(benchmark::State& st, Conv2dShape s, Pass pass) {
  Buffers B(s);
  for (auto _ : st) run_pass<kNew>(pass, s, B);
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(s.macs()), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}

// All 16 depthwise convs of one b0 pass, forward + both backward passes (what one training step spends).
template <bool kNew>
void bench_all(benchmark::State& st, std::int64_t n, std::int64_t scale) {
  std::vector<Conv2dShape> shapes;
  std::vector<Buffers> bufs;
  for (const DwConv& d : b0_convs_img32()) shapes.push_back(make_shape(n, d, scale));
  for (const auto& s : shapes) bufs.emplace_back(s);
  for (auto _ : st)
    for (std::size_t i = 0; i < shapes.size(); ++i)
      for (Pass p : {Pass::Fwd, Pass::BwdData, Pass::BwdWeight}) run_pass<kNew>(p, shapes[i], bufs[i]);
}

std::string shape_name(const Conv2dShape& s) {
  return "n" + std::to_string(s.n) + "_c" + std::to_string(s.c_in) + "_" + std::to_string(s.h) + "x" +
         std::to_string(s.w) + "_k" + std::to_string(s.kh) + "_s" + std::to_string(s.stride_h);
}

int register_all() {
  const struct {
    std::int64_t img, n, scale;
  } sizes[] = {{32, 128, 1}, {64, 64, 2}};
  for (const auto& sz : sizes) {
    std::vector<std::string> seen;
    for (const DwConv& d : b0_convs_img32()) {
      const Conv2dShape s = make_shape(sz.n, d, sz.scale);
      const std::string name = "img" + std::to_string(sz.img) + "/" + shape_name(s);
      if (std::find(seen.begin(), seen.end(), name) != seen.end()) continue;
      seen.push_back(name);
      const std::pair<Pass, const char*> passes[] = {
          {Pass::Fwd, "Fwd"}, {Pass::BwdData, "BwdData"}, {Pass::BwdWeight, "BwdWeight"}};
      for (const auto& [pass, pname] : passes) {
        benchmark::RegisterBenchmark((std::string(pname) + "/" + name + "/new").c_str(), bench_one<true>, s, pass)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark((std::string(pname) + "/" + name + "/old").c_str(), bench_one<false>, s, pass)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
    const std::string all = "B0All/img" + std::to_string(sz.img) + "_n" + std::to_string(sz.n);
    benchmark::RegisterBenchmark((all + "/new").c_str(), bench_all<true>, sz.n, sz.scale)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((all + "/old").c_str(), bench_all<false>, sz.n, sz.scale)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  return 0;
}
const int registered = register_all();

}  // namespace
