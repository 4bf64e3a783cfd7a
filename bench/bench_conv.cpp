// Benchmarks of the production convolution kernels (kernels/cpu/conv2d.hpp, depthwise_conv2d.hpp) beside
// the obvious im2col implementation: one column buffer for the whole batch (no chunking), filled by straight
// loops with a bounds check per element, then one GEMM per image; the backward passes likewise (GEMM into
// the whole-batch column buffer + a straight col2im; whole-batch im2col + GEMM). Shapes are EfficientNet /
// ResNet sized: a 3x3 conv (n 32, 64 -> 64 channels, 56x56) and a depthwise 5x5 (n 32, 240 channels, 28x28,
// EfficientNet-B0 stage 3). Counters: FLOP/s = 2 * MACs per pass. Results and how to reproduce them are in
// bench/RESULTS.md (`build/bench/bench_conv --benchmark_filter=...`).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "arclight/core/rng.hpp"
#include "kernels/cpu/conv2d.hpp"

namespace {

namespace cpu = arclight::kernels::cpu;
using arclight::kernels::Conv2dParams;
using arclight::kernels::Conv2dShape;

// ---- the obvious im2col version (for comparison only) ---------------------------------------------------

void naive_im2col(const Conv2dShape& s, const float* x, float* col) {  // col [n][c_in*kh*kw][P]
  const std::int64_t P = s.out_h * s.out_w, rows = s.c_in * s.kh * s.kw;
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t c = r / (s.kh * s.kw), i = (r / s.kw) % s.kh, j = r % s.kw;
      for (std::int64_t oh = 0; oh < s.out_h; ++oh)
        for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
          const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
          const std::int64_t iw = ow * s.stride_w - s.pad_left + j * s.dilation_w;
          col[(n * rows + r) * P + oh * s.out_w + ow] =
              (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w) ? x[((n * s.c_in + c) * s.h + ih) * s.w + iw] : 0.f;
        }
    }
}

void naive_col2im(const Conv2dShape& s, const float* col, float* dx) {
  const std::int64_t P = s.out_h * s.out_w, rows = s.c_in * s.kh * s.kw;
  for (std::int64_t k = 0; k < s.input_numel(); ++k) dx[k] = 0.f;
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t c = r / (s.kh * s.kw), i = (r / s.kw) % s.kh, j = r % s.kw;
      for (std::int64_t oh = 0; oh < s.out_h; ++oh)
        for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
          const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
          const std::int64_t iw = ow * s.stride_w - s.pad_left + j * s.dilation_w;
          if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w)
            dx[((n * s.c_in + c) * s.h + ih) * s.w + iw] += col[(n * rows + r) * P + oh * s.out_w + ow];
        }
    }
}

void naive_forward(const Conv2dShape& s, const float* x, const float* w, float* y, std::vector<float>& col) {
  const std::int64_t P = s.out_h * s.out_w, rows = s.c_in * s.kh * s.kw, K = s.fan_in();
  const std::int64_t cog = s.c_out_per_group();
  naive_im2col(s, x, col.data());
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t g = 0; g < s.groups; ++g)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(cog), int(P), int(K), 1.f, w + g * cog * K, int(K),
                  col.data() + (n * rows + g * K) * P, int(P), 0.f, y + (n * s.c_out + g * cog) * P, int(P));
}

void naive_backward_data(const Conv2dShape& s, const float* w, const float* dy, float* dx, std::vector<float>& col) {
  const std::int64_t P = s.out_h * s.out_w, rows = s.c_in * s.kh * s.kw, K = s.fan_in();
  const std::int64_t cog = s.c_out_per_group();
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t g = 0; g < s.groups; ++g)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(K), int(P), int(cog), 1.f, w + g * cog * K, int(K),
                  dy + (n * s.c_out + g * cog) * P, int(P), 0.f, col.data() + (n * rows + g * K) * P, int(P));
  naive_col2im(s, col.data(), dx);
}

void naive_backward_weight(const Conv2dShape& s, const float* x, const float* dy, float* dw, std::vector<float>& col) {
  const std::int64_t P = s.out_h * s.out_w, rows = s.c_in * s.kh * s.kw, K = s.fan_in();
  const std::int64_t cog = s.c_out_per_group();
  naive_im2col(s, x, col.data());
  for (std::int64_t k = 0; k < s.weight_numel(); ++k) dw[k] = 0.f;
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t g = 0; g < s.groups; ++g)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(cog), int(K), int(P), 1.f,
                  dy + (n * s.c_out + g * cog) * P, int(P), col.data() + (n * rows + g * K) * P, int(P), 1.f,
                  dw + g * cog * K, int(K));
}

// ---- fixtures ---------------------------------------------------------------------------------------------

struct Problem {
  Conv2dShape s;
  std::vector<float> x, w, b, y, dy, dx, dw, db;
  explicit Problem(const Conv2dShape& shape) : s(shape) {
    auto fill = [](std::vector<float>& v, std::int64_t n, std::uint64_t seed) {
      arclight::RandomStream rs(seed, 0);
      v.resize(std::size_t(n));
      for (auto& e : v) e = float(rs.uniform(-1.0, 1.0));
    };
    fill(x, s.input_numel(), 1);
    fill(w, s.weight_numel(), 2);
    fill(b, s.c_out, 3);
    fill(dy, s.output_numel(), 4);
    y.resize(std::size_t(s.output_numel()));
    dx.resize(std::size_t(s.input_numel()));
    dw.resize(std::size_t(s.weight_numel()));
    db.resize(std::size_t(s.c_out));
  }
};

Conv2dShape conv3x3_shape() {  // n 32, 64 -> 64, 56x56, pad 1
  Conv2dParams p;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = 1;
  return cpu::make_conv2d_shape(std::vector<std::int64_t>{32, 64, 56, 56}, std::vector<std::int64_t>{64, 64, 3, 3}, p);
}
Conv2dShape depthwise5x5_shape() {  // n 32, 240 channels, 28x28, pad 2 (EfficientNet-B0 stage 3, stride 1)
  Conv2dParams p;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = 2;
  p.groups = 240;
  return cpu::make_conv2d_shape(std::vector<std::int64_t>{32, 240, 28, 28}, std::vector<std::int64_t>{240, 1, 5, 5},
                                p);
}

void set_counters(benchmark::State& state, const Conv2dShape& s, double passes) {
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * double(s.macs()) * passes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/iter"] = 2.0 * double(s.macs()) * passes * 1e-9;
}

// The pass a benchmark times (its argument): 0 forward, 1 backward (data + weight + bias), 2 backward data only,
// 3 backward weight + bias only.
enum Pass : int { kForward = 0, kBackward = 1, kBackwardData = 2, kBackwardWeight = 3 };
double pass_factor(int pass) { return pass == kBackward ? 2.0 : 1.0; }  // in units of the forward's FLOPs

// Production kernels; algo Auto or forced.
void run_production(benchmark::State& state, const Conv2dShape& shape, cpu::ConvAlgo algo) {
  Problem pb(shape);
  const cpu::Conv2dOptions opt{algo, cpu::kConvColumnBudgetBytes};
  std::vector<float> ws(std::size_t(cpu::conv2d_workspace_elems<float>(pb.s, opt)));  // as a caching allocator would
  const int pass = int(state.range(0));
  for (auto _ : state) {
    if (pass == kForward)
      cpu::conv2d_forward(pb.s, pb.x.data(), pb.w.data(), pb.b.data(), pb.y.data(), opt, ws);
    if (pass == kBackward || pass == kBackwardData)
      cpu::conv2d_backward_data(pb.s, pb.dy.data(), pb.w.data(), pb.dx.data(), opt, ws);
    if (pass == kBackward || pass == kBackwardWeight)
      cpu::conv2d_backward_weight(pb.s, pb.x.data(), pb.dy.data(), pb.dw.data(), pb.db.data(), opt, ws);
    benchmark::DoNotOptimize(pb.y.data());
    benchmark::DoNotOptimize(pb.dx.data());
    benchmark::DoNotOptimize(pb.dw.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, pb.s, pass_factor(pass));
  state.counters["workspace_MiB"] = double(ws.size() * sizeof(float)) / (1 << 20);
}

void run_naive(benchmark::State& state, const Conv2dShape& shape) {
  Problem pb(shape);
  std::vector<float> col(std::size_t(pb.s.n * pb.s.c_in * pb.s.kh * pb.s.kw * pb.s.out_h * pb.s.out_w));
  const int pass = int(state.range(0));
  for (auto _ : state) {
    if (pass == kForward) naive_forward(pb.s, pb.x.data(), pb.w.data(), pb.y.data(), col);
    if (pass == kBackward || pass == kBackwardData) naive_backward_data(pb.s, pb.w.data(), pb.dy.data(), pb.dx.data(), col);
    if (pass == kBackward || pass == kBackwardWeight)
      naive_backward_weight(pb.s, pb.x.data(), pb.dy.data(), pb.dw.data(), col);
    benchmark::DoNotOptimize(pb.y.data());
    benchmark::DoNotOptimize(pb.dx.data());
    benchmark::DoNotOptimize(pb.dw.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, pb.s, pass_factor(pass));
  state.counters["workspace_MiB"] = double(col.size() * sizeof(float)) / (1 << 20);
}

void BM_Conv3x3(benchmark::State& st) { run_production(st, conv3x3_shape(), cpu::ConvAlgo::Auto); }
void BM_Conv3x3_NaiveIm2col(benchmark::State& st) { run_naive(st, conv3x3_shape()); }
void BM_Depthwise5x5(benchmark::State& st) { run_production(st, depthwise5x5_shape(), cpu::ConvAlgo::Auto); }
void BM_Depthwise5x5_ChunkedIm2col(benchmark::State& st) {
  run_production(st, depthwise5x5_shape(), cpu::ConvAlgo::Im2col);
}
void BM_Depthwise5x5_NaiveIm2col(benchmark::State& st) { run_naive(st, depthwise5x5_shape()); }

// pass: 0 forward, 1 backward (data + weight), 2 backward data, 3 backward weight (see Pass).
#define ARCLIGHT_CONV_BENCH(fn)                                                                           \
  BENCHMARK(fn)->ArgName("pass")->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0)
ARCLIGHT_CONV_BENCH(BM_Conv3x3);
ARCLIGHT_CONV_BENCH(BM_Conv3x3_NaiveIm2col);
ARCLIGHT_CONV_BENCH(BM_Depthwise5x5);
ARCLIGHT_CONV_BENCH(BM_Depthwise5x5_ChunkedIm2col);
ARCLIGHT_CONV_BENCH(BM_Depthwise5x5_NaiveIm2col);

}  // namespace
