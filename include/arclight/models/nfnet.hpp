// Normalizer-Free networks (Brock et al. 2021, "High-Performance Large-Scale Image Recognition Without
// Normalization"; NF-ResNets from "Characterizing signal propagation…"), built as timm's NormFreeNet so
// state_dict keys and parameter counts match timm: dm_nfnet_f0…f3, nfnet_l0, eca_nfnet_l0, nf_resnet26/50.
//
// Every convolution is a ScaledStdConv2d (nn/conv.hpp): Ŵ = gain·γ·(W − mean)/(sqrt(var + ε)·√fan_in), per
// output channel, ε = 1e-5 (timm's NfCfg.std_conv_eps). γ is the activation's gain (relu 1.7139588594436646,
// gelu 1.7015043497085571, silu 1.7881293296813965): timm folds it into the convs' weight scale, except for the
// DeepMind-compatible dm_nfnet_* where it multiplies each activation's output ("gamma_in_act"; the same
// function up to rounding — the final activation then carries γ too) and the convs use TF "same" padding.
//
// Block (pre-activation bottleneck, timm's NormFreeBlock with extra_conv for NFNets):
//   out = act1(x)·β                       β = 1/expected_std of the block's input
//   shortcut = x, or DownsampleAvg(out) = conv1x1(AvgPool2d(2, 2, ceil_mode, count_include_pad=False)(out))
//              when the block changes width or stride
//   h = conv1(out) → act2 → conv2 (3×3, stride, groups = mid/group_size) → [act2b → conv2b (3×3)] → act3 → conv3
//   h = attn_gain (2.0) · SE/ECA(h)       (SE: timm SEModule, fc1/fc2, ReLU, rd = make_divisible(out·ratio, 8))
//   h = drop_path(h) [· skipinit_gain]    (skipinit_gain: a scalar parameter, init 0, dm_nfnet only)
//   y = α·h + shortcut                    (α = 0.2)
// expected_std: var starts at 1, is reset to 1 after the first block of every stage and grows by α² after
// every block (so β = 1, then 1/sqrt(1 + α²), 1/sqrt(1 + 2α²), … within a stage).
// conv3's gain starts at 0 without skipinit (timm's gain_init), so a fresh block is the identity on its shortcut.
// Stems: "deep_quad" (NFNet: 3×3 convs c/8 stride 2, c/4, c/2, c stride 2, activations between; stride 4),
// "7x7_pool" (NF-ResNet: 7×7 stride 2 conv + 3×3/2 max pool). Stage 0 has stride 1 after a stride-4 stem,
// the others stride 2. Head: final 1×1 conv (NFNets) → activation → global average pool → dropout → head.fc.
// Initialisation as timm: conv weights N(0, 1/fan_in) (kaiming_normal, linear), biases 0; head.fc N(0, 0.01²).
#pragma once

#include <array>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arclight/models/backbone.hpp"
#include "arclight/models/efficientnet.hpp"  // make_divisible
#include "arclight/nn/attention.hpp"
#include "arclight/nn/conv.hpp"
#include "arclight/nn/init.hpp"
#include "arclight/nn/linear.hpp"
#include "arclight/ops/activation.hpp"
#include "arclight/ops/dropout.hpp"
#include "arclight/ops/pooling.hpp"

namespace arclight::models {

// Activation gains γ of the NF papers (timm's _nonlin_gamma, from DeepMind's reference code).
inline double nf_activation_gamma(ops::Activation act) {
  switch (act) {
    case ops::Activation::ReLU: return 1.7139588594436646;
    case ops::Activation::GELU: return 1.7015043497085571;
    case ops::Activation::SiLU: return 1.7881293296813965;
    case ops::Activation::Sigmoid: return 4.803835391998291;
    case ops::Activation::Identity: return 1.0;
  }
  return 1.0;
}

enum class NfStemType { kDeepQuad, k7x7Pool };
enum class NfAttention { kNone, kSE, kECA };

// timm's NfCfg (the fields our variants use).
struct NfConfig {
  std::array<std::int64_t, 4> depths{1, 2, 6, 3};
  std::array<std::int64_t, 4> channels{256, 512, 1536, 1536};
  double alpha = 0.2;
  NfStemType stem_type = NfStemType::kDeepQuad;
  std::int64_t stem_chs = 128;
  std::int64_t group_size = 0;  // 0: groups = 1
  NfAttention attn = NfAttention::kNone;
  double attn_rd_ratio = 0.5;       // SE reduction ratio (of the block's output channels)
  std::int64_t attn_rd_divisor = 8;
  double attn_gain = 2.0;
  double bottle_ratio = 0.5;
  std::int64_t num_features = 0;  // final 1×1 conv width; 0: no final conv
  std::int64_t ch_div = 8;
  bool extra_conv = false;     // the extra grouped 3×3 of NFNet blocks
  bool gamma_in_act = false;   // γ multiplies activations instead of conv weights (dm_nfnet)
  bool same_padding = false;   // TF "same" padding (dm_nfnet)
  double std_conv_eps = 1e-5;
  bool skipinit = false;       // a learnable scalar gain (init 0) on the residual branch
  ops::Activation act = ops::Activation::SiLU;
  std::int64_t resolution = 224;  // the variant's training resolution (informational)
  double drop_rate = 0.0;         // default dropout before the classifier
  double drop_path_rate = 0.1;    // default stochastic depth at the last block
};

// The config of a registered name (dm_nfnet_f0…f3, nfnet_l0, eca_nfnet_l0, nf_resnet26, nf_resnet50); nullopt otherwise.
inline std::optional<NfConfig> nfnet_config(const std::string& name) {
  auto dm = [](std::array<std::int64_t, 4> depths, std::int64_t res, double drop) {
    NfConfig c;
    c.depths = depths;
    c.group_size = 128;
    c.bottle_ratio = 0.5;
    c.extra_conv = true;
    c.gamma_in_act = true;
    c.same_padding = true;
    c.skipinit = true;
    c.num_features = 1536 * 2;
    c.act = ops::Activation::GELU;
    c.attn = NfAttention::kSE;
    c.attn_rd_ratio = 0.5;
    c.resolution = res;
    c.drop_rate = drop;  // the paper's dropout per variant
    return c;
  };
  if (name == "dm_nfnet_f0") return dm({1, 2, 6, 3}, 192, 0.2);
  if (name == "dm_nfnet_f1") return dm({2, 4, 12, 6}, 224, 0.3);
  if (name == "dm_nfnet_f2") return dm({3, 6, 18, 9}, 256, 0.4);
  if (name == "dm_nfnet_f3") return dm({4, 8, 24, 12}, 320, 0.4);
  if (name == "nfnet_l0" || name == "eca_nfnet_l0") {
    NfConfig c;
    c.group_size = 64;
    c.bottle_ratio = 0.25;
    c.extra_conv = true;
    c.num_features = static_cast<std::int64_t>(1536 * 1.5);
    c.act = ops::Activation::SiLU;
    c.attn = name == "nfnet_l0" ? NfAttention::kSE : NfAttention::kECA;
    c.attn_rd_ratio = 0.25;
    c.resolution = 224;
    return c;
  }
  if (name == "nf_resnet26" || name == "nf_resnet50") {
    NfConfig c;
    c.depths = name == "nf_resnet26" ? std::array<std::int64_t, 4>{2, 2, 2, 2} : std::array<std::int64_t, 4>{3, 4, 6, 3};
    c.channels = {256, 512, 1024, 2048};
    c.stem_type = NfStemType::k7x7Pool;
    c.stem_chs = 64;
    c.bottle_ratio = 0.25;
    c.act = ops::Activation::ReLU;
    c.resolution = 224;
    return c;
  }
  return std::nullopt;
}

// One decoded block.
struct NfBlockSpec {
  std::int64_t in_chs, mid_chs, out_chs, groups, stride;
  double beta, alpha, drop_path;
  bool downsample;       // DownsampleAvg shortcut (width or stride changes)
  std::int64_t attn_chs;  // SE reduced channels, or ECA kernel size (per config.attn); 0 without attention
};

struct NfNetSpec {
  NfConfig config;
  std::int64_t in_chans = 3, num_classes = 1000;
  std::int64_t stem_chs = 128;
  std::int64_t stem_first_stride = 2;  // 1 with ModelOptions::small_input
  std::int64_t num_features = 0;       // channels of forward_features
  bool final_conv = false;
  double drop_rate = 0.0;
  std::vector<std::vector<NfBlockSpec>> stages;
  double gamma() const { return nf_activation_gamma(config.act); }
};

// Decodes config + options (channels, groups, β per block, drop-path rates = linspace(0, rate, blocks)).
inline NfNetSpec decode_nfnet(const NfConfig& cfg, const ModelOptions& opt = {}) {
  const char* who = "models::nfnet";
  ARCLIGHT_CHECK(opt.in_chans >= 1 && opt.num_classes >= 0, who, "expected in_chans >= 1 and num_classes >= 0, got ",
                 opt.in_chans, " and ", opt.num_classes);
  NfNetSpec s;
  s.config = cfg;
  s.in_chans = opt.in_chans;
  s.num_classes = opt.num_classes;
  s.drop_rate = opt.drop_rate >= 0 ? opt.drop_rate : cfg.drop_rate;
  const double dpr = opt.drop_path_rate >= 0 ? opt.drop_path_rate : cfg.drop_path_rate;
  ARCLIGHT_CHECK(s.drop_rate < 1.0 && dpr < 1.0, who, "expected drop_rate and drop_path_rate < 1, got ", s.drop_rate,
                 " and ", dpr);
  s.stem_chs = make_divisible(double(cfg.stem_chs), cfg.ch_div);
  s.stem_first_stride = opt.small_input ? 1 : 2;
  const std::int64_t nominal_stem_stride = 4;  // both stem types
  std::int64_t total = 0;
  for (auto d : cfg.depths) {
    ARCLIGHT_CHECK(d >= 1, who, "every stage needs at least one block");
    total += d;
  }
  std::int64_t prev = s.stem_chs, index = 0;
  double expected_var = 1.0;
  for (std::size_t si = 0; si < 4; ++si) {
    const std::int64_t stride = (si == 0 && nominal_stem_stride > 2) ? 1 : 2;
    std::vector<NfBlockSpec> blocks;
    for (std::int64_t bi = 0; bi < cfg.depths[si]; ++bi, ++index) {
      NfBlockSpec b;
      b.in_chs = prev;
      b.out_chs = make_divisible(double(cfg.channels[si]), cfg.ch_div);
      b.mid_chs = make_divisible(double(b.out_chs) * cfg.bottle_ratio, cfg.ch_div);
      b.groups = cfg.group_size > 0 ? b.mid_chs / cfg.group_size : 1;
      if (cfg.group_size > 0 && cfg.group_size % cfg.ch_div == 0) b.mid_chs = cfg.group_size * b.groups;
      ARCLIGHT_CHECK(b.groups >= 1, who, "group_size ", cfg.group_size, " exceeds the bottleneck width ", b.mid_chs);
      b.stride = bi == 0 ? stride : 1;
      b.alpha = cfg.alpha;
      b.beta = 1.0 / std::sqrt(expected_var);
      b.drop_path = total > 1 ? dpr * double(index) / double(total - 1) : dpr;  // torch.linspace(0, dpr, total)
      b.downsample = b.in_chs != b.out_chs || b.stride != 1;
      switch (cfg.attn) {
        case NfAttention::kNone: b.attn_chs = 0; break;
        case NfAttention::kSE:
          b.attn_chs = make_divisible(double(b.out_chs) * cfg.attn_rd_ratio, cfg.attn_rd_divisor, 0, 0.0);
          break;
        case NfAttention::kECA: b.attn_chs = nn::EcaModule::kernel_size_for(b.out_chs); break;
      }
      if (bi == 0) expected_var = 1.0;  // reset after the first block of each stage
      expected_var += cfg.alpha * cfg.alpha;
      prev = b.out_chs;
      blocks.push_back(b);
    }
    s.stages.push_back(std::move(blocks));
  }
  s.final_conv = cfg.num_features > 0;
  s.num_features = s.final_conv ? make_divisible(double(cfg.num_features), cfg.ch_div) : prev;
  return s;
}

// The analytic plan (parameter manifest in module order + MACs) of a spec at an input size.
inline ModelPlan describe_nfnet(const NfNetSpec& s, Spatial input) {
  ModelPlan p;
  const bool same = s.config.same_padding;
  auto sconv = [&](const std::string& name, std::int64_t cin, std::int64_t cout, std::int64_t k, std::int64_t stride,
                   std::int64_t groups, Spatial in) { return p.conv(name, cin, cout, k, stride, groups, in, same, true, true); };
  Spatial x = input;
  if (s.config.stem_type == NfStemType::kDeepQuad) {
    const std::int64_t c = s.stem_chs;
    x = sconv("stem.conv1", s.in_chans, c / 8, 3, s.stem_first_stride, 1, x);
    x = sconv("stem.conv2", c / 8, c / 4, 3, 1, 1, x);
    x = sconv("stem.conv3", c / 4, c / 2, 3, 1, 1, x);
    x = sconv("stem.conv4", c / 2, c, 3, 2, 1, x);
  } else {
    x = sconv("stem.conv", s.in_chans, s.stem_chs, 7, s.stem_first_stride, 1, x);
    x = {ModelPlan::out_size(x.h, 3, 2, 1, false), ModelPlan::out_size(x.w, 3, 2, 1, false)};
  }
  for (std::size_t i = 0; i < s.stages.size(); ++i) {
    for (std::size_t j = 0; j < s.stages[i].size(); ++j) {
      const NfBlockSpec& b = s.stages[i][j];
      const std::string pre = "stages." + std::to_string(i) + "." + std::to_string(j) + ".";
      if (s.config.skipinit) p.param(pre + "skipinit_gain", {});
      if (b.downsample) {
        Spatial d = x;
        if (b.stride > 1)
          d = {ModelPlan::out_size(x.h, 2, b.stride, 0, false, true), ModelPlan::out_size(x.w, 2, b.stride, 0, false, true)};
        sconv(pre + "downsample.conv", b.in_chs, b.out_chs, 1, 1, 1, d);
      }
      Spatial h = sconv(pre + "conv1", b.in_chs, b.mid_chs, 1, 1, 1, x);
      h = sconv(pre + "conv2", b.mid_chs, b.mid_chs, 3, b.stride, b.groups, h);
      if (s.config.extra_conv) h = sconv(pre + "conv2b", b.mid_chs, b.mid_chs, 3, 1, b.groups, h);
      h = sconv(pre + "conv3", b.mid_chs, b.out_chs, 1, 1, 1, h);
      if (s.config.attn == NfAttention::kSE) {
        p.conv(pre + "attn_last.fc1", b.out_chs, b.attn_chs, 1, 1, 1, {1, 1}, false, true);
        p.conv(pre + "attn_last.fc2", b.attn_chs, b.out_chs, 1, 1, 1, {1, 1}, false, true);
      } else if (s.config.attn == NfAttention::kECA) {
        p.param(pre + "attn_last.conv.weight", {1, 1, b.attn_chs});
        p.add_macs(b.out_chs * b.attn_chs);
      }
      x = h;
    }
  }
  if (s.final_conv) x = sconv("final_conv", s.stages.back().back().out_chs, s.num_features, 1, 1, 1, x);
  if (s.num_classes > 0) p.linear("head.fc", s.num_features, s.num_classes);
  p.feature_size = x;
  p.num_features = s.num_features;
  return p;
}

namespace detail {

// timm's NormFreeNet init for a conv: kaiming_normal_(fan_in, linear) = N(0, 1/fan_in); bias 0.
inline void init_conv_fan_in(nn::Conv2d& conv, Generator& gen) {
  Tensor w = conv.weight();
  const std::int64_t fan_in = nn::init::compute_fans(w).fan_in;
  nn::init::normal_(w, 0.0, 1.0 / std::sqrt(double(fan_in)), gen);
  Tensor b = conv.bias();
  if (b.defined()) nn::init::zeros_(b);
}

// The convolution factory of one NormFreeNet (timm's partial(conv_layer, gamma=…, eps=…)).
struct NfConvFactory {
  const NfNetSpec* spec;
  const ModelOptions* opt;
  std::shared_ptr<nn::ScaledStdConv2d> operator()(std::int64_t in, std::int64_t out, std::int64_t k,
                                                  std::int64_t stride = 1, std::int64_t groups = 1,
                                                  double gain_init = 1.0) const {
    const NfConfig& c = spec->config;
    const double conv_gamma = c.gamma_in_act ? 1.0 : spec->gamma();
    auto conv = std::make_shared<nn::ScaledStdConv2d>(in, out, k, stride,
                                                      c.same_padding ? nn::Padding::same() : nn::Padding::automatic(), 1,
                                                      groups, true, conv_gamma, c.std_conv_eps, gain_init, opt->gen(),
                                                      opt->dtype);
    init_conv_fan_in(*conv, opt->gen());
    return conv;
  }
};

// The activation of a NormFreeNet: act(x)·scale, where scale folds γ (gamma_in_act) and the caller's factor.
inline Tensor nf_act(const Tensor& x, const NfNetSpec& s, double scale = 1.0) {
  Tensor y = ops::activation(x, s.config.act);
  const double f = (s.config.gamma_in_act ? s.gamma() : 1.0) * scale;
  return f == 1.0 ? y : ops::mul(y, f);
}

}  // namespace detail

// timm's create_stem for "deep_quad" and "7x7_pool" (children stem.conv1..conv4, or stem.conv).
class NfStem : public nn::Module {
 public:
  NfStem(const NfNetSpec& s, const detail::NfConvFactory& conv) : nn::Module("NfStem"), spec_(&s) {
    if (s.config.stem_type == NfStemType::kDeepQuad) {
      const std::int64_t c = s.stem_chs;
      convs_.push_back(register_module("conv1", conv(s.in_chans, c / 8, 3, s.stem_first_stride)));
      convs_.push_back(register_module("conv2", conv(c / 8, c / 4, 3, 1)));
      convs_.push_back(register_module("conv3", conv(c / 4, c / 2, 3, 1)));
      convs_.push_back(register_module("conv4", conv(c / 2, c, 3, 2)));
    } else {
      convs_.push_back(register_module("conv", conv(s.in_chans, s.stem_chs, 7, s.stem_first_stride)));
    }
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (std::size_t i = 0; i < convs_.size(); ++i) {
      h = convs_[i]->forward(h);
      if (i + 1 < convs_.size()) h = detail::nf_act(h, *spec_);  // act2..act4 between the deep-stem convs
    }
    if (spec_->config.stem_type == NfStemType::k7x7Pool) h = ops::max_pool2d(h, 3, 2, 1);
    return h;
  }

 private:
  const NfNetSpec* spec_;
  std::vector<std::shared_ptr<nn::ScaledStdConv2d>> convs_;
};

// timm's DownsampleAvg: AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) (when strided) → 1×1 conv.
class DownsampleAvg : public nn::Module {
 public:
  DownsampleAvg(std::int64_t in, std::int64_t out, std::int64_t stride, const detail::NfConvFactory& conv)
      : nn::Module("DownsampleAvg"), stride_(stride) {
    conv_ = register_module("conv", conv(in, out, 1));
  }
  Tensor forward(const Tensor& x) override {
    const Tensor p = stride_ > 1 ? ops::avg_pool2d(x, 2, stride_, 0, /*ceil_mode=*/true, /*count_include_pad=*/false) : x;
    return conv_->forward(p);
  }

 private:
  std::int64_t stride_;
  std::shared_ptr<nn::ScaledStdConv2d> conv_;
};

// timm's NormFreeBlock (reg = False): see the file comment for the computation.
class NormFreeBlock : public nn::Module {
 public:
  NormFreeBlock(const NfBlockSpec& b, const NfNetSpec& s, const detail::NfConvFactory& conv, Generator& gen)
      : nn::Module("NormFreeBlock"), b_(b), spec_(&s), gen_(&gen) {
    const NfConfig& c = s.config;
    if (c.skipinit) skipinit_gain_ = register_parameter("skipinit_gain", zeros({}, conv.opt->dtype));
    if (b.downsample) downsample_ = register_module("downsample", std::make_shared<DownsampleAvg>(b.in_chs, b.out_chs, b.stride, conv));
    conv1_ = register_module("conv1", conv(b.in_chs, b.mid_chs, 1));
    conv2_ = register_module("conv2", conv(b.mid_chs, b.mid_chs, 3, b.stride, b.groups));
    if (c.extra_conv) conv2b_ = register_module("conv2b", conv(b.mid_chs, b.mid_chs, 3, 1, b.groups));
    conv3_ = register_module("conv3", conv(b.mid_chs, b.out_chs, 1, 1, 1, c.skipinit ? 1.0 : 0.0));
    if (c.attn == NfAttention::kSE) {
      auto se = std::make_shared<nn::SEModule>(b.out_chs, b.attn_chs, ops::Activation::ReLU, true, gen, conv.opt->dtype);
      detail::init_conv_fan_in(*se->reduce(), gen);
      detail::init_conv_fan_in(*se->expand(), gen);
      attn_ = register_module("attn_last", se);
    } else if (c.attn == NfAttention::kECA) {
      attn_ = register_module("attn_last", std::make_shared<nn::EcaModule>(b.out_chs, 3, 2.0, 1.0, gen, conv.opt->dtype));
    }
  }

  Tensor forward(const Tensor& x) override {
    const NfNetSpec& s = *spec_;
    const Tensor out = detail::nf_act(x, s, b_.beta);
    const Tensor shortcut = downsample_ ? downsample_->forward(out) : x;
    Tensor h = conv1_->forward(out);
    h = conv2_->forward(detail::nf_act(h, s));
    if (conv2b_) h = conv2b_->forward(detail::nf_act(h, s));
    h = conv3_->forward(detail::nf_act(h, s));
    if (attn_) h = ops::mul(attn_->forward(h), s.config.attn_gain);
    h = ops::drop_path(h, b_.drop_path, is_training(), *gen_);
    if (skipinit_gain_.defined()) h = ops::mul(h, skipinit_gain_);
    return ops::add(ops::mul(h, b_.alpha), shortcut);
  }

  const NfBlockSpec& spec() const { return b_; }

 private:
  NfBlockSpec b_;
  const NfNetSpec* spec_;
  Generator* gen_;
  Tensor skipinit_gain_;
  std::shared_ptr<DownsampleAvg> downsample_;
  std::shared_ptr<nn::ScaledStdConv2d> conv1_, conv2_, conv2b_, conv3_;
  std::shared_ptr<nn::Module> attn_;
};

// timm's ClassifierHead holder: child "fc" (so keys read head.fc.weight / head.fc.bias).
class NfHead : public nn::Module {
 public:
  NfHead(std::int64_t in, std::int64_t classes, const ModelOptions& opt) : nn::Module("ClassifierHead") {
    fc_ = register_module("fc", std::make_shared<nn::Linear>(in, classes, true, opt.gen(), opt.dtype));
    Tensor w = fc_->weight(), b = fc_->bias();
    nn::init::normal_(w, 0.0, 0.01, opt.gen());
    nn::init::zeros_(b);
  }
  Tensor forward(const Tensor& pooled) override { return fc_->forward(pooled); }

 private:
  std::shared_ptr<nn::Linear> fc_;
};

// The NormFreeNet backbone (+ head when num_classes > 0).
class NormFreeNet : public Backbone {
 public:
  // requires: a spec from decode_nfnet. ensures: modules under timm's names, timm's init from opt.gen().
  // The spec is kept by value inside the model (the blocks point at it).
  NormFreeNet(const NfNetSpec& spec, const ModelOptions& opt) : Backbone("NormFreeNet"), spec_(spec) {
    gen_ = &opt.gen();
    in_chans_ = spec_.in_chans;
    num_classes_ = spec_.num_classes;
    num_features_ = spec_.num_features;
    feature_stride_ = spec_.stem_first_stride * 2 * 8;  // stem (first conv · second stride) · stages 2, 3, 4
    const detail::NfConvFactory conv{&spec_, &opt};
    stem_ = register_module("stem", std::make_shared<NfStem>(spec_, conv));
    stages_ = register_module("stages", std::make_shared<nn::Sequential>());
    for (const auto& st : spec_.stages) {
      auto stage = std::make_shared<nn::Sequential>();
      for (const auto& b : st) stage->push_back(std::make_shared<NormFreeBlock>(b, spec_, conv, opt.gen()));
      stages_->push_back(stage);
    }
    if (spec_.final_conv) final_conv_ = register_module("final_conv", conv(spec_.stages.back().back().out_chs, spec_.num_features, 1));
    if (spec_.num_classes > 0) head_ = register_module("head", std::make_shared<NfHead>(spec_.num_features, spec_.num_classes, opt));
  }

  Tensor forward_features(const Tensor& x) override {
    ARCLIGHT_CHECK(x.defined() && x.dim() == 4 && x.shape()[1] == in_chans_, "models::NormFreeNet",
                   "expected input [N, ", in_chans_, ", H, W], got ", x.defined() ? x.str() : std::string("undefined"));
    Tensor h = stages_->forward(stem_->forward(x));
    if (final_conv_) h = final_conv_->forward(h);
    return detail::nf_act(h, spec_);  // final_act
  }

  Tensor forward_head(const Tensor& features) override {
    Tensor pooled = ops::flatten(ops::global_avg_pool(features), 1);
    if (!head_) return pooled;
    return head_->forward(ops::dropout(pooled, spec_.drop_rate, is_training(), *gen_));
  }

  const NfNetSpec& spec() const { return spec_; }

 private:
  NfNetSpec spec_;
  Generator* gen_ = nullptr;
  std::shared_ptr<NfStem> stem_;
  std::shared_ptr<nn::Sequential> stages_;
  std::shared_ptr<nn::ScaledStdConv2d> final_conv_;
  std::shared_ptr<NfHead> head_;
};

// Builds a registered NFNet by name.
inline std::shared_ptr<NormFreeNet> nfnet(const std::string& name, const ModelOptions& opt = {}) {
  auto cfg = nfnet_config(name);
  ARCLIGHT_CHECK(cfg.has_value(), "models::nfnet", "unknown NFNet '", name,
                 "' (expected dm_nfnet_f0..f3, nfnet_l0, eca_nfnet_l0, nf_resnet26 or nf_resnet50)");
  return std::make_shared<NormFreeNet>(decode_nfnet(*cfg, opt), opt);
}

}  // namespace arclight::models
