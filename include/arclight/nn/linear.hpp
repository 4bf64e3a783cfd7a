// nn::Linear: y = x·Wᵀ + b, the fully connected layer (the embedding neck's C → 512 projection, classifier
// heads). Parameters "weight" [out, in] and "bias" [out] as torch.nn.Linear / timm state_dict keys,
// initialised as nn.Linear.reset_parameters does: W ~ kaiming_uniform_(a = √5) = U(±1/√in), b ~ U(±1/√in).
// The bias is registered with no_weight_decay (optim::param_groups would exempt it as a 1-D tensor anyway).
#pragma once

#include <cmath>

#include "arclight/nn/init.hpp"
#include "arclight/nn/module.hpp"

namespace arclight::nn {

class Linear : public Module {
 public:
  // requires: in_features > 0, out_features > 0; dtype floating.
  // ensures: weight [out, in] and (when bias) bias [out] registered, initialised from `gen`.
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true, Generator& gen = default_generator(),
         DType dtype = DType::f32)
      : Module("Linear"), in_features_(in_features), out_features_(out_features) {
    ARCLIGHT_CHECK(in_features > 0 && out_features > 0, "nn::Linear", "expected in_features > 0 and out_features > 0, got ",
                   in_features, " -> ", out_features);
    ARCLIGHT_CHECK(is_floating(dtype), "nn::Linear", "expected a floating dtype, got ", dtype_name(dtype));
    weight_ = empty({out_features, in_features}, dtype);
    init::kaiming_uniform_(weight_, std::sqrt(5.0), init::FanMode::kFanIn, "leaky_relu", gen);
    register_parameter("weight", weight_);
    if (bias) {
      bias_ = empty({out_features}, dtype);
      const double bound = 1.0 / std::sqrt(double(in_features));
      init::uniform_(bias_, -bound, bound, gen);
      register_parameter("bias", bias_, /*no_weight_decay=*/true);
    }
  }

  // requires: x [..., in_features] of the layer's dtype. ensures: [..., out_features] (differentiable).
  Tensor forward(const Tensor& x) override {
    ARCLIGHT_CHECK(x.defined() && x.dim() >= 1 && x.shape().back() == in_features_, "nn::Linear",
                   "expected input [..., ", in_features_, "], got ", x.defined() ? x.str() : std::string("undefined"));
    return ops::linear(x, weight_, bias_);
  }

  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without bias

 private:
  std::int64_t in_features_, out_features_;
  Tensor weight_, bias_;
};

}  // namespace arclight::nn
