// cuDNN convolution launchers (kernels/cuda/dnn.cuh: conv2d_forward / _backward_data / _backward_filter)
// against the CPU conv kernels (kernels/cpu/conv2d.hpp + depthwise_conv2d.hpp, run in double as the reference)
// on fresh random inputs, every output pre-filled with NaN garbage, in f32 (TF32 off), bf16 and f16 (16-bit
// tensors, float32 accumulation; inputs rounded to the 16-bit type on the host before the reference sees them). Shapes: 3x3 s1/s2,
// 1x1 (s1 and s2), depthwise 3x3/5x5 s2 and with a channel multiplier, groups=4, dilation 2, TF "same" with
// asymmetric padding (odd total: padded-copy path), explicit asymmetric pads, batch > 1, with and without bias.
// Also: the algorithm cache (a miss, then hits, a new key per setting), deterministic mode (bit-identical
// repeats, algorithms cuDNN reports deterministic), the workspace cap, benchmark search, a too-small workspace
// and the host-side validation (which runs without a GPU too). Last, cuDNN's batch normalization (the alternative
// bench_device_dnn times against ours) against arclight's batch-norm kernels.
#include <cmath>
#include <cstring>
#include <ostream>
#include <vector>

#include "arclight/cuda/dnn.hpp"
#include "cuda_test_util.hpp"
#include "harness.hpp"
#include "kernels/common/conv_shape.hpp"
#include "kernels/cpu/conv2d.hpp"
#include "kernels/cuda/launchers_dnn.hpp"

namespace kc = arclight::kernels::cuda;
namespace ak = arclight::kernels;
namespace kcpu = arclight::kernels::cpu;
using namespace arclight::testing::cuda;
using arclight::DType;
using arclight::cuda::DeviceBuffer;
using arclight::cuda::DnnSettings;
using arclight::cuda::DnnSettingsScope;
using kc::ConvPass;

namespace {

template <typename T>
T* fake() {
  return reinterpret_cast<T*>(std::uintptr_t(256));
}

struct ConvCase {
  const char* name;
  std::int64_t n, c_in, h, w, c_out, kh, kw;
  ak::Conv2dParams p;
  bool bias;
};

void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

ak::Conv2dParams params(std::int64_t stride, std::int64_t pad, std::int64_t groups = 1, std::int64_t dilation = 1) {
  ak::Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = pad;
  p.groups = groups;
  p.dilation_h = p.dilation_w = dilation;
  return p;
}

ak::Conv2dParams same(std::int64_t stride, std::int64_t groups = 1, std::int64_t dilation = 1) {
  ak::Conv2dParams p = params(stride, 0, groups, dilation);
  p.pad_mode = ak::PadMode::Same;
  return p;
}

ak::Conv2dParams explicit_pads(std::int64_t top, std::int64_t bottom, std::int64_t left, std::int64_t right) {
  ak::Conv2dParams p;
  p.pad_top = top;
  p.pad_bottom = bottom;
  p.pad_left = left;
  p.pad_right = right;
  return p;
}

const ConvCase kCases[] = {
    {"k3s1_bias", 2, 8, 13, 11, 12, 3, 3, params(1, 1), true},
    {"k3s2", 3, 6, 16, 15, 10, 3, 3, params(2, 1), false},
    {"k1s1_bias", 2, 16, 9, 9, 24, 1, 1, params(1, 0), true},
    {"k1s2", 2, 8, 10, 10, 4, 1, 1, params(2, 0), false},
    {"dw3x3s2_bias", 2, 16, 15, 14, 16, 3, 3, params(2, 1, 16), true},
    {"dw5x5s2_same_asym", 2, 12, 16, 16, 12, 5, 5, same(2, 12), false},  // total pad 3: top/left 1, bottom/right 2
    {"dw3x3_mult2", 2, 8, 9, 10, 16, 3, 3, params(1, 1, 8), true},
    {"groups4", 2, 16, 10, 9, 8, 3, 3, params(1, 1, 4), false},
    {"dilation2", 2, 6, 12, 12, 8, 3, 3, params(1, 2, 1, 2), true},
    {"stem_same_s2_asym", 2, 3, 32, 32, 16, 3, 3, same(2), true},  // TF "same" on an even input: (0, 1)
    {"explicit_asym", 2, 5, 9, 8, 7, 3, 3, explicit_pads(2, 0, 1, 3), true},
    {"batch5_same_odd", 5, 4, 17, 17, 6, 3, 3, same(2), false},  // odd input: symmetric (1, 1)
    {"same_k4x3", 2, 4, 11, 10, 5, 4, 3, same(1), true},                // even kernel height: rows (1, 2)
    {"same_k3_dil2_s2", 2, 4, 10, 11, 5, 3, 3, same(2, 1, 2), false},  // dilated, strided: rows (1, 2), cols (2, 2)
};

ak::Conv2dShape shape_of(const ConvCase& c) {
  return ak::conv2d_shape(c.n, c.c_in, c.h, c.w, c.c_out, c.kh, c.kw, c.p);
}

std::vector<float> signed_values(std::size_t n, std::mt19937_64& g, DType dtype) {
  return arclight::cuda::round_to(uniform(n, g, -1.f, 1.f), dtype);
}

std::vector<double> abs_of(const std::vector<float>& v) {
  std::vector<double> a(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) a[i] = std::abs(double(v[i]));
  return a;
}

// A device tensor of `dtype` holding `values` (bf16 / f16: their bit patterns; the values are exact in that type
// already).
struct DTensor {
  DType dtype;
  DeviceBuffer<float> f32;
  DeviceBuffer<std::uint16_t> b16;
  bool half() const { return dtype != DType::f32; }
  DTensor(const std::vector<float>& values, DType dt) : dtype(dt) {
    if (half())
      b16 = DeviceBuffer<std::uint16_t>(arclight::cuda::to_half_bits(values, dt));
    else
      f32 = DeviceBuffer<float>(values);
  }
  // NaN garbage of n elements (0xFFFF is a NaN in bf16 and in f16, 0xFFFFFFFF a float NaN).
  DTensor(std::size_t n, DType dt) : dtype(dt) {
    if (half()) {
      b16 = DeviceBuffer<std::uint16_t>(n);
      b16.fill_bytes(0xFF);
    } else {
      f32 = garbage(n);
    }
  }
  void* data() { return half() ? static_cast<void*>(b16.data()) : static_cast<void*>(f32.data()); }
  std::vector<float> download() const {
    return half() ? arclight::cuda::half_bits_to_floats(b16.download(), dtype) : f32.download();
  }
};

// Allocates exactly the workspace a pass asks for.
struct Ws {
  DeviceBuffer<std::byte> buf;
  std::size_t bytes;
  Ws(const ak::Conv2dShape& s, DType dt, ConvPass pass)
      : buf(std::max<std::size_t>(1, kc::conv2d_workspace_bytes(s, dt, pass))),
        bytes(kc::conv2d_workspace_bytes(s, dt, pass)) {}
};

// Tolerance factor times the largest |term|-sum of an output element (the CPU conv of |inputs|).
// f32 (TF32 off): float accumulation (~1e-6 of the scale), with room for the Winograd / FFT transforms cuDNN
// may pick (up to ~1e-5..1e-4); an indexing or padding bug is off by O(scale). bf16: the output itself is
// rounded to bf16 (2^-9 relative); dw and dx are bf16 tensors too. f16: the same with 2^-12 relative rounding (the
// values here stay far inside f16's range: |y| <= c_in·kh·kw, |dw| <= n·out_h·out_w).
double tol(DType dt) { return dt == DType::bf16 ? 1e-2 : dt == DType::f16 ? 2e-3 : 1e-4; }

struct Data {
  ak::Conv2dShape s;
  std::vector<float> x, w, dy, bias;
};

Data make_data(const ConvCase& c, DType dt, std::mt19937_64& g) {
  Data d;
  d.s = shape_of(c);
  d.x = signed_values(std::size_t(d.s.input_numel()), g, dt);
  d.w = signed_values(std::size_t(d.s.weight_numel()), g, dt);
  d.dy = signed_values(std::size_t(d.s.output_numel()), g, dt);
  d.bias = uniform(std::size_t(d.s.c_out), g, -2.f, 2.f);  // float32 in both dtypes
  return d;
}

class CudaConv : public ::testing::TestWithParam<std::tuple<ConvCase, DType>> {};

TEST_P(CudaConv, ForwardBackwardDataBackwardFilterMatchCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const ConvCase c = std::get<0>(GetParam());
  const DType dt = std::get<1>(GetParam());
  DnnSettingsScope settings(DnnSettings{});
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const Data d = make_data(c, dt, g);
  const ak::Conv2dShape& s = d.s;
  SCOPED_TRACE(arclight::str_cat("shape: ", kc::conv_pass_name(ConvPass::kForward), " ", s.n, "x", s.c_in, "x", s.h,
                                 "x", s.w, " -> ", s.c_out, "x", s.out_h, "x", s.out_w, " pads ", s.pad_top, ",",
                                 s.pad_bottom, ",", s.pad_left, ",", s.pad_right));
  const std::vector<double> x = to_double(d.x), w = to_double(d.w), dy = to_double(d.dy), b = to_double(d.bias);
  const std::vector<double> xa = abs_of(d.x), wa = abs_of(d.w), dya = abs_of(d.dy);

  // Forward.
  {
    std::vector<double> y_ref(std::size_t(s.output_numel())), y_abs(y_ref.size());
    kcpu::conv2d_forward<double>(s, x.data(), w.data(), c.bias ? b.data() : nullptr, y_ref.data());
    const std::vector<double> ba = abs_of(d.bias);
    kcpu::conv2d_forward<double>(s, xa.data(), wa.data(), c.bias ? ba.data() : nullptr, y_abs.data());
    DTensor dx(d.x, dt), dw(d.w, dt), y(std::size_t(s.output_numel()), dt);
    DeviceBuffer<float> dbias(d.bias);
    Ws ws(s, dt, ConvPass::kForward);
    kc::conv2d_forward(s, dt, dx.data(), dw.data(), c.bias ? dbias.data() : nullptr, y.data(), ws.buf.data(),
                       ws.bytes, nullptr);
    const auto info = kc::conv2d_algo_info(s, dt, ConvPass::kForward);
    EXPECT_TRUE(near_all(y.download(), y_ref, 0.0, tol(dt) * max_abs(y_abs), "forward"))
        << "algorithm " << info.algo_name << (info.padded_copy ? " (padded copy)" : "");
  }
  // Backward to the input.
  {
    std::vector<double> dx_ref(std::size_t(s.input_numel())), dx_abs(dx_ref.size());
    kcpu::conv2d_backward_data<double>(s, dy.data(), w.data(), dx_ref.data());
    kcpu::conv2d_backward_data<double>(s, dya.data(), wa.data(), dx_abs.data());
    DTensor ddy(d.dy, dt), dw(d.w, dt), dx(std::size_t(s.input_numel()), dt);
    Ws ws(s, dt, ConvPass::kBackwardData);
    kc::conv2d_backward_data(s, dt, ddy.data(), dw.data(), dx.data(), ws.buf.data(), ws.bytes, nullptr);
    const auto info = kc::conv2d_algo_info(s, dt, ConvPass::kBackwardData);
    // Input pixels no window reads get exactly 0 (not NaN): near_all treats NaN as a mismatch.
    EXPECT_TRUE(near_all(dx.download(), dx_ref, 0.0, tol(dt) * std::max(1e-3, max_abs(dx_abs)), "backward-data"))
        << "algorithm " << info.algo_name << (info.padded_copy ? " (padded copy)" : "");
  }
  // Backward to the weight and bias (each alone too).
  {
    std::vector<double> dw_ref(std::size_t(s.weight_numel())), dw_abs(dw_ref.size()), db_ref(std::size_t(s.c_out)),
        db_abs(db_ref.size());
    kcpu::conv2d_backward_weight<double>(s, x.data(), dy.data(), dw_ref.data(), db_ref.data());
    kcpu::conv2d_backward_weight<double>(s, xa.data(), dya.data(), dw_abs.data(), db_abs.data());
    DTensor dxx(d.x, dt), ddy(d.dy, dt), dw(std::size_t(s.weight_numel()), dt), dw_only(std::size_t(s.weight_numel()), dt);
    DeviceBuffer<float> db = garbage(std::size_t(s.c_out)), db_only = garbage(std::size_t(s.c_out));
    Ws ws(s, dt, ConvPass::kBackwardFilter);
    kc::conv2d_backward_filter(s, dt, dxx.data(), ddy.data(), dw.data(), db.data(), ws.buf.data(), ws.bytes, nullptr);
    kc::conv2d_backward_filter(s, dt, dxx.data(), ddy.data(), dw_only.data(), nullptr, ws.buf.data(), ws.bytes,
                               nullptr);
    kc::conv2d_backward_filter(s, dt, nullptr, ddy.data(), nullptr, db_only.data(), ws.buf.data(), ws.bytes, nullptr);
    const auto info = kc::conv2d_algo_info(s, dt, ConvPass::kBackwardFilter);
    const auto dw_got = dw.download();
    EXPECT_TRUE(near_all(dw_got, dw_ref, 0.0, tol(dt) * max_abs(dw_abs), "backward-filter dw"))
        << "algorithm " << info.algo_name << (info.padded_copy ? " (padded copy)" : "");
    // The bias gradient is a float32 sum of bf16- / f16-exact (or float) values in every dtype: tight.
    const double db_tol = 1e-5 * max_abs(db_abs);
    EXPECT_TRUE(near_all(db.download(), db_ref, 0.0, db_tol, "backward-filter dbias"));
    EXPECT_TRUE(near_all(db_only.download(), db_ref, 0.0, db_tol, "dbias alone"));
    EXPECT_TRUE(near_all(dw_only.download(), dw_ref, 0.0, tol(dt) * max_abs(dw_abs), "dw alone"));
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaConv, ::testing::Combine(::testing::ValuesIn(kCases),
                                                              ::testing::Values(DType::f32, DType::bf16, DType::f16)),
                         [](const ::testing::TestParamInfo<std::tuple<ConvCase, DType>>& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  arclight::dtype_name(std::get<1>(info.param));
                         });

// Runs all three passes into fresh NaN buffers and returns their raw bits.
std::vector<std::vector<float>> run_all_passes(const Data& d, DType dt) {
  const ak::Conv2dShape& s = d.s;
  DTensor x(d.x, dt), w(d.w, dt), dy(d.dy, dt);
  DTensor y(std::size_t(s.output_numel()), dt), dx(std::size_t(s.input_numel()), dt),
      dw(std::size_t(s.weight_numel()), dt);
  DeviceBuffer<float> bias(d.bias), db = garbage(std::size_t(s.c_out));
  Ws wf(s, dt, ConvPass::kForward), wd(s, dt, ConvPass::kBackwardData), wb(s, dt, ConvPass::kBackwardFilter);
  kc::conv2d_forward(s, dt, x.data(), w.data(), bias.data(), y.data(), wf.buf.data(), wf.bytes, nullptr);
  kc::conv2d_backward_data(s, dt, dy.data(), w.data(), dx.data(), wd.buf.data(), wd.bytes, nullptr);
  kc::conv2d_backward_filter(s, dt, x.data(), dy.data(), dw.data(), db.data(), wb.buf.data(), wb.bytes, nullptr);
  return {y.download(), dx.download(), dw.download(), db.download()};
}

TEST(CudaConvMode, DeterministicModeIsBitIdenticalAndUsesDeterministicAlgorithms) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  // Shapes where the fastest algorithms (bwd-data ALGO_0, bwd-filter ALGO_0/3) are the atomic ones.
  const ConvCase cases[] = {{"k3", 8, 32, 28, 28, 32, 3, 3, params(1, 1), true},
                            {"dw_same", 8, 32, 28, 28, 32, 3, 3, same(2, 32), true}};
  DnnSettingsScope settings(DnnSettings{true, true});  // TF32 requested but ignored in deterministic mode
  for (const ConvCase& c : cases) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      SCOPED_TRACE(arclight::str_cat(c.name, " ", arclight::dtype_name(dt)));
      const Data d = make_data(c, dt, g);
      for (ConvPass pass : {ConvPass::kForward, ConvPass::kBackwardData, ConvPass::kBackwardFilter}) {
        const auto info = kc::conv2d_algo_info(d.s, dt, pass);
        EXPECT_TRUE(info.deterministic) << kc::conv_pass_name(pass) << " picked " << info.algo_name;
        if (dt == DType::f32) EXPECT_NE(info.math_type, 1) << "tensor-op (TF32) math in deterministic mode";
      }
      const auto r1 = run_all_passes(d, dt), r2 = run_all_passes(d, dt);
      const char* names[] = {"y", "dx", "dw", "dbias"};
      for (int i = 0; i < 4; ++i) {
        ASSERT_EQ(r1[i].size(), r2[i].size());
        EXPECT_EQ(std::memcmp(r1[i].data(), r2[i].data(), r1[i].size() * sizeof(float)), 0)
            << names[i] << " differs between two deterministic runs";
        for (float v : r1[i]) ASSERT_FALSE(std::isnan(v)) << names[i] << " has an unwritten (NaN) element";
      }
    }
  }
}

TEST(CudaConvMode, AlgorithmCacheMissesOnceThenHits) {
  ARCLIGHT_REQUIRE_GPU();
  DnnSettingsScope settings(DnnSettings{});
  kc::conv_algo_cache_clear();
  EXPECT_EQ(kc::conv_algo_cache_stats().entries, 0);
  std::mt19937_64 g(fresh_seed());
  const Data d = make_data(kCases[0], DType::f32, g);
  const std::size_t bytes = kc::conv2d_workspace_bytes(d.s, DType::f32, ConvPass::kForward);
  kc::ConvAlgoCacheStats st = kc::conv_algo_cache_stats();
  EXPECT_EQ(st.misses, 1);
  EXPECT_EQ(st.hits, 0);
  EXPECT_EQ(st.entries, 1);
  DTensor x(d.x, DType::f32), w(d.w, DType::f32), y1(std::size_t(d.s.output_numel()), DType::f32),
      y2(std::size_t(d.s.output_numel()), DType::f32);
  DeviceBuffer<std::byte> ws(std::max<std::size_t>(bytes, 1));
  kc::conv2d_forward(d.s, DType::f32, x.data(), w.data(), nullptr, y1.data(), ws.data(), bytes, nullptr);
  kc::conv2d_forward(d.s, DType::f32, x.data(), w.data(), nullptr, y2.data(), ws.data(), bytes, nullptr);
  st = kc::conv_algo_cache_stats();
  EXPECT_EQ(st.misses, 1) << "the second and third lookups of the same key must not select again";
  EXPECT_EQ(st.hits, 2);
  EXPECT_EQ(st.entries, 1);
  EXPECT_EQ(y1.download(), y2.download());
  // Another pass, dtype or setting is another key.
  kc::conv2d_workspace_bytes(d.s, DType::f32, ConvPass::kBackwardData);
  kc::conv2d_workspace_bytes(d.s, DType::bf16, ConvPass::kForward);
  kc::conv2d_workspace_bytes(d.s, DType::f16, ConvPass::kForward);
  {
    DnnSettingsScope det(DnnSettings{true, false});
    kc::conv2d_workspace_bytes(d.s, DType::f32, ConvPass::kForward);
  }
  st = kc::conv_algo_cache_stats();
  EXPECT_EQ(st.misses, 5);
  EXPECT_EQ(st.entries, 5);
  kc::conv2d_workspace_bytes(d.s, DType::f32, ConvPass::kForward);
  EXPECT_EQ(kc::conv_algo_cache_stats().hits, 3);
}

TEST(CudaConvMode, WorkspaceCapSkipsLargerAlgorithms) {
  ARCLIGHT_REQUIRE_GPU();
  std::mt19937_64 g(fresh_seed());
  const ConvCase c{"k3_big", 4, 32, 32, 32, 64, 3, 3, params(1, 1), false};
  const Data d = make_data(c, DType::f32, g);
  std::vector<double> y_ref(std::size_t(d.s.output_numel())), y_abs(y_ref.size());
  kcpu::conv2d_forward<double>(d.s, to_double(d.x).data(), to_double(d.w).data(), nullptr, y_ref.data());
  kcpu::conv2d_forward<double>(d.s, abs_of(d.x).data(), abs_of(d.w).data(), nullptr, y_abs.data());
  DnnSettingsScope settings(DnnSettings{false, false, 0});  // no workspace at all: implicit-GEMM style only
  const auto info = kc::conv2d_algo_info(d.s, DType::f32, ConvPass::kForward);
  EXPECT_EQ(info.cudnn_workspace, 0u) << info.algo_name;
  DTensor x(d.x, DType::f32), w(d.w, DType::f32), y(std::size_t(d.s.output_numel()), DType::f32);
  kc::conv2d_forward(d.s, DType::f32, x.data(), w.data(), nullptr, y.data(), nullptr, 0, nullptr);
  EXPECT_TRUE(near_all(y.download(), y_ref, 0.0, tol(DType::f32) * max_abs(y_abs), "forward under a 0-byte cap"))
      << info.algo_name;
}

TEST(CudaConvMode, BenchmarkSearchMatchesCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  DnnSettingsScope settings(DnnSettings{false, false, kc::kDefaultConvWorkspaceLimit, kc::ConvAlgoSearch::kBenchmark});
  for (const ConvCase& c : {kCases[0], kCases[5]}) {
    const Data d = make_data(c, DType::f32, g);
    std::vector<double> y_ref(std::size_t(d.s.output_numel())), y_abs(y_ref.size());
    kcpu::conv2d_forward<double>(d.s, to_double(d.x).data(), to_double(d.w).data(), nullptr, y_ref.data());
    kcpu::conv2d_forward<double>(d.s, abs_of(d.x).data(), abs_of(d.w).data(), nullptr, y_abs.data());
    DTensor x(d.x, DType::f32), w(d.w, DType::f32), y(std::size_t(d.s.output_numel()), DType::f32);
    arclight::cuda::Workspace ws;
    arclight::cuda::conv2d_forward(ws, d.s, DType::f32, x.data(), w.data(), nullptr, y.data());
    // The timed search may pick FFT / Winograd, whose transforms round more than a direct sum.
    EXPECT_TRUE(near_all(y.download(), y_ref, 0.0, 5 * tol(DType::f32) * max_abs(y_abs), c.name))
        << kc::conv2d_algo_info(d.s, DType::f32, ConvPass::kForward).algo_name;
  }
}

TEST(CudaConvMode, TooSmallWorkspaceIsRefusedWithTheNeededSize) {
  ARCLIGHT_REQUIRE_GPU();
  DnnSettingsScope settings(DnnSettings{});
  const ak::Conv2dShape s = shape_of(kCases[9]);  // asymmetric: the padded copy needs workspace
  const std::size_t need = kc::conv2d_workspace_bytes(s, DType::f32, ConvPass::kForward);
  ASSERT_GT(need, 0u);
  EXPECT_TRUE(kc::conv2d_algo_info(s, DType::f32, ConvPass::kForward).padded_copy);
  DeviceBuffer<std::byte> ws(need);
  EXPECT_ERROR_WITH(kc::conv2d_forward(s, DType::f32, fake<void>(), fake<void>(), nullptr, fake<void>(), ws.data(),
                                       need - 1, nullptr),
                    "conv2d_forward: workspace has " + std::to_string(need - 1) + " bytes",
                    "needs " + std::to_string(need), "conv2d_workspace_bytes");
  EXPECT_ERROR_WITH(kc::conv2d_backward_data(s, DType::f32, fake<void>(), fake<void>(), fake<void>(), nullptr, 0,
                                             nullptr),
                    "conv2d_backward_data: workspace has 0 bytes");
}

// ---- host-side validation: throws before any CUDA call, so these run without a GPU too ----------------------

TEST(CudaConvValidation, RejectsBadShapesAndDtypes) {
  const ak::Conv2dShape good = shape_of(kCases[0]);
  void* p = fake<void>();
  ak::Conv2dShape s = good;
  s.out_h += 1;
  EXPECT_ERROR_WITH(kc::conv2d_forward(s, DType::f32, p, p, nullptr, p, p, 0, nullptr), "conv2d_forward",
                    "output size (14, 11) does not match", "(13, 11)");
  s = good;
  s.groups = 3;
  EXPECT_ERROR_WITH(kc::conv2d_backward_data(s, DType::f32, p, p, p, p, 0, nullptr), "conv2d_backward_data",
                    "groups must divide both channel counts", "groups 3");
  s = good;
  s.pad_left = -1;
  EXPECT_ERROR_WITH(kc::conv2d_backward_filter(s, DType::bf16, p, p, p, nullptr, p, 0, nullptr),
                    "conv2d_backward_filter", "padding must be >= 0");
  EXPECT_ERROR_WITH(kc::conv2d_forward(good, DType::f64, p, p, nullptr, p, p, 0, nullptr),
                    "conv2d_forward: dtype must be f32, bf16 or f16, got f64");
  EXPECT_ERROR_WITH(kc::conv2d_workspace_bytes(good, DType::i32, ConvPass::kForward),
                    "conv2d_workspace_bytes: dtype must be f32, bf16 or f16, got i32");
  // f16 passes the dtype check and reaches the shape validation (s still has pad_left = -1).
  EXPECT_ERROR_WITH(kc::conv2d_backward_data(s, DType::f16, p, p, p, p, 0, nullptr), "conv2d_backward_data",
                    "padding must be >= 0");
  s = good;
  s.stride_w = 0;
  EXPECT_ERROR_WITH(kc::conv2d_forward(s, DType::f32, p, p, nullptr, p, p, 0, nullptr), "stride must be >= 1");
  // A window larger than the padded input.
  s = ak::conv2d_shape(1, 1, 2, 2, 1, 5, 5, params(1, 0));
  EXPECT_ERROR_WITH(kc::conv2d_forward(s, DType::f32, p, p, nullptr, p, p, 0, nullptr),
                    "the window does not fit the padded input");
  // Tensors beyond cuDNN's 2^31 elements.
  s = ak::conv2d_shape(64, 512, 256, 256, 8, 1, 1, params(1, 0));
  EXPECT_ERROR_WITH(kc::conv2d_forward(s, DType::f32, p, p, nullptr, p, p, 0, nullptr), "2^31 limit");
}

TEST(CudaConvValidation, SameShapeArithmeticMatchesTheCpuConvention) {
  // The cases the launchers treat as asymmetric are exactly the ones conv_shape.hpp makes asymmetric.
  const ak::Conv2dShape stem = shape_of(kCases[9]);
  EXPECT_EQ(stem.pad_top, 0);
  EXPECT_EQ(stem.pad_bottom, 1);
  EXPECT_EQ(stem.out_h, 16);
  const ak::Conv2dShape dw5 = shape_of(kCases[5]);
  EXPECT_EQ(dw5.pad_top, 1);
  EXPECT_EQ(dw5.pad_bottom, 2);
  EXPECT_EQ(dw5.out_h, 8);
  const ak::Conv2dShape odd = shape_of(kCases[11]);
  EXPECT_EQ(odd.pad_top, 1);
  EXPECT_EQ(odd.pad_bottom, 1);
  const ak::Conv2dShape k4 = shape_of(kCases[12]);
  EXPECT_EQ(k4.pad_top, 1);
  EXPECT_EQ(k4.pad_bottom, 2);
  EXPECT_EQ(k4.pad_left, 1);
  EXPECT_EQ(k4.pad_right, 1);
  const ak::Conv2dShape dil = shape_of(kCases[13]);
  EXPECT_EQ(dil.pad_top, 1);
  EXPECT_EQ(dil.pad_bottom, 2);
  EXPECT_EQ(dil.pad_left, 2);
  EXPECT_EQ(dil.pad_right, 2);
  EXPECT_EQ(dil.out_h, 5);
  EXPECT_EQ(dil.out_w, 6);
}

// cuDNN's batch normalization against arclight's kernels (conv_blocks.cuh, themselves tested against the CPU in
// cuda_op_kernels) on the same fresh random tensors, outputs pre-filled with NaN: y, the saved mean and inverse
// std, the running statistics, dx, dweight and dbias, in both spatial modes; shapes with inner 1 (BatchNorm1d),
// odd sizes and a nonzero mean.
TEST(CudnnBatchNorm, MatchesArclightsKernels) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const float eps = 1e-3f, momentum = 0.1f;
  for (const kc::BatchNormDims d : {kc::BatchNormDims{4, 6, 25}, kc::BatchNormDims{3, 5, 1},
                                    kc::BatchNormDims{2, 3, 301}}) {
    const std::size_t count = std::size_t(d.n * d.c * d.inner), c = std::size_t(d.c);
    const auto x = uniform(count, g, -2.f, 3.f), dy = uniform(count, g, -1.f, 1.f);
    const auto w = uniform(c, g, 0.5f, 1.5f), b = uniform(c, g, -1.f, 1.f);
    const auto rm0 = uniform(c, g, -0.5f, 0.5f), rv0 = uniform(c, g, 0.5f, 2.f);
    DeviceBuffer<float> dx_in(x), ddy(dy), dw_in(w), db_in(b);
    DeviceBuffer<float> rm(rm0), rv(rv0);
    auto y = garbage(count), sm = garbage(c), si = garbage(c), gx = garbage(count), gw = garbage(c), gb = garbage(c);
    auto ws = garbage(std::size_t(kc::batch_norm_workspace_floats(d)));
    kc::batch_norm_forward_train(d, dx_in.data(), dw_in.data(), db_in.data(), eps, momentum, rm.data(), rv.data(),
                                 y.data(), sm.data(), si.data(), ak::Activation::Identity, ws.data(), nullptr);
    kc::batch_norm_backward_train(d, dx_in.data(), ddy.data(), dw_in.data(), db_in.data(), sm.data(), si.data(),
                                  gx.data(), gw.data(), gb.data(), ak::Activation::Identity, ws.data(), nullptr);
    for (const bool persistent : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "[" << d.n << ", " << d.c << ", " << d.inner << "] "
                                        << (persistent ? "spatial persistent" : "spatial"));
      DeviceBuffer<float> crm(rm0), crv(rv0);
      auto cy = garbage(count), csm = garbage(c), csi = garbage(c), cgx = garbage(count), cgw = garbage(c),
           cgb = garbage(c);
      kc::cudnn_batch_norm_forward_train(d, persistent, dx_in.data(), dw_in.data(), db_in.data(), eps, momentum,
                                         crm.data(), crv.data(), cy.data(), csm.data(), csi.data(), nullptr);
      kc::cudnn_batch_norm_backward_train(d, persistent, dx_in.data(), ddy.data(), dw_in.data(), eps, csm.data(),
                                          csi.data(), cgx.data(), cgw.data(), cgb.data(), nullptr);
      EXPECT_TRUE(near_all(cy.download(), y.download(), 1e-5, 1e-5, "y"));
      EXPECT_TRUE(near_all(csm.download(), sm.download(), 1e-5, 1e-6, "saved mean"));
      EXPECT_TRUE(near_all(csi.download(), si.download(), 1e-5, 1e-6, "saved inverse std"));
      EXPECT_TRUE(near_all(crm.download(), rm.download(), 1e-5, 1e-6, "running mean"));
      EXPECT_TRUE(near_all(crv.download(), rv.download(), 1e-5, 1e-6, "running variance (unbiased)"));
      EXPECT_TRUE(near_all(cgx.download(), gx.download(), 1e-4, 1e-5, "dx"));
      EXPECT_TRUE(near_all(cgw.download(), gw.download(), 1e-4, 1e-4, "dweight"));
      EXPECT_TRUE(near_all(cgb.download(), gb.download(), 1e-4, 1e-4, "dbias"));
    }
  }
}

// Refused on the host before any cuDNN call (runs without a GPU).
TEST(CudnnBatchNormValidation, RefusesBadArguments) {
  const kc::BatchNormDims d{2, 3, 4};
  float* f = fake<float>();
  EXPECT_ERROR_WITH(kc::cudnn_batch_norm_forward_train(d, false, f, nullptr, f, 1e-3f, 0.1f, f, f, f, f, f, nullptr),
                    "cudnn_batch_norm_forward_train", "weight must not be null");
  EXPECT_ERROR_WITH(kc::cudnn_batch_norm_forward_train(d, false, f, f, f, 1e-3f, 0.1f, f, nullptr, f, f, f, nullptr),
                    "running_mean and running_var");
  EXPECT_ERROR_WITH(kc::cudnn_batch_norm_forward_train(d, false, f, f, f, 1e-3f, 1.5f, f, f, f, f, f, nullptr),
                    "momentum");
  EXPECT_ERROR_WITH(kc::cudnn_batch_norm_forward_train(d, true, f, f, f, -1e-3f, 0.1f, f, f, f, f, f, nullptr),
                    "below cuDNN's minimum");
  EXPECT_ERROR_WITH(kc::cudnn_batch_norm_forward_train(kc::BatchNormDims{1, 3, 1}, false, f, f, f, 1e-3f, 0.1f, f, f,
                                                       f, f, f, nullptr),
                    "more than one value per channel");
  EXPECT_ERROR_WITH(
      kc::cudnn_batch_norm_backward_train(d, false, f, f, f, 1e-3f, f, f, f, f, nullptr, nullptr),
      "cudnn_batch_norm_backward_train", "dbias must not be null");
}

}  // namespace
