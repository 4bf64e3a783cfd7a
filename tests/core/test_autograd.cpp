// The autograd engine: accumulation, explicit seeds, diamonds, no-grad, detach, graph release (and the
// error on a second backward), retain_graph, and that graphs are freed when their outputs go away.
#include <memory>

#include "harness.hpp"

namespace {

using namespace arclight;
using arclight::testing::all_close;

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = from_vector<double>({1.0, 2.0, 3.0}, {3}).set_requires_grad();
  ops::sum(ops::mul(x, x)).backward();
  EXPECT_TRUE(all_close(x.grad(), {2.0, 4.0, 6.0}));
  ops::sum(ops::mul(x, 3.0)).backward();
  EXPECT_TRUE(all_close(x.grad(), {5.0, 7.0, 9.0}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, DiamondSumsBothPaths) {
  Tensor x = from_vector<double>({0.5, -1.5}, {2}).set_requires_grad();
  Tensor a = ops::exp(x);
  Tensor y = ops::sum(ops::add(ops::mul(a, a), a));  // d/dx = 2e^{2x} + e^x
  y.backward();
  const auto v = x.to_vector<double>();
  EXPECT_TRUE(all_close(x.grad(), {2 * std::exp(2 * v[0]) + std::exp(v[0]), 2 * std::exp(2 * v[1]) + std::exp(v[1])}, 1e-12));
}

TEST(Autograd, LeafGradientsNeverAliasEachOther) {
  // add's backward hands the same gradient tensor to both inputs: each leaf must get its own copy.
  Tensor a = randn({3}, DType::f64).set_requires_grad(), b = randn({3}, DType::f64).set_requires_grad();
  ops::add(a, b).backward(ones({3}, DType::f64));
  ASSERT_TRUE(a.grad().defined() && b.grad().defined());
  EXPECT_NE(a.grad().storage().get(), b.grad().storage().get());
  // a gradient nobody else holds is taken over rather than copied: storage unique to the leaf's .grad
  Tensor w = randn({4, 5}, DType::f64).set_requires_grad();
  ops::sum(ops::mul(w, 2.0)).backward();
  EXPECT_EQ(w.grad().storage().use_count(), 1);
  EXPECT_TRUE(all_close(w.grad(), std::vector<double>(20, 2.0)));
}

TEST(Autograd, ExplicitGradientSeedsNonScalarBackward) {
  Tensor x = from_vector<double>({1, 2, 3, 4}, {2, 2}).set_requires_grad();
  Tensor y = ops::mul(x, x);
  y.backward(from_vector<double>({1, 0, 0.5, 2}, {2, 2}));
  EXPECT_TRUE(all_close(x.grad(), {2, 0, 3, 16}));
  Tensor x2 = ones({2, 2}, DType::f64).set_requires_grad();
  EXPECT_ERROR_WITH(ops::mul(x2, 2.0).backward(), "backward", "one-element", "[2, 2]");
  EXPECT_ERROR_WITH(ops::mul(x2, 2.0).backward(ones({3}, DType::f64)), "backward", "does not match");
}

TEST(Autograd, NoGradGuardAndDetachStopRecording) {
  Tensor x = randn({3}, DType::f64).set_requires_grad();
  {
    NoGradGuard ng;
    Tensor y = ops::mul(x, 2.0);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_TRUE(y.is_leaf());
  }
  EXPECT_TRUE(grad_enabled());
  Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_EQ(d.storage().get(), x.storage().get());
  Tensor y = ops::add(ops::mul(d, 5.0), x);  // only the x path carries gradient
  ops::sum(y).backward();
  EXPECT_TRUE(all_close(x.grad(), {1, 1, 1}));
  EXPECT_ERROR_WITH(ops::sum(ops::mul(d, 2.0)).backward(), "backward", "does not require grad");
}

TEST(Autograd, SecondBackwardThroughAFreedGraphIsAClearError) {
  Tensor x = randn({3}, DType::f64).set_requires_grad();
  Tensor y = ops::sum(ops::exp(x));
  y.backward();
  EXPECT_ERROR_WITH(y.backward(), "backward", "already used", "retain_graph");
}

TEST(Autograd, RetainGraphAllowsASecondBackward) {
  Tensor x = from_vector<double>({2.0}, {1}).set_requires_grad();
  Tensor y = ops::sum(ops::mul(x, x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  EXPECT_TRUE(all_close(x.grad(), {8.0}));
}

TEST(Autograd, GraphIsReleasedWhenOutputsDie) {
  std::weak_ptr<Node> node;
  std::weak_ptr<TensorImpl> saved_leaf;
  Tensor x = randn({4}, DType::f64).set_requires_grad();
  {
    Tensor y = ops::exp(ops::mul(x, x));
    node = y.grad_fn();
    EXPECT_FALSE(node.expired());
  }
  EXPECT_TRUE(node.expired());  // no cycles keep it alive
  {
    Tensor y = ops::sum(ops::exp(x));
    node = y.grad_fn();
    y.backward();
  }
  EXPECT_TRUE(node.expired());
}

TEST(Autograd, SavedOutputsDoNotFormCycles) {
  // exp saves its own output; the node must not keep the output alive (or itself).
  std::weak_ptr<TensorImpl> out_impl;
  std::weak_ptr<Node> node;
  Tensor x = randn({4}, DType::f64).set_requires_grad();
  {
    Tensor y = ops::exp(x);
    out_impl = y.impl_ptr();
    node = y.grad_fn();
  }
  EXPECT_TRUE(out_impl.expired());
  EXPECT_TRUE(node.expired());
}

TEST(Autograd, LeafRulesAreEnforced) {
  Tensor x = randn({2}, DType::f64).set_requires_grad();
  Tensor y = ops::mul(x, 2.0);
  EXPECT_FALSE(y.is_leaf());
  EXPECT_ERROR_WITH(y.set_requires_grad(), "set_requires_grad", "leaf");
  EXPECT_ERROR_WITH(arange(3).set_requires_grad(), "set_requires_grad", "floating", "i64");
  EXPECT_ERROR_WITH(ops::add_(x, ones({2}, DType::f64)), "add_", "requires grad", "NoGradGuard");
}

TEST(Autograd, UnusedOutputGetsZeroGradient) {
  Tensor x = randn({5, 3}, DType::f64).set_requires_grad();
  auto [v, i] = ops::max(x, 1);
  auto parts = ops::split(x, 2, 0);
  ops::sum(parts[1]).backward();  // parts[0] and parts[2] unused
  auto g = x.grad().to_vector<double>();
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(g[static_cast<std::size_t>(r * 3 + c)], (r == 2 || r == 3) ? 1.0 : 0.0);
  (void)v;
  (void)i;
}

}  // namespace
