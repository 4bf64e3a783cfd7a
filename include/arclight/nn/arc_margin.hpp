// nn::ArcMargin: the metric-learning head (METHOD.md §4). It owns the class-centre matrix "weight"
// [classes·sub_centers, in_features] (the reference's ArcMarginProduct key; xavier-uniform init) and the
// margin config, and offers the three uses of the head:
//   forward(embedding, labels) → margin logits [N, classes]   (train with any loss on them)
//   loss(embedding, labels, ce) → fused ArcMargin + label-smoothing CE (the fast training path)
//   cosine(embedding) / forward(embedding) → class cosines [N, classes] (inference; max over sub-centres)
// Margin ramp-up: set_margin_scale(f) multiplies every margin by f (0 → plain scaled softmax, 1 → full
// margin); a trainer sets it per epoch/step. Dynamic margins: set_class_margins([classes]) replaces m per
// target class (dynamic_margins() computes the usual a·n_c^(−λ) + b from class counts). Neither is part of
// the state_dict: both are functions of the schedule and of the data, recomputed when a run resumes.
#pragma once

#include <cmath>
#include <vector>

#include "arclight/nn/init.hpp"
#include "arclight/nn/module.hpp"
#include "arclight/ops/arc_margin.hpp"
#include "arclight/ops/arc_margin_cross_entropy.hpp"

namespace arclight::nn {

class ArcMargin : public Module {
 public:
  // requires: in_features > 0, num_classes > 0, config.sub_centers >= 1, a valid margin config.
  ArcMargin(std::int64_t in_features, std::int64_t num_classes, const ops::ArcMarginConfig& config = {},
            Generator& gen = default_generator(), DType dtype = DType::f32)
      : Module("ArcMargin"), in_features_(in_features), num_classes_(num_classes), config_(config) {
    ARCLIGHT_CHECK(in_features > 0 && num_classes > 0, "nn::ArcMargin",
                   "expected in_features > 0 and num_classes > 0, got ", in_features, " and ", num_classes);
    ARCLIGHT_CHECK(config.sub_centers >= 1, "nn::ArcMargin", "expected sub_centers >= 1, got ", config.sub_centers);
    validate_config(config_);
    weight_ = empty({num_classes * config.sub_centers, in_features}, dtype);
    init::xavier_uniform_(weight_, 1.0, gen);
    register_parameter("weight", weight_);
  }

  // Margin logits [N, classes] of embeddings [N, in_features] (raw, normalised inside) against labels i64 [N].
  Tensor forward(const Tensor& embedding, const Tensor& labels) {
    return ops::arc_margin(ops::cosine_logits(embedding, weight_), labels, config_, class_margins_);
  }

  // The fused training loss: cross_entropy(forward(embedding, labels)) with label smoothing / class weights.
  Tensor loss(const Tensor& embedding, const Tensor& labels, const ops::CrossEntropyConfig& ce = {},
              const Tensor& class_weights = Tensor()) {
    return ops::arc_margin_cross_entropy(ops::cosine_logits(embedding, weight_), labels, config_, ce, class_weights,
                                         class_margins_);
  }

  // Class cosines [N, classes] (no margin, no scale; max over each class's sub-centres). Differentiable.
  Tensor cosine(const Tensor& embedding) {
    Tensor c = ops::cosine_logits(embedding, weight_);
    if (config_.sub_centers == 1) return c;
    return ops::amax(ops::reshape(c, {c.shape()[0], num_classes_, config_.sub_centers}), {2});
  }
  // The single-tensor forward is the inference path: cosine(embedding).
  Tensor forward(const Tensor& embedding) override { return cosine(embedding); }

  // Margin ramp-up factor f >= 0 (every margin is multiplied by f).
  void set_margin_scale(double f) {
    ARCLIGHT_CHECK(std::isfinite(f) && f >= 0.0, "nn::ArcMargin", "expected margin_scale >= 0, got ", f);
    ops::ArcMarginConfig c = config_;
    c.margin_scale = f;
    validate_config(c);
    config_ = c;
  }
  double margin_scale() const { return config_.margin_scale; }

  // Per-class margins [classes] (>= 0, the weight's dtype), or an undefined tensor to return to config.margin.
  void set_class_margins(const Tensor& margins) {
    if (margins.defined()) {
      ARCLIGHT_CHECK(margins.dim() == 1 && margins.shape()[0] == num_classes_ && margins.dtype() == weight_.dtype(),
                     "nn::ArcMargin", "expected class margins [", num_classes_, "] of dtype ",
                     dtype_name(weight_.dtype()), ", got ", margins.str());
      for (double m : margins.to_vector<double>())
        ARCLIGHT_CHECK(std::isfinite(m) && m >= 0.0, "nn::ArcMargin", "expected class margins >= 0, got ", m);
      class_margins_ = margins.detach();
    } else {
      class_margins_ = Tensor();
    }
  }
  const Tensor& class_margins() const { return class_margins_; }

  const ops::ArcMarginConfig& config() const { return config_; }
  std::int64_t in_features() const { return in_features_; }
  std::int64_t num_classes() const { return num_classes_; }
  const Tensor& weight() const { return weight_; }

 private:
  // The kernels validate on every call; checking here too makes a bad config fail at construction.
  static void validate_config(const ops::ArcMarginConfig& c) {
    const char* op = "nn::ArcMargin";
    ARCLIGHT_CHECK(std::isfinite(c.scale) && c.scale > 0.0, op, "expected scale s > 0, got s=", c.scale);
    ARCLIGHT_CHECK(std::isfinite(c.margin) && c.margin >= 0.0, op, "expected margin m >= 0, got m=", c.margin);
    ARCLIGHT_CHECK(std::isfinite(c.additive_margin) && c.additive_margin >= 0.0, op,
                   "expected additive_margin >= 0, got ", c.additive_margin);
    ARCLIGHT_CHECK(c.kind == ops::MarginKind::kCosFace || c.margin * c.margin_scale < 3.14159265358979323846, op,
                   "expected the angular margin m*margin_scale < pi, got m=", c.margin, " margin_scale=",
                   c.margin_scale);
  }

  std::int64_t in_features_, num_classes_;
  ops::ArcMarginConfig config_;
  Tensor weight_;
  Tensor class_margins_;
};

// Dynamic per-class margins m_c = a·n_c^(−λ) + b from class counts n_c >= 1 (rare classes get larger
// margins; the Google Landmark 2020 winners' form). requires: a, b >= 0, λ >= 0, counts >= 1.
// ensures: a new [classes] tensor of `dtype`.
inline Tensor dynamic_margins(const std::vector<std::int64_t>& counts, double a, double b, double lambda,
                              DType dtype = DType::f32) {
  ARCLIGHT_CHECK(!counts.empty(), "nn::dynamic_margins", "expected at least one class count");
  ARCLIGHT_CHECK(a >= 0.0 && b >= 0.0 && lambda >= 0.0, "nn::dynamic_margins", "expected a, b, lambda >= 0, got a=", a,
                 " b=", b, " lambda=", lambda);
  std::vector<double> m(counts.size());
  for (std::size_t c = 0; c < counts.size(); ++c) {
    ARCLIGHT_CHECK(counts[c] >= 1, "nn::dynamic_margins", "expected counts >= 1, got ", counts[c], " for class ", c);
    m[c] = a * std::pow(double(counts[c]), -lambda) + b;
  }
  return from_vector(m, {std::int64_t(counts.size())}, dtype);
}

}  // namespace arclight::nn
