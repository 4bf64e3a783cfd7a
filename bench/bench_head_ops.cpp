// Op-level benchmarks of the retrieval head's training loss, forward + backward through autograd, on the
// shapes of issue 3: batch 256 × 512-d embeddings × 1000 and × 100 000 classes (float32).
//   Head/Fused              cosine_logits → arc_margin_cross_entropy (the production path: nn::ArcMargin::loss)
//   Head/Composed           cosine_logits → arc_margin → cross_entropy (same numbers, two more N×K matrices)
//   Head/ComposedGeneric    l2_normalize + mm → arc_margin → cross_entropy (what one writes with generic ops;
//                           measures the choice of the dedicated cosine_logits op)
//   Loss/Fused, Loss/Composed   the same from a cosine leaf, without the GEMMs, to isolate the margin + CE part
// Counters: bytes_per_second over one nominal traffic shared by every variant of a shape (cos written and its
// gradient read, 4·N·M bytes each; plus, for Head/*, W read by forward and backward and its gradient written,
// 3·4·M·D), so rates compare directly; peak_MB, the allocator's peak bytes in use above the starting level
// during one forward + backward (arclight::host_allocator().stats().peak_bytes_in_use delta), and held_MB, the
// bytes the loss keeps alive from the end of its forward to the start of its backward (in a training step
// they sit on top of the backbone's saved activations, i.e. at the step's memory peak). The peak is a
// process-wide high-water mark with no reset, so each variant's peak is measured in a fresh copy of this
// executable (it re-runs itself with ARCLIGHT_HEAD_PEAK_PROBE=<variant>:<classes> and reads one number back),
// so no earlier benchmark's peak can hide a later one's.
// Run: build-*/bench/bench_head_ops [--benchmark_filter=...]; figures go to bench/RESULTS.md.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include <unistd.h>

#include "arclight/arclight.hpp"
#include "arclight/ops/arc_margin.hpp"
#include "arclight/ops/arc_margin_cross_entropy.hpp"
#include "arclight/ops/cross_entropy.hpp"

namespace {

using arclight::Tensor;
namespace ops = arclight::ops;

constexpr std::int64_t kBatch = 256, kDim = 512;

enum class Variant { kHeadFused, kHeadComposed, kHeadComposedGeneric, kLossFused, kLossComposed };

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::kHeadFused: return "head_fused";
    case Variant::kHeadComposed: return "head_composed";
    case Variant::kHeadComposedGeneric: return "head_composed_generic";
    case Variant::kLossFused: return "loss_fused";
    case Variant::kLossComposed: return "loss_composed";
  }
  return "?";
}

struct Inputs {
  Tensor x, w, cos, labels;
  explicit Inputs(std::int64_t classes, bool head) {
    arclight::Generator gen(42);
    labels = arclight::randint(0, classes, {kBatch}, arclight::DType::i64, gen);
    if (head) {
      x = arclight::randn({kBatch, kDim}, arclight::DType::f32, gen);
      w = arclight::randn({classes, kDim}, arclight::DType::f32, gen, 0.0, 0.05);
      x.set_requires_grad(true);
      w.set_requires_grad(true);
    } else {
      cos = arclight::rand({kBatch, classes}, arclight::DType::f32, gen, -1.0, 1.0);
      cos.set_requires_grad(true);
    }
  }
};

ops::ArcMarginConfig arc_config() {
  ops::ArcMarginConfig c;
  c.scale = 30.0;
  c.margin = 0.5;
  return c;
}
const ops::CrossEntropyConfig kCe{0.1, ops::Reduction::kMean};

// The forward of `v`: the loss (the graph recorded when the inputs require grad).
Tensor forward(Variant v, Inputs& in) {
  const auto cfg = arc_config();
  switch (v) {
    case Variant::kHeadFused:
      return ops::arc_margin_cross_entropy(ops::cosine_logits(in.x, in.w), in.labels, cfg, kCe);
    case Variant::kHeadComposed:
      return ops::cross_entropy(ops::arc_margin(ops::cosine_logits(in.x, in.w), in.labels, cfg), in.labels, kCe);
    case Variant::kHeadComposedGeneric: {
      Tensor c = ops::mm(ops::l2_normalize(in.x, 1), ops::transpose(ops::l2_normalize(in.w, 1), 0, 1));
      return ops::cross_entropy(ops::arc_margin(c, in.labels, cfg), in.labels, kCe);
    }
    case Variant::kLossFused:
      return ops::arc_margin_cross_entropy(in.cos, in.labels, cfg, kCe);
    case Variant::kLossComposed:
      return ops::cross_entropy(ops::arc_margin(in.cos, in.labels, cfg), in.labels, kCe);
  }
  return Tensor();
}

// One forward + backward of `v`; gradients land in the leaves' .grad (cleared before each run).
void run_once(Variant v, Inputs& in) {
  Tensor loss = forward(v, in);
  loss.backward();
  benchmark::DoNotOptimize(loss.item());
}

bool is_head(Variant v) { return v == Variant::kHeadFused || v == Variant::kHeadComposed || v == Variant::kHeadComposedGeneric; }

void clear_grads(Inputs& in) {
  for (Tensor* t : {&in.x, &in.w, &in.cos})
    if (t->defined()) t->zero_grad();
}

struct Memory {
  double peak = NAN;  // peak bytes in use above the starting level during forward + backward
  double held = NAN;  // bytes kept alive from the end of the forward until the backward starts
};

// Measures one run in this process (inputs excluded: they exist before the baseline; the leaves' .grad
// tensors are included, as in training).
Memory measure_here(Variant v, std::int64_t classes) {
  Inputs in(classes, is_head(v));
  arclight::host_allocator().empty_cache();
  const auto before = arclight::host_allocator().stats();
  Tensor loss = forward(v, in);
  const auto mid = arclight::host_allocator().stats();
  loss.backward();
  const auto after = arclight::host_allocator().stats();
  return Memory{double(after.peak_bytes_in_use - before.bytes_in_use), double(mid.bytes_in_use - before.bytes_in_use)};
}

// Probe mode: when started with ARCLIGHT_HEAD_PEAK_PROBE=<variant index>:<classes>, print "peak held" and
// exit before Google Benchmark's main runs.
struct PeakProbe {
  PeakProbe() {
    const char* spec = std::getenv("ARCLIGHT_HEAD_PEAK_PROBE");
    if (spec == nullptr) return;
    int v = 0;
    long long classes = 0;
    if (std::sscanf(spec, "%d:%lld", &v, &classes) != 2) std::_Exit(2);
    const Memory m = measure_here(Variant(v), classes);
    std::printf("%.0f %.0f\n", m.peak, m.held);
    std::fflush(stdout);
    std::_Exit(0);
  }
} peak_probe;

// The memory of (v, classes) measured in a fresh process; NaNs when the probe cannot run.
Memory memory_of(Variant v, std::int64_t classes) {
  static std::map<std::pair<int, std::int64_t>, Memory> cache;
  const auto key = std::make_pair(int(v), classes);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  char exe[4096];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);  // this executable, not popen's shell
  if (len <= 0) return Memory{};
  exe[len] = '\0';
  const std::string cmd = "ARCLIGHT_HEAD_PEAK_PROBE=" + std::to_string(int(v)) + ":" + std::to_string(classes) +
                          " '" + std::string(exe) + "'";
  Memory m;
  if (FILE* f = popen(cmd.c_str(), "r")) {
    double peak = 0, held = 0;
    if (std::fscanf(f, "%lf %lf", &peak, &held) == 2) m = Memory{peak, held};
    if (pclose(f) != 0) m = Memory{};
  }
  cache[key] = m;
  return m;
}

void bench(benchmark::State& state, Variant v) {
  const std::int64_t classes = state.range(0);
  Inputs in(classes, is_head(v));
  run_once(v, in);  // warm the allocator cache and BLAS
  for (auto _ : state) {
    clear_grads(in);
    run_once(v, in);
  }
  double bytes = 2.0 * 4.0 * double(kBatch) * double(classes);
  if (is_head(v)) bytes += 3.0 * 4.0 * double(classes) * double(kDim);
  state.SetBytesProcessed(std::int64_t(double(state.iterations()) * bytes));
  const Memory mem = memory_of(v, classes);
  state.counters["peak_MB"] = mem.peak / 1e6;
  state.counters["held_MB"] = mem.held / 1e6;
  state.SetLabel(variant_name(v));
}

void args(benchmark::internal::Benchmark* b) {
  b->Arg(1000)->Arg(100000)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);
}

BENCHMARK_CAPTURE(bench, Head_Fused, Variant::kHeadFused)->Apply(args);
BENCHMARK_CAPTURE(bench, Head_Composed, Variant::kHeadComposed)->Apply(args);
BENCHMARK_CAPTURE(bench, Head_ComposedGeneric, Variant::kHeadComposedGeneric)->Apply(args);
BENCHMARK_CAPTURE(bench, Loss_Fused, Variant::kLossFused)->Apply(args);
BENCHMARK_CAPTURE(bench, Loss_Composed, Variant::kLossComposed)->Apply(args);

}  // namespace
