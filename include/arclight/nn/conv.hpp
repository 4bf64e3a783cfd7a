// Convolution layers: nn::Conv2d (torch.nn.Conv2d, plus TF-"same" padding as timm's Conv2dSame),
// nn::Conv1d (torch.nn.Conv1d, used by ECA attention) and nn::ScaledStdConv2d (timm's NFNet convolution with
// scaled weight standardisation and a learnable per-channel gain). Parameter names are PyTorch/timm
// state_dict keys: "weight", "bias" (and "gain" for ScaledStdConv2d), so exported weights load as they are.
// Weights are initialised as torch's reset_parameters (kaiming_uniform_(a = √5), i.e. U(±1/√fan_in), and the
// bias U(±1/√fan_in)); models that want another scheme (timm's EfficientNet: normal(0, √(2/fan_out)))
// re-initialise with nn/init.hpp. Square kernels only (every EfficientNet/NFNet conv is square).
// Default padding: Conv2d 0 (torch.nn.Conv2d); ScaledStdConv2d Padding::automatic() (timm's padding=None).
#pragma once

#include <cmath>
#include <string>

#include "arclight/nn/init.hpp"
#include "arclight/nn/module.hpp"
#include "arclight/ops/conv2d.hpp"

namespace arclight::nn {

// How a convolution pads. Implicit from an int (symmetric explicit padding, torch's `padding=p`), or
// Padding(ph, pw); Padding::same() is TensorFlow's "SAME" (out = ceil(in / stride), the odd pixel at the
// bottom/right, resolved per input size — timm's Conv2dSame / padding='same' of tf_ models);
// Padding::automatic() is timm's padding=None default, the symmetric ((stride − 1) + dilation·(k − 1)) / 2
// of timm.layers.get_padding.
struct Padding {
  enum class Kind { Explicit, Same, Automatic };
  Kind kind = Kind::Explicit;
  std::int64_t h = 0, w = 0;

  Padding(std::int64_t p = 0) : h(p), w(p) {}  // NOLINT(google-explicit-constructor): `padding = 1` reads naturally
  Padding(std::int64_t ph, std::int64_t pw) : h(ph), w(pw) {}
  static Padding same() {
    Padding p;
    p.kind = Kind::Same;
    return p;
  }
  static Padding automatic() {
    Padding p;
    p.kind = Kind::Automatic;
    return p;
  }
  // The Conv2dParams of a square convolution with this padding. requires: explicit pads >= 0.
  ops::Conv2dParams resolve(std::int64_t kernel, std::int64_t stride, std::int64_t dilation, std::int64_t groups,
                            const char* who) const {
    if (kind == Kind::Same) return ops::conv2d_params_same(stride, dilation, groups);
    ops::Conv2dParams p = ops::conv2d_params(stride, 0, dilation, groups);
    std::int64_t ph = h, pw = w;
    if (kind == Kind::Automatic) ph = pw = ((stride - 1) + dilation * (kernel - 1)) / 2;
    ARCLIGHT_CHECK(ph >= 0 && pw >= 0, who, "padding must be >= 0, got (", ph, ", ", pw, ")");
    p.pad_top = p.pad_bottom = ph;
    p.pad_left = p.pad_right = pw;
    return p;
  }
  std::string str() const {
    if (kind == Kind::Same) return "same";
    if (kind == Kind::Automatic) return "automatic";
    return str_cat("(", h, ", ", w, ")");
  }
};

namespace detail {
inline void check_conv_args(const char* who, std::int64_t in, std::int64_t out, std::int64_t kernel,
                            std::int64_t stride, std::int64_t dilation, std::int64_t groups, DType dtype) {
  ARCLIGHT_CHECK(in > 0 && out > 0, who, "expected in_channels > 0 and out_channels > 0, got ", in, " -> ", out);
  ARCLIGHT_CHECK(kernel >= 1 && stride >= 1 && dilation >= 1, who, "expected kernel_size, stride and dilation >= 1, got ",
                 kernel, ", ", stride, ", ", dilation);
  ARCLIGHT_CHECK(groups >= 1, who, "groups must be >= 1, got ", groups);
  ARCLIGHT_CHECK(in % groups == 0, who, "groups (", groups, ") must divide in_channels (", in, ")");
  ARCLIGHT_CHECK(out % groups == 0, who, "groups (", groups, ") must divide out_channels (", out, ")");
  ARCLIGHT_CHECK(dtype == DType::f32 || dtype == DType::f64, who, "expected dtype f32 or f64, got ", dtype_name(dtype));
}

// torch's _ConvNd.reset_parameters: W ~ kaiming_uniform_(a = √5) = U(±1/√fan_in); b ~ U(±1/√fan_in).
inline void reset_conv_parameters(Tensor& weight, Tensor& bias, Generator& gen) {
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::kFanIn, "leaky_relu", gen);
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(double(init::compute_fans(weight).fan_in));
    init::uniform_(bias, -bound, bound, gen);
  }
}
}  // namespace detail

// Conv2d: y = conv(x, W) + b over [N, in_channels, H, W] inputs.
// Parameters: "weight" [out, in/groups, k, k], "bias" [out] (when bias; registered with no_weight_decay).
class Conv2d : public Module {
 public:
  // requires: in, out, kernel, stride, dilation, groups >= 1, groups dividing in and out, explicit pads >= 0,
  //   dtype f32/f64 (else arclight::Error "nn::Conv2d: ...").
  // ensures: parameters registered and initialised from gen (torch's default scheme).
  Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size, std::int64_t stride = 1,
         Padding padding = 0, std::int64_t dilation = 1, std::int64_t groups = 1, bool bias = true,
         Generator& gen = default_generator(), DType dtype = DType::f32)
      : Conv2d("Conv2d", in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, gen, dtype) {}

  // requires: x [N, in_channels, H, W] of the layer's dtype, large enough for one output pixel.
  // ensures: [N, out_channels, out_h, out_w] (differentiable in x, weight, bias).
  Tensor forward(const Tensor& x) override { return ops::conv2d(check_input(x), weight_, bias_, params_); }

  std::int64_t in_channels() const { return in_; }
  std::int64_t out_channels() const { return out_; }
  std::int64_t kernel_size() const { return kernel_; }
  std::int64_t groups() const { return params_.groups; }
  const Padding& padding() const { return padding_; }
  const ops::Conv2dParams& params() const { return params_; }
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without bias

 protected:
  Conv2d(const char* type, std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride, Padding padding,
         std::int64_t dilation, std::int64_t groups, bool bias, Generator& gen, DType dtype)
      : Module(type), in_(in), out_(out), kernel_(kernel), padding_(padding) {
    const std::string who = str_cat("nn::", type);
    detail::check_conv_args(who.c_str(), in, out, kernel, stride, dilation, groups, dtype);
    params_ = padding.resolve(kernel, stride, dilation, groups, who.c_str());
    weight_ = empty({out, in / groups, kernel, kernel}, dtype);
    if (bias) bias_ = empty({out}, dtype);
    detail::reset_conv_parameters(weight_, bias_, gen);
    register_parameter("weight", weight_);
    if (bias) register_parameter("bias", bias_, /*no_weight_decay=*/true);
  }

  const Tensor& check_input(const Tensor& x) const {
    ARCLIGHT_CHECK(x.defined() && x.dim() == 4 && x.shape()[1] == in_, str_cat("nn::", type_name()),
                   "expected input [N, ", in_, ", H, W], got ", x.defined() ? x.str() : std::string("undefined"));
    return x;
  }

  std::int64_t in_, out_, kernel_;
  Padding padding_;
  ops::Conv2dParams params_;
  Tensor weight_, bias_;
};

// Conv1d: torch.nn.Conv1d over [N, in_channels, L] (computed as a 1 x k conv2d on [N, C, 1, L]).
// Parameters: "weight" [out, in/groups, k], "bias" [out] (when bias). Symmetric explicit padding only.
class Conv1d : public Module {
 public:
  // requires: as Conv2d, padding >= 0. ensures: parameters registered and initialised (torch's scheme).
  Conv1d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size, std::int64_t stride = 1,
         std::int64_t padding = 0, std::int64_t dilation = 1, std::int64_t groups = 1, bool bias = true,
         Generator& gen = default_generator(), DType dtype = DType::f32)
      : Module("Conv1d"), in_(in_channels) {
    detail::check_conv_args("nn::Conv1d", in_channels, out_channels, kernel_size, stride, dilation, groups, dtype);
    ARCLIGHT_CHECK(padding >= 0, "nn::Conv1d", "padding must be >= 0, got ", padding);
    params_ = ops::conv2d_params(1, 0, 1, groups);
    params_.stride_w = stride;
    params_.dilation_w = dilation;
    params_.pad_left = params_.pad_right = padding;
    weight_ = empty({out_channels, in_channels / groups, kernel_size}, dtype);
    if (bias) bias_ = empty({out_channels}, dtype);
    detail::reset_conv_parameters(weight_, bias_, gen);
    register_parameter("weight", weight_);
    if (bias) register_parameter("bias", bias_, /*no_weight_decay=*/true);
  }

  // requires: x [N, in_channels, L]. ensures: [N, out_channels, out_L] (differentiable).
  Tensor forward(const Tensor& x) override {
    ARCLIGHT_CHECK(x.defined() && x.dim() == 3 && x.shape()[1] == in_, "nn::Conv1d", "expected input [N, ", in_,
                   ", L], got ", x.defined() ? x.str() : std::string("undefined"));
    const Tensor w4 = ops::unsqueeze(weight_, 2);  // [out, in/g, 1, k]
    return ops::squeeze(ops::conv2d(ops::unsqueeze(x, 2), w4, bias_, params_), 2);
  }

  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }

 private:
  std::int64_t in_;
  ops::Conv2dParams params_;
  Tensor weight_, bias_;
};

// ScaledStdConv2d: timm's NFNet convolution. The weight used is
//     Ŵ = gain·γ·(W − mean)/sqrt(var·fan_in + ε·fan_in)      (per output channel, biased var)
// i.e. timm's batch_norm(W, eps=ε)·gain·γ/√fan_in; in METHOD.md's form sqrt(var·N + eps) the eps is ε·fan_in
// (the value handed to ops::scaled_std_weight). Parameters: "weight", "bias" (as Conv2d), then "gain"
// [out, 1, 1, 1] (init gain_init, default 1; no_weight_decay). Default padding is timm's (automatic).
class ScaledStdConv2d : public Conv2d {
 public:
  // requires: as Conv2d; gamma finite; eps >= 0 (timm's default 1e-6; NFNet configs pass their std_conv_eps).
  ScaledStdConv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size,
                  std::int64_t stride = 1, Padding padding = Padding::automatic(), std::int64_t dilation = 1,
                  std::int64_t groups = 1, bool bias = true, double gamma = 1.0, double eps = 1e-6,
                  double gain_init = 1.0, Generator& gen = default_generator(), DType dtype = DType::f32)
      : Conv2d("ScaledStdConv2d", in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, gen,
               dtype),
        gamma_(gamma),
        eps_(eps) {
    ARCLIGHT_CHECK(std::isfinite(gamma), "nn::ScaledStdConv2d", "gamma must be finite, got ", gamma);
    ARCLIGHT_CHECK(std::isfinite(eps) && eps >= 0.0, "nn::ScaledStdConv2d", "eps must be finite and >= 0, got ", eps);
    gain_ = full({out_channels, 1, 1, 1}, gain_init, dtype);
    register_parameter("gain", gain_, /*no_weight_decay=*/true);
  }

  // The standardised weight Ŵ the forward convolves with (differentiable to weight and gain).
  Tensor standardized_weight() const {
    return ops::scaled_std_weight(weight_, gain_, gamma_, eps_ * double(init::compute_fans(weight_).fan_in));
  }

  Tensor forward(const Tensor& x) override { return ops::conv2d(check_input(x), standardized_weight(), bias_, params_); }

  const Tensor& gain() const { return gain_; }
  double gamma() const { return gamma_; }
  double eps() const { return eps_; }

 private:
  double gamma_, eps_;
  Tensor gain_;
};

}  // namespace arclight::nn
