// What every model of the zoo shares: the options a model is created with (ModelOptions), the Backbone
// interface the embedding network and the trainers program against (forward_features → feature map,
// forward_head → logits), and ModelPlan, the analytic description of a model — every parameter tensor by
// its timm state_dict name and shape, and the multiply-accumulates of every convolution and linear layer at
// a given input size. A family's describe_*() walks the same decoded architecture its constructor builds
// from, so a plan is exact, costs microseconds (no tensor is allocated) and is checked against the built
// module in tests (names, shapes and counts must agree). The registry (registry.hpp) lists models with
// their plan's parameter counts and FLOPs.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/nn/module.hpp"

namespace arclight::models {

// Options every registered model accepts (timm's create_model keyword arguments, by another name).
struct ModelOptions {
  // Classes of the classifier; 0 builds no classifier (then forward() returns the pooled features
  // [N, num_features]; the embedding network uses forward_features only).
  std::int64_t num_classes = 1000;
  std::int64_t in_chans = 3;  // 1 for grey images
  // Dropout before the classifier; < 0 picks the variant's default (EfficientNet-B0 0.2 … B7 0.5, NFNet-F0 0.2).
  double drop_rate = -1.0;
  // Stochastic depth; < 0 picks the family's default (EfficientNet 0.2, METHOD.md; NFNet 0.1, the
  // NFNet paper's F0 setting). Rates grow linearly with the block index from 0: EfficientNet block i of n
  // gets rate·i/n (timm), NFNet linspace(0, rate, n) (timm).
  double drop_path_rate = -1.0;
  // Small-input stem (for 28–64 px images): the first strided convolution of the stem runs with stride 1,
  // so the feature map is 1/16 of the input instead of 1/32 (28 px → 2×2, 32 px → 2×2, 64 px → 4×4
  // instead of 1×1, 1×1, 2×2). Parameter names and shapes do not change (pretrained weights still load);
  // compute grows 4× at a given input size.
  bool small_input = false;
  // Draws the initial weights and, later, the dropout / drop-path masks (default: the process-wide
  // generator). A generator given here must outlive the model.
  Generator* generator = nullptr;
  DType dtype = DType::f32;

  Generator& gen() const { return generator ? *generator : default_generator(); }
};

// A classification backbone: feature extractor + (optional) pooled linear classifier.
class Backbone : public nn::Module {
 public:
  using nn::Module::Module;

  // The last feature map [N, num_features(), H/s, W/s] (s = feature_stride()), after the final activation.
  // requires: x [N, in_chans, H, W] of the model's dtype.
  virtual Tensor forward_features(const Tensor& x) = 0;
  // Global average pool → dropout (train) → classifier. requires: num_classes() > 0 and a feature map
  // from forward_features. ensures: logits [N, num_classes()].
  virtual Tensor forward_head(const Tensor& features) = 0;
  // forward_head(forward_features(x)); with num_classes() == 0 the pooled features [N, num_features()].
  Tensor forward(const Tensor& x) override { return forward_head(forward_features(x)); }

  std::int64_t num_features() const { return num_features_; }
  std::int64_t num_classes() const { return num_classes_; }
  std::int64_t in_chans() const { return in_chans_; }
  // Total downsampling of forward_features (32, or 16 with ModelOptions::small_input).
  std::int64_t feature_stride() const { return feature_stride_; }

 protected:
  std::int64_t num_features_ = 0, num_classes_ = 0, in_chans_ = 3, feature_stride_ = 32;
};

// Spatial size of a feature map.
struct Spatial {
  std::int64_t h = 0, w = 0;
};

// One parameter of a plan: its fully qualified timm name and shape.
struct ParamShape {
  std::string name;
  Shape shape;
};

// Analytic model description: parameters (name + shape, in construction order) and MACs for one image.
// MACs count the multiply-accumulates of convolutions and linear layers only (as fvcore / timm's "GMACs");
// FLOPs are reported as 2 × MACs. Element-wise work (BN, activations, SE gating, pooling) is left out.
class ModelPlan {
 public:
  void param(const std::string& name, Shape shape) { params_.push_back({name, std::move(shape)}); }

  // Output size of a convolution / pooling window: explicit symmetric padding (floor or ceil rule), or
  // TF "same" (ceil(in / stride)).
  static std::int64_t out_size(std::int64_t in, std::int64_t k, std::int64_t stride, std::int64_t pad, bool same,
                               bool ceil_mode = false, std::int64_t dilation = 1) {
    if (same) return (in + stride - 1) / stride;
    const std::int64_t span = dilation * (k - 1) + 1;
    const std::int64_t num = in + 2 * pad - span;
    std::int64_t out = (ceil_mode ? (num + stride - 1) / stride : num / stride) + 1;
    // PyTorch's pooling rule: the last window must start inside the input (or left padding).
    if (ceil_mode && (out - 1) * stride >= in + pad) --out;
    return out;
  }

  // A k×k convolution named `prefix` ("blocks.0.0.conv_dw") with weight [cout, cin/groups, k, k], an
  // optional bias [cout] and an optional NFNet gain [cout, 1, 1, 1]. Adds its MACs; returns the output size.
  Spatial conv(const std::string& prefix, std::int64_t cin, std::int64_t cout, std::int64_t k, std::int64_t stride,
               std::int64_t groups, Spatial in, bool same, bool bias, bool gain = false) {
    param(prefix + ".weight", {cout, cin / groups, k, k});
    if (bias) param(prefix + ".bias", {cout});
    if (gain) param(prefix + ".gain", {cout, 1, 1, 1});
    const std::int64_t pad = ((stride - 1) + (k - 1)) / 2;  // timm's get_padding (symmetric)
    const Spatial out{out_size(in.h, k, stride, pad, same), out_size(in.w, k, stride, pad, same)};
    macs_ += out.h * out.w * cout * (cin / groups) * k * k;
    return out;
  }
  // BatchNorm affine parameters (weight, bias); its running statistics are buffers, not parameters.
  void batch_norm(const std::string& prefix, std::int64_t c) {
    param(prefix + ".weight", {c});
    param(prefix + ".bias", {c});
  }
  void linear(const std::string& prefix, std::int64_t in, std::int64_t out, bool bias = true) {
    param(prefix + ".weight", {out, in});
    if (bias) param(prefix + ".bias", {out});
    macs_ += in * out;
  }
  void add_macs(std::int64_t m) { macs_ += m; }

  const std::vector<ParamShape>& params() const { return params_; }
  std::int64_t num_parameters() const {
    std::int64_t n = 0;
    for (const auto& p : params_) {
      std::int64_t e = 1;
      for (auto d : p.shape) e *= d;
      n += e;
    }
    return n;
  }
  std::int64_t macs() const { return macs_; }
  std::int64_t flops() const { return 2 * macs_; }
  Spatial feature_size;            // forward_features' output size
  std::int64_t num_features = 0;   // channels of forward_features' output

 private:
  std::vector<ParamShape> params_;
  std::int64_t macs_ = 0;
};

namespace detail {
// The named parameter `name` of module m (a direct parameter, not a child's). Throws when absent.
inline Tensor own_param(const nn::Module& m, const std::string& name) {
  for (auto& p : m.named_parameters(false))
    if (p.name == name) return p.tensor;
  fail("models", m.type_name(), " has no parameter '", name, "'");
}
}  // namespace detail

}  // namespace arclight::models
