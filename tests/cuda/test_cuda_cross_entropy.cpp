// Label-smoothing CE, the composed ArcMargin ops and the fused ArcMargin → LS-CE on the GPU
// (kernels/cuda/cross_entropy.cuh) against the CPU kernels run in double (kernels/cpu/{cross_entropy,
// arc_margin, arc_margin_cross_entropy}.hpp), on fresh random inputs with NaN-filled outputs. Every case runs
// through the production path (RowPath::kAuto) and the explicitly forced streaming path, at widths from 7 to
// 100 000 classes — multiples of 4 (the float4 body of the vectorised kernel) and odd widths (its scalar head
// and tail) — and with input/gradient pointers deliberately offset from 16-byte alignment.
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "cuda_test_util.hpp"
#include "kernels/cpu/arc_margin.hpp"
#include "kernels/cpu/arc_margin_cross_entropy.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cuda/launchers.hpp"

namespace kc = arclight::kernels::cuda;
namespace ak = arclight::kernels;
using namespace arclight::testing::cuda;
using arclight::cuda::DeviceBuffer;

namespace {

struct RowCase {
  std::int64_t n, classes, k;
  double smoothing;
  ak::Reduction reduction;
  bool weighted;
  kc::RowPath path;
  ak::MarginKind kind;
  bool easy;
  bool class_margins;
  int in_offset = 0;    // floats the input starts past a 256-byte-aligned allocation
  int grad_offset = 0;  // floats the gradient output starts past its allocation
};

std::string path_tag(kc::RowPath p) {
  switch (p) {
    case kc::RowPath::kAuto: return "_auto";
    case kc::RowPath::kStreaming: return "_stream";
    case kc::RowPath::kSmemCache: return "_smem";
    case kc::RowPath::kSmemCacheWide: return "_smemwide";
  }
  return "_path" + std::to_string(int(p));
}

std::string name(const RowCase& c) {
  return "n" + std::to_string(c.n) + "_c" + std::to_string(c.classes) + "_k" + std::to_string(c.k) + "_ls" +
         std::to_string(int(c.smoothing * 100)) + "_r" + std::to_string(int(c.reduction)) + (c.weighted ? "_w" : "") +
         path_tag(c.path) + "_m" + std::to_string(int(c.kind)) +
         (c.easy ? "_easy" : "") + (c.class_margins ? "_cm" : "") +
         (c.in_offset || c.grad_offset
              ? "_off" + std::to_string(c.in_offset) + "_" + std::to_string(c.grad_offset)
              : std::string());
}

void PrintTo(const RowCase& c, std::ostream* os) { *os << name(c); }

std::vector<RowCase> cases() {
  std::vector<RowCase> v;
  for (kc::RowPath path : {kc::RowPath::kAuto, kc::RowPath::kStreaming, kc::RowPath::kSmemCache,
                           kc::RowPath::kSmemCacheWide}) {
    v.push_back({5, 7, 1, 0.0, ak::Reduction::kNone, false, path, ak::MarginKind::kArcFace, false, false});
    v.push_back({16, 1000, 1, 0.1, ak::Reduction::kMean, true, path, ak::MarginKind::kCosFace, false, false});
    v.push_back({9, 5000, 1, 0.1, ak::Reduction::kSum, false, path, ak::MarginKind::kCombined, false, true});
    v.push_back({6, 20000, 1, 0.2, ak::Reduction::kMean, false, path, ak::MarginKind::kArcFace, true, false});
    v.push_back({4, 50001, 1, 0.1, ak::Reduction::kNone, true, path, ak::MarginKind::kArcFace, false, true});
    v.push_back({3, 100000, 1, 0.1, ak::Reduction::kMean, false, path, ak::MarginKind::kArcFace, false, false});
  }
  // Misaligned rows: input and gradient pointers off 16-byte alignment (same or different phase), widths a
  // multiple of 4 and not, so the scalar head, float4 body (with float4 or scalar stores) and tail all run.
  v.push_back({5, 1000, 1, 0.1, ak::Reduction::kMean, false, kc::RowPath::kAuto, ak::MarginKind::kArcFace, false,
               false, 1, 1});
  v.push_back({4, 20000, 1, 0.1, ak::Reduction::kNone, true, kc::RowPath::kAuto, ak::MarginKind::kArcFace, false,
               false, 3, 2});
  v.push_back({3, 4099, 1, 0.0, ak::Reduction::kSum, false, kc::RowPath::kAuto, ak::MarginKind::kCosFace, false,
               true, 2, 0});
  v.push_back({6, 3, 1, 0.1, ak::Reduction::kMean, false, kc::RowPath::kAuto, ak::MarginKind::kArcFace, false,
               false, 1, 3});
  // The cached paths with misaligned rows (the cache holds the float4 body; head and tail stay scalar) and with
  // rows wider than the cache (110k classes: part cached, the rest re-read from global memory).
  for (kc::RowPath path : {kc::RowPath::kSmemCache, kc::RowPath::kSmemCacheWide}) {
    v.push_back({4, 20000, 1, 0.1, ak::Reduction::kNone, true, path, ak::MarginKind::kArcFace, false, false, 3, 2});
    v.push_back({3, 4099, 1, 0.0, ak::Reduction::kSum, false, path, ak::MarginKind::kCosFace, false, true, 2, 0});
    v.push_back({5, 110003, 1, 0.1, ak::Reduction::kMean, true, path, ak::MarginKind::kArcFace, false, false, 1, 1});
  }
  // More rows than one wave of blocks would hold at once is not needed for the grid-stride loop (grid = n);
  // many short rows exercise the narrow block size.
  v.push_back({300, 64, 1, 0.1, ak::Reduction::kMean, false, kc::RowPath::kAuto, ak::MarginKind::kArcFace, false,
               false});
  // Sub-centres: the scalar kernel.
  v.push_back({7, 300, 3, 0.1, ak::Reduction::kMean, false, kc::RowPath::kStreaming, ak::MarginKind::kArcFace, false,
               false});
  v.push_back({3, 9000, 2, 0.0, ak::Reduction::kNone, true, kc::RowPath::kStreaming, ak::MarginKind::kCombined, false,
               true});
  return v;
}

struct Inputs {
  std::vector<float> cos, weights, margins, grad_loss;
  std::vector<std::int64_t> labels;
};

Inputs make_inputs(const RowCase& c, std::mt19937_64& g) {
  Inputs in;
  // |cos| <= 0.995: the ArcFace gradient d phi / d cos = cos m + sin m · cos θ / sin θ is conditioned like
  // 1 / sin θ, so a float kernel compared with a double reference at rtol 2e-4 needs sin θ bounded away from 0
  // (an H100 run drew cos ≈ 0.9999 for a target and missed by 1e-3 relative). |cos| = 1 exactly is tested on the
  // CPU (tests/head), whose math this kernel shares (kernels/common/arc_margin_math.hpp).
  in.cos = uniform(std::size_t(c.n * c.classes * c.k), g, -0.995f, 0.995f);
  in.labels = labels(std::size_t(c.n), c.classes, g);
  // Push one target towards cos = -1 so the θ + m > π fallback branch is exercised.
  in.cos[std::size_t(in.labels[0] * c.k)] = -0.97f;
  if (c.weighted) in.weights = uniform(std::size_t(c.classes), g, 0.2f, 2.f);
  if (c.class_margins) in.margins = uniform(std::size_t(c.classes), g, 0.1f, 0.6f);
  in.grad_loss = normal(c.reduction == ak::Reduction::kNone ? std::size_t(c.n) : 1, g);
  return in;
}

ak::ArcMarginConfig arc_config(const RowCase& c) {
  ak::ArcMarginConfig a;
  a.kind = c.kind;
  a.scale = 30.0;
  a.margin = c.kind == ak::MarginKind::kCosFace ? 0.35 : 0.5;
  a.additive_margin = c.kind == ak::MarginKind::kCombined ? 0.1 : 0.0;
  a.margin_scale = 0.8;
  a.easy_margin = c.easy;
  return a;
}

// Uploads `v` after `offset` leading NaN floats: the kernel is handed data() + offset (misaligned on purpose).
DeviceBuffer<float> upload_at(const std::vector<float>& v, int offset) {
  std::vector<float> h(std::size_t(offset), NAN);
  h.insert(h.end(), v.begin(), v.end());
  return DeviceBuffer<float>(h);
}

// Downloads an output written at data() + offset, checking the `offset` floats before it were left untouched.
std::vector<float> download_from(const DeviceBuffer<float>& b, int offset) {
  std::vector<float> h = b.download();
  for (int i = 0; i < offset; ++i) EXPECT_TRUE(std::isnan(h[std::size_t(i)])) << "wrote before the output, at " << i;
  return std::vector<float>(h.begin() + offset, h.end());
}

std::size_t loss_count(const RowCase& c) { return c.reduction == ak::Reduction::kNone ? std::size_t(c.n) : 1; }

class CudaRows : public ::testing::TestWithParam<RowCase> {
 protected:
  void SetUp() override {
    if (!arclight::cuda::available())
      GTEST_SKIP() << "CUDA test skipped: " << arclight::cuda::availability().reason;
  }
};

TEST_P(CudaRows, CrossEntropyMatchesCpu) {
  RowCase c = GetParam();
  if (c.k != 1) GTEST_SKIP() << "plain CE has no sub-centres";
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  Inputs in = make_inputs(c, g);
  // Logits of a trained-ish classifier: spread ±8.
  for (auto& v : in.cos) v *= 8.f;
  const ak::CrossEntropyShape shape{c.n, c.classes};
  ak::CrossEntropyConfig cfg{c.smoothing, c.reduction};
  const auto logits_d = to_double(in.cos);
  const auto w_d = to_double(in.weights);
  const double* w_ptr = c.weighted ? w_d.data() : nullptr;
  std::vector<double> loss_ref(loss_count(c)), grad_ref(in.cos.size());
  ak::cpu::cross_entropy_forward<double>(shape, cfg, logits_d.data(), in.labels.data(), w_ptr, loss_ref.data());
  ak::cpu::cross_entropy_backward<double>(shape, cfg, logits_d.data(), in.labels.data(), w_ptr,
                                          to_double(in.grad_loss).data(), grad_ref.data());

  DeviceBuffer<float> logits = upload_at(in.cos, c.in_offset), gl(in.grad_loss);
  DeviceBuffer<std::int64_t> lab(in.labels);
  DeviceBuffer<float> w(c.weighted ? in.weights : std::vector<float>{0.f});
  DeviceBuffer<float> loss = garbage(loss_count(c)), grad = garbage(in.cos.size() + std::size_t(c.grad_offset));
  DeviceBuffer<float> ws = garbage(std::size_t(kc::cross_entropy_workspace_floats(c.n)));
  const float* wp = c.weighted ? w.data() : nullptr;
  const float* lp = logits.data() + c.in_offset;
  kc::cross_entropy_forward(shape, cfg, lp, lab.data(), wp, loss.data(), ws.data(), nullptr, c.path);
  kc::cross_entropy_backward(shape, cfg, lp, lab.data(), wp, gl.data(), grad.data() + c.grad_offset, ws.data(),
                             nullptr, c.path);
  EXPECT_TRUE(near_all(loss.download(), loss_ref, 1e-4, 1e-5, "loss"));
  EXPECT_TRUE(near_all(download_from(grad, c.grad_offset), grad_ref, 2e-4, 1e-6 * max_abs(grad_ref), "grad_logits"));
}

TEST_P(CudaRows, FusedArcMarginMatchesCpuAndComposed) {
  const RowCase c = GetParam();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const Inputs in = make_inputs(c, g);
  const ak::ArcMarginShape shape{c.n, c.classes, c.k};
  const ak::ArcMarginConfig arc = arc_config(c);
  const ak::CrossEntropyConfig ce{c.smoothing, c.reduction};
  const auto cos_d = to_double(in.cos), w_d = to_double(in.weights), m_d = to_double(in.margins);
  const double* w_ptr = c.weighted ? w_d.data() : nullptr;
  const double* m_ptr = c.class_margins ? m_d.data() : nullptr;
  const std::size_t width = std::size_t(c.classes * c.k);

  // CPU references (double): fused loss + unit gradient, fused backward with grad_loss, composed pieces.
  std::vector<double> loss_ref(loss_count(c)), gcos_ref(in.cos.size()), gcos_bwd_ref(in.cos.size());
  ak::cpu::arc_margin_cross_entropy_forward<double>(shape, arc, ce, cos_d.data(), in.labels.data(), m_ptr, w_ptr,
                                                    loss_ref.data(), gcos_ref.data());
  ak::cpu::arc_margin_cross_entropy_backward<double>(shape, arc, ce, cos_d.data(), in.labels.data(), m_ptr, w_ptr,
                                                     to_double(in.grad_loss).data(), gcos_bwd_ref.data());
  std::vector<double> logits_ref(std::size_t(c.n * c.classes));
  ak::cpu::arc_margin_forward<double>(shape, arc, cos_d.data(), in.labels.data(), m_ptr, logits_ref.data());
  const std::vector<float> grad_logits = normal(logits_ref.size(), g);
  std::vector<double> composed_bwd_ref(in.cos.size());
  ak::cpu::arc_margin_backward<double>(shape, arc, cos_d.data(), in.labels.data(), m_ptr,
                                       to_double(grad_logits).data(), composed_bwd_ref.data());

  DeviceBuffer<float> cos_buf = upload_at(in.cos, c.in_offset), gl(in.grad_loss), glog(grad_logits);
  const float* cosp = cos_buf.data() + c.in_offset;
  const std::size_t go = std::size_t(c.grad_offset);
  DeviceBuffer<std::int64_t> lab(in.labels);
  DeviceBuffer<float> w(c.weighted ? in.weights : std::vector<float>{0.f});
  DeviceBuffer<float> m(c.class_margins ? in.margins : std::vector<float>{0.f});
  const float* wp = c.weighted ? w.data() : nullptr;
  const float* mp = c.class_margins ? m.data() : nullptr;
  DeviceBuffer<float> ws = garbage(std::size_t(kc::cross_entropy_workspace_floats(c.n)));
  DeviceBuffer<float> loss = garbage(loss_count(c)), gcos = garbage(width * c.n + go),
                      gcos_bwd = garbage(width * c.n + go);
  kc::arc_margin_cross_entropy_forward(shape, arc, ce, cosp, lab.data(), mp, wp, loss.data(), gcos.data() + go,
                                       ws.data(), nullptr, c.path);
  kc::arc_margin_cross_entropy_backward(shape, arc, ce, cosp, lab.data(), mp, wp, gl.data(), gcos_bwd.data() + go,
                                        ws.data(), nullptr, c.path);
  const std::vector<float> loss_gpu = loss.download(), gcos_gpu = download_from(gcos, c.grad_offset);
  EXPECT_TRUE(near_all(loss_gpu, loss_ref, 1e-4, 1e-5, "fused loss"));
  EXPECT_TRUE(near_all(gcos_gpu, gcos_ref, 2e-4, 1e-6 * max_abs(gcos_ref), "fused grad_cos"));
  EXPECT_TRUE(near_all(download_from(gcos_bwd, c.grad_offset), gcos_bwd_ref, 2e-4, 1e-6 * max_abs(gcos_bwd_ref), "fused backward"));

  // The composed ops on their own.
  DeviceBuffer<float> logits = garbage(logits_ref.size()), composed_bwd = garbage(in.cos.size());
  kc::arc_margin_forward(shape, arc, cosp, lab.data(), mp, logits.data(), nullptr);
  kc::arc_margin_backward(shape, arc, cosp, lab.data(), mp, glog.data(), composed_bwd.data(), nullptr);
  EXPECT_TRUE(near_all(logits.download(), logits_ref, 1e-6, 1e-5, "arc_margin_forward"));
  EXPECT_TRUE(near_all(composed_bwd.download(), composed_bwd_ref, 1e-5, 1e-6, "arc_margin_backward"));

  // Fused == composed on the device: arc_margin_forward -> CE forward/backward -> arc_margin_backward.
  const ak::CrossEntropyShape ce_shape{c.n, c.classes};
  DeviceBuffer<float> loss2 = garbage(loss_count(c)), glogits = garbage(logits_ref.size()),
                      gcos2 = garbage(in.cos.size());
  std::vector<float> ones(loss_count(c), 1.f);
  DeviceBuffer<float> unit(ones);
  kc::cross_entropy_forward(ce_shape, ce, logits.data(), lab.data(), wp, loss2.data(), ws.data(), nullptr,
                            kc::RowPath::kStreaming);
  kc::cross_entropy_backward(ce_shape, ce, logits.data(), lab.data(), wp, unit.data(), glogits.data(), ws.data(),
                             nullptr, kc::RowPath::kStreaming);
  kc::arc_margin_backward(shape, arc, cosp, lab.data(), mp, glogits.data(), gcos2.data(), nullptr);
  EXPECT_TRUE(near_all(loss2.download(), to_double(loss_gpu), 1e-4, 1e-5, "composed loss"));
  EXPECT_TRUE(near_all(gcos2.download(), to_double(gcos_gpu), 2e-4, 1e-6 * max_abs(gcos_ref), "composed grad_cos"));
}

TEST_P(CudaRows, ReproducibleBitForBit) {
  const RowCase c = GetParam();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const Inputs in = make_inputs(c, g);
  const ak::ArcMarginShape shape{c.n, c.classes, c.k};
  const ak::ArcMarginConfig arc = arc_config(c);
  const ak::CrossEntropyConfig ce{c.smoothing, c.reduction};
  DeviceBuffer<float> cos(in.cos);
  DeviceBuffer<std::int64_t> lab(in.labels);
  DeviceBuffer<float> ws = garbage(std::size_t(kc::cross_entropy_workspace_floats(c.n)));
  std::vector<std::vector<float>> runs;
  for (int r = 0; r < 2; ++r) {
    DeviceBuffer<float> loss = garbage(loss_count(c)), gcos = garbage(in.cos.size());
    kc::arc_margin_cross_entropy_forward(shape, arc, ce, cos.data(), lab.data(), nullptr, nullptr, loss.data(),
                                         gcos.data(), ws.data(), nullptr, c.path);
    std::vector<float> all = loss.download();
    const std::vector<float> gv = gcos.download();
    all.insert(all.end(), gv.begin(), gv.end());
    runs.push_back(all);
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  EXPECT_EQ(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)), 0);
}

// kSmemCache runs the streaming kernel's arithmetic with the same threads, so it must agree bit for bit, for CE
// backward and the fused head, on rows that fit in the cache and rows that do not.
TEST(CudaRowsEdge, SmemCacheIsBitIdenticalToStreaming) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  for (std::int64_t classes : {4096, 20001, 100000, 150000}) {
    SCOPED_TRACE("classes " + std::to_string(classes));
    const std::int64_t n = 6;
    const std::vector<float> cos = uniform(std::size_t(n * classes), g, -1.f, 1.f);
    DeviceBuffer<float> dcos(cos);
    DeviceBuffer<std::int64_t> lab(labels(std::size_t(n), classes, g));
    DeviceBuffer<float> gl(normal(1, g));
    DeviceBuffer<float> ws = garbage(std::size_t(kc::cross_entropy_workspace_floats(n)));
    const ak::CrossEntropyConfig ce{0.1, ak::Reduction::kMean};
    ak::ArcMarginConfig arc;
    std::vector<std::vector<float>> ce_grads, fused_grads, fused_losses;
    for (kc::RowPath path : {kc::RowPath::kStreaming, kc::RowPath::kSmemCache}) {
      DeviceBuffer<float> gce = garbage(cos.size()), gf = garbage(cos.size()), loss = garbage(1);
      kc::cross_entropy_backward(ak::CrossEntropyShape{n, classes}, ce, dcos.data(), lab.data(), nullptr, gl.data(),
                                 gce.data(), ws.data(), nullptr, path);
      kc::arc_margin_cross_entropy_forward(ak::ArcMarginShape{n, classes, 1}, arc, ce, dcos.data(), lab.data(), nullptr,
                                           nullptr, loss.data(), gf.data(), ws.data(), nullptr, path);
      ce_grads.push_back(gce.download());
      fused_grads.push_back(gf.download());
      fused_losses.push_back(loss.download());
    }
    for (float x : ce_grads[1]) ASSERT_TRUE(std::isfinite(x));
    EXPECT_EQ(std::memcmp(ce_grads[0].data(), ce_grads[1].data(), cos.size() * 4), 0) << "CE backward";
    EXPECT_EQ(std::memcmp(fused_grads[0].data(), fused_grads[1].data(), cos.size() * 4), 0) << "fused grad";
    EXPECT_EQ(fused_losses[0], fused_losses[1]);
  }
}

INSTANTIATE_TEST_SUITE_P(Rows, CudaRows, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<RowCase>& i) { return name(i.param); });

TEST(CudaRowsEdge, OutOfRangeLabelPoisonsOnlyItsRow) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const std::int64_t n = 4, classes = 50;
  std::vector<float> cos = uniform(std::size_t(n * classes), g, -1.f, 1.f);
  std::vector<std::int64_t> lab = labels(std::size_t(n), classes, g);
  lab[2] = classes;  // out of range
  DeviceBuffer<float> dcos(cos);
  DeviceBuffer<std::int64_t> dlab(lab);
  DeviceBuffer<float> ws = garbage(std::size_t(kc::cross_entropy_workspace_floats(n)));
  DeviceBuffer<float> loss = garbage(std::size_t(n)), gcos = garbage(cos.size());
  ak::ArcMarginConfig arc;
  ak::CrossEntropyConfig ce{0.1, ak::Reduction::kNone};
  kc::arc_margin_cross_entropy_forward(ak::ArcMarginShape{n, classes, 1}, arc, ce, dcos.data(), dlab.data(), nullptr,
                                       nullptr, loss.data(), gcos.data(), ws.data(), nullptr);
  const auto l = loss.download();
  const auto gr = gcos.download();
  for (std::int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(std::isnan(l[std::size_t(i)]), i == 2) << "row " << i;
    for (std::int64_t j = 0; j < classes; ++j)
      ASSERT_EQ(std::isnan(gr[std::size_t(i * classes + j)]), i == 2) << "row " << i << " col " << j;
  }
  DeviceBuffer<float> mean = garbage(1);
  ce.reduction = ak::Reduction::kMean;
  kc::arc_margin_cross_entropy_forward(ak::ArcMarginShape{n, classes, 1}, arc, ce, dcos.data(), dlab.data(), nullptr,
                                       nullptr, mean.data(), nullptr, ws.data(), nullptr);
  EXPECT_TRUE(std::isnan(mean.download()[0]));
}

TEST(CudaRowsEdge, EmptyBatchFollowsTorch) {
  ARCLIGHT_REQUIRE_GPU();
  DeviceBuffer<float> loss = garbage(1);
  ak::CrossEntropyConfig ce{0.1, ak::Reduction::kSum};
  kc::cross_entropy_forward(ak::CrossEntropyShape{0, 10}, ce, nullptr, nullptr, nullptr, loss.data(), nullptr, nullptr);
  EXPECT_EQ(loss.download()[0], 0.f);
  ce.reduction = ak::Reduction::kMean;
  kc::cross_entropy_forward(ak::CrossEntropyShape{0, 10}, ce, nullptr, nullptr, nullptr, loss.data(), nullptr, nullptr);
  EXPECT_TRUE(std::isnan(loss.download()[0]));
}

}  // namespace
