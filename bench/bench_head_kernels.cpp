// Benchmarks of the retrieval-head CPU kernels, production kernels included (not pasted):
//   GeM forward + backward (bytes/s over x read by the forward, x read and gx written by the backward);
//   fused ArcMargin → LS-CE (kernels/cpu/arc_margin_cross_entropy.hpp) beside the composed kernels
//   arc_margin_forward → cross_entropy_forward → cross_entropy_backward → arc_margin_backward, from cosine
//   logits of batch 256 × 1000 and 256 × 100000 classes. Both report bytes/s over the same nominal
//   traffic (cos read + grad_cos written), so their rates compare directly, and `scratch_MB`, the
//   intermediate buffers each path needs (composed: logits and grad-logits; fused: none).
// Run: build-*/bench/bench_head_kernels [--benchmark_filter=...]; figures go to bench/RESULTS.md.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "arclight/core/rng.hpp"
#include "kernels/cpu/arc_margin.hpp"
#include "kernels/cpu/arc_margin_cross_entropy.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/gem.hpp"

namespace {

using namespace arclight::kernels;
namespace cpu = arclight::kernels::cpu;

std::vector<float> uniform(size_t n, float lo, float hi, uint64_t seed) {
  arclight::RandomStream rs(seed, 0);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rs.uniform(lo, hi));
  return v;
}

std::vector<int64_t> labels(int64_t n, int64_t classes, uint64_t seed) {
  arclight::RandomStream rs(seed, 1);
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (auto& y : v) y = rs.randint(0, classes - 1);
  return v;
}

// GeM on an EfficientNet-B0 feature map at 224 px: [n, 1280, 7×7], p = 3.
void BM_GemForwardBackward(benchmark::State& state) {
  const GemShape s{state.range(0), 1280, state.range(1)};
  const auto x = uniform(size_t(s.n * s.c * s.hw), -0.5f, 4.0f, 1);
  const auto gy = uniform(size_t(s.n * s.c), -1.0f, 1.0f, 2);
  std::vector<float> y(size_t(s.n * s.c)), gx(x.size());
  float gp = 0.0f;
  for (auto _ : state) {
    cpu::gem_forward(s, x.data(), 3.0f, 1e-6f, y.data());
    cpu::gem_backward(s, x.data(), gy.data(), 3.0f, 1e-6f, gx.data(), &gp);
    benchmark::DoNotOptimize(gp);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(x.size() * sizeof(float)) * 3);
}
BENCHMARK(BM_GemForwardBackward)->Args({64, 49})->Args({32, 144})->Unit(benchmark::kMillisecond)->UseRealTime();

struct HeadCase {
  ArcMarginShape shape;
  ArcMarginConfig arc;
  CrossEntropyConfig ce{0.1, Reduction::kMean};
  std::vector<float> cos;
  std::vector<int64_t> y;
  explicit HeadCase(int64_t classes)
      : shape{256, classes, 1}, cos(uniform(size_t(256 * classes), -1.0f, 1.0f, 3)), y(labels(256, classes, 4)) {
    arc.scale = 30.0;
    arc.margin = 0.5;
  }
};

void report(benchmark::State& state, const HeadCase& h, double scratch_bytes) {
  const double elems = double(h.shape.n * h.shape.classes);
  state.SetBytesProcessed(int64_t(double(state.iterations()) * elems * 2 * sizeof(float)));
  state.counters["scratch_MB"] = scratch_bytes / 1e6;
}

void BM_ArcMarginCrossEntropyFused(benchmark::State& state) {
  const HeadCase h(state.range(0));
  std::vector<float> grad(h.cos.size());
  float loss = 0.0f;
  for (auto _ : state) {
    cpu::arc_margin_cross_entropy_forward(h.shape, h.arc, h.ce, h.cos.data(), h.y.data(),
                                          static_cast<const float*>(nullptr), static_cast<const float*>(nullptr), &loss,
                                          grad.data());
    benchmark::DoNotOptimize(loss);
    benchmark::ClobberMemory();
  }
  report(state, h, 0.0);
}

void BM_ArcMarginCrossEntropyComposed(benchmark::State& state) {
  const HeadCase h(state.range(0));
  const CrossEntropyShape cs{h.shape.n, h.shape.classes};
  std::vector<float> logits(h.cos.size()), glogits(h.cos.size()), grad(h.cos.size());
  float loss = 0.0f;
  const float one = 1.0f;
  const float* none = nullptr;
  for (auto _ : state) {
    cpu::arc_margin_forward(h.shape, h.arc, h.cos.data(), h.y.data(), none, logits.data());
    cpu::cross_entropy_forward(cs, h.ce, logits.data(), h.y.data(), none, &loss);
    cpu::cross_entropy_backward(cs, h.ce, logits.data(), h.y.data(), none, &one, glogits.data());
    cpu::arc_margin_backward(h.shape, h.arc, h.cos.data(), h.y.data(), none, glogits.data(), grad.data());
    benchmark::DoNotOptimize(loss);
    benchmark::ClobberMemory();
  }
  report(state, h, 2.0 * double(h.cos.size() * sizeof(float)));
}

BENCHMARK(BM_ArcMarginCrossEntropyFused)->Arg(1000)->Arg(100000)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ArcMarginCrossEntropyComposed)->Arg(1000)->Arg(100000)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
