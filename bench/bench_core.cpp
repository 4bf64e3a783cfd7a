// Foundation benchmarks, each beside the obvious baseline measured in the same run:
//   matmul (f32, 256³ … 1024³) through ops::matmul vs a direct cblas_sgemm call  → FLOP/s
//   elementwise add / mul on 16M floats vs memcpy of the same bytes             → bytes/s
//   softmax over rows (f32)                                                      → bytes/s
// Run: build/bench/bench_core --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstring>

#include "arclight/arclight.hpp"

namespace {

using namespace arclight;

void BM_matmul_ops(benchmark::State& st) {
  const std::int64_t n = st.range(0);
  Tensor a = randn({n, n}), b = randn({n, n});
  for (auto _ : st) {
    Tensor c = ops::matmul(a, b);
    benchmark::DoNotOptimize(c.raw_data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_matmul_cblas(benchmark::State& st) {
  const std::int64_t n = st.range(0);
  Tensor a = randn({n, n}), b = randn({n, n}), c = empty({n, n});
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(n), static_cast<int>(n),
                1.0f, a.data_ptr<float>(), static_cast<int>(n), b.data_ptr<float>(), static_cast<int>(n), 0.0f,
                c.data_ptr<float>(), static_cast<int>(n));
    benchmark::DoNotOptimize(c.raw_data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}

// Transposed operand: passed to BLAS as a flag, so it should cost the same as the plain product.
void BM_matmul_ops_transposed(benchmark::State& st) {
  const std::int64_t n = st.range(0);
  Tensor a = randn({n, n}), b = randn({n, n});
  Tensor bt = ops::transpose(b, 0, 1);
  for (auto _ : st) {
    Tensor c = ops::matmul(a, bt);
    benchmark::DoNotOptimize(c.raw_data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}

constexpr std::int64_t kElems = 16 * 1024 * 1024;

// bytes moved: two reads and one write of 4-byte floats
void BM_add_16M(benchmark::State& st) {
  Tensor a = rand({kElems}), b = rand({kElems});
  for (auto _ : st) {
    Tensor c = ops::add(a, b);
    benchmark::DoNotOptimize(c.raw_data());
  }
  st.counters["bytes/s"] = benchmark::Counter(3.0 * 4 * kElems, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_mul_16M(benchmark::State& st) {
  Tensor a = rand({kElems}), b = rand({kElems});
  for (auto _ : st) {
    Tensor c = ops::mul(a, b);
    benchmark::DoNotOptimize(c.raw_data());
  }
  st.counters["bytes/s"] = benchmark::Counter(3.0 * 4 * kElems, benchmark::Counter::kIsIterationInvariantRate);
}

// memcpy of 16M floats: one read and one write
void BM_memcpy_16M(benchmark::State& st) {
  Tensor a = rand({kElems}), c = empty({kElems});
  for (auto _ : st) {
    std::memcpy(c.raw_data(), a.raw_data(), 4 * kElems);
    benchmark::DoNotOptimize(c.raw_data());
  }
  st.counters["bytes/s"] = benchmark::Counter(2.0 * 4 * kElems, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_softmax_rows(benchmark::State& st) {
  const std::int64_t rows = st.range(0), cols = st.range(1);
  Tensor x = randn({rows, cols});
  for (auto _ : st) {
    Tensor y = ops::softmax(x, 1);
    benchmark::DoNotOptimize(y.raw_data());
  }
  st.counters["bytes/s"] = benchmark::Counter(2.0 * 4 * rows * cols, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_matmul_ops)->Arg(256)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_cblas)->Arg(256)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_ops_transposed)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_add_16M)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_mul_16M)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_memcpy_16M)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_softmax_rows)->Args({256, 1000})->Args({4096, 512})->Unit(benchmark::kMillisecond)->UseRealTime();
