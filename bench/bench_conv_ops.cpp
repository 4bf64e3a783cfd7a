// Benchmarks of the conv-block OPS (include/arclight/ops/), forward + backward through autograd, beside the
// obvious composition of generic differentiable ops that computes the same values:
//   * batch_norm with the fused SiLU (train mode) vs mean / var / sub / mul / rsqrt / add + silu;
//   * se_scale vs a broadcasting mul by the [N, C, 1, 1] gate;
//   * depthwise 5x5 conv2d op vs the same op on the im2col path is the kernel bench's business
//     (bench/bench_conv.cpp); here the op's own overhead is measured: conv2d op fwd+bwd vs the raw kernels.
// Shapes: EfficientNet-B0 stage-3 sized activations, [16, 240, 28, 28] f32. Counter: bytes/s over the
// tensor bytes the fused path must touch (forward: read x, write y; backward: read x, dy, write dx), the same
// count for both variants so the ratio is the speed-up.
#include <benchmark/benchmark.h>

#include <vector>

#include "arclight/ops/activation.hpp"
#include "arclight/ops/batch_norm.hpp"
#include "arclight/ops/conv2d.hpp"

namespace {

using arclight::DType;
using arclight::Tensor;
namespace ops = arclight::ops;

const arclight::Shape kShape{16, 240, 28, 28};

Tensor leaf(const arclight::Shape& s, std::uint64_t seed) {
  arclight::Generator gen(seed);
  Tensor t = arclight::randn(s, DType::f32, gen);
  t.set_requires_grad(true);
  return t;
}

void set_bytes(benchmark::State& state, std::int64_t numel) {
  state.SetBytesProcessed(std::int64_t(state.iterations()) * numel * 4 * 5);  // x, y; x, dy, dx
}

void BM_BatchNormSiLU_Fused(benchmark::State& state) {
  Tensor x = leaf(kShape, 1), w = leaf({240}, 2), b = leaf({240}, 3);
  Tensor rm = arclight::zeros({240}), rv = arclight::ones({240});
  const Tensor gy = arclight::randn(kShape);
  for (auto _ : state) {
    Tensor y = ops::batch_norm(x, w, b, rm, rv, true, 0.1, 1e-5, ops::Activation::SiLU);
    y.backward(gy);
    benchmark::DoNotOptimize(x.grad().raw_data());
    x.zero_grad(), w.zero_grad(), b.zero_grad();
  }
  set_bytes(state, x.numel());
}

void BM_BatchNormSiLU_Composed(benchmark::State& state) {
  Tensor x = leaf(kShape, 1), w = leaf({240}, 2), b = leaf({240}, 3);
  const Tensor gy = arclight::randn(kShape);
  for (auto _ : state) {
    const Tensor mean = ops::mean(x, {0, 2, 3}, true);
    const Tensor c = ops::sub(x, mean);
    const Tensor var = ops::mean(ops::mul(c, c), {0, 2, 3}, true);
    Tensor y = ops::mul(c, ops::rsqrt(ops::add(var, 1e-5)));
    y = ops::add(ops::mul(y, ops::reshape(w, {1, 240, 1, 1})), ops::reshape(b, {1, 240, 1, 1}));
    y = ops::silu(y);
    y.backward(gy);
    benchmark::DoNotOptimize(x.grad().raw_data());
    x.zero_grad(), w.zero_grad(), b.zero_grad();
  }
  set_bytes(state, x.numel());
}

void BM_SeScale_Fused(benchmark::State& state) {
  Tensor x = leaf(kShape, 4), g = leaf({16, 240}, 5);
  const Tensor gy = arclight::randn(kShape);
  for (auto _ : state) {
    Tensor y = ops::se_scale(x, g);
    y.backward(gy);
    benchmark::DoNotOptimize(x.grad().raw_data());
    x.zero_grad(), g.zero_grad();
  }
  set_bytes(state, x.numel());
}

void BM_SeScale_BroadcastMul(benchmark::State& state) {
  Tensor x = leaf(kShape, 4), g = leaf({16, 240}, 5);
  const Tensor gy = arclight::randn(kShape);
  for (auto _ : state) {
    Tensor y = ops::mul(x, ops::reshape(g, {16, 240, 1, 1}));
    y.backward(gy);
    benchmark::DoNotOptimize(x.grad().raw_data());
    x.zero_grad(), g.zero_grad();
  }
  set_bytes(state, x.numel());
}

// Depthwise 5x5 (EfficientNet-B0 stage 3): the op (validation, contiguity, allocation, autograd) vs the raw
// kernels called on preallocated buffers. FLOP/s = 2 MACs per pass, 3 passes.
const arclight::Shape kDwIn{16, 240, 28, 28}, kDwW{240, 1, 5, 5};

void set_flops(benchmark::State& state) {
  const double macs = 16.0 * 240 * 28 * 28 * 25;
  state.counters["FLOP/s"] = benchmark::Counter(6.0 * macs * double(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_DepthwiseConv_Op(benchmark::State& state) {
  Tensor x = leaf(kDwIn, 6), w = leaf(kDwW, 7), b = leaf({240}, 8);
  const Tensor gy = arclight::randn(kDwIn);
  for (auto _ : state) {
    Tensor y = ops::conv2d(x, w, b, ops::conv2d_params(1, 2, 1, 240));
    y.backward(gy);
    benchmark::DoNotOptimize(x.grad().raw_data());
    x.zero_grad(), w.zero_grad(), b.zero_grad();
  }
  set_flops(state);
}

void BM_DepthwiseConv_RawKernels(benchmark::State& state) {
  namespace cpu = arclight::kernels::cpu;
  const auto s = cpu::make_conv2d_shape(kDwIn, kDwW, ops::conv2d_params(1, 2, 1, 240), 240);
  std::vector<float> x(std::size_t(s.input_numel()), 0.5f), w(std::size_t(s.weight_numel()), 0.1f), b(240, 0.f);
  std::vector<float> y(std::size_t(s.output_numel())), dy(y.size(), 1.f), dx(x.size()), dw(w.size()), db(240);
  for (auto _ : state) {
    cpu::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
    cpu::conv2d_backward_data<float>(s, dy.data(), w.data(), dx.data());
    cpu::conv2d_backward_weight<float>(s, x.data(), dy.data(), dw.data(), db.data());
    benchmark::DoNotOptimize(dx.data());
  }
  set_flops(state);
}

}  // namespace

BENCHMARK(BM_BatchNormSiLU_Fused)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_BatchNormSiLU_Composed)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SeScale_Fused)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SeScale_BroadcastMul)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DepthwiseConv_Op)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DepthwiseConv_RawKernels)->Unit(benchmark::kMillisecond)->UseRealTime();
