// CUDA-vs-CPU tests of the conv-block kernels (kernels/cuda/conv_blocks.cuh, declared in
// kernels/cuda/launchers_ops.hpp): batch norm with every fused activation (train / eval, forward / backward,
// running-statistics updates), the activations alone, squeeze-excite scaling, global average pooling and scaled
// weight standardisation. References are the CPU kernels run in double on the same fresh random inputs; device
// outputs start as NaN garbage (so an unwritten element fails), the launch is repeated to check bitwise
// determinism, and nullable outputs are dropped one at a time (the rest must stay bitwise equal). Shapes cover
// BatchNorm1d (inner = 1), odd inner (scalar path), inner % 4 == 0 (float4 path), misaligned pointers (scalar
// path again), c = 1, n = 1, and planes of more than 1M elements (the split, multi-chunk reduction).
// The host-validation tests at the end need no GPU: the launchers must throw before touching CUDA.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_test_util.hpp"
#include "harness.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/batch_norm.hpp"
#include "kernels/cpu/pooling.hpp"
#include "kernels/cpu/squeeze_excite.hpp"
#include "kernels/cpu/weight_standardization.hpp"
#include "kernels/cuda/launchers_ops.hpp"

namespace {

namespace kc = arclight::kernels::cuda;
namespace kcpu = arclight::kernels::cpu;
using arclight::cuda::DeviceBuffer;
using arclight::kernels::Activation;
using namespace arclight::testing::cuda;

constexpr Activation kAllActs[] = {Activation::Identity, Activation::ReLU, Activation::SiLU, Activation::GELU,
                                   Activation::Sigmoid};

const char* act_name(Activation a) { return kcpu::activation_name(a); }

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Index of the first element whose bits differ (or -1), for failure messages.
long first_bit_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return long(i);
  return -1;
}

#define EXPECT_BITWISE(a, b, what)                                                                      \
  do {                                                                                                  \
    const auto& _a = (a);                                                                               \
    const auto& _b = (b);                                                                               \
    const long _i = first_bit_difference(_a, _b);                                                       \
    EXPECT_EQ(_i, -1) << what << ": first differing element " << _i << ": "                             \
                      << (_i >= 0 && std::size_t(_i) < _a.size() ? double(_a[std::size_t(_i)]) : 0.0) \
                      << " vs " << (_i >= 0 && std::size_t(_i) < _b.size() ? double(_b[std::size_t(_i)]) : 0.0); \
  } while (0)

// |got[i] − want[i]| <= tol[i] for every i, reporting the worst element.
::testing::AssertionResult within(const std::vector<float>& got, const std::vector<double>& want,
                                  const std::vector<double>& tol, const std::string& what) {
  if (got.size() != want.size() || tol.size() != want.size())
    return ::testing::AssertionFailure() << what << ": sizes differ";
  std::size_t bad = 0, worst = 0;
  double worst_excess = -INFINITY;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = std::isnan(double(got[i])) ? INFINITY : std::abs(double(got[i]) - want[i]) - tol[i];
    if (e > 0) ++bad;
    if (e > worst_excess) worst_excess = e, worst = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size() << " elements differ; worst at "
                                       << worst << ": got " << got[worst] << ", want " << want[worst] << " (tol "
                                       << tol[worst] << ")";
}

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// ============================================ batch norm =================================================

struct BnShapeCase {
  std::int64_t n, c, inner;
  int offset = 0;               // floats every tensor of [n, c, inner] starts past its allocation (misalignment)
  float mean_spread = 3.f;      // channel means uniform in ±mean_spread
  float std_lo = 0.5f, std_hi = 2.f;
};

struct BnParam {
  BnShapeCase s;
  Activation act;
  int variant;  // 0: weight, bias, running stats, eps 1e-5 · 1: no weight/bias, eps 1e-3 · 2: no running stats
};

void PrintTo(const BnParam& p, std::ostream* os) {
  *os << "n" << p.s.n << "_c" << p.s.c << "_inner" << p.s.inner;
  if (p.s.offset) *os << "_off" << p.s.offset;
  if (p.s.mean_spread > 100) *os << "_bigmean";
  *os << "_" << act_name(p.act) << "_v" << p.variant;
}

// A device tensor of `count` floats starting `offset` floats past its allocation (the padding stays NaN).
struct OffsetBuffer {
  DeviceBuffer<float> buf;
  int offset = 0;
  std::size_t count = 0;
  OffsetBuffer(std::size_t n, int off) : buf(garbage(n + std::size_t(off))), offset(off), count(n) {}
  OffsetBuffer(const std::vector<float>& v, int off) : OffsetBuffer(v.size(), off) { upload(v); }
  float* data() { return buf.data() + offset; }
  void upload(const std::vector<float>& v) {
    std::vector<float> all(count + std::size_t(offset), NAN);
    std::copy(v.begin(), v.end(), all.begin() + offset);
    buf.upload(all);
  }
  std::vector<float> download() const {
    const std::vector<float> all = buf.download();
    return std::vector<float>(all.begin() + offset, all.end());
  }
  void fill_garbage() { buf.fill_bytes(0xFF); }
};

class CudaBatchNorm : public ::testing::TestWithParam<BnParam> {};

TEST_P(CudaBatchNorm, MatchesCpuTrainAndEvalForwardBackward) {
  ARCLIGHT_REQUIRE_GPU();
  const BnParam prm = GetParam();
  const BnShapeCase& s = prm.s;
  const Activation act = prm.act;
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const std::size_t C = std::size_t(s.c), total = std::size_t(s.n * s.c * s.inner);
  const std::int64_t M = s.n * s.inner;
  const bool affine = prm.variant != 1, running = prm.variant != 2;
  const float eps = prm.variant == 1 ? 1e-3f : 1e-5f, momentum = prm.variant == 1 ? 0.01f : 0.1f;
  const kcpu::BatchNormShape cs{s.n, s.c, s.inner};
  const kc::BatchNormDims dims{s.n, s.c, s.inner};
  auto at = [&](std::size_t ni, std::size_t ci, std::size_t k) { return (ni * C + ci) * std::size_t(s.inner) + k; };

  // Inputs: per-channel mean and spread, so the statistics are not trivial.
  const std::vector<float> ch_mean = uniform(C, g, -s.mean_spread, s.mean_spread);
  const std::vector<float> ch_std = uniform(C, g, s.std_lo, s.std_hi);
  std::vector<float> x = normal(total, g);
  for (std::size_t ni = 0; ni < std::size_t(s.n); ++ni)
    for (std::size_t ci = 0; ci < C; ++ci)
      for (std::size_t k = 0; k < std::size_t(s.inner); ++k) {
        float& v = x[at(ni, ci, k)];
        v = ch_mean[ci] + ch_std[ci] * v;
      }
  std::vector<float> w = uniform(C, g, -1.5f, 1.5f), b = uniform(C, g, -1.f, 1.f);
  const std::vector<float> rm0 = uniform(C, g, -1.f, 1.f), rv0 = uniform(C, g, 0.5f, 2.f);
  const std::vector<float> dy = normal(total, g);
  const std::vector<double> xd = to_double(x), dyd = to_double(dy), wd = to_double(w), bd = to_double(b);
  const double* wp = affine ? wd.data() : nullptr;
  const double* bp = affine ? bd.data() : nullptr;

  // max |(x − mean)·w·invstd| + max |b| over the elements: the scale of the pre-activation.
  auto pre_activation_magnitude = [&](const std::vector<double>& mean, const std::vector<double>& invstd) {
    double m = 1.0;
    for (std::size_t ni = 0; ni < std::size_t(s.n); ++ni)
      for (std::size_t ci = 0; ci < C; ++ci) {
        const double zs = (affine ? wd[ci] : 1.0) * invstd[ci], bc = affine ? std::abs(bd[ci]) : 0.0;
        for (std::size_t k = 0; k < std::size_t(s.inner); ++k)
          m = std::max(m, std::abs((xd[at(ni, ci, k)] - mean[ci]) * zs) + bc);
      }
    return m;
  };

  // ---- train forward: CPU double reference -----------------------------------------------------------
  std::vector<double> y_ref(total), sm_ref(C), si_ref(C), rm_ref = to_double(rm0), rv_ref = to_double(rv0);
  kcpu::batch_norm_forward_train<double>(cs, xd.data(), wp, bp, double(eps), double(momentum),
                                         running ? rm_ref.data() : nullptr, running ? rv_ref.data() : nullptr,
                                         y_ref.data(), sm_ref.data(), si_ref.data(), act);

  OffsetBuffer dxin(x, s.offset), ddy(dy, s.offset);
  DeviceBuffer<float> dw(w), db(b);
  const float* dwp = affine ? dw.data() : nullptr;
  const float* dbp = affine ? db.data() : nullptr;
  const std::int64_t ws_floats = kc::batch_norm_workspace_floats(dims);
  ASSERT_GT(ws_floats, 0);
  DeviceBuffer<float> ws = garbage(std::size_t(ws_floats));

  OffsetBuffer dyout(total, s.offset);
  DeviceBuffer<float> dsm = garbage(C), dsi = garbage(C), drm(rm0), drv(rv0);
  kc::batch_norm_forward_train(dims, dxin.data(), dwp, dbp, eps, momentum, running ? drm.data() : nullptr,
                               running ? drv.data() : nullptr, dyout.data(), dsm.data(), dsi.data(), act, ws.data(),
                               nullptr);
  const std::vector<float> y_gpu = dyout.download(), sm_gpu = dsm.download(), si_gpu = dsi.download();
  // y = act((x − mean)·w·invstd + b): float rounding of the pre-activation sets the absolute error scale.
  const double zmag_t = pre_activation_magnitude(sm_ref, si_ref);
  EXPECT_TRUE(near_all(y_gpu, y_ref, 1e-4, 1e-5 + 2e-6 * zmag_t, "train y"));
  EXPECT_TRUE(near_all(sm_gpu, sm_ref, 1e-5, 1e-5 * s.std_hi, "save_mean"));
  EXPECT_TRUE(near_all(si_gpu, si_ref, 1e-4, 1e-6, "save_invstd"));
  if (running) {
    EXPECT_TRUE(near_all(drm.download(), rm_ref, 1e-5, 1e-6, "running_mean"));
    EXPECT_TRUE(near_all(drv.download(), rv_ref, 1e-4, 1e-6, "running_var (unbiased update)"));
  }

  // Determinism and in place: a second run (fresh running stats, garbage workspace) matches bitwise, also when
  // y aliases x.
  {
    DeviceBuffer<float> dsm2 = garbage(C), dsi2 = garbage(C), drm2(rm0), drv2(rv0);
    ws.fill_bytes(0xFF);
    OffsetBuffer inplace(x, s.offset);
    kc::batch_norm_forward_train(dims, inplace.data(), dwp, dbp, eps, momentum, running ? drm2.data() : nullptr,
                                 running ? drv2.data() : nullptr, inplace.data(), dsm2.data(), dsi2.data(), act,
                                 ws.data(), nullptr);
    EXPECT_BITWISE(inplace.download(), y_gpu, "train y (second run, in place)");
    EXPECT_BITWISE(dsm2.download(), sm_gpu, "save_mean (second run)");
    EXPECT_BITWISE(dsi2.download(), si_gpu, "save_invstd (second run)");
    if (running) {
      EXPECT_BITWISE(drm2.download(), drm.download(), "running_mean (second run)");
      EXPECT_BITWISE(drv2.download(), drv.download(), "running_var (second run)");
    }
    // Saved statistics are optional.
    OffsetBuffer y3(total, s.offset);
    kc::batch_norm_forward_train(dims, dxin.data(), dwp, dbp, eps, momentum, nullptr, nullptr, y3.data(), nullptr,
                                 nullptr, act, ws.data(), nullptr);
    EXPECT_BITWISE(y3.download(), y_gpu, "train y without saved / running statistics");
  }

  // ---- train backward: both sides get the same (float) saved statistics -------------------------------
  const std::vector<float> sm_f = to_float(sm_ref), si_f = to_float(si_ref);
  std::vector<double> dx_ref(total), dwt_ref(C), dbt_ref(C);
  kcpu::batch_norm_backward_train<double>(cs, xd.data(), dyd.data(), wp, bp, to_double(sm_f).data(),
                                          to_double(si_f).data(), dx_ref.data(), dwt_ref.data(), dbt_ref.data(), act);

  // Tolerances. The float pre-activation z carries an error zerr ~ 2e-7·(|(x − mean)·zs| + |b| + 1), which moves
  // dz = dy·act'(z) by up to |dy|·zerr (|act''| <= 1) for the smooth activations. ReLU: elements with z within
  // rounding of 0 may flip between float and double; they are excluded from dx and their |dy|·(1 + |x̂|) is
  // added to the sums' tolerance. Sums: float accumulation, 1e-6 of the sum of magnitudes.
  auto backward_tolerances = [&](const std::vector<double>& mean, const std::vector<double>& invstd,
                                 const std::vector<double>& dx_want, const std::vector<double>& dw_want,
                                 const std::vector<double>& db_want, std::vector<double>& tol_dx,
                                 std::vector<double>& tol_dw, std::vector<double>& tol_db) {
    tol_dx.assign(total, 0.0);
    tol_dw.assign(C, 0.0);
    tol_db.assign(C, 0.0);
    const bool smooth = act != Activation::Identity && act != Activation::ReLU;
    std::vector<double> sum_db(C, 0.0), sum_dw(C, 0.0), kmax(C, 0.0);
    double max_dy = 0.0;
    for (float v : dy) max_dy = std::max(max_dy, double(std::abs(v)));
    for (std::size_t ni = 0; ni < std::size_t(s.n); ++ni)
      for (std::size_t ci = 0; ci < C; ++ci) {
        const double wc = affine ? wd[ci] : 1.0, bc = affine ? bd[ci] : 0.0;
        const double zs = wc * invstd[ci];
        kmax[ci] = std::abs(zs);
        for (std::size_t k = 0; k < std::size_t(s.inner); ++k) {
          const std::size_t i = at(ni, ci, k);
          const double xc = xd[i] - mean[ci], xhat = xc * invstd[ci];
          const double z = xc * zs + bc;
          const double zerr = 2e-7 * (std::abs(xc * zs) + std::abs(bc) + 1.0);
          const double ady = std::abs(dyd[i]);
          sum_db[ci] += 1e-6 * 1.2 * ady;
          sum_dw[ci] += 1e-6 * 1.2 * ady * std::abs(xhat);
          if (smooth) {
            sum_db[ci] += ady * zerr;
            sum_dw[ci] += ady * zerr * std::abs(xhat);
          }
          const bool ambiguous = act == Activation::ReLU && std::abs(z) < 50 * zerr;
          if (ambiguous) {
            sum_db[ci] += 2 * ady;
            sum_dw[ci] += 2 * ady * std::abs(xhat);
          }
          tol_dx[i] = ambiguous ? INFINITY
                                : 1e-4 * std::abs(dx_want[i]) + 1e-5 * std::abs(zs) * max_dy + 1e-7 +
                                      (smooth ? 2 * std::abs(zs) * ady * zerr : 0.0);
        }
      }
    for (std::size_t ci = 0; ci < C; ++ci) {
      tol_db[ci] = 1e-4 * std::abs(db_want[ci]) + sum_db[ci] + 1e-6;
      tol_dw[ci] = 1e-4 * std::abs(dw_want[ci]) + sum_dw[ci] + 1e-6;
    }
  };
  std::vector<double> tol_dx, tol_dw, tol_db;
  backward_tolerances(to_double(sm_f), to_double(si_f), dx_ref, dwt_ref, dbt_ref, tol_dx, tol_dw, tol_db);

  DeviceBuffer<float> dsmf(sm_f), dsif(si_f);
  OffsetBuffer ddx(total, s.offset);
  DeviceBuffer<float> ddw = garbage(C), ddb = garbage(C);
  ws.fill_bytes(0xFF);
  kc::batch_norm_backward_train(dims, dxin.data(), ddy.data(), dwp, dbp, dsmf.data(), dsif.data(), ddx.data(),
                                ddw.data(), ddb.data(), act, ws.data(), nullptr);
  const std::vector<float> dx_gpu = ddx.download(), dw_gpu = ddw.download(), db_gpu = ddb.download();
  EXPECT_TRUE(within(dx_gpu, dx_ref, tol_dx, "train dx"));
  EXPECT_TRUE(within(dw_gpu, dwt_ref, tol_dw, "train dweight"));
  EXPECT_TRUE(within(db_gpu, dbt_ref, tol_db, "train dbias"));

  // Each output dropped in turn (the others bitwise unchanged), a repeated run, and dx aliasing dy.
  for (int drop = 0; drop < 3; ++drop) {
    SCOPED_TRACE(std::string("train backward without ") + (drop == 0 ? "dx" : drop == 1 ? "dweight" : "dbias"));
    OffsetBuffer ddx2(total, s.offset);
    DeviceBuffer<float> ddw2 = garbage(C), ddb2 = garbage(C);
    ws.fill_bytes(0xFF);
    kc::batch_norm_backward_train(dims, dxin.data(), ddy.data(), dwp, dbp, dsmf.data(), dsif.data(),
                                  drop == 0 ? nullptr : ddx2.data(), drop == 1 ? nullptr : ddw2.data(),
                                  drop == 2 ? nullptr : ddb2.data(), act, ws.data(), nullptr);
    if (drop != 0) EXPECT_BITWISE(ddx2.download(), dx_gpu, "dx");
    if (drop != 1) EXPECT_BITWISE(ddw2.download(), dw_gpu, "dweight");
    if (drop != 2) EXPECT_BITWISE(ddb2.download(), db_gpu, "dbias");
    if (drop == 0) {  // dx untouched (still NaN garbage)
      const std::vector<float> untouched = ddx2.download();
      EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](float v) { return std::isnan(v); }))
          << "dx was written although it was null";
    }
  }
  {
    OffsetBuffer alias(dy, s.offset);
    DeviceBuffer<float> ddw2 = garbage(C), ddb2 = garbage(C);
    ws.fill_bytes(0xFF);
    kc::batch_norm_backward_train(dims, dxin.data(), alias.data(), dwp, dbp, dsmf.data(), dsif.data(), alias.data(),
                                  ddw2.data(), ddb2.data(), act, ws.data(), nullptr);
    EXPECT_BITWISE(alias.download(), dx_gpu, "train dx (in place over dy, repeated run)");
    EXPECT_BITWISE(ddw2.download(), dw_gpu, "train dweight (repeated run)");
    EXPECT_BITWISE(ddb2.download(), db_gpu, "train dbias (repeated run)");
  }

  // ---- eval forward / backward with the running statistics rm0 / rv0 ------------------------------------
  std::vector<double> ye_ref(total), dxe_ref(total), dwe_ref(C), dbe_ref(C);
  const std::vector<double> rm0d = to_double(rm0), rv0d = to_double(rv0);
  kcpu::batch_norm_forward_eval<double>(cs, xd.data(), wp, bp, double(eps), rm0d.data(), rv0d.data(), ye_ref.data(),
                                        act);
  kcpu::batch_norm_backward_eval<double>(cs, xd.data(), dyd.data(), wp, bp, double(eps), rm0d.data(), rv0d.data(),
                                         dxe_ref.data(), dwe_ref.data(), dbe_ref.data(), act);
  DeviceBuffer<float> drm0(rm0), drv0(rv0);
  OffsetBuffer dye(total, s.offset);
  kc::batch_norm_forward_eval(dims, dxin.data(), dwp, dbp, eps, drm0.data(), drv0.data(), dye.data(), act, nullptr);
  std::vector<double> inv_e(C);
  for (std::size_t ci = 0; ci < C; ++ci) inv_e[ci] = 1.0 / std::sqrt(rv0d[ci] + double(eps));
  const std::vector<float> ye_gpu = dye.download();
  EXPECT_TRUE(near_all(ye_gpu, ye_ref, 1e-5, 1e-6 + 2e-6 * pre_activation_magnitude(rm0d, inv_e), "eval y"));
  {
    OffsetBuffer inplace(x, s.offset);
    kc::batch_norm_forward_eval(dims, inplace.data(), dwp, dbp, eps, drm0.data(), drv0.data(), inplace.data(), act,
                                nullptr);
    EXPECT_BITWISE(inplace.download(), ye_gpu, "eval y (in place, repeated run)");
  }
  backward_tolerances(rm0d, inv_e, dxe_ref, dwe_ref, dbe_ref, tol_dx, tol_dw, tol_db);
  OffsetBuffer ddxe(total, s.offset);
  DeviceBuffer<float> ddwe = garbage(C), ddbe = garbage(C);
  ws.fill_bytes(0xFF);
  kc::batch_norm_backward_eval(dims, dxin.data(), ddy.data(), dwp, dbp, eps, drm0.data(), drv0.data(), ddxe.data(),
                               ddwe.data(), ddbe.data(), act, ws.data(), nullptr);
  const std::vector<float> dxe_gpu = ddxe.download(), dwe_gpu = ddwe.download(), dbe_gpu = ddbe.download();
  EXPECT_TRUE(within(dxe_gpu, dxe_ref, tol_dx, "eval dx"));
  EXPECT_TRUE(within(dwe_gpu, dwe_ref, tol_dw, "eval dweight"));
  EXPECT_TRUE(within(dbe_gpu, dbe_ref, tol_db, "eval dbias"));
  for (int drop = 0; drop < 3; ++drop) {
    SCOPED_TRACE(std::string("eval backward without ") + (drop == 0 ? "dx" : drop == 1 ? "dweight" : "dbias"));
    OffsetBuffer ddx2(total, s.offset);
    DeviceBuffer<float> ddw2 = garbage(C), ddb2 = garbage(C);
    ws.fill_bytes(0xFF);
    kc::batch_norm_backward_eval(dims, dxin.data(), ddy.data(), dwp, dbp, eps, drm0.data(), drv0.data(),
                                 drop == 0 ? nullptr : ddx2.data(), drop == 1 ? nullptr : ddw2.data(),
                                 drop == 2 ? nullptr : ddb2.data(), act, ws.data(), nullptr);
    if (drop != 0) EXPECT_BITWISE(ddx2.download(), dxe_gpu, "eval dx");
    if (drop != 1) EXPECT_BITWISE(ddw2.download(), dwe_gpu, "eval dweight");
    if (drop != 2) EXPECT_BITWISE(ddb2.download(), dbe_gpu, "eval dbias");
  }
  {
    OffsetBuffer alias(dy, s.offset);
    kc::batch_norm_backward_eval(dims, dxin.data(), alias.data(), dwp, dbp, eps, drm0.data(), drv0.data(),
                                 alias.data(), nullptr, nullptr, act, ws.data(), nullptr);
    EXPECT_BITWISE(alias.download(), dxe_gpu, "eval dx (in place over dy, without dweight / dbias)");
  }
}

std::vector<BnParam> bn_params() {
  const std::vector<BnShapeCase> shapes = {
      {2, 3, 1},           // BatchNorm1d, M = 2 (smallest trainable)
      {16, 5, 1},          // BatchNorm1d [N, C]
      {4, 3, 9},           // odd inner: scalar path
      {3, 5, 16},          // inner % 4 == 0: float4 path
      {3, 5, 16, 1},       // same, misaligned by one float: scalar path
      {1, 1, 37},          // n = 1, c = 1
      {6, 1, 8},           // c = 1, float4
      {20, 3, 3136},       // several chunks per channel (float4)
      {9, 2, 3001},        // several chunks, odd inner: chunk bounds fall mid-plane (scalar)
      {2, 2, 600000},      // > 1M elements per channel: the split path (float4)
      {5, 1, 250001},      // > 1M per channel, odd inner (scalar)
      {4, 3, 100, 0, 1000.f, 0.01f, 0.1f},  // mean >> std: shifted statistics, not E[x²] − E[x]²
  };
  std::vector<BnParam> out;
  for (const BnShapeCase& s : shapes)
    for (Activation a : kAllActs)
      for (int v = 0; v < 3; ++v) out.push_back({s, a, v});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaBatchNorm, ::testing::ValuesIn(bn_params()),
                         [](const ::testing::TestParamInfo<BnParam>& info) {
                           std::ostringstream os;
                           PrintTo(info.param, &os);
                           return os.str();
                         });

// ============================================ activations ================================================

TEST(CudaConvBlockActivation, ForwardBackwardMatchCpuForEveryActivation) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  for (std::int64_t count : {std::int64_t(1), std::int64_t(7), std::int64_t(1000), std::int64_t((1 << 20) + 3)}) {
    std::vector<float> x = uniform(std::size_t(count), g, -8.f, 8.f);
    const float specials[] = {0.f, -0.f, 1e-30f, -1e-30f, 30.f, -30.f, 1.f};
    for (std::size_t i = 0; i < std::min<std::size_t>(x.size(), 7); ++i) x[i] = specials[i];
    const std::vector<float> dy = normal(std::size_t(count), g);
    for (Activation act : kAllActs) {
      SCOPED_TRACE(std::string(act_name(act)) + " count " + std::to_string(count));
      std::vector<double> y_ref(x.size()), dx_ref(x.size());
      kcpu::activation_forward<double>(act, to_double(x).data(), y_ref.data(), count);
      kcpu::activation_backward<double>(act, to_double(x).data(), to_double(dy).data(), dx_ref.data(), count);
      DeviceBuffer<float> dx_in(x), ddy(dy), dyo = garbage(x.size()), ddx = garbage(x.size());
      kc::activation_forward(act, count, dx_in.data(), dyo.data(), nullptr);
      kc::activation_backward(act, count, dx_in.data(), ddy.data(), ddx.data(), nullptr);
      const std::vector<float> y = dyo.download(), dx = ddx.download();
      EXPECT_TRUE(near_all(y, y_ref, 2e-6, 1e-7, "y"));
      EXPECT_TRUE(near_all(dx, dx_ref, 2e-6, 1e-6, "dx"));
      // In place: y over x, dx over dy; bitwise the out-of-place results.
      DeviceBuffer<float> inplace(x), alias(dy);
      kc::activation_forward(act, count, inplace.data(), inplace.data(), nullptr);
      kc::activation_backward(act, count, dx_in.data(), alias.data(), alias.data(), nullptr);
      EXPECT_BITWISE(inplace.download(), y, "y in place");
      EXPECT_BITWISE(alias.download(), dx, "dx in place over dy");
    }
  }
}

// ============================================ squeeze-excite =============================================

TEST(CudaConvBlockSeScale, ForwardBackwardMatchCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  struct Case {
    std::int64_t n, c, hw;
  };
  for (const Case cs : {Case{2, 3, 49}, Case{1, 5, 1}, Case{3, 4, 12544}, Case{2, 70000, 3}, Case{1, 1, 33}}) {
    SCOPED_TRACE("n " + std::to_string(cs.n) + " c " + std::to_string(cs.c) + " hw " + std::to_string(cs.hw));
    const std::size_t planes = std::size_t(cs.n * cs.c), total = planes * std::size_t(cs.hw);
    const std::vector<float> x = normal(total, g), gate = uniform(planes, g, 0.f, 1.f), dy = normal(total, g);
    std::vector<double> y_ref(total), dx_ref(total), dg_ref(planes), dg_scale(planes, 0.0);
    kcpu::se_scale_forward<double>(cs.n, cs.c, cs.hw, to_double(x).data(), to_double(gate).data(), y_ref.data());
    kcpu::se_scale_backward<double>(cs.n, cs.c, cs.hw, to_double(x).data(), to_double(gate).data(),
                                    to_double(dy).data(), dx_ref.data(), dg_ref.data());
    double dg_atol = 1e-7;
    for (std::size_t p = 0; p < planes; ++p) {
      double a = 0;
      for (std::size_t k = 0; k < std::size_t(cs.hw); ++k) a += std::abs(double(x[p * cs.hw + k]) * dy[p * cs.hw + k]);
      dg_atol = std::max(dg_atol, 1e-6 * a);
    }
    DeviceBuffer<float> dxi(x), dgt(gate), ddy(dy), dyo = garbage(total), ddx = garbage(total), ddg = garbage(planes);
    kc::se_scale_forward(cs.n, cs.c, cs.hw, dxi.data(), dgt.data(), dyo.data(), nullptr);
    kc::se_scale_backward(cs.n, cs.c, cs.hw, dxi.data(), dgt.data(), ddy.data(), ddx.data(), ddg.data(), nullptr);
    const std::vector<float> y = dyo.download(), dx = ddx.download(), dg = ddg.download();
    EXPECT_TRUE(near_all(y, y_ref, 1e-7, 0.0, "y"));  // one float multiply: exact up to rounding
    EXPECT_TRUE(near_all(dx, dx_ref, 1e-7, 0.0, "dx"));
    EXPECT_TRUE(near_all(dg, dg_ref, 1e-5, dg_atol, "dgate"));
    // Each output alone (bitwise equal), in place, repeated.
    DeviceBuffer<float> ddx2 = garbage(total), ddg2 = garbage(planes), inplace(x), alias(dy);
    kc::se_scale_backward(cs.n, cs.c, cs.hw, dxi.data(), dgt.data(), ddy.data(), ddx2.data(), nullptr, nullptr);
    kc::se_scale_backward(cs.n, cs.c, cs.hw, dxi.data(), dgt.data(), ddy.data(), nullptr, ddg2.data(), nullptr);
    EXPECT_BITWISE(ddx2.download(), dx, "dx without dgate");
    EXPECT_BITWISE(ddg2.download(), dg, "dgate without dx (repeated run)");
    kc::se_scale_forward(cs.n, cs.c, cs.hw, inplace.data(), dgt.data(), inplace.data(), nullptr);
    EXPECT_BITWISE(inplace.download(), y, "y in place");
    DeviceBuffer<float> ddg3 = garbage(planes);
    kc::se_scale_backward(cs.n, cs.c, cs.hw, dxi.data(), dgt.data(), alias.data(), alias.data(), ddg3.data(), nullptr);
    EXPECT_BITWISE(alias.download(), dx, "dx in place over dy");
    EXPECT_BITWISE(ddg3.download(), dg, "dgate with dx over dy");
  }
}

// ============================================ global average pooling =====================================

TEST(CudaConvBlockGlobalAvgPool, ForwardBackwardMatchCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  struct Case {
    std::int64_t planes, hw;
  };
  // 600000 planes: more warps than the grid holds, so the plane loop strides.
  for (const Case cs : {Case{6, 49}, Case{1, 1}, Case{5, 12544}, Case{600000, 1}, Case{3, 33}, Case{1280 * 4, 49}}) {
    SCOPED_TRACE("planes " + std::to_string(cs.planes) + " hw " + std::to_string(cs.hw));
    const std::size_t P = std::size_t(cs.planes), total = P * std::size_t(cs.hw);
    const std::vector<float> x = uniform(total, g, -1.f, 3.f), dy = normal(P, g);
    std::vector<double> y_ref(P), dx_ref(total);
    kcpu::global_avg_pool_forward<double>(cs.planes, 1, cs.hw, to_double(x).data(), y_ref.data());
    std::vector<float> dx_cpu(total);
    kcpu::global_avg_pool_backward<float>(cs.planes, 1, cs.hw, dy.data(), dx_cpu.data());
    DeviceBuffer<float> dxi(x), ddy(dy), dyo = garbage(P), ddx = garbage(total);
    kc::global_avg_pool_forward(cs.planes, cs.hw, dxi.data(), dyo.data(), nullptr);
    kc::global_avg_pool_backward(cs.planes, cs.hw, ddy.data(), ddx.data(), nullptr);
    const std::vector<float> y = dyo.download();
    EXPECT_TRUE(near_all(y, y_ref, 1e-5, 3e-6, "y"));
    EXPECT_BITWISE(ddx.download(), dx_cpu, "dx (dy / hw, as the CPU float kernel)");
    DeviceBuffer<float> dyo2 = garbage(P);
    kc::global_avg_pool_forward(cs.planes, cs.hw, dxi.data(), dyo2.data(), nullptr);
    EXPECT_BITWISE(dyo2.download(), y, "y (repeated run)");
  }
}

// ============================================ weight standardisation =====================================

TEST(CudaConvBlockWeightStandardization, ForwardBackwardMatchCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  struct Case {
    std::int64_t c_out, fan_in;
    bool gain;
    float eps;
  };
  for (const Case cs : {Case{1, 1, true, 1e-4f}, Case{7, 9, true, 1e-6f}, Case{64, 577, false, 1e-4f},
                        Case{16, 4608, true, 1e-4f}, Case{3, 300, true, 0.f}}) {
    SCOPED_TRACE("c_out " + std::to_string(cs.c_out) + " fan_in " + std::to_string(cs.fan_in) +
                 (cs.gain ? " gain" : " no gain") + " eps " + std::to_string(cs.eps));
    const std::size_t total = std::size_t(cs.c_out * cs.fan_in);
    std::vector<float> w = normal(total, g, 0.3f);
    for (std::size_t i = 0; i < total; ++i) w[i] += 0.05f;  // rows with a nonzero mean
    const std::vector<float> gain = uniform(std::size_t(cs.c_out), g, 0.5f, 2.f), dwh = normal(total, g);
    const float gamma = 1.7f;
    const std::vector<double> wd = to_double(w), gd = to_double(gain), dwhd = to_double(dwh);
    std::vector<double> wh_ref(total), dw_ref(total), dg_ref(std::size_t(cs.c_out));
    kcpu::ws_forward<double>(wd.data(), cs.gain ? gd.data() : nullptr, double(gamma), double(cs.eps), cs.c_out,
                             cs.fan_in, wh_ref.data());
    kcpu::ws_backward<double>(wd.data(), cs.gain ? gd.data() : nullptr, double(gamma), double(cs.eps), cs.c_out,
                              cs.fan_in, dwhd.data(), dw_ref.data(), cs.gain ? dg_ref.data() : nullptr);
    DeviceBuffer<float> dwt(w), dgn(gain), ddwh(dwh), dwh_out = garbage(total), ddw = garbage(total),
                                                       ddg = garbage(std::size_t(cs.c_out));
    const float* gp = cs.gain ? dgn.data() : nullptr;
    kc::ws_forward(cs.c_out, cs.fan_in, dwt.data(), gp, gamma, cs.eps, dwh_out.data(), nullptr);
    kc::ws_backward(cs.c_out, cs.fan_in, dwt.data(), gp, gamma, cs.eps, ddwh.data(), ddw.data(),
                    cs.gain ? ddg.data() : nullptr, nullptr);
    const std::vector<float> wh = dwh_out.download(), dw = ddw.download();
    EXPECT_TRUE(near_all(wh, wh_ref, 1e-5, 1e-6 * std::max(1.0, max_abs(wh_ref)), "w_hat"));
    EXPECT_TRUE(near_all(dw, dw_ref, 1e-5, 1e-5 * std::max(1e-3, max_abs(dw_ref)), "dw"));
    if (cs.gain) {
      EXPECT_TRUE(near_all(ddg.download(), dg_ref, 1e-5, 1e-5 * std::max(1e-3, max_abs(dg_ref)), "dgain"));
      // dgain is optional.
      DeviceBuffer<float> ddw2 = garbage(total);
      kc::ws_backward(cs.c_out, cs.fan_in, dwt.data(), gp, gamma, cs.eps, ddwh.data(), ddw2.data(), nullptr, nullptr);
      EXPECT_BITWISE(ddw2.download(), dw, "dw without dgain");
    }
  }
}

// ============================================ host validation (no GPU needed) ============================

// Dummy device pointers: never dereferenced, because validation throws before any CUDA call.
float* fake(std::uintptr_t k = 1) { return reinterpret_cast<float*>(k * 256); }

TEST(ConvBlockHostValidation, BatchNormTrainForward) {
  const kc::BatchNormDims d{2, 3, 5};
  auto call = [&](kc::BatchNormDims dims, const float* x, float eps, float mom, float* rm, float* rv, float* y,
                  Activation act, float* ws) {
    kc::batch_norm_forward_train(dims, x, nullptr, nullptr, eps, mom, rm, rv, y, fake(3), fake(4), act, ws, nullptr);
  };
  const Activation id = Activation::Identity;
  EXPECT_ERROR_WITH(call({0, 3, 5}, fake(), 1e-5f, 0.1f, nullptr, nullptr, fake(2), id, fake(5)),
                    "batch_norm_forward_train", "n >= 1", "[0, 3, 5]");
  EXPECT_ERROR_WITH(call({2, 0, 5}, fake(), 1e-5f, 0.1f, nullptr, nullptr, fake(2), id, fake(5)),
                    "batch_norm_forward_train", "c >= 1");
  EXPECT_ERROR_WITH(call({1, 3, 1}, fake(), 1e-5f, 0.1f, nullptr, nullptr, fake(2), id, fake(5)),
                    "batch_norm_forward_train", "more than 1 value per channel", "[1, 3, 1]");
  EXPECT_ERROR_WITH(call(d, fake(), -1e-5f, 0.1f, nullptr, nullptr, fake(2), id, fake(5)), "batch_norm_forward_train",
                    "eps must be finite and >= 0");
  EXPECT_ERROR_WITH(call(d, fake(), NAN, 0.1f, nullptr, nullptr, fake(2), id, fake(5)), "batch_norm_forward_train",
                    "eps");
  EXPECT_ERROR_WITH(call(d, fake(), 1e-5f, 1.5f, nullptr, nullptr, fake(2), id, fake(5)), "batch_norm_forward_train",
                    "momentum must be in [0, 1]", "1.5");
  EXPECT_ERROR_WITH(call(d, fake(), 1e-5f, -0.1f, nullptr, nullptr, fake(2), id, fake(5)),
                    "batch_norm_forward_train", "momentum");
  EXPECT_ERROR_WITH(call(d, fake(), 1e-5f, NAN, nullptr, nullptr, fake(2), id, fake(5)), "batch_norm_forward_train",
                    "momentum");
  EXPECT_ERROR_WITH(call(d, fake(), 1e-5f, 0.1f, fake(6), nullptr, fake(2), id, fake(5)), "batch_norm_forward_train",
                    "running_mean and running_var must be given together");
  EXPECT_ERROR_WITH(call(d, nullptr, 1e-5f, 0.1f, nullptr, nullptr, fake(2), id, fake(5)),
                    "batch_norm_forward_train", "must not be null");
  EXPECT_ERROR_WITH(call(d, fake(), 1e-5f, 0.1f, nullptr, nullptr, nullptr, id, fake(5)), "batch_norm_forward_train",
                    "must not be null");
  EXPECT_ERROR_WITH(call(d, fake(), 1e-5f, 0.1f, nullptr, nullptr, fake(2), id, nullptr), "batch_norm_forward_train",
                    "workspace must not be null");
  EXPECT_ERROR_WITH(call(d, fake(), 1e-5f, 0.1f, nullptr, nullptr, fake(2), static_cast<Activation>(9), fake(5)),
                    "batch_norm_forward_train", "unknown activation id 9");
}

TEST(ConvBlockHostValidation, BatchNormEvalAndBackward) {
  const kc::BatchNormDims d{2, 3, 5};
  const Activation id = Activation::Identity;
  EXPECT_ERROR_WITH(kc::batch_norm_forward_eval(d, fake(), nullptr, nullptr, 1e-5f, nullptr, fake(2), fake(3), id,
                                                nullptr),
                    "batch_norm_forward_eval", "running_mean and running_var");
  EXPECT_ERROR_WITH(kc::batch_norm_forward_eval({2, 3, 0}, fake(), nullptr, nullptr, 1e-5f, fake(1), fake(2), fake(3),
                                                id, nullptr),
                    "batch_norm_forward_eval", "inner >= 1");
  EXPECT_ERROR_WITH(kc::batch_norm_forward_eval(d, fake(), nullptr, nullptr, -1.f, fake(1), fake(2), fake(3), id,
                                                nullptr),
                    "batch_norm_forward_eval", "eps");
  EXPECT_ERROR_WITH(kc::batch_norm_backward_train(d, fake(), fake(2), nullptr, nullptr, nullptr, fake(4), fake(5),
                                                  nullptr, nullptr, id, fake(6), nullptr),
                    "batch_norm_backward_train", "saved statistics must not be null");
  EXPECT_ERROR_WITH(kc::batch_norm_backward_train(d, fake(), fake(2), nullptr, nullptr, fake(3), fake(4), fake(5),
                                                  nullptr, nullptr, id, nullptr, nullptr),
                    "batch_norm_backward_train", "workspace must not be null");
  EXPECT_ERROR_WITH(kc::batch_norm_backward_train(d, fake(), fake(2), nullptr, nullptr, fake(3), fake(4), fake(),
                                                  nullptr, nullptr, id, fake(6), nullptr),
                    "batch_norm_backward_train", "dx must not alias x");
  EXPECT_ERROR_WITH(kc::batch_norm_backward_eval(d, fake(), fake(2), nullptr, nullptr, 1e-5f, fake(3), nullptr,
                                                 fake(5), nullptr, nullptr, id, fake(6), nullptr),
                    "batch_norm_backward_eval", "running statistics must not be null");
  EXPECT_ERROR_WITH(kc::batch_norm_backward_eval(d, fake(), fake(2), nullptr, nullptr, -2.f, fake(3), fake(4),
                                                 fake(5), nullptr, nullptr, id, fake(6), nullptr),
                    "batch_norm_backward_eval", "eps");
  EXPECT_ERROR_WITH(kc::batch_norm_backward_eval(d, fake(), fake(2), nullptr, nullptr, 1e-5f, fake(3), fake(4),
                                                 fake(5), nullptr, nullptr, static_cast<Activation>(-1), fake(6),
                                                 nullptr),
                    "batch_norm_backward_eval", "unknown activation id -1");
  EXPECT_ERROR_WITH(kc::batch_norm_workspace_floats({2, 0, 5}), "batch_norm_workspace_floats", "c >= 1");
  // Nothing requested: a valid no-op that touches no CUDA state.
  EXPECT_NO_THROW(kc::batch_norm_backward_train(d, fake(), fake(2), nullptr, nullptr, fake(3), fake(4), nullptr,
                                                nullptr, nullptr, id, fake(6), nullptr));
}

TEST(ConvBlockHostValidation, BatchNormWorkspaceGrowsWithTheSplit) {
  // One partial (2 floats) per channel at least; a huge plane is split into several chunks per channel.
  const std::int64_t small = kc::batch_norm_workspace_floats({2, 3, 5});
  EXPECT_GE(small, 2 * 3);
  const std::int64_t stem = kc::batch_norm_workspace_floats({128, 32, 112 * 112});
  EXPECT_GE(stem, 2 * 32 * 64) << "the stem's 1.6M values per channel should be split into many chunks";
  EXPECT_LT(stem, 2 * 32 * 1000 + 1000) << "workspace far larger than the partials need";
  // Independent of the batch for a fixed plane count per chunk... but always enough for c channels.
  EXPECT_GE(kc::batch_norm_workspace_floats({1, 5000, 1}), 2 * 5000);
}

TEST(ConvBlockHostValidation, PointwiseAndPlanes) {
  EXPECT_ERROR_WITH(kc::activation_forward(Activation::ReLU, -1, fake(), fake(2), nullptr), "activation_forward",
                    "element count must be >= 0", "-1");
  EXPECT_ERROR_WITH(kc::activation_forward(static_cast<Activation>(5), 4, fake(), fake(2), nullptr),
                    "activation_forward", "unknown activation id 5");
  EXPECT_ERROR_WITH(kc::activation_forward(Activation::ReLU, 4, nullptr, fake(2), nullptr), "activation_forward",
                    "must not be null");
  EXPECT_ERROR_WITH(kc::activation_backward(Activation::SiLU, 4, fake(), nullptr, fake(2), nullptr),
                    "activation_backward", "must not be null");
  EXPECT_NO_THROW(kc::activation_forward(Activation::GELU, 0, nullptr, nullptr, nullptr));
  EXPECT_ERROR_WITH(kc::se_scale_forward(-1, 3, 5, fake(), fake(2), fake(3), nullptr), "se_scale_forward",
                    "sizes must be >= 0", "n -1");
  EXPECT_ERROR_WITH(kc::se_scale_forward(2, 3, 5, fake(), nullptr, fake(3), nullptr), "se_scale_forward",
                    "must not be null");
  EXPECT_ERROR_WITH(kc::se_scale_backward(2, 3, 5, fake(), fake(2), nullptr, fake(4), fake(5), nullptr),
                    "se_scale_backward", "must not be null");
  EXPECT_NO_THROW(kc::se_scale_forward(0, 3, 5, fake(), fake(2), fake(3), nullptr));
  EXPECT_ERROR_WITH(kc::global_avg_pool_forward(0, 49, fake(), fake(2), nullptr), "global_avg_pool_forward",
                    "planes (n*c) >= 1");
  EXPECT_ERROR_WITH(kc::global_avg_pool_forward(4, 0, fake(), fake(2), nullptr), "global_avg_pool_forward",
                    "h*w >= 1");
  EXPECT_ERROR_WITH(kc::global_avg_pool_forward(4, 49, fake(), nullptr, nullptr), "global_avg_pool_forward",
                    "must not be null");
  EXPECT_ERROR_WITH(kc::global_avg_pool_backward(4, 49, nullptr, fake(2), nullptr), "global_avg_pool_backward",
                    "must not be null");
}

TEST(ConvBlockHostValidation, WeightStandardization) {
  EXPECT_ERROR_WITH(kc::ws_forward(0, 9, fake(), nullptr, 1.f, 1e-4f, fake(2), nullptr), "ws_forward", "c_out > 0",
                    "c_out 0");
  EXPECT_ERROR_WITH(kc::ws_forward(4, 0, fake(), nullptr, 1.f, 1e-4f, fake(2), nullptr), "ws_forward",
                    "fan_in > 0");
  EXPECT_ERROR_WITH(kc::ws_forward(4, 9, fake(), nullptr, 1.f, -1e-4f, fake(2), nullptr), "ws_forward", "eps");
  EXPECT_ERROR_WITH(kc::ws_forward(4, 9, nullptr, nullptr, 1.f, 1e-4f, fake(2), nullptr), "ws_forward",
                    "must not be null");
  EXPECT_ERROR_WITH(kc::ws_forward(4, 9, fake(), nullptr, 1.f, 1e-4f, fake(), nullptr), "ws_forward",
                    "must not alias");
  EXPECT_ERROR_WITH(kc::ws_backward(4, 9, fake(), nullptr, 1.f, 1e-4f, fake(2), fake(3), fake(4), nullptr),
                    "ws_backward", "dgain requested but no gain");
  EXPECT_ERROR_WITH(kc::ws_backward(4, 9, fake(), fake(5), 1.f, 1e-4f, nullptr, fake(3), nullptr, nullptr),
                    "ws_backward", "must not be null");
  EXPECT_ERROR_WITH(kc::ws_backward(4, 9, fake(), fake(5), 1.f, 1e-4f, fake(2), fake(2), nullptr, nullptr),
                    "ws_backward", "must not alias");
}

}  // namespace
