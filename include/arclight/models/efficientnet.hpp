// EfficientNet B0–B7 and the tf_ variants (Tan & Le 2019), built the way timm builds them so that timm
// state_dict keys and parameter counts match exactly (efficientnet_b0: 5,288,548 with 1000 classes).
//
// One stage table (B0's, METHOD.md "Architectures, exactly") + compound scaling:
//   channels  → make_divisible(c · width, 8), never below 90 % of c · width (timm's round_channels); the
//               stem (32) and the head (1280) scale the same way;
//   repeats   → ceil(r · depth) per stage (timm's depth_trunc='ceil');
//   SE        → squeeze-excite on the depthwise output with round(0.25 · block input channels) reduced
//               channels (timm computes it from the block input: se_ratio / exp_ratio of the mid channels);
//   SiLU everywhere; drop-path rate of block i (0-based, of n blocks) = rate · i / n, on residual blocks only;
//   dropout before the classifier.
// tf_efficientnet_*: TF "same" padding (pad computed per input size, odd pixel bottom/right) and BN eps 1e-3,
// as the TensorFlow ports. Names: conv_stem, bn1, blocks.<stage>.<block>.{conv_dw, bn1, se.conv_reduce,
// se.conv_expand, conv_pw, bn2} (depthwise-separable) or {conv_pw, bn1, conv_dw, bn2, se.*, conv_pwl, bn3}
// (inverted residual), conv_head, bn2, classifier.
//
// The architecture is decoded once into an EfficientNetSpec (pure arithmetic); describe_efficientnet turns
// a spec into a ModelPlan (parameter manifest + MACs) without allocating, and EfficientNet builds the
// modules from the same spec. Weight initialisation follows timm's _init_weight_goog: conv weights
// N(0, √(2/fan_out)) with fan_out = k²·out/groups, BN γ = 1, β = 0, classifier U(±1/√out), biases 0.
#pragma once

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arclight/models/backbone.hpp"
#include "arclight/nn/attention.hpp"
#include "arclight/nn/batch_norm.hpp"
#include "arclight/nn/conv.hpp"
#include "arclight/nn/init.hpp"
#include "arclight/nn/linear.hpp"
#include "arclight/ops/activation.hpp"
#include "arclight/ops/batch_norm.hpp"
#include "arclight/ops/dropout.hpp"
#include "arclight/ops/pooling.hpp"

namespace arclight::models {

// timm's make_divisible: the multiple of `divisor` nearest to v (ties up), at least min_value (default
// divisor), bumped one divisor up when rounding lost more than (1 − round_limit) of v.
// requires: v > 0, divisor >= 1.
inline std::int64_t make_divisible(double v, std::int64_t divisor = 8, std::int64_t min_value = 0,
                                   double round_limit = 0.9) {
  ARCLIGHT_CHECK(v > 0 && divisor >= 1, "models::make_divisible", "expected v > 0 and divisor >= 1, got v=", v,
                 " divisor=", divisor);
  if (min_value <= 0) min_value = divisor;
  std::int64_t nv = std::max<std::int64_t>(
      min_value, static_cast<std::int64_t>(v + double(divisor) / 2.0) / divisor * divisor);
  if (double(nv) < round_limit * v) nv += divisor;
  return nv;
}

// timm's round_channels: make_divisible(c · multiplier, divisor) (c itself when multiplier is 0).
inline std::int64_t round_channels(std::int64_t c, double multiplier, std::int64_t divisor = 8) {
  if (multiplier == 0.0) return c;
  return make_divisible(double(c) * multiplier, divisor);
}

enum class MBBlockType { kDepthwiseSeparable, kInvertedResidual };

// One row of the stage table: block type, expansion, kernel, stride of the first block, output channels,
// repeats and squeeze-excite ratio (relative to the block input).
struct MBStageDef {
  MBBlockType type;
  std::int64_t exp_ratio, kernel, stride, channels, repeats;
  double se_ratio = 0.25;
};

// EfficientNet-B0's stages (timm's arch_def 'ds_r1_k3_s1_e1_c16_se0.25', 'ir_r2_k3_s2_e6_c24_se0.25', ...).
inline std::vector<MBStageDef> efficientnet_b0_stages() {
  using T = MBBlockType;
  return {{T::kDepthwiseSeparable, 1, 3, 1, 16, 1}, {T::kInvertedResidual, 6, 3, 2, 24, 2},
          {T::kInvertedResidual, 6, 5, 2, 40, 2},   {T::kInvertedResidual, 6, 3, 2, 80, 3},
          {T::kInvertedResidual, 6, 5, 1, 112, 3},  {T::kInvertedResidual, 6, 5, 2, 192, 4},
          {T::kInvertedResidual, 6, 3, 1, 320, 1}};
}

// A member of the family before options: scaling, default resolution and dropout, TF-port flavour.
struct EfficientNetConfig {
  double width_mult = 1.0, depth_mult = 1.0;
  std::int64_t resolution = 224;  // the variant's training resolution (informational; any size works)
  double drop_rate = 0.2;         // dropout before the classifier
  bool tf_same_padding = false;   // tf_ variants: TF "same" padding
  double bn_eps = 1e-5;           // tf_ variants: 1e-3
  double bn_momentum = 0.1;       // tf_ variants: 0.01
  std::int64_t stem_size = 32;
  std::int64_t num_features = 1280;  // before width scaling
  std::vector<MBStageDef> stages = efficientnet_b0_stages();
};

// The config of a registered name: efficientnet_b0…b7, tf_efficientnet_b0…b7; nullopt otherwise.
inline std::optional<EfficientNetConfig> efficientnet_config(const std::string& name) {
  struct Row {
    double w, d;
    std::int64_t res;
    double drop;
  };
  static constexpr Row rows[] = {{1.0, 1.0, 224, 0.2}, {1.0, 1.1, 240, 0.2}, {1.1, 1.2, 260, 0.3},
                                 {1.2, 1.4, 300, 0.3}, {1.4, 1.8, 380, 0.4}, {1.6, 2.2, 456, 0.4},
                                 {1.8, 2.6, 528, 0.5}, {2.0, 3.1, 600, 0.5}};
  for (int tf = 0; tf < 2; ++tf) {
    for (int b = 0; b < 8; ++b) {
      if (name != std::string(tf ? "tf_" : "") + "efficientnet_b" + std::to_string(b)) continue;
      EfficientNetConfig c;
      c.width_mult = rows[b].w;
      c.depth_mult = rows[b].d;
      c.resolution = rows[b].res;
      c.drop_rate = rows[b].drop;
      if (tf) {
        c.tf_same_padding = true;
        c.bn_eps = 1e-3;
        c.bn_momentum = 0.01;  // timm's BN_ARGS_TF: momentum 1 − 0.99
      }
      return c;
    }
  }
  return std::nullopt;
}

// One decoded block.
struct MBBlockSpec {
  MBBlockType type;
  std::int64_t in_chs, mid_chs, out_chs, kernel, stride;
  std::int64_t se_chs;  // reduced channels of the squeeze-excite (0: no SE)
  double drop_path;     // stochastic-depth rate of this block
  bool has_skip;        // stride 1 and in == out: residual connection (drop-path applies)
};

// A fully decoded EfficientNet: everything the modules and the plan are built from.
struct EfficientNetSpec {
  EfficientNetConfig config;
  std::int64_t in_chans = 3, num_classes = 1000;
  std::int64_t stem_chs = 32, stem_stride = 2, num_features = 1280;
  double drop_rate = 0.2;
  std::vector<std::vector<MBBlockSpec>> stages;

  std::int64_t num_blocks() const {
    std::int64_t n = 0;
    for (const auto& s : stages) n += static_cast<std::int64_t>(s.size());
    return n;
  }
};

// Decodes config + options into blocks (channels, repeats, SE sizes, drop-path rates).
// requires: width/depth > 0, in_chans >= 1, num_classes >= 0. ensures: a spec of ceil(r·depth) blocks per stage.
inline EfficientNetSpec decode_efficientnet(const EfficientNetConfig& cfg, const ModelOptions& opt = {}) {
  const char* who = "models::efficientnet";
  ARCLIGHT_CHECK(cfg.width_mult > 0 && cfg.depth_mult > 0, who, "expected width and depth multipliers > 0, got ",
                 cfg.width_mult, " and ", cfg.depth_mult);
  ARCLIGHT_CHECK(opt.in_chans >= 1 && opt.num_classes >= 0, who, "expected in_chans >= 1 and num_classes >= 0, got ",
                 opt.in_chans, " and ", opt.num_classes);
  ARCLIGHT_CHECK(!cfg.stages.empty(), who, "the stage table is empty");
  EfficientNetSpec s;
  s.config = cfg;
  s.in_chans = opt.in_chans;
  s.num_classes = opt.num_classes;
  s.drop_rate = opt.drop_rate >= 0 ? opt.drop_rate : cfg.drop_rate;
  ARCLIGHT_CHECK(s.drop_rate < 1.0, who, "expected drop_rate < 1, got ", s.drop_rate);
  const double dpr = opt.drop_path_rate >= 0 ? opt.drop_path_rate : 0.2;
  ARCLIGHT_CHECK(dpr < 1.0, who, "expected drop_path_rate < 1, got ", dpr);
  s.stem_chs = round_channels(cfg.stem_size, cfg.width_mult);
  s.stem_stride = opt.small_input ? 1 : 2;
  s.num_features = round_channels(cfg.num_features, cfg.width_mult);

  std::int64_t total = 0;
  std::vector<std::int64_t> repeats;
  for (const auto& st : cfg.stages) {
    ARCLIGHT_CHECK(st.repeats >= 1 && st.kernel >= 1 && st.stride >= 1 && st.channels >= 1 && st.exp_ratio >= 1, who,
                   "invalid stage row (repeats, kernel, stride, channels, expansion must be >= 1)");
    repeats.push_back(static_cast<std::int64_t>(std::ceil(double(st.repeats) * cfg.depth_mult)));
    total += repeats.back();
  }
  std::int64_t in = s.stem_chs, index = 0;
  for (std::size_t i = 0; i < cfg.stages.size(); ++i) {
    const MBStageDef& st = cfg.stages[i];
    std::vector<MBBlockSpec> blocks;
    const std::int64_t out = round_channels(st.channels, cfg.width_mult);
    for (std::int64_t r = 0; r < repeats[i]; ++r, ++index) {
      MBBlockSpec b;
      b.type = st.type;
      b.in_chs = in;
      b.out_chs = out;
      b.kernel = st.kernel;
      b.stride = r == 0 ? st.stride : 1;
      const std::int64_t exp = st.type == MBBlockType::kDepthwiseSeparable ? 1 : st.exp_ratio;
      b.mid_chs = st.type == MBBlockType::kDepthwiseSeparable ? in : make_divisible(double(in * exp));
      // timm: se_ratio / exp_ratio applied to the mid channels, rounded with Python's round (ties to even).
      b.se_chs = st.se_ratio > 0 ? static_cast<std::int64_t>(std::nearbyint(double(b.mid_chs) * (st.se_ratio / double(exp))))
                                 : 0;
      b.has_skip = b.stride == 1 && b.in_chs == b.out_chs;
      b.drop_path = dpr * double(index) / double(total);
      blocks.push_back(b);
      in = out;
    }
    s.stages.push_back(std::move(blocks));
  }
  return s;
}

// The analytic plan (parameter manifest in module order + MACs) of a spec at an input size.
inline ModelPlan describe_efficientnet(const EfficientNetSpec& s, Spatial input) {
  ModelPlan p;
  const bool same = s.config.tf_same_padding;
  Spatial x = p.conv("conv_stem", s.in_chans, s.stem_chs, 3, s.stem_stride, 1, input, same, false);
  p.batch_norm("bn1", s.stem_chs);
  for (std::size_t i = 0; i < s.stages.size(); ++i) {
    for (std::size_t j = 0; j < s.stages[i].size(); ++j) {
      const MBBlockSpec& b = s.stages[i][j];
      const std::string pre = "blocks." + std::to_string(i) + "." + std::to_string(j) + ".";
      auto se = [&] {  // on the pooled [1, 1] map
        if (b.se_chs == 0) return;
        p.conv(pre + "se.conv_reduce", b.mid_chs, b.se_chs, 1, 1, 1, {1, 1}, false, true);
        p.conv(pre + "se.conv_expand", b.se_chs, b.mid_chs, 1, 1, 1, {1, 1}, false, true);
      };
      if (b.type == MBBlockType::kDepthwiseSeparable) {
        x = p.conv(pre + "conv_dw", b.in_chs, b.in_chs, b.kernel, b.stride, b.in_chs, x, same, false);
        p.batch_norm(pre + "bn1", b.in_chs);
        se();
        x = p.conv(pre + "conv_pw", b.in_chs, b.out_chs, 1, 1, 1, x, same, false);
        p.batch_norm(pre + "bn2", b.out_chs);
      } else {
        x = p.conv(pre + "conv_pw", b.in_chs, b.mid_chs, 1, 1, 1, x, same, false);
        p.batch_norm(pre + "bn1", b.mid_chs);
        x = p.conv(pre + "conv_dw", b.mid_chs, b.mid_chs, b.kernel, b.stride, b.mid_chs, x, same, false);
        p.batch_norm(pre + "bn2", b.mid_chs);
        se();
        x = p.conv(pre + "conv_pwl", b.mid_chs, b.out_chs, 1, 1, 1, x, same, false);
        p.batch_norm(pre + "bn3", b.out_chs);
      }
    }
  }
  const std::int64_t last = s.stages.back().back().out_chs;
  x = p.conv("conv_head", last, s.num_features, 1, 1, 1, x, same, false);
  p.batch_norm("bn2", s.num_features);
  if (s.num_classes > 0) p.linear("classifier", s.num_features, s.num_classes);
  p.feature_size = x;
  p.num_features = s.num_features;
  return p;
}

namespace detail {

// timm's _init_weight_goog for a conv: N(0, √(2 / fan_out)), fan_out = k·k·out / groups; bias 0.
inline void init_conv_goog(nn::Conv2d& conv, Generator& gen) {
  Tensor w = conv.weight();
  const std::int64_t fan_out = conv.kernel_size() * conv.kernel_size() * conv.out_channels() / conv.groups();
  nn::init::normal_(w, 0.0, std::sqrt(2.0 / double(fan_out)), gen);
  Tensor b = conv.bias();
  if (b.defined()) nn::init::zeros_(b);
}

// A conv of an EfficientNet: bias-free unless asked, timm padding or TF same, goog init.
inline std::shared_ptr<nn::Conv2d> effnet_conv(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride,
                                               std::int64_t groups, bool same, bool bias, const ModelOptions& opt) {
  auto c = std::make_shared<nn::Conv2d>(in, out, k, stride, same ? nn::Padding::same() : nn::Padding::automatic(), 1,
                                        groups, bias, opt.gen(), opt.dtype);
  init_conv_goog(*c, opt.gen());
  return c;
}

// timm's BatchNormAct2d (the activation fused; Identity for the BNs without one). Keys are BatchNorm2d's.
inline std::shared_ptr<nn::BatchNormAct2d> effnet_bn(std::int64_t c, ops::Activation act, const EfficientNetConfig& cfg,
                                                     const ModelOptions& opt) {
  return std::make_shared<nn::BatchNormAct2d>(c, act, cfg.bn_eps, cfg.bn_momentum, true, true, opt.dtype);
}

}  // namespace detail

// One MBConv block: depthwise-separable (DS) or inverted residual (IR), per MBBlockSpec.
//   DS: x → conv_dw(k, stride) → bn1+SiLU → SE → conv_pw → bn2 → (+ drop_path(·) + x when has_skip)
//   IR: x → conv_pw → bn1+SiLU → conv_dw(k, stride) → bn2+SiLU → SE → conv_pwl → bn3 → (+ residual)
class MBConvBlock : public nn::Module {
 public:
  MBConvBlock(const MBBlockSpec& spec, const EfficientNetConfig& cfg, const ModelOptions& opt)
      : nn::Module(spec.type == MBBlockType::kDepthwiseSeparable ? "DepthwiseSeparableConv" : "InvertedResidual"),
        spec_(spec),
        gen_(&opt.gen()) {
    const bool same = cfg.tf_same_padding;
    auto se = [&] {
      if (spec.se_chs > 0) {
        se_ = register_module("se", std::make_shared<nn::SqueezeExcite>(spec.mid_chs, spec.se_chs,
                                                                          ops::Activation::SiLU, opt.gen(), opt.dtype));
        detail::init_conv_goog(*se_->reduce(), opt.gen());
        detail::init_conv_goog(*se_->expand(), opt.gen());
      }
    };
    if (spec.type == MBBlockType::kDepthwiseSeparable) {
      conv_dw_ = register_module("conv_dw", detail::effnet_conv(spec.in_chs, spec.in_chs, spec.kernel, spec.stride,
                                                                 spec.in_chs, same, false, opt));
      bn_a_ = register_module("bn1", detail::effnet_bn(spec.in_chs, ops::Activation::SiLU, cfg, opt));
      se();
      conv_pw_ = register_module("conv_pw", detail::effnet_conv(spec.in_chs, spec.out_chs, 1, 1, 1, same, false, opt));
      bn_b_ = register_module("bn2", detail::effnet_bn(spec.out_chs, ops::Activation::Identity, cfg, opt));
    } else {
      conv_pw_ = register_module("conv_pw", detail::effnet_conv(spec.in_chs, spec.mid_chs, 1, 1, 1, same, false, opt));
      bn_a_ = register_module("bn1", detail::effnet_bn(spec.mid_chs, ops::Activation::SiLU, cfg, opt));
      conv_dw_ = register_module("conv_dw", detail::effnet_conv(spec.mid_chs, spec.mid_chs, spec.kernel, spec.stride,
                                                                 spec.mid_chs, same, false, opt));
      bn_b_ = register_module("bn2", detail::effnet_bn(spec.mid_chs, ops::Activation::SiLU, cfg, opt));
      se();
      conv_pwl_ =
          register_module("conv_pwl", detail::effnet_conv(spec.mid_chs, spec.out_chs, 1, 1, 1, same, false, opt));
      bn_c_ = register_module("bn3", detail::effnet_bn(spec.out_chs, ops::Activation::Identity, cfg, opt));
    }
  }

  Tensor forward(const Tensor& x) override {
    Tensor h;
    if (spec_.type == MBBlockType::kDepthwiseSeparable) {
      h = bn_a_->forward(conv_dw_->forward(x));
      if (se_) h = se_->forward(h);
      h = bn_b_->forward(conv_pw_->forward(h));
    } else {
      h = bn_a_->forward(conv_pw_->forward(x));
      h = bn_b_->forward(conv_dw_->forward(h));
      if (se_) h = se_->forward(h);
      h = bn_c_->forward(conv_pwl_->forward(h));
    }
    if (spec_.has_skip) h = ops::add(ops::drop_path(h, spec_.drop_path, is_training(), *gen_), x);
    return h;
  }

  const MBBlockSpec& spec() const { return spec_; }

 private:
  MBBlockSpec spec_;
  Generator* gen_;
  std::shared_ptr<nn::Conv2d> conv_pw_, conv_dw_, conv_pwl_;
  std::shared_ptr<nn::BatchNormAct2d> bn_a_, bn_b_, bn_c_;
  std::shared_ptr<nn::SqueezeExcite> se_;
};

// The EfficientNet backbone (+ classifier when num_classes > 0).
class EfficientNet : public Backbone {
 public:
  // requires: a spec from decode_efficientnet. ensures: modules registered under timm's names, initialised
  // with timm's scheme from opt.gen(); the module starts in training mode.
  EfficientNet(const EfficientNetSpec& spec, const ModelOptions& opt) : Backbone("EfficientNet"), spec_(spec) {
    gen_ = &opt.gen();
    in_chans_ = spec.in_chans;
    num_classes_ = spec.num_classes;
    num_features_ = spec.num_features;
    feature_stride_ = spec.stem_stride;
    for (const auto& st : spec.stages) feature_stride_ *= st.front().stride;
    const bool same = spec.config.tf_same_padding;
    conv_stem_ = register_module("conv_stem",
                                 detail::effnet_conv(spec.in_chans, spec.stem_chs, 3, spec.stem_stride, 1, same, false, opt));
    bn1_ = register_module("bn1", detail::effnet_bn(spec.stem_chs, ops::Activation::SiLU, spec.config, opt));
    blocks_ = register_module("blocks", std::make_shared<nn::Sequential>());
    for (const auto& st : spec.stages) {
      auto stage = std::make_shared<nn::Sequential>();
      for (const auto& b : st) stage->push_back(std::make_shared<MBConvBlock>(b, spec.config, opt));
      blocks_->push_back(stage);
    }
    conv_head_ = register_module(
        "conv_head", detail::effnet_conv(spec.stages.back().back().out_chs, spec.num_features, 1, 1, 1, same, false, opt));
    bn2_ = register_module("bn2", detail::effnet_bn(spec.num_features, ops::Activation::SiLU, spec.config, opt));
    if (spec.num_classes > 0) {
      classifier_ = register_module(
          "classifier", std::make_shared<nn::Linear>(spec.num_features, spec.num_classes, true, opt.gen(), opt.dtype));
      Tensor w = classifier_->weight(), b = classifier_->bias();
      const double r = 1.0 / std::sqrt(double(spec.num_classes));
      nn::init::uniform_(w, -r, r, opt.gen());
      nn::init::zeros_(b);
    }
  }

  Tensor forward_features(const Tensor& x) override {
    ARCLIGHT_CHECK(x.defined() && x.dim() == 4 && x.shape()[1] == in_chans_, "models::EfficientNet",
                   "expected input [N, ", in_chans_, ", H, W], got ", x.defined() ? x.str() : std::string("undefined"));
    Tensor h = bn1_->forward(conv_stem_->forward(x));
    h = blocks_->forward(h);
    return bn2_->forward(conv_head_->forward(h));
  }

  Tensor forward_head(const Tensor& features) override {
    Tensor pooled = ops::flatten(ops::global_avg_pool(features), 1);
    if (!classifier_) return pooled;
    return classifier_->forward(ops::dropout(pooled, spec_.drop_rate, is_training(), *gen_));
  }

  const EfficientNetSpec& spec() const { return spec_; }

 private:
  EfficientNetSpec spec_;
  Generator* gen_ = nullptr;
  std::shared_ptr<nn::Conv2d> conv_stem_, conv_head_;
  std::shared_ptr<nn::BatchNormAct2d> bn1_, bn2_;
  std::shared_ptr<nn::Sequential> blocks_;
  std::shared_ptr<nn::Linear> classifier_;
};

// Builds a registered EfficientNet by name (efficientnet_b0…b7, tf_efficientnet_b0…b7).
inline std::shared_ptr<EfficientNet> efficientnet(const std::string& name, const ModelOptions& opt = {}) {
  auto cfg = efficientnet_config(name);
  ARCLIGHT_CHECK(cfg.has_value(), "models::efficientnet", "unknown EfficientNet '", name,
                 "' (expected efficientnet_b0..b7 or tf_efficientnet_b0..b7)");
  return std::make_shared<EfficientNet>(decode_efficientnet(*cfg, opt), opt);
}

}  // namespace arclight::models
