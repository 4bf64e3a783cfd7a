// Benchmarks of the CPU depthwise convolution (kernels/cpu/depthwise_conv2d.hpp) on every depthwise conv of
// efficientnet_b0 (timm padding: symmetric k/2-style pads; 3x3 and 5x5; stride 1 and 2) at the train-step
// benchmark's sizes: img 32 / batch 128 (maps 16x16 ... 1x1) and img 64 / batch 64 (32x32 ... 2x2). Each shape
// is timed forward, backward-data and backward-weight with the production kernel ("new") and, right after it,
// with the row kernel ("old": the previous production kernel, which remains the fallback for large maps and
// channel multipliers > 1, cpu::detail::depthwise_rows_*). The "B0All"
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
      else cpu::detail::depthwise_rows_forward<float>(s, B.x.data(), B.w.data(), B.b.data(), B.y.data());
      benchmark::DoNotOptimize(B.y.data());
      break;
    case Pass::BwdData:
      if constexpr (kNew) cpu::depthwise_conv2d_backward_data<float>(s, B.dy.data(), B.w.data(), B.dx.data());
      else cpu::detail::depthwise_rows_backward_data<float>(s, B.dy.data(), B.w.data(), B.dx.data());
      benchmark::DoNotOptimize(B.dx.data());
      break;
    case Pass::BwdWeight:
      if constexpr (kNew)
        cpu::depthwise_conv2d_backward_weight<float>(s, B.x.data(), B.dy.data(), B.dw.data(), nullptr);
      else
        cpu::detail::depthwise_rows_backward_weight<float>(s, B.x.data(), B.dy.data(), B.dw.data(), nullptr);
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
