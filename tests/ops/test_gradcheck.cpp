// Gradcheck of every differentiable op, in float64, each on contiguous inputs and on non-contiguous
// (transposed / strided) leaves, with broadcasting where the op broadcasts. One table, one mechanism.
#include <functional>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

using arclight::Shape;
using arclight::Tensor;
using namespace arclight::ops;
using arclight::testing::leaf;

struct InputSpec {
  Shape shape;
  double lo = 0, hi = 0;  // uniform domain when lo < hi, else normal
};

struct GradCase {
  std::string name;
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
};

const std::vector<GradCase>& cases() {
  static const std::vector<GradCase> table = {
      // arithmetic with broadcasting
      {"add_broadcast", {{{3, 4}}, {{4}}}, [](auto& x) { return add(x[0], x[1]); }},
      {"sub_broadcast", {{{3, 1}}, {{2, 3, 4}}}, [](auto& x) { return sub(x[0], x[1]); }},
      {"mul_broadcast", {{{2, 3, 4}}, {{3, 1}}}, [](auto& x) { return mul(x[0], x[1]); }},
      {"div_broadcast", {{{3, 4}}, {{4}, 0.5, 2.0}}, [](auto& x) { return div(x[0], x[1]); }},
      {"scalar_ops", {{{3, 4}}}, [](auto& x) { return (2.5 - x[0] * 3.0) / 4.0 + 1.0; }},
      {"rdiv_scalar", {{{3, 4}, 0.5, 2.0}}, [](auto& x) { return 2.0 / x[0]; }},
      {"neg", {{{3, 4}}}, [](auto& x) { return neg(x[0]); }},
      // unary math
      {"exp", {{{3, 4}}}, [](auto& x) { return exp(x[0]); }},
      {"log", {{{3, 4}, 0.5, 2.0}}, [](auto& x) { return log(x[0]); }},
      {"sqrt", {{{3, 4}, 0.5, 2.0}}, [](auto& x) { return sqrt(x[0]); }},
      {"rsqrt", {{{3, 4}, 0.5, 2.0}}, [](auto& x) { return rsqrt(x[0]); }},
      {"abs", {{{3, 4}}}, [](auto& x) { return abs(x[0]); }},
      {"pow_scalar", {{{3, 4}, 0.5, 2.0}}, [](auto& x) { return pow(x[0], 2.7); }},
      {"pow_tensor", {{{3, 4}, 0.5, 2.0}, {{4}, -1.0, 2.0}}, [](auto& x) { return pow(x[0], x[1]); }},
      {"clamp", {{{4, 5}}}, [](auto& x) { return clamp(x[0], -0.5, 0.7); }},
      {"clamp_min", {{{4, 5}}}, [](auto& x) { return clamp_min(x[0], 0.1); }},
      {"clamp_max", {{{4, 5}}}, [](auto& x) { return clamp_max(x[0], -0.1); }},
      {"maximum", {{{3, 4}}, {{4}}}, [](auto& x) { return maximum(x[0], x[1]); }},
      {"minimum", {{{3, 4}}, {{3, 1}}}, [](auto& x) { return minimum(x[0], x[1]); }},
      {"where", {{{3, 4}}, {{3, 4}}, {{4}}}, [](auto& x) { return where(gt(x[0], 0.0), x[1], x[2]); }},
      // reductions
      {"sum_all", {{{3, 4}}}, [](auto& x) { return sum(x[0]); }},
      {"sum_dims_keepdim", {{{2, 3, 4}}}, [](auto& x) { return sum(x[0], {0, 2}, true); }},
      {"sum_neg_dim", {{{2, 3, 4}}}, [](auto& x) { return sum(x[0], {-1}); }},
      {"mean_dims", {{{2, 3, 4}}}, [](auto& x) { return mean(x[0], {1}); }},
      {"var_unbiased", {{{3, 5}}}, [](auto& x) { return var(x[0], {1}); }},
      {"var_biased_keepdim", {{{2, 3, 4}}}, [](auto& x) { return var(x[0], {0, 2}, 0, true); }},
      {"amax", {{{3, 5}}}, [](auto& x) { return amax(x[0], {1}); }},
      {"amin_all", {{{3, 5}}}, [](auto& x) { return amin(x[0]); }},
      {"max_dim_values", {{{3, 5}}}, [](auto& x) { return max(x[0], 1).first; }},
      {"min_dim_keepdim", {{{3, 5}}}, [](auto& x) { return min(x[0], 0, true).first; }},
      {"norm", {{{3, 5}}}, [](auto& x) { return norm(x[0], {1}); }},
      // linear algebra
      {"mm", {{{3, 4}}, {{4, 5}}}, [](auto& x) { return mm(x[0], x[1]); }},
      {"bmm", {{{2, 3, 4}}, {{2, 4, 5}}}, [](auto& x) { return bmm(x[0], x[1]); }},
      {"matmul_batch_broadcast", {{{2, 3, 4}}, {{4, 5}}}, [](auto& x) { return matmul(x[0], x[1]); }},
      {"matmul_vec", {{{4}}, {{4, 3}}}, [](auto& x) { return matmul(x[0], x[1]); }},
      {"matmul_dot", {{{4}}, {{4}}}, [](auto& x) { return matmul(x[0], x[1]); }},
      {"linear", {{{2, 3, 4}}, {{5, 4}}, {{5}}}, [](auto& x) { return linear(x[0], x[1], x[2]); }},
      // softmax family
      {"softmax_last", {{{3, 5}}}, [](auto& x) { return softmax(x[0], -1); }},
      {"softmax_mid", {{{2, 3, 4}}}, [](auto& x) { return softmax(x[0], 1); }},
      {"log_softmax", {{{3, 5}}}, [](auto& x) { return log_softmax(x[0], 1); }},
      {"log_softmax_dim0", {{{4, 3}}}, [](auto& x) { return log_softmax(x[0], 0); }},
      // views and joins
      {"reshape", {{{3, 4}}}, [](auto& x) { return mul(reshape(x[0], {2, 6}), reshape(x[0], {2, 6})); }},
      {"permute", {{{2, 3, 4}}}, [](auto& x) { return exp(permute(x[0], {2, 0, 1})); }},
      {"transpose", {{{3, 4}}}, [](auto& x) { return mul(transpose(x[0], 0, 1), 2.0); }},
      {"slice_step", {{{6, 4}}}, [](auto& x) { return exp(slice(x[0], 0, 1, 6, 2)); }},
      {"narrow", {{{3, 5}}}, [](auto& x) { return exp(narrow(x[0], 1, 1, 3)); }},
      {"select", {{{3, 5}}}, [](auto& x) { return exp(select(x[0], 0, -1)); }},
      {"expand", {{{3, 1}}}, [](auto& x) { return mul(expand(x[0], {2, 3, 4}), 1.5); }},
      {"squeeze_unsqueeze", {{{3, 1, 4}}}, [](auto& x) { return exp(unsqueeze(squeeze(x[0], 1), 0)); }},
      {"flatten", {{{2, 3, 4}}}, [](auto& x) { return exp(flatten(x[0], 1)); }},
      {"contiguous_clone", {{{3, 4}}}, [](auto& x) { return mul(contiguous(x[0]), clone(x[0])); }},
      {"cat", {{{2, 3}}, {{4, 3}}}, [](auto& x) { return exp(cat({x[0], x[1]}, 0)); }},
      {"stack", {{{2, 3}}, {{2, 3}}}, [](auto& x) { return exp(stack({x[0], x[1]}, 1)); }},
      {"split_chunk", {{{5, 3}}}, [](auto& x) {
         auto parts = split(x[0], 2, 0);
         auto halves = chunk(x[0], 2, 1);
         return add(sum(mul(parts[0], parts[0])), add(sum(exp(parts[2])), sum(mul(halves[1], 3.0))));
       }},
      // indexing
      {"index_select_repeat", {{{4, 3}}}, [](auto& x) {
         return index_select(x[0], 0, arclight::from_vector<std::int64_t>({3, 0, 3}, {3}));
       }},
      {"gather", {{{3, 4}}}, [](auto& x) {
         return gather(x[0], 1, arclight::from_vector<std::int64_t>({0, 3, 1, 1, 2, 0}, {3, 2}));
       }},
      {"scatter_add", {{{3, 4}}, {{3, 2}}}, [](auto& x) {
         return scatter_add(x[0], 1, arclight::from_vector<std::int64_t>({0, 0, 1, 3, 2, 2}, {3, 2}), x[1]);
       }},
      {"l2_normalize", {{{3, 5}}}, [](auto& x) { return l2_normalize(x[0], 1); }},
      {"to_f32_and_back", {{{3, 4}}}, [](auto& x) { return to(mul(to(x[0], arclight::DType::f32), 1.0), arclight::DType::f64); }},
  };
  return table;
}

class OpGradcheck : public ::testing::TestWithParam<std::tuple<std::size_t, bool>> {};

TEST_P(OpGradcheck, MatchesCentralDifferences) {
  const auto& c = cases()[std::get<0>(GetParam())];
  const bool contiguous = std::get<1>(GetParam());
  std::vector<Tensor> inputs;
  std::uint64_t seed = 100;
  for (const auto& spec : c.inputs) inputs.push_back(leaf(spec.shape, seed++, contiguous, spec.lo, spec.hi));
  if (!contiguous)
    for (auto& t : inputs) {
      const auto n = t.dim();
      const bool layout_changes = n == 1 ? t.numel() > 1 : (n >= 2 && t.shape()[n - 1] > 1 && t.shape()[n - 2] > 1);
      if (layout_changes) EXPECT_FALSE(t.is_contiguous()) << c.name << ": harness gave a contiguous input";
    }
  // the conversion case computes in f32: loosen only its tolerance
  arclight::GradcheckOptions opt;
  if (c.name == "to_f32_and_back") opt.rtol = 1e-2, opt.atol = 1e-3, opt.eps = 1e-3;
  auto res = arclight::gradcheck(c.fn, inputs, opt);
  EXPECT_TRUE(res.ok) << c.name << (contiguous ? " (contiguous)" : " (non-contiguous)") << ": " << res.message;
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<std::size_t, bool>>& info) {
  return cases()[std::get<0>(info.param)].name + (std::get<1>(info.param) ? "_contig" : "_strided");
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpGradcheck,
                         ::testing::Combine(::testing::Range<std::size_t>(0, cases().size()), ::testing::Bool()),
                         case_name);

// A gradcheck that must fail: an op with a deliberately wrong backward is caught, and the report names
// the worst element.
TEST(Gradcheck, DetectsAWrongGradient) {
  auto wrong_square = [](const std::vector<Tensor>& x) {
    Tensor y;
    {
      arclight::NoGradGuard ng;  // the forward x·x without a recorded node; the wrong backward is recorded below
      y = mul(x[0], x[0]);
    }
    arclight::autograd::record("wrong_square", {x[0]}, y, [xd = x[0].detach()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{mul(g[0], mul(xd, 3.0))};  // should be 2x
    });
    return y;
  };
  auto res = arclight::gradcheck(wrong_square, {leaf({4}, 7)});
  EXPECT_FALSE(res.ok);
  EXPECT_GE(res.worst_index, 0);
  EXPECT_NE(res.message.find("FAILED"), std::string::npos);
  EXPECT_NEAR(res.analytic / res.numeric, 1.5, 1e-4);
}

}  // namespace
