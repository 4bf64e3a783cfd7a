// Regularisation layers whose behaviour depends on train()/eval(): Dropout (torch.nn.Dropout, the classifier
// dropout of EfficientNet/NFNet) and DropPath (timm's stochastic depth on residual branches, per-sample mask
// scaled by 1/(1 − p)). Both are the identity in eval() mode and draw their masks from an explicit
// arclight::Generator (default: the process-wide one), so training is reproducible from a seed. No
// parameters or buffers.
#pragma once

#include <cmath>

#include "arclight/nn/module.hpp"
#include "arclight/ops/dropout.hpp"

namespace arclight::nn {

namespace detail {
inline double checked_drop_p(double p, const char* who) {
  ARCLIGHT_CHECK(std::isfinite(p) && p >= 0.0 && p <= 1.0, who, "drop probability must be in [0, 1], got ", p);
  return p;
}
}  // namespace detail

// Dropout: in train() mode zeroes each element with probability p and scales the rest by 1/(1 − p).
class Dropout : public Module {
 public:
  // requires: 0 <= p <= 1. The generator must outlive the module.
  explicit Dropout(double p = 0.5, Generator& gen = default_generator())
      : Module("Dropout"), p_(detail::checked_drop_p(p, "nn::Dropout")), gen_(&gen) {}
  // ensures: x itself in eval() mode or when p == 0; else ops::dropout(x, p, true, gen) (draws numel(x)).
  Tensor forward(const Tensor& x) override { return ops::dropout(x, p_, is_training(), *gen_); }
  double p() const { return p_; }

 private:
  double p_;
  Generator* gen_;
};

// DropPath (stochastic depth): in train() mode drops whole samples of a residual branch with probability p.
class DropPath : public Module {
 public:
  // requires: 0 <= p <= 1. The generator must outlive the module.
  explicit DropPath(double p = 0.0, Generator& gen = default_generator())
      : Module("DropPath"), p_(detail::checked_drop_p(p, "nn::DropPath")), gen_(&gen) {}
  // ensures: x itself in eval() mode or when p == 0; else ops::drop_path(x, p, true, gen) (draws N).
  Tensor forward(const Tensor& x) override { return ops::drop_path(x, p_, is_training(), *gen_); }
  double p() const { return p_; }

 private:
  double p_;
  Generator* gen_;
};

}  // namespace arclight::nn
