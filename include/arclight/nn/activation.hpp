// Activation layers: ReLU, SiLU, GELU (erf form), Sigmoid, Identity (no parameters) and PReLU ("weight",
// torch.nn.PReLU: num_parameters slopes, init 0.25; the embedding neck's BN → PReLU). make_activation builds
// the parameter-free ones from an ops::Activation, for blocks whose activation is a configuration value.
// All forward through ops/activation.hpp.
#pragma once

#include <cmath>
#include <memory>

#include "arclight/nn/module.hpp"
#include "arclight/ops/activation.hpp"

namespace arclight::nn {

// A parameter-free pointwise activation module (the shared implementation of ReLU, SiLU, GELU, Sigmoid,
// Identity).
class PointwiseActivation : public Module {
 public:
  PointwiseActivation(const char* type, ops::Activation act) : Module(type), act_(act) {}
  // ensures: act(x), same shape (Identity returns x itself). requires: x f32/f64.
  Tensor forward(const Tensor& x) override { return ops::activation(x, act_); }
  ops::Activation kind() const { return act_; }

 private:
  ops::Activation act_;
};

class ReLU : public PointwiseActivation {
 public:
  ReLU() : PointwiseActivation("ReLU", ops::Activation::ReLU) {}
};
class SiLU : public PointwiseActivation {
 public:
  SiLU() : PointwiseActivation("SiLU", ops::Activation::SiLU) {}
};
class GELU : public PointwiseActivation {
 public:
  GELU() : PointwiseActivation("GELU", ops::Activation::GELU) {}
};
class Sigmoid : public PointwiseActivation {
 public:
  Sigmoid() : PointwiseActivation("Sigmoid", ops::Activation::Sigmoid) {}
};
class Identity : public PointwiseActivation {
 public:
  Identity() : PointwiseActivation("Identity", ops::Activation::Identity) {}
};

// The module of a parameter-free activation kind.
inline std::shared_ptr<Module> make_activation(ops::Activation act) {
  switch (act) {
    case ops::Activation::ReLU: return std::make_shared<ReLU>();
    case ops::Activation::SiLU: return std::make_shared<SiLU>();
    case ops::Activation::GELU: return std::make_shared<GELU>();
    case ops::Activation::Sigmoid: return std::make_shared<Sigmoid>();
    case ops::Activation::Identity: return std::make_shared<Identity>();
  }
  fail("nn::make_activation", "unknown activation id ", static_cast<int>(act));
}

// PReLU: y = x for x > 0, a·x otherwise, a learnable ("weight" [num_parameters]: 1 shared slope, or one per
// channel of dim 1). Registered with no_weight_decay, as timm's param_groups_weight_decay exempts 1-D tensors.
class PReLU : public Module {
 public:
  // requires: num_parameters >= 1, init finite, dtype f32/f64.
  explicit PReLU(std::int64_t num_parameters = 1, double init = 0.25, DType dtype = DType::f32) : Module("PReLU") {
    ARCLIGHT_CHECK(num_parameters >= 1, "nn::PReLU", "expected num_parameters >= 1, got ", num_parameters);
    ARCLIGHT_CHECK(std::isfinite(init), "nn::PReLU", "init must be finite, got ", init);
    ARCLIGHT_CHECK(dtype == DType::f32 || dtype == DType::f64, "nn::PReLU", "expected dtype f32 or f64, got ",
                   dtype_name(dtype));
    weight_ = register_parameter("weight", full({num_parameters}, init, dtype), /*no_weight_decay=*/true);
  }
  // requires: x [N, C, ...] with C == num_parameters unless num_parameters == 1 (rank 1 allowed then).
  Tensor forward(const Tensor& x) override { return ops::prelu(x, weight_); }
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
};

}  // namespace arclight::nn
