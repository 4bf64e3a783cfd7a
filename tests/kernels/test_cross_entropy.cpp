// Unit tests of the label-smoothing cross-entropy CPU kernels (kernels/cpu/cross_entropy.hpp): against a
// literal transcription of torch.nn.functional.cross_entropy(weight, label_smoothing, reduction) in
// double, float32 vs float64, stability at logits ±1e4, properties of the gradient, and bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "head_test_util.hpp"
#include "kernels/cpu/cross_entropy.hpp"

namespace {

using namespace arclight;
using namespace arclight::test;
using kernels::CrossEntropyConfig;
using kernels::CrossEntropyShape;
using kernels::Reduction;

// torch's definition: logp = log_softmax(z); nll = −w_y·logp_y (normalised by Σw_y for mean);
// smooth = −Σ_j w_j·logp_j (normalised by the same Σw_y for mean); loss = (1−ε)·nll + ε/K·smooth.
std::vector<double> ce_reference(const CrossEntropyShape& s, const std::vector<double>& z,
                                 const std::vector<int64_t>& y, const std::vector<double>* w, double eps, Reduction r) {
  std::vector<double> nll(size_t(s.n)), smooth(size_t(s.n));
  double wsum = 0.0;
  for (int64_t i = 0; i < s.n; ++i) {
    const double* zi = z.data() + i * s.classes;
    double m = zi[0];
    for (int64_t j = 0; j < s.classes; ++j) m = std::max(m, zi[j]);
    double se = 0.0;
    for (int64_t j = 0; j < s.classes; ++j) se += std::exp(zi[j] - m);
    const double lse = m + std::log(se);
    const auto wj = [&](int64_t j) { return w ? (*w)[size_t(j)] : 1.0; };
    nll[size_t(i)] = -wj(y[size_t(i)]) * (zi[y[size_t(i)]] - lse);
    double sm = 0.0;
    for (int64_t j = 0; j < s.classes; ++j) sm += -wj(j) * (zi[j] - lse);
    smooth[size_t(i)] = sm;
    wsum += wj(y[size_t(i)]);
  }
  const double k = double(s.classes);
  if (r == Reduction::kNone) {
    std::vector<double> out(size_t(s.n));
    for (size_t i = 0; i < out.size(); ++i) out[i] = (1 - eps) * nll[i] + eps / k * smooth[i];
    return out;
  }
  double a = 0.0, b = 0.0;
  for (size_t i = 0; i < nll.size(); ++i) {
    a += nll[i];
    b += smooth[i];
  }
  if (r == Reduction::kMean) {
    a /= wsum;
    b /= wsum;
  }
  return {(1 - eps) * a + eps / k * b};
}

TEST(CrossEntropyForward, UniformLogitsGiveLogK) {
  const CrossEntropyShape s{3, 7};
  std::vector<double> z(21, 2.5);
  std::vector<int64_t> y{0, 3, 6};
  for (double eps : {0.0, 0.1, 1.0}) {
    double loss = NAN;
    kernels::cpu::cross_entropy_forward(s, CrossEntropyConfig{eps, Reduction::kMean}, z.data(), y.data(),
                                        static_cast<const double*>(nullptr), &loss);
    EXPECT_NEAR(loss, std::log(7.0), 1e-14) << eps;
  }
}

TEST(CrossEntropyForward, MatchesTorchDefinitionAllReductions) {
  const CrossEntropyShape s{9, 13};
  const auto z = random_vector(size_t(s.n * s.classes), -6.0, 6.0, 51);
  const auto y = random_labels(size_t(s.n), s.classes, 52);
  const auto w = random_vector(size_t(s.classes), 0.2, 2.0, 53);
  for (const std::vector<double>* wp : {static_cast<const std::vector<double>*>(nullptr), &w}) {
    for (double eps : {0.0, 0.1, 0.35}) {
      for (Reduction r : {Reduction::kNone, Reduction::kMean, Reduction::kSum}) {
        const auto ref = ce_reference(s, z, y, wp, eps, r);
        auto out = garbage<double>(ref.size());
        kernels::cpu::cross_entropy_forward(s, CrossEntropyConfig{eps, r}, z.data(), y.data(),
                                            wp ? wp->data() : nullptr, out.data());
        const std::string what =
            std::string("ce w=") + (wp ? "yes" : "no") + " eps=" + std::to_string(eps) + " r=" + std::to_string(int(r));
        expect_all_close(out, ref, 1e-13, 1e-14, what);
        // float32 against the double reference
        auto zf = cast_vector<float>(z);
        std::vector<float> wf = wp ? cast_vector<float>(*wp) : std::vector<float>();
        auto outf = garbage<float>(ref.size());
        kernels::cpu::cross_entropy_forward(s, CrossEntropyConfig{eps, r}, zf.data(), y.data(),
                                            wp ? wf.data() : nullptr, outf.data());
        expect_all_close(outf, ref, 2e-6, 1e-6, what + " f32");
      }
    }
  }
}

TEST(CrossEntropyForward, StableAtLargeLogits) {
  // Logits of ±1e4: the loss must be the exact small number, not rounding noise of 1e4-sized terms.
  const CrossEntropyShape s{2, 4};
  const std::vector<double> z{1e4,  -1e4, 1e4 - 1.0,  0.0,  //
                              -1e4, -1e4, -1e4 + 2.0, -1e4};
  const std::vector<int64_t> y{0, 2};
  const double eps = 0.1;
  const auto ref = ce_reference(s, z, y, nullptr, eps, Reduction::kNone);
  // By hand: row 0's −log p = (L, 2e4 + L, 1 + L, 1e4 + L) with L = log1p(e^−1) (the rest underflows), so
  // loss = L + ε·(3e4 + 1)/4; row 1 shifted by −(−1e4) is (0, 0, 2, 0): loss = log(3 + e²) − 2 + 1.5ε.
  const double l0 = std::log1p(std::exp(-1.0)) + eps * 30001.0 / 4.0;
  const double l1 = std::log(3.0 + std::exp(2.0)) - 2.0 + 1.5 * eps;
  EXPECT_NEAR(ref[0], l0, 1e-9);
  EXPECT_NEAR(ref[1], l1, 1e-12);
  for (bool use_float : {false, true}) {
    std::vector<double> out(2);
    std::vector<double> g(8);
    const std::vector<double> gl{1.0, 1.0};
    if (use_float) {
      auto zf = cast_vector<float>(z), glf = cast_vector<float>(gl);
      auto of = garbage<float>(2), gf = garbage<float>(8);
      kernels::cpu::cross_entropy_forward(s, CrossEntropyConfig{eps, Reduction::kNone}, zf.data(), y.data(),
                                          static_cast<const float*>(nullptr), of.data());
      kernels::cpu::cross_entropy_backward(s, CrossEntropyConfig{eps, Reduction::kNone}, zf.data(), y.data(),
                                           static_cast<const float*>(nullptr), glf.data(), gf.data());
      out.assign(of.begin(), of.end());
      g.assign(gf.begin(), gf.end());
    } else {
      kernels::cpu::cross_entropy_forward(s, CrossEntropyConfig{eps, Reduction::kNone}, z.data(), y.data(),
                                          static_cast<const double*>(nullptr), out.data());
      kernels::cpu::cross_entropy_backward(s, CrossEntropyConfig{eps, Reduction::kNone}, z.data(), y.data(),
                                           static_cast<const double*>(nullptr), gl.data(), g.data());
    }
    expect_all_close(out, std::vector<double>{l0, l1}, use_float ? 1e-6 : 1e-13, 0.0,
                     use_float ? "±1e4 f32" : "±1e4 f64");
    // p − q: row 0's p = softmax ≈ (1/(1+e^-1), 0, e^-1/(1+e^-1), 0), q = (0.925, 0.025, 0.025, 0.025)
    const double p0 = 1.0 / (1.0 + std::exp(-1.0)), p2 = 1.0 - p0;
    EXPECT_NEAR(g[0], p0 - 0.925, 1e-6);
    EXPECT_NEAR(g[1], -0.025, 1e-6);
    EXPECT_NEAR(g[2], p2 - 0.025, 1e-6);
    EXPECT_NEAR(g[3], -0.025, 1e-6);
    for (double v : g) EXPECT_TRUE(std::isfinite(v));
  }
}

TEST(CrossEntropyBackward, RowsSumToZeroWithoutWeightsAndFloatMatchesDouble) {
  const CrossEntropyShape s{5, 11};
  const auto z = random_vector(size_t(s.n * s.classes), -8.0, 8.0, 61);
  const auto y = random_labels(size_t(s.n), s.classes, 62);
  const std::vector<double> gl{0.7};
  auto g = garbage<double>(z.size());
  kernels::cpu::cross_entropy_backward(s, CrossEntropyConfig{0.2, Reduction::kSum}, z.data(), y.data(),
                                       static_cast<const double*>(nullptr), gl.data(), g.data());
  for (int64_t i = 0; i < s.n; ++i) {
    double row = 0.0;
    for (int64_t j = 0; j < s.classes; ++j) row += g[size_t(i * s.classes + j)];
    EXPECT_NEAR(row, 0.0, 1e-15);
    EXPECT_LT(g[size_t(i * s.classes + y[size_t(i)])], 0.0 + 0.7 * 1.0);
  }
  auto zf = cast_vector<float>(z), glf = cast_vector<float>(gl);
  auto gf = garbage<float>(z.size());
  kernels::cpu::cross_entropy_backward(s, CrossEntropyConfig{0.2, Reduction::kSum}, zf.data(), y.data(),
                                       static_cast<const float*>(nullptr), glf.data(), gf.data());
  expect_all_close(gf, g, 1e-5, 1e-7, "ce grad f32");
}

TEST(CrossEntropyErrors, BadArguments) {
  const CrossEntropyShape s{2, 3};
  std::vector<double> z(6, 0.5), out(2), w{1.0, 0.5, 1.0};
  std::vector<int64_t> y{0, 2};
  auto fwd = [&](CrossEntropyConfig c, const double* wp) {
    kernels::cpu::cross_entropy_forward(s, c, z.data(), y.data(), wp, out.data());
  };
  expect_error(
      [&] {
        fwd({-0.1, Reduction::kMean}, nullptr);
      },
      {"cross_entropy_forward", "label_smoothing in [0, 1]", "-0.1"});
  expect_error([&] { fwd({1.5, Reduction::kMean}, nullptr); }, {"label_smoothing", "1.5"});
  expect_error([&] { fwd({0.1, Reduction(7)}, nullptr); }, {"unknown reduction 7"});
  w[1] = -0.5;
  expect_error([&] { fwd({0.1, Reduction::kMean}, w.data()); }, {"class weights", "-0.5", "class 1"});
  w = {0.0, 1.0, 0.0};
  expect_error([&] { fwd({0.1, Reduction::kMean}, w.data()); }, {"target weights sum to 0"});
  y = {0, 3};
  expect_error([&] { fwd({0.1, Reduction::kMean}, nullptr); }, {"cross_entropy_forward", "label 3 at row 1", "< 3"});
  y = {0, 1};
  expect_error(
      [&] {
        kernels::cpu::cross_entropy_forward(CrossEntropyShape{2, 0}, {0.1, Reduction::kSum}, z.data(), y.data(),
                                            static_cast<const double*>(nullptr), out.data());
      },
      {"classes > 0"});
  std::vector<double> gl{1.0}, g(6);
  y = {5, 1};
  expect_error(
      [&] {
        kernels::cpu::cross_entropy_backward(s, {0.1, Reduction::kMean}, z.data(), y.data(),
                                             static_cast<const double*>(nullptr), gl.data(), g.data());
      },
      {"cross_entropy_backward", "label 5"});
}

}  // namespace
