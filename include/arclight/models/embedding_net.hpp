// The metric-learning network of METHOD.md §1–4: backbone.forward_features → GeM (p learnable, init 3) →
// Linear(C → 512, bias) → BatchNorm1d(512) → PReLU (optional; the reference's "option D") = the embedding,
// and the ArcMargin head on it (class centres, margin logits, fused ArcMargin + label-smoothing CE).
//   train:      loss(x, labels) (fused) or logits(x, labels) (margin logits for any loss)
//   inference:  embed(x) — eval mode, no gradients, L2-normalised [N, 512]; cosine(x) — class cosines
// Children (state_dict prefixes): backbone.*, pool.p, fc.{weight,bias}, bn.{weight,bias,running_*},
// act.weight (PReLU), head.weight (ArcMargin class centres, present when num_classes > 0), so a backbone
// checkpoint exported from timm loads into `backbone` with load_state_dict(*net.backbone(), ...).
#pragma once

#include <memory>
#include <string>

#include "arclight/models/registry.hpp"
#include "arclight/nn/activation.hpp"
#include "arclight/nn/arc_margin.hpp"
#include "arclight/nn/batch_norm.hpp"
#include "arclight/nn/gem.hpp"
#include "arclight/nn/init.hpp"
#include "arclight/nn/linear.hpp"
#include "arclight/ops/normalize.hpp"

namespace arclight::models {

struct EmbeddingNetConfig {
  std::string backbone = "efficientnet_b0";  // a registered model name
  ModelOptions backbone_options;              // num_classes is ignored (the backbone is built without classifier)
  std::int64_t embedding_dim = 512;
  bool prelu = true;                          // PReLU after the BN (METHOD.md's option D)
  double gem_p = 3.0, gem_eps = 1e-6;
  double bn_eps = 1e-5, bn_momentum = 0.1;
  std::int64_t num_classes = 0;               // ArcMargin classes; 0: embedding only (no head)
  ops::ArcMarginConfig margin{};              // s, m, easy_margin, sub-centres, ramp factor
};

class EmbeddingNet : public nn::Module {
 public:
  // Builds the backbone by name (registry) and the neck/head around it.
  // requires: a registered backbone name, embedding_dim >= 1, num_classes >= 0, a valid margin config.
  explicit EmbeddingNet(const EmbeddingNetConfig& cfg)
      : EmbeddingNet(cfg, create_model(cfg.backbone, backbone_options_without_head(cfg.backbone_options))) {}

  // Wraps an existing backbone (e.g. one with custom width/depth, or with weights already loaded).
  EmbeddingNet(const EmbeddingNetConfig& cfg, std::shared_ptr<Backbone> backbone)
      : nn::Module("EmbeddingNet"), cfg_(cfg) {
    ARCLIGHT_CHECK(backbone != nullptr, "models::EmbeddingNet", "the backbone is null");
    ARCLIGHT_CHECK(cfg.embedding_dim >= 1 && cfg.num_classes >= 0, "models::EmbeddingNet",
                   "expected embedding_dim >= 1 and num_classes >= 0, got ", cfg.embedding_dim, " and ", cfg.num_classes);
    Generator& gen = cfg.backbone_options.gen();
    const DType dtype = cfg.backbone_options.dtype;
    backbone_ = register_module("backbone", std::move(backbone));
    pool_ = register_module("pool", std::make_shared<nn::GeM>(cfg.gem_p, cfg.gem_eps, 1.0, dtype));
    fc_ = register_module("fc", std::make_shared<nn::Linear>(backbone_->num_features(), cfg.embedding_dim, true, gen, dtype));
    {  // the reference neck's init: xavier_normal_ weight, zero bias
      Tensor w = fc_->weight(), b = fc_->bias();
      nn::init::xavier_normal_(w, 1.0, gen);
      nn::init::zeros_(b);
    }
    bn_ = register_module("bn", std::make_shared<nn::BatchNorm1d>(cfg.embedding_dim, cfg.bn_eps, cfg.bn_momentum, true,
                                                                  true, dtype));
    if (cfg.prelu) act_ = register_module("act", std::make_shared<nn::PReLU>(1, 0.25, dtype));
    if (cfg.num_classes > 0)
      head_ = register_module("head", std::make_shared<nn::ArcMargin>(cfg.embedding_dim, cfg.num_classes, cfg.margin, gen, dtype));
  }

  // The raw embedding [N, embedding_dim] in the current mode (differentiable; BN uses batch statistics in
  // training, so N >= 2 there). requires: x [N, in_chans, H, W].
  Tensor features(const Tensor& x) {
    Tensor h = pool_->forward(backbone_->forward_features(x));
    h = bn_->forward(fc_->forward(h));
    return act_ ? act_->forward(h) : h;
  }
  Tensor forward(const Tensor& x) override { return features(x); }

  // Inference embedding: runs in eval mode without recording (the previous mode is restored afterwards),
  // returns L2-normalised rows [N, embedding_dim] (unit norm).
  Tensor embed(const Tensor& x) {
    NoGradGuard ng;
    const bool was_training = is_training();
    eval();
    struct Restore {
      EmbeddingNet* self;
      bool on;
      ~Restore() { self->train(on); }
    } restore{this, was_training};
    return ops::l2_normalize(features(x), 1);
  }

  // Margin logits [N, num_classes] (s·cos with the margin on the target). requires: a head; labels i64 [N].
  Tensor logits(const Tensor& x, const Tensor& labels) { return head().forward(features(x), labels); }
  // Fused ArcMargin + cross-entropy (label smoothing / class weights per `ce`), the training loss.
  Tensor loss(const Tensor& x, const Tensor& labels, const ops::CrossEntropyConfig& ce = {},
              const Tensor& class_weights = Tensor()) {
    return head().loss(features(x), labels, ce, class_weights);
  }
  // Class cosines [N, num_classes] of the current-mode embedding (the retrieval classifier signal).
  Tensor cosine(const Tensor& x) { return head().cosine(features(x)); }

  const std::shared_ptr<Backbone>& backbone() const { return backbone_; }
  const std::shared_ptr<nn::GeM>& pool() const { return pool_; }
  nn::ArcMargin& head() const {
    ARCLIGHT_CHECK(head_ != nullptr, "models::EmbeddingNet", "this network has no ArcMargin head (num_classes = 0)");
    return *head_;
  }
  bool has_head() const { return head_ != nullptr; }
  std::int64_t embedding_dim() const { return cfg_.embedding_dim; }
  const EmbeddingNetConfig& config() const { return cfg_; }

 private:
  static ModelOptions backbone_options_without_head(ModelOptions o) {
    o.num_classes = 0;
    return o;
  }

  EmbeddingNetConfig cfg_;
  std::shared_ptr<Backbone> backbone_;
  std::shared_ptr<nn::GeM> pool_;
  std::shared_ptr<nn::Linear> fc_;
  std::shared_ptr<nn::BatchNorm1d> bn_;
  std::shared_ptr<nn::PReLU> act_;
  std::shared_ptr<nn::ArcMargin> head_;
};

}  // namespace arclight::models
