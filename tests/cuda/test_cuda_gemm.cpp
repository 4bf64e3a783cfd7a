// cuBLAS GEMM launchers (kernels/cuda/dnn.cuh: gemm, gemm_strided_batched) against the CPU GEMM
// (kernels/cpu/gemm.hpp, run in double as the reference) on fresh random non-zero data: all four transpose
// combinations, odd sizes, padded leading dimensions, accumulation (beta != 0) and overwrite of NaN garbage
// (beta == 0), k == 0, strided batches (including a broadcast operand), f32 with TF32 off (tight tolerance),
// TF32 on (looser, and visibly different), deterministic mode overriding TF32, bf16 and f16 inputs with float32
// accumulation and output, a second thread (its own handles), and the host-side validation (runs without a GPU too).
#include <cmath>
#include <cstring>
#include <ostream>
#include <thread>
#include <vector>

#include "arclight/cuda/dnn.hpp"
#include "cuda_test_util.hpp"
#include "harness.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cuda/launchers_dnn.hpp"

namespace kc = arclight::kernels::cuda;
namespace kcpu = arclight::kernels::cpu;
using namespace arclight::testing::cuda;
using arclight::DType;
using arclight::cuda::DeviceBuffer;
using arclight::cuda::DnnSettings;
using arclight::cuda::DnnSettingsScope;

namespace {

template <typename T>
T* fake() {
  return reinterpret_cast<T*>(std::uintptr_t(256));
}

// One GEMM problem in row-major storage, with its operands as the device will see them (rounded to bf16 / f16 for
// those dtypes).
struct Problem {
  std::int64_t m, n, k, lda, ldb, ldc;
  bool ta, tb;
  std::vector<float> a, b, c0;  // a: rows_a x lda, b: rows_b x ldb, c0: m x ldc (C's initial contents)
};

Problem make_problem(std::int64_t m, std::int64_t n, std::int64_t k, bool ta, bool tb, int ld_pad, DType dtype,
                     std::mt19937_64& g) {
  Problem p{m, n, k, 0, 0, 0, ta, tb, {}, {}, {}};
  const std::int64_t rows_a = ta ? k : m, cols_a = ta ? m : k;
  const std::int64_t rows_b = tb ? n : k, cols_b = tb ? k : n;
  p.lda = cols_a + ld_pad;
  p.ldb = cols_b + ld_pad;
  p.ldc = n + ld_pad;
  // Non-zero values away from 0 (uniform magnitude in [0.25, 1.25), random sign): no cancellation-free zeros.
  auto fill = [&](std::size_t count) {
    std::vector<float> v = uniform(count, g, 0.25f, 1.25f);
    std::bernoulli_distribution sign(0.5);
    for (auto& x : v)
      if (sign(g)) x = -x;
    return arclight::cuda::round_to(v, dtype);
  };
  p.a = fill(std::size_t(rows_a * p.lda));
  p.b = fill(std::size_t(rows_b * p.ldb));
  p.c0 = uniform(std::size_t(m * p.ldc), g, -1.f, 1.f);
  return p;
}

// C_ref = alpha·op(A)·op(B) + beta·C0 in double; scale = the largest |alpha|·Σ|a||b| + |beta||c0| of an element.
void reference(const Problem& p, float alpha, float beta, std::vector<double>& c_ref, double& scale) {
  c_ref = to_double(p.c0);
  std::vector<double> a = to_double(p.a), b = to_double(p.b);
  kcpu::gemm<double>(p.ta, p.tb, p.m, p.n, p.k, alpha, a.data(), p.lda, b.data(), p.ldb, beta, c_ref.data(), p.ldc);
  std::vector<double> aa(a.size()), ba(b.size()), c_abs(p.c0.size());
  for (std::size_t i = 0; i < a.size(); ++i) aa[i] = std::abs(a[i]);
  for (std::size_t i = 0; i < b.size(); ++i) ba[i] = std::abs(b[i]);
  for (std::size_t i = 0; i < c_abs.size(); ++i) c_abs[i] = std::abs(double(p.c0[i]));
  kcpu::gemm<double>(p.ta, p.tb, p.m, p.n, p.k, std::abs(alpha), aa.data(), p.lda, ba.data(), p.ldb, std::abs(beta),
                     c_abs.data(), p.ldc);
  scale = max_abs(c_abs);
}

// Device copies of A and B in `dtype` (bf16 / f16: 16-bit patterns).
struct DeviceOperands {
  DeviceBuffer<float> a32, b32;
  DeviceBuffer<std::uint16_t> a16, b16;
  const void* a = nullptr;
  const void* b = nullptr;
  DeviceOperands(const Problem& p, DType dtype) {
    if (dtype != DType::f32) {
      a16 = DeviceBuffer<std::uint16_t>(arclight::cuda::to_half_bits(p.a, dtype));
      b16 = DeviceBuffer<std::uint16_t>(arclight::cuda::to_half_bits(p.b, dtype));
      a = a16.data();
      b = b16.data();
    } else {
      a32 = DeviceBuffer<float>(p.a);
      b32 = DeviceBuffer<float>(p.b);
      a = a32.data();
      b = b32.data();
    }
  }
};

// Compares the m x n window of C (leading dimension ldc); the padding columns must be untouched.
::testing::AssertionResult check_c(const std::vector<float>& got, const Problem& p, const std::vector<double>& want,
                                   double atol, const std::string& what) {
  std::vector<double> g, w;
  for (std::int64_t i = 0; i < p.m; ++i) {
    for (std::int64_t j = 0; j < p.ldc; ++j) {
      const std::size_t idx = std::size_t(i * p.ldc + j);
      if (j < p.n) {
        g.push_back(got[idx]);
        w.push_back(want[idx]);
      } else if (std::memcmp(&got[idx], &p.c0[idx], sizeof(float)) != 0) {
        return ::testing::AssertionFailure() << what << ": padding column " << j << " of row " << i
                                             << " was written (" << got[idx] << ", was " << p.c0[idx] << ")";
      }
    }
  }
  return near_all(g, w, 0.0, atol, what);
}

struct GemmCase {
  std::int64_t m, n, k;
  bool ta, tb;
  int ld_pad;
  DType dtype;
};

void PrintTo(const GemmCase& c, std::ostream* os) {
  *os << c.m << "x" << c.n << "x" << c.k << (c.ta ? "_tA" : "_nA") << (c.tb ? "_tB" : "_nB") << "_pad" << c.ld_pad
      << "_" << arclight::dtype_name(c.dtype);
}

// f32 with TF32 off: float accumulation error only (~sqrt(k)·2^-24 of the magnitude; 1e-5 leaves a margin).
// bf16 / f16: the operands are exact in the 16-bit type on both sides, so only the float32 accumulation differs,
// but cuBLAS's tensor-core kernels may accumulate in a different order/blocking: looser. (Operands here are at most
// 1.25 in magnitude and k <= 300, far inside f16's range.)
double tolerance(DType dtype) { return dtype == DType::f32 ? 1e-5 : 1e-4; }

class CudaGemm : public ::testing::TestWithParam<GemmCase> {};

TEST_P(CudaGemm, MatchesCpuAccumulateAndOverwrite) {
  ARCLIGHT_REQUIRE_GPU();
  const GemmCase gc = GetParam();
  DnnSettingsScope settings(DnnSettings{});  // deterministic off, TF32 off
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const Problem p = make_problem(gc.m, gc.n, gc.k, gc.ta, gc.tb, gc.ld_pad, gc.dtype, g);
  DeviceOperands d(p, gc.dtype);

  // beta != 0: accumulate into C0.
  {
    const float alpha = 1.25f, beta = -0.75f;
    std::vector<double> want;
    double scale = 0;
    reference(p, alpha, beta, want, scale);
    DeviceBuffer<float> c(p.c0);
    kc::gemm(p.ta, p.tb, p.m, p.n, p.k, alpha, d.a, p.lda, d.b, p.ldb, beta, c.data(), p.ldc, gc.dtype, nullptr);
    EXPECT_TRUE(check_c(c.download(), p, want, tolerance(gc.dtype) * scale, "accumulate"));
  }
  // beta == 0: C starts as NaN garbage inside the window and must be overwritten; padding keeps C0's values.
  {
    Problem q = p;
    for (std::int64_t i = 0; i < q.m; ++i)
      for (std::int64_t j = 0; j < q.n; ++j) q.c0[std::size_t(i * q.ldc + j)] = NAN;
    const float alpha = -0.5f;
    std::vector<double> want;
    double scale = 0;
    Problem zero_c = q;  // the reference with beta = 0 ignores C; give it zeros so NaN does not leak in
    for (auto& v : zero_c.c0) v = std::isnan(v) ? 0.f : v;
    reference(zero_c, alpha, 0.f, want, scale);
    DeviceBuffer<float> c(q.c0);
    kc::gemm(q.ta, q.tb, q.m, q.n, q.k, alpha, d.a, q.lda, d.b, q.ldb, 0.f, c.data(), q.ldc, gc.dtype, nullptr);
    EXPECT_TRUE(check_c(c.download(), q, want, tolerance(gc.dtype) * scale, "overwrite NaN"));
  }
}

std::vector<GemmCase> gemm_cases() {
  std::vector<GemmCase> cases;
  const std::int64_t sizes[][3] = {{1, 1, 1}, {17, 33, 65}, {64, 48, 96}, {129, 7, 300}, {5, 301, 2}, {200, 130, 1}};
  for (DType dt : {DType::f32, DType::bf16, DType::f16})
    for (const auto& s : sizes)
      for (int t = 0; t < 4; ++t) cases.push_back(GemmCase{s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0, t == 3 ? 3 : 0, dt});
  // Padded leading dimensions on every transpose combination of one odd shape.
  for (int t = 0; t < 4; ++t) cases.push_back(GemmCase{31, 45, 77, (t & 1) != 0, (t & 2) != 0, 5, DType::f32});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGemm, ::testing::ValuesIn(gemm_cases()));

TEST(CudaGemmBatched, MatchesCpuPerMatrixIncludingBroadcast) {
  ARCLIGHT_REQUIRE_GPU();
  DnnSettingsScope settings(DnnSettings{});
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    for (int t = 0; t < 4; ++t) {
      for (bool broadcast_b : {false, true}) {
        const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
        const std::int64_t batch = 5, m = 23, n = 19, k = 37;
        // One problem per batch item, stored back to back with a gap of 7 elements between matrices.
        std::vector<Problem> items;
        for (std::int64_t i = 0; i < batch; ++i) items.push_back(make_problem(m, n, k, ta, tb, 1, dt, g));
        if (broadcast_b)
          for (auto& it : items) it.b = items[0].b;
        const std::int64_t sa = std::int64_t(items[0].a.size()) + 7, sb = broadcast_b ? 0 : std::int64_t(items[0].b.size()) + 7;
        const std::int64_t sc = std::int64_t(items[0].c0.size()) + 7;
        std::vector<float> a(std::size_t(sa * batch), 9.f), b(std::size_t(broadcast_b ? items[0].b.size() : sb * batch), 9.f),
            c(std::size_t(sc * batch), 5.f);
        for (std::int64_t i = 0; i < batch; ++i) {
          std::copy(items[i].a.begin(), items[i].a.end(), a.begin() + i * sa);
          if (!broadcast_b) std::copy(items[i].b.begin(), items[i].b.end(), b.begin() + i * sb);
          std::copy(items[i].c0.begin(), items[i].c0.end(), c.begin() + i * sc);
        }
        if (broadcast_b) std::copy(items[0].b.begin(), items[0].b.end(), b.begin());
        Problem all{m, n, k, items[0].lda, items[0].ldb, items[0].ldc, ta, tb, a, b, c};
        DeviceOperands d(all, dt);
        DeviceBuffer<float> dc(c);
        const float alpha = 0.75f, beta = 0.5f;
        kc::gemm_strided_batched(ta, tb, m, n, k, alpha, d.a, all.lda, sa, d.b, all.ldb, sb, beta, dc.data(), all.ldc,
                                 sc, batch, dt, nullptr);
        const std::vector<float> got = dc.download();
        for (std::int64_t i = 0; i < batch; ++i) {
          std::vector<double> want;
          double scale = 0;
          reference(items[i], alpha, beta, want, scale);
          const std::vector<float> gi(got.begin() + i * sc, got.begin() + i * sc + std::int64_t(items[i].c0.size()));
          EXPECT_TRUE(check_c(gi, items[i], want, tolerance(dt) * scale,
                              arclight::str_cat(arclight::dtype_name(dt), " t", t, broadcast_b ? " bcast" : "",
                                                " item ", i)));
          // The 7-element gaps between C matrices are untouched.
          if (i + 1 < batch)
            for (std::int64_t j = std::int64_t(items[i].c0.size()); j < sc; ++j)
              EXPECT_EQ(got[std::size_t(i * sc + j)], 5.f) << "gap after C item " << i << " written at " << j;
        }
      }
    }
  }
}

TEST(CudaGemmEdge, KZeroScalesOrZeroesC) {
  ARCLIGHT_REQUIRE_GPU();
  const std::int64_t m = 6, n = 9, ldc = 11;
  std::vector<float> c0(std::size_t(m * ldc));
  for (std::size_t i = 0; i < c0.size(); ++i) c0[i] = float(i) * 0.5f - 7.f;
  std::vector<float> nan_c = c0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) nan_c[std::size_t(i * ldc + j)] = NAN;
  DeviceBuffer<float> c1(nan_c), c2(c0), c3(c0), c4(nan_c);
  kc::gemm(false, false, m, n, 0, 1.f, nullptr, 1, nullptr, n, 0.f, c1.data(), ldc, DType::f32, nullptr);
  kc::gemm(true, true, m, n, 0, 1.f, nullptr, m, nullptr, 1, -2.f, c2.data(), ldc, DType::bf16, nullptr);
  kc::gemm(false, true, m, n, 0, 1.f, nullptr, 1, nullptr, 1, 0.f, c4.data(), ldc, DType::f16, nullptr);
  kc::gemm_strided_batched(false, false, m, 3, 0, 1.f, nullptr, 1, 0, nullptr, 3, 0, 3.f, c3.data(), ldc, 3, 2,
                           DType::f32, nullptr);  // two 6x3 matrices side by side in the same rows
  const auto r1 = c1.download(), r2 = c2.download(), r3 = c3.download(), r4 = c4.download();
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < ldc; ++j) {
      const std::size_t idx = std::size_t(i * ldc + j);
      const bool in = j < n;
      EXPECT_EQ(r1[idx], in ? 0.f : c0[idx]) << "beta 0 at " << i << "," << j;
      EXPECT_EQ(r4[idx], in ? 0.f : c0[idx]) << "f16, beta 0 at " << i << "," << j;
      EXPECT_EQ(r2[idx], in ? -2.f * c0[idx] : c0[idx]) << "beta -2 at " << i << "," << j;
      EXPECT_EQ(r3[idx], j < 6 ? 3.f * c0[idx] : c0[idx]) << "batched beta 3 at " << i << "," << j;
    }
}

TEST(CudaGemmEdge, DeterministicRepeatsAreBitIdentical) {
  ARCLIGHT_REQUIRE_GPU();
  DnnSettingsScope settings(DnnSettings{true, false});
  std::mt19937_64 g(fresh_seed());
  const Problem p = make_problem(257, 191, 513, false, true, 0, DType::f32, g);
  DeviceOperands d(p, DType::f32);
  DeviceBuffer<float> c1 = garbage(p.c0.size()), c2 = garbage(p.c0.size());
  kc::gemm(p.ta, p.tb, p.m, p.n, p.k, 1.f, d.a, p.lda, d.b, p.ldb, 0.f, c1.data(), p.ldc, DType::f32, nullptr);
  kc::gemm(p.ta, p.tb, p.m, p.n, p.k, 1.f, d.a, p.lda, d.b, p.ldb, 0.f, c2.data(), p.ldc, DType::f32, nullptr);
  const auto r1 = c1.download(), r2 = c2.download();
  EXPECT_EQ(std::memcmp(r1.data(), r2.data(), r1.size() * sizeof(float)), 0);
}

// TF32 is used only when allowed and not deterministic: allowed, the result is TF32-accurate (10-bit
// mantissa inputs) and measurably less accurate than float32; deterministic mode overrides the flag.
TEST(CudaGemmEdge, Tf32OnlyWhenAllowedAndNotDeterministic) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const Problem p = make_problem(512, 512, 512, false, false, 0, DType::f32, g);
  std::vector<double> want;
  double scale = 0;
  reference(p, 1.f, 0.f, want, scale);
  DeviceOperands d(p, DType::f32);
  auto run = [&](bool deterministic, bool tf32) {
    DnnSettingsScope settings(DnnSettings{deterministic, tf32});
    DeviceBuffer<float> c = garbage(p.c0.size());
    kc::gemm(false, false, p.m, p.n, p.k, 1.f, d.a, p.lda, d.b, p.ldb, 0.f, c.data(), p.ldc, DType::f32, nullptr);
    return c.download();
  };
  auto max_err = [&](const std::vector<float>& got) {
    double e = 0;
    for (std::size_t i = 0; i < got.size(); ++i) e = std::max(e, std::abs(double(got[i]) - want[i]));
    return e;
  };
  const double e_tf32 = max_err(run(false, true));
  const double e_det = max_err(run(true, true));
  const double e_f32 = max_err(run(false, false));
  EXPECT_LE(e_f32, 1e-5 * scale) << "TF32 off";
  EXPECT_LE(e_det, 1e-5 * scale) << "deterministic mode must ignore allow_tf32";
  EXPECT_LE(e_tf32, 5e-3 * scale) << "TF32 on: beyond TF32's own error";
  EXPECT_GT(e_tf32, 4 * e_f32) << "TF32 allowed but the result is as exact as float32: the flag had no effect "
                               << "(max errors " << e_tf32 << " vs " << e_f32 << ", scale " << scale << ")";
}

TEST(CudaGemmEdge, SecondThreadUsesItsOwnHandlesAndStream) {
  ARCLIGHT_REQUIRE_GPU();
  DnnSettingsScope settings(DnnSettings{});
  std::mt19937_64 g(fresh_seed());
  const Problem p = make_problem(40, 50, 60, true, false, 2, DType::f32, g);
  std::vector<double> want;
  double scale = 0;
  reference(p, 1.f, 1.f, want, scale);
  DeviceOperands d(p, DType::f32);
  DeviceBuffer<float> c(p.c0);
  std::string error;
  std::thread worker([&] {
    try {
      kc::Stream s = kc::stream_create("test");
      kc::gemm(p.ta, p.tb, p.m, p.n, p.k, 1.f, d.a, p.lda, d.b, p.ldb, 1.f, c.data(), p.ldc, DType::f32, s);
      kc::synchronize(s, "test");
      kc::stream_destroy(s);
      kc::release_dnn_handles();
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  worker.join();
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_TRUE(check_c(c.download(), p, want, 1e-5 * scale, "worker thread"));
}

// ---- host-side validation: throws before any CUDA call, so these run without a GPU too ----------------------

TEST(CudaGemmValidation, RejectsBadArguments) {
  float* c = fake<float>();
  const void* a = fake<void>();
  EXPECT_ERROR_WITH(kc::gemm(false, false, 4, 5, 6, 1.f, a, 5, a, 5, 0.f, c, 5, DType::f32, nullptr), "gemm: lda = 5",
                    "A is stored [4, 6]", "expected lda >= 6");
  EXPECT_ERROR_WITH(kc::gemm(true, false, 4, 5, 6, 1.f, a, 3, a, 5, 0.f, c, 5, DType::f32, nullptr), "lda = 3",
                    "[6, 4] (trans_a)", "expected lda >= 4");
  EXPECT_ERROR_WITH(kc::gemm(false, true, 4, 5, 6, 1.f, a, 6, a, 5, 0.f, c, 5, DType::f32, nullptr), "ldb = 5",
                    "[5, 6] (trans_b)", "expected ldb >= 6");
  EXPECT_ERROR_WITH(kc::gemm(false, false, 4, 5, 6, 1.f, a, 6, a, 5, 0.f, c, 4, DType::f32, nullptr), "ldc = 4",
                    "expected ldc >= 5");
  EXPECT_ERROR_WITH(kc::gemm(false, false, -1, 5, 6, 1.f, a, 6, a, 5, 0.f, c, 5, DType::f32, nullptr),
                    "sizes must be >= 0", "m=-1");
  EXPECT_ERROR_WITH(kc::gemm(false, false, 4, 5, 6, 1.f, a, 6, a, 5, 0.f, c, 5, DType::f64, nullptr),
                    "gemm: dtype must be f32, bf16 or f16, got f64");
  EXPECT_ERROR_WITH(kc::gemm(false, false, 4, 5, 6, 1.f, a, 5, a, 5, 0.f, c, 5, DType::f16, nullptr), "gemm: lda = 5",
                    "expected lda >= 6");  // f16 is accepted and validated like the others
  EXPECT_ERROR_WITH(kc::gemm(false, false, 4, 5, std::int64_t(1) << 32, 1.f, a, std::int64_t(1) << 32, a, 5, 0.f, c,
                             5, DType::f32, nullptr),
                    "k = 4294967296", "32-bit int");
  EXPECT_ERROR_WITH(kc::gemm(false, false, 4, 5, 6, 1.f, nullptr, 6, a, 5, 0.f, c, 5, DType::f32, nullptr),
                    "gemm: A must not be null");
  EXPECT_ERROR_WITH(kc::gemm_strided_batched(false, false, 4, 5, 6, 1.f, a, 6, 24, a, 5, 30, 0.f, c, 5, 19, 3,
                                             DType::f32, nullptr),
                    "gemm_strided_batched: stride_c = 19 makes C matrices 0 and 1 overlap", "ldc=5");
  // Side by side within the rows: stride 2 < n = 3 overlaps; stride 3 with ldc 6 fits two matrices per row
  // band, but a third one starts at offset 6, matrix 0's second row: caught as well.
  EXPECT_ERROR_WITH(kc::gemm_strided_batched(false, false, 4, 3, 6, 1.f, a, 6, 24, a, 3, 18, 0.f, c, 6, 2, 2,
                                             DType::f32, nullptr),
                    "stride_c = 2 makes C matrices 0 and 1 overlap");
  EXPECT_ERROR_WITH(kc::gemm_strided_batched(false, false, 4, 3, 6, 1.f, a, 6, 24, a, 3, 18, 0.f, c, 6, 3, 3,
                                             DType::f32, nullptr),
                    "stride_c = 3 makes C matrices 0 and 2 overlap");
  EXPECT_ERROR_WITH(kc::gemm_strided_batched(false, false, 4, 5, 6, 1.f, a, 6, -1, a, 5, 30, 0.f, c, 5, 20, 3,
                                             DType::f32, nullptr),
                    "strides must be >= 0", "stride_a=-1");
  EXPECT_ERROR_WITH(kc::gemm_strided_batched(false, false, 4, 5, 6, 1.f, a, 6, 24, a, 5, 30, 0.f, c, 5, 20, -2,
                                             DType::f32, nullptr),
                    "batch must be >= 0, got -2");
}

TEST(CudaGemmValidation, EmptyProblemsTouchNothing) {
  // m == 0 or n == 0 or batch == 0: valid, nothing to do, no GPU needed (null pointers are fine).
  kc::gemm(false, false, 0, 5, 6, 1.f, nullptr, 6, nullptr, 5, 0.f, nullptr, 5, DType::f32, nullptr);
  kc::gemm(false, false, 4, 0, 6, 1.f, nullptr, 6, nullptr, 1, 0.f, nullptr, 1, DType::bf16, nullptr);
  kc::gemm(false, false, 0, 3, 6, 1.f, nullptr, 6, nullptr, 3, 0.f, nullptr, 3, DType::f16, nullptr);
  kc::gemm_strided_batched(false, false, 4, 5, 6, 1.f, nullptr, 6, 0, nullptr, 5, 0, 0.f, nullptr, 5, 0, 0,
                           DType::f32, nullptr);
  SUCCEED();
}

TEST(CudaDnnSettings, ScopeRestoresAndSearchModeIsChecked) {
  const DnnSettings before = DnnSettings::current();
  {
    DnnSettingsScope scope(DnnSettings{true, true, 1234, kc::ConvAlgoSearch::kBenchmark});
    EXPECT_TRUE(kc::dnn_deterministic());
    EXPECT_TRUE(kc::allow_tf32());
    EXPECT_EQ(kc::conv_workspace_limit(), 1234u);
    EXPECT_EQ(kc::conv_algo_search(), kc::ConvAlgoSearch::kBenchmark);
  }
  EXPECT_EQ(kc::dnn_deterministic(), before.deterministic);
  EXPECT_EQ(kc::allow_tf32(), before.allow_tf32);
  EXPECT_EQ(kc::conv_workspace_limit(), before.conv_workspace_limit);
  EXPECT_EQ(kc::conv_algo_search(), before.search);
  EXPECT_ERROR_WITH(kc::set_conv_algo_search(kc::ConvAlgoSearch(7)), "set_conv_algo_search", "unknown search mode 7");
}

TEST(CudaDnnBf16, HostConversionRoundsToNearestEven) {
  using arclight::cuda::bf16_bits_to_float;
  using arclight::cuda::float_to_bf16_bits;
  EXPECT_EQ(float_to_bf16_bits(1.f), 0x3F80);
  EXPECT_EQ(float_to_bf16_bits(-2.f), 0xC000);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1.0); 1 + 3·2^-8 rounds up to 1 + 2^-6.
  EXPECT_EQ(bf16_bits_to_float(float_to_bf16_bits(1.f + 0x1p-8f)), 1.f);
  EXPECT_EQ(bf16_bits_to_float(float_to_bf16_bits(1.f + 3 * 0x1p-8f)), 1.f + 0x1p-6f);
  EXPECT_EQ(bf16_bits_to_float(float_to_bf16_bits(1.f + 0x1p-8f + 0x1p-20f)), 1.f + 0x1p-7f);
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(NAN))));
  EXPECT_TRUE(std::isinf(bf16_bits_to_float(float_to_bf16_bits(INFINITY))));
  EXPECT_EQ(bf16_bits_to_float(float_to_bf16_bits(3.14159265f)), 3.140625f);
}

}  // namespace
