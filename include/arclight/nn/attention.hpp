// Channel attention of the backbones, with timm's module structure and state_dict keys:
//   * SqueezeExcite (timm's efficientnet SqueezeExcite): x · sigmoid(conv_expand(act(conv_reduce(mean_hw x))))
//     with children "conv_reduce" / "conv_expand" (1x1 convs with bias). rd_channels is given explicitly
//     because EfficientNet sizes it from the BLOCK input (0.25 · block in_chs) while the SE runs on the
//     expanded channels;
//   * SEModule (timm.layers SEModule, NFNet's 'se' attention): the same computation with children "fc1" /
//     "fc2";
//   * EcaModule (timm's ECA, eca_nfnet): x · sigmoid(conv1d_k(mean_hw x)) across channels, child "conv" (a
//     bias-free Conv1d(1, 1, k), k from the channel count as timm: t = int(|log2 C + beta| / gamma), k = t
//     if odd else t + 1, at least 3).
// The gate multiply is ops::se_scale (one fused pass over x, gradients to x and to the gate).
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "arclight/nn/conv.hpp"
#include "arclight/ops/activation.hpp"
#include "arclight/ops/pooling.hpp"

namespace arclight::nn {

// The shared implementation of SqueezeExcite and SEModule (children named per timm's class).
class SqueezeExciteBase : public Module {
 public:
  // requires: x [N, channels, H, W]. ensures: x · gate, same shape (differentiable in x and every parameter).
  Tensor forward(const Tensor& x) override {
    ARCLIGHT_CHECK(x.defined() && x.dim() == 4 && x.shape()[1] == channels_, who_, "expected input [N, ", channels_,
                   ", H, W], got ", x.defined() ? x.str() : std::string("undefined"));
    Tensor s = ops::global_avg_pool(x);                              // [N, C, 1, 1]
    s = ops::activation(reduce_->forward(s), act_);                  // [N, rd, 1, 1]
    return ops::se_scale(x, ops::sigmoid(expand_->forward(s)));  // gate [N, C, 1, 1]
  }

  std::int64_t channels() const { return channels_; }
  std::int64_t rd_channels() const { return rd_channels_; }
  ops::Activation activation() const { return act_; }
  const std::shared_ptr<Conv2d>& reduce() const { return reduce_; }
  const std::shared_ptr<Conv2d>& expand() const { return expand_; }

 protected:
  SqueezeExciteBase(const char* type, const char* reduce_name, const char* expand_name, std::int64_t channels,
                    std::int64_t rd_channels, ops::Activation act, bool bias, Generator& gen, DType dtype)
      : Module(type), who_(str_cat("nn::", type)), channels_(channels), rd_channels_(rd_channels), act_(act) {
    ARCLIGHT_CHECK(channels > 0 && rd_channels > 0, who_, "expected channels > 0 and rd_channels > 0, got ", channels,
                   " and ", rd_channels);
    reduce_ = register_module(reduce_name, std::make_shared<Conv2d>(channels, rd_channels, 1, 1, 0, 1, 1, bias, gen, dtype));
    expand_ = register_module(expand_name, std::make_shared<Conv2d>(rd_channels, channels, 1, 1, 0, 1, 1, bias, gen, dtype));
  }

 private:
  std::string who_;
  std::int64_t channels_, rd_channels_;
  ops::Activation act_;
  std::shared_ptr<Conv2d> reduce_, expand_;
};

// timm's efficientnet SqueezeExcite: children "conv_reduce", "conv_expand" (bias), activation between them
// (EfficientNet: SiLU), sigmoid gate.
class SqueezeExcite : public SqueezeExciteBase {
 public:
  // requires: in_chs > 0, rd_channels > 0 (EfficientNet: round(0.25 · block input channels)).
  SqueezeExcite(std::int64_t in_chs, std::int64_t rd_channels, ops::Activation act = ops::Activation::ReLU,
                Generator& gen = default_generator(), DType dtype = DType::f32)
      : SqueezeExciteBase("SqueezeExcite", "conv_reduce", "conv_expand", in_chs, rd_channels, act, true, gen, dtype) {}
};

// timm.layers SEModule: children "fc1", "fc2" (bias by default), ReLU by default, sigmoid gate (NFNet's 'se').
class SEModule : public SqueezeExciteBase {
 public:
  SEModule(std::int64_t channels, std::int64_t rd_channels, ops::Activation act = ops::Activation::ReLU,
           bool bias = true, Generator& gen = default_generator(), DType dtype = DType::f32)
      : SqueezeExciteBase("SEModule", "fc1", "fc2", channels, rd_channels, act, bias, gen, dtype) {}
};

// timm's EcaModule (Efficient Channel Attention): child "conv", a Conv1d(1, 1, k, padding (k − 1)/2, no bias).
class EcaModule : public Module {
 public:
  // The kernel size timm derives from the channel count: t = int(|log2(channels) + beta| / gamma),
  // k = max(t if t is odd else t + 1, 3).
  static std::int64_t kernel_size_for(std::int64_t channels, double gamma = 2.0, double beta = 1.0) {
    ARCLIGHT_CHECK(channels > 0 && gamma > 0, "nn::EcaModule", "expected channels > 0 and gamma > 0, got ", channels,
                   " and ", gamma);
    const auto t = static_cast<std::int64_t>(std::abs(std::log2(double(channels)) + beta) / gamma);
    return std::max<std::int64_t>(t % 2 ? t : t + 1, 3);
  }

  // requires: channels > 0 (the kernel size comes from it, as timm with `channels` given) or channels == 0 and
  //   an odd kernel_size >= 1 (used as is).
  explicit EcaModule(std::int64_t channels, std::int64_t kernel_size = 3, double gamma = 2.0, double beta = 1.0,
                     Generator& gen = default_generator(), DType dtype = DType::f32)
      : Module("EcaModule"), channels_(channels) {
    ARCLIGHT_CHECK(channels >= 0, "nn::EcaModule", "expected channels >= 0, got ", channels);
    kernel_size_ = channels > 0 ? kernel_size_for(channels, gamma, beta) : kernel_size;
    ARCLIGHT_CHECK(kernel_size_ >= 1 && kernel_size_ % 2 == 1, "nn::EcaModule", "kernel size must be odd and >= 1, got ",
                   kernel_size_);
    conv_ = register_module("conv", std::make_shared<Conv1d>(1, 1, kernel_size_, 1, (kernel_size_ - 1) / 2, 1, 1,
                                                             /*bias=*/false, gen, dtype));
  }

  // requires: x [N, C, H, W] (C == channels when channels > 0). ensures: x · gate (differentiable).
  Tensor forward(const Tensor& x) override {
    ARCLIGHT_CHECK(x.defined() && x.dim() == 4 && (channels_ == 0 || x.shape()[1] == channels_), "nn::EcaModule",
                   "expected input [N, ", channels_ > 0 ? std::to_string(channels_) : std::string("C"), ", H, W], got ",
                   x.defined() ? x.str() : std::string("undefined"));
    const std::int64_t n = x.shape()[0], c = x.shape()[1];
    const Tensor y = ops::reshape(ops::global_avg_pool(x), {n, 1, c});  // channels as a 1-D sequence
    return ops::se_scale(x, ops::reshape(ops::sigmoid(conv_->forward(y)), {n, c}));
  }

  std::int64_t kernel_size() const { return kernel_size_; }
  const std::shared_ptr<Conv1d>& conv() const { return conv_; }

 private:
  std::int64_t channels_, kernel_size_ = 3;
  std::shared_ptr<Conv1d> conv_;
};

}  // namespace arclight::nn
