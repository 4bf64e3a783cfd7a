// Numerical gradient checking. For a function f of float64 tensors, the analytic gradient of the scalar
// L = Σ_outputs ⟨R, f(x)⟩ (R a fixed random tensor per output, so every output element is weighed) is
// compared with central differences (L(x + eps·e_i) − L(x − eps·e_i)) / 2eps for every input element i.
// An element fails when |analytic − numeric| > atol + rtol·|numeric|; the result reports the worst one.
#pragma once

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "arclight/core/tensor.hpp"
#include "arclight/ops/elementwise.hpp"

namespace arclight {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  std::uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  std::size_t worst_input = 0;       // which input holds the worst element
  std::int64_t worst_index = -1;     // flat (row-major) index within that input
  double analytic = 0, numeric = 0;  // the two values at the worst element
  double worst_excess = 0;           // |a − n| − (atol + rtol·|n|) at the worst element
  std::string message;               // a readable summary
};

using GradcheckFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

// requires: inputs are f64 (leaves; those that require grad are checked); f is deterministic.
// ensures: inputs' data is restored; their .grad is left cleared.
inline GradcheckResult gradcheck(const GradcheckFn& f, std::vector<Tensor> inputs, const GradcheckOptions& opt = {}) {
  for (auto& t : inputs)
    ARCLIGHT_CHECK(t.dtype() == DType::f64, "gradcheck", "inputs must be f64 for finite differences, got ", t.str());
  Generator gen(opt.seed);
  // Random projections of each output.
  std::vector<Tensor> proj;
  {
    NoGradGuard ng;
    for (const Tensor& y : f(inputs)) proj.push_back(y.defined() && is_floating(y.dtype()) ? randn(y.shape(), DType::f64, gen) : Tensor());
  }
  auto loss = [&](const std::vector<Tensor>& outs) {
    Tensor total = zeros({}, DType::f64);
    for (std::size_t k = 0; k < outs.size(); ++k)
      if (proj[k].defined()) total = ops::add(total, ops::sum(ops::mul(outs[k], proj[k])));
    return total;
  };
  for (auto& t : inputs) t.zero_grad();
  Tensor l = loss(f(inputs));
  ARCLIGHT_CHECK(l.requires_grad(), "gradcheck", "the function's outputs do not depend on any input that requires grad");
  l.backward();

  GradcheckResult res;
  double worst = -INFINITY;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    Tensor g = x.grad();
    std::vector<double> analytic = g.defined() ? g.to_vector<double>() : std::vector<double>(static_cast<std::size_t>(x.numel()), 0.0);
    // Perturb through the storage: walk x's elements in row-major order with their storage offsets.
    double* base = static_cast<double*>(x.storage()->data());
    std::vector<std::int64_t> offsets;
    detail::for_each_offset(x, [&](std::int64_t off) { offsets.push_back(off); });
    NoGradGuard ng;
    for (std::size_t i = 0; i < offsets.size(); ++i) {
      const double orig = base[offsets[i]];
      base[offsets[i]] = orig + opt.eps;
      const double lp = loss(f(inputs)).item();
      base[offsets[i]] = orig - opt.eps;
      const double lm = loss(f(inputs)).item();
      base[offsets[i]] = orig;
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double a = analytic[i];
      const double excess = std::abs(a - numeric) - (opt.atol + opt.rtol * std::abs(numeric));
      if (!(excess <= 0) || excess > worst || std::isnan(excess)) {
        if (std::isnan(excess) || excess > worst) {
          worst = std::isnan(excess) ? INFINITY : excess;
          res.worst_input = k;
          res.worst_index = static_cast<std::int64_t>(i);
          res.analytic = a;
          res.numeric = numeric;
          res.worst_excess = excess;
        }
      }
      if (!(excess <= 0)) res.ok = false;
    }
    x.zero_grad();
  }
  std::ostringstream os;
  os << (res.ok ? "gradcheck passed" : "gradcheck FAILED") << "; worst element: input " << res.worst_input << " index "
     << res.worst_index << " analytic " << res.analytic << " numeric " << res.numeric << " (excess over tolerance "
     << res.worst_excess << ")";
  res.message = os.str();
  return res;
}

// Convenience for single-output functions.
inline GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                                 const GradcheckOptions& opt = {}) {
  return gradcheck(GradcheckFn([&](const std::vector<Tensor>& xs) { return std::vector<Tensor>{f(xs)}; }),
                   std::move(inputs), opt);
}

}  // namespace arclight
