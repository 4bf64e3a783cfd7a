// Forward values of the ops against hand-computed values or slow obvious loops, in f32 and f64, on
// contiguous and strided inputs; stability at ±1e4; and the error messages of bad arguments.
#include <algorithm>
#include <cmath>

#include "harness.hpp"

namespace {

using namespace arclight;
using arclight::testing::all_close;
using arclight::testing::noncontiguous;

// Slow reference matmul on logical values.
std::vector<double> naive_mm(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  const auto m = a.shape()[0], k = a.shape()[1], n = b.shape()[1];
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t p = 0; p < k; ++p) c[i * n + j] += va[i * k + p] * vb[p * n + j];
  return c;
}

TEST(Elementwise, BroadcastArithmetic) {
  Tensor a = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector<float>({10, 20, 30}, {3});
  Tensor c = from_vector<float>({100, 200}, {2, 1});
  EXPECT_TRUE(all_close(ops::add(a, b), {11, 22, 33, 14, 25, 36}));
  EXPECT_TRUE(all_close(ops::sub(a, c), {-99, -98, -97, -196, -195, -194}));
  EXPECT_TRUE(all_close(ops::mul(b, c), {1000, 2000, 3000, 2000, 4000, 6000}));
  EXPECT_TRUE(all_close(ops::div(a, 2.0), {0.5, 1, 1.5, 2, 2.5, 3}));
  EXPECT_TRUE(all_close(2.0 - a, {1, 0, -1, -2, -3, -4}));
  EXPECT_TRUE(all_close(12.0 / a, {12, 6, 4, 3, 2.4, 2}));
  // integer arithmetic works without gradients
  Tensor i = from_vector<int>({7, -3}, {2}, DType::i32);
  EXPECT_EQ(ops::mul(i, i).to_vector<int>(), (std::vector<int>{49, 9}));
  EXPECT_ERROR_WITH(ops::exp(i), "exp", "floating", "i32");
}

TEST(Elementwise, StridedInputsMatchContiguous) {
  Generator g(3);
  Tensor a = randn({33, 17}, DType::f64, g), b = randn({33, 17}, DType::f64, g);
  Tensor as = noncontiguous(a), bs = noncontiguous(b);
  ASSERT_FALSE(as.is_contiguous());
  EXPECT_TRUE(all_close(ops::mul(as, bs), ops::mul(a, b), 0, 0));
  EXPECT_TRUE(all_close(ops::exp(as), ops::exp(a), 0, 0));
  EXPECT_TRUE(all_close(ops::sum(as, {0}), ops::sum(a, {0}), 1e-12, 1e-12));
  EXPECT_TRUE(all_close(ops::softmax(as, 1), ops::softmax(a, 1), 1e-12, 1e-15));
}

TEST(Elementwise, LargeParallelAddIsExact) {
  Tensor a = rand({1 << 20}), b = rand({1 << 20});
  Tensor c = ops::add(a, b);
  auto va = a.to_vector<float>(), vb = b.to_vector<float>(), vc = c.to_vector<float>();
  for (std::size_t i = 0; i < va.size(); i += 997) ASSERT_EQ(vc[i], va[i] + vb[i]);
  EXPECT_EQ(vc.back(), va.back() + vb.back());
}

TEST(Elementwise, UnaryMathValues) {
  Tensor x = from_vector<double>({0.25, 1.0, 4.0}, {3});
  EXPECT_TRUE(all_close(ops::sqrt(x), {0.5, 1, 2}, 1e-15));
  EXPECT_TRUE(all_close(ops::rsqrt(x), {2, 1, 0.5}, 1e-15));
  EXPECT_TRUE(all_close(ops::log(x), {std::log(0.25), 0, std::log(4.0)}, 1e-15));
  EXPECT_TRUE(all_close(ops::pow(x, 1.5), {0.125, 1, 8}, 1e-15));
  EXPECT_TRUE(all_close(ops::pow(x, from_vector<double>({2, 0, -1}, {3})), {0.0625, 1, 0.25}, 1e-15));
  Tensor y = from_vector<float>({-2, -0.5, 0.5, 2}, {4});
  EXPECT_TRUE(all_close(ops::abs(y), {2, 0.5, 0.5, 2}));
  EXPECT_TRUE(all_close(ops::clamp(y, -1.0, 1.0), {-1, -0.5, 0.5, 1}));
  EXPECT_TRUE(all_close(ops::clamp_min(y, 0.0), {0, 0, 0.5, 2}));
  EXPECT_TRUE(all_close(ops::clamp_max(y, 0.0), {-2, -0.5, 0, 0}));
  EXPECT_TRUE(all_close(ops::maximum(y, ops::neg(y)), {2, 0.5, 0.5, 2}));
  EXPECT_TRUE(all_close(ops::minimum(y, zeros({})), {-2, -0.5, 0, 0}));
  EXPECT_ERROR_WITH(ops::clamp(y, 1.0, -1.0), "clamp", "lower bound");
}

TEST(Elementwise, ComparisonsAndWhere) {
  Tensor a = from_vector<float>({1, 2, 3, 4}, {4});
  Tensor b = from_vector<float>({4, 2, 2, 5}, {4});
  EXPECT_EQ(ops::eq(a, b).to_vector<int>(), (std::vector<int>{0, 1, 0, 0}));
  EXPECT_EQ(ops::ne(a, b).to_vector<int>(), (std::vector<int>{1, 0, 1, 1}));
  EXPECT_EQ(ops::lt(a, b).to_vector<int>(), (std::vector<int>{1, 0, 0, 1}));
  EXPECT_EQ(ops::le(a, 2.0).to_vector<int>(), (std::vector<int>{1, 1, 0, 0}));
  EXPECT_EQ(ops::gt(a, b).to_vector<int>(), (std::vector<int>{0, 0, 1, 0}));
  EXPECT_EQ(ops::ge(a, 3.0).to_vector<int>(), (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(ops::gt(a, b).dtype(), DType::u8);
  EXPECT_TRUE(all_close(ops::where(ops::gt(a, b), a, b), {4, 2, 3, 5}));
  EXPECT_ERROR_WITH(ops::where(a, a, b), "where", "u8 mask");
}

TEST(Elementwise, MismatchesAreClearErrors) {
  EXPECT_ERROR_WITH(ops::add(zeros({2, 3}), zeros({4})), "add", "[2, 3]", "[4]", "cannot be broadcast");
  EXPECT_ERROR_WITH(ops::mul(zeros({2}), zeros({2}, DType::f64)), "mul", "dtype mismatch", "f32", "f64");
  EXPECT_ERROR_WITH(ops::add(Tensor(), zeros({1})), "add", "undefined");
}

TEST(Reduce, SumMeanVarOverDims) {
  Tensor t = ops::reshape(arange(0.0, 24.0, 1.0, DType::f64), {2, 3, 4});
  EXPECT_DOUBLE_EQ(ops::sum(t).item(), 276.0);
  EXPECT_TRUE(all_close(ops::sum(t, {0, 2}), {60, 92, 124}));
  EXPECT_EQ(ops::sum(t, {1}, true).shape(), (Shape{2, 1, 4}));
  EXPECT_TRUE(all_close(ops::mean(t, {-1}), {1.5, 5.5, 9.5, 13.5, 17.5, 21.5}));
  // var of 0..3 is 5/3 unbiased, 5/4 biased
  EXPECT_TRUE(all_close(ops::var(t, {2}), std::vector<double>(6, 5.0 / 3.0), 1e-14));
  EXPECT_TRUE(all_close(ops::var(t, {2}, 0), std::vector<double>(6, 1.25), 1e-14));
  Tensor i = from_vector<int>({1, 2, 3, 4}, {2, 2}, DType::i64);
  EXPECT_EQ(ops::sum(i, {1}).to_vector<int>(), (std::vector<int>{3, 7}));
}

TEST(Reduce, LongSumIsAccurateAndThreadIndependent) {
  // 3M floats summed: double accumulation keeps it near the exact value.
  // A sequential float accumulator would be off by hundreds; the result must round to the exact sum.
  Tensor t = full({3000000}, 0.1f);
  const float exact = static_cast<float>(3000000 * static_cast<double>(0.1f));
  EXPECT_EQ(ops::sum(t).to_vector<float>()[0], exact);
  Tensor r = rand({2999999});
  const int saved = num_threads();
  set_num_threads(1);
  const float one = ops::sum(r).to_vector<float>()[0];
  set_num_threads(2);
  const float two = ops::sum(r).to_vector<float>()[0];
  set_num_threads(saved);
  EXPECT_EQ(one, two);
}

TEST(Reduce, ExtremaArgmaxTopk) {
  Tensor t = from_vector<float>({3, 9, 1, 9, 7, 2, 5, 8}, {2, 4});
  EXPECT_TRUE(all_close(ops::amax(t, {1}), {9, 8}));
  EXPECT_TRUE(all_close(ops::amin(t), {1}));
  auto [v, i] = ops::max(t, 1);
  EXPECT_TRUE(all_close(v, {9, 8}));
  EXPECT_EQ(i.to_vector<int>(), (std::vector<int>{1, 3}));  // first of the tied 9s
  EXPECT_EQ(ops::argmin(t, 0).to_vector<int>(), (std::vector<int>{0, 1, 0, 1}));
  auto [tv, ti] = ops::topk(t, 3, 1);
  EXPECT_TRUE(all_close(tv, {9, 9, 3, 8, 7, 5}));
  EXPECT_EQ(ti.to_vector<int>(), (std::vector<int>{1, 3, 0, 3, 0, 2}));
  auto [sv, si] = ops::topk(t, 2, 0, /*largest=*/false);
  EXPECT_TRUE(all_close(sv, {3, 2, 1, 8, 7, 9, 5, 9}));
  EXPECT_EQ(si.shape(), (Shape{2, 4}));
  EXPECT_ERROR_WITH(ops::topk(t, 5, 1), "topk", "k = 5", "size 4");
  EXPECT_ERROR_WITH(ops::amax(zeros({0, 3})), "amax", "empty");
}

TEST(Linalg, MatmulMatchesNaiveOnTransposedViewsWithoutCopies) {
  Generator g(11);
  Tensor a = randn({37, 23}, DType::f64, g), b = randn({29, 37}, DType::f64, g);
  Tensor at = ops::transpose(ops::contiguous(ops::transpose(a, 0, 1)), 0, 1);  // a's values, column-major
  Tensor bt = ops::transpose(b, 0, 1);                                         // [37, 29] transposed view
  const auto before = host_allocator().stats().requests;
  Tensor c = ops::mm(ops::transpose(at, 0, 1), bt);  // [23, 37] · [37, 29]
  const auto after = host_allocator().stats().requests;
  EXPECT_EQ(after - before, 1u) << "transposed operands must reach BLAS as flags, not copies";
  Tensor a_t = ops::contiguous(ops::transpose(a, 0, 1));
  EXPECT_TRUE(all_close(c, naive_mm(a_t, ops::contiguous(bt)), 1e-12, 1e-12));
  // f32 against the f64 reference
  Tensor cf = ops::mm(ops::to(a_t, DType::f32), ops::to(bt, DType::f32));
  EXPECT_TRUE(all_close(cf, naive_mm(a_t, ops::contiguous(bt)), 1e-4, 1e-4));
}

TEST(Linalg, MatmulShapesFollowPyTorch) {
  EXPECT_EQ(ops::matmul(ones({3}), ones({3})).shape(), (Shape{}));
  EXPECT_DOUBLE_EQ(ops::matmul(ones({3}), ones({3})).item(), 3.0);
  EXPECT_EQ(ops::matmul(ones({3}), ones({3, 4})).shape(), (Shape{4}));
  EXPECT_EQ(ops::matmul(ones({2, 3}), ones({3})).shape(), (Shape{2}));
  EXPECT_EQ(ops::matmul(ones({5, 1, 2, 3}), ones({4, 3, 6})).shape(), (Shape{5, 4, 2, 6}));
  Tensor y = ops::linear(ones({2, 5, 3}), full({4, 3}, 2.0), full({4}, 1.0));
  EXPECT_EQ(y.shape(), (Shape{2, 5, 4}));
  EXPECT_TRUE(all_close(ops::reshape(y, {-1}), std::vector<double>(40, 7.0)));
  EXPECT_ERROR_WITH(ops::mm(ones({2, 3}), ones({4, 5})), "mm", "inner dimensions", "[2, 3]", "[4, 5]");
  EXPECT_ERROR_WITH(ops::bmm(ones({2, 3}), ones({2, 3})), "bmm", "3-D");
  EXPECT_ERROR_WITH(ops::linear(ones({2, 3}), ones({4, 5})), "linear", "in_features 5");
}

TEST(Softmax, StableAtLargeLogits) {
  Tensor x = from_vector<float>({1e4f, -1e4f, 0.0f, 1e4f - 1.0f}, {1, 4});
  Tensor p = ops::softmax(x, 1);
  Tensor lp = ops::log_softmax(x, 1);
  for (double v : lp.to_vector<double>()) EXPECT_TRUE(std::isfinite(v)) << v;
  const double e = std::exp(-1.0);
  EXPECT_TRUE(all_close(p, {1 / (1 + e), 0, 0, e / (1 + e)}, 1e-5, 1e-7));
  EXPECT_TRUE(all_close(lp, {-std::log1p(e), -2e4 - std::log1p(e), -1e4 - std::log1p(e), -1 - std::log1p(e)}, 1e-6, 1e-3));
  // rows sum to 1 on random input along a middle dim
  Tensor r = ops::softmax(randn({3, 5, 4}), 1);
  EXPECT_TRUE(all_close(ops::sum(r, {1}), std::vector<double>(12, 1.0), 1e-6));
}

TEST(Join, CatStackSplitChunk) {
  Tensor a = from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor b = from_vector<float>({5, 6}, {1, 2});
  EXPECT_TRUE(all_close(ops::cat({a, b}, 0), {1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(all_close(ops::cat({a, ops::transpose(a, 0, 1)}, 1), {1, 2, 1, 3, 3, 4, 2, 4}));
  EXPECT_EQ(ops::stack({a, a, a}, 1).shape(), (Shape{2, 3, 2}));
  auto parts = ops::split(arange(7), 3);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].to_vector<int>(), (std::vector<int>{6}));
  auto sized = ops::split(arange(7), std::vector<std::int64_t>{2, 5});
  EXPECT_EQ(sized[1].to_vector<int>(), (std::vector<int>{2, 3, 4, 5, 6}));
  auto ch = ops::chunk(arange(10), 4);
  ASSERT_EQ(ch.size(), 4u);
  EXPECT_EQ(ch[3].to_vector<int>(), (std::vector<int>{9}));
  EXPECT_ERROR_WITH(ops::cat({a, ones({1, 3})}, 0), "cat", "dim 1");
  EXPECT_ERROR_WITH(ops::stack({a, b}), "stack", "equal shapes");
  EXPECT_ERROR_WITH(ops::split(a, std::vector<std::int64_t>{1, 2}, 0), "split", "add up to 3");
}

TEST(Index, SelectGatherScatterOneHot) {
  Tensor t = from_vector<float>({0, 1, 2, 10, 11, 12, 20, 21, 22}, {3, 3});
  EXPECT_TRUE(all_close(ops::index_select(t, 0, from_vector<std::int64_t>({2, 0, 2}, {3})), {20, 21, 22, 0, 1, 2, 20, 21, 22}));
  EXPECT_TRUE(all_close(ops::index_select(t, 1, from_vector<int>({1}, {1}, DType::i32)), {1, 11, 21}));
  Tensor idx = from_vector<std::int64_t>({2, 0, 1, 1}, {2, 2});
  EXPECT_TRUE(all_close(ops::gather(t, 1, idx), {2, 0, 11, 11}));
  Tensor s = ops::scatter_add(zeros({2, 3}), 1, idx, ones({2, 2}));
  EXPECT_TRUE(all_close(s, {1, 0, 1, 0, 2, 0}));
  EXPECT_EQ(ops::one_hot(from_vector<std::int64_t>({2, 0}, {2}), 3).to_vector<int>(), (std::vector<int>{0, 0, 1, 1, 0, 0}));
  EXPECT_ERROR_WITH(ops::index_select(t, 0, from_vector<std::int64_t>({3}, {1})), "index_select", "index 3", "[0, 3)");
  EXPECT_ERROR_WITH(ops::gather(t, 1, from_vector<std::int64_t>({-1}, {1, 1})), "gather", "index -1");
  EXPECT_ERROR_WITH(ops::one_hot(from_vector<std::int64_t>({5}, {1}), 3), "one_hot", "index 5");
  EXPECT_ERROR_WITH(ops::gather(t, 1, from_vector<float>({1}, {1, 1})), "gather", "i64 or i32");
}

TEST(Normalize, RowsHaveUnitNorm) {
  Tensor x = randn({6, 9});
  Tensor n = ops::norm(ops::l2_normalize(x, 1), {1});
  EXPECT_TRUE(all_close(n, std::vector<double>(6, 1.0), 1e-6));
  // a zero row stays finite: zero output and zero gradient
  Tensor z = zeros({2, 3}, DType::f64).set_requires_grad();
  Tensor y = ops::l2_normalize(z, 1);
  ops::sum(y).backward();
  for (double v : y.to_vector<double>()) EXPECT_EQ(v, 0.0);
  for (double v : z.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(v));
  EXPECT_ERROR_WITH(ops::l2_normalize(x, 1, 0.0), "l2_normalize", "eps");
}

}  // namespace
