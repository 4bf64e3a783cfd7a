// Loss modules of the retrieval head: LabelSmoothingCrossEntropy (torch.nn.CrossEntropyLoss with
// label_smoothing and weight, METHOD.md §5) over logits, and class_weights_from_counts, the reference's
// per-class weights w_c ∝ 1/log1p(n_c). The class weights are a buffer named "weight", as in
// torch.nn.CrossEntropyLoss's state_dict. The fused ArcMargin + CE path is nn::ArcMargin::loss.
#pragma once

#include <cmath>
#include <vector>

#include "arclight/nn/module.hpp"
#include "arclight/ops/cross_entropy.hpp"

namespace arclight::nn {

class LabelSmoothingCrossEntropy : public Module {
 public:
  // requires: label_smoothing in [0, 1]; weight undefined or 1-D, finite, >= 0.
  explicit LabelSmoothingCrossEntropy(double label_smoothing = 0.1, ops::Reduction reduction = ops::Reduction::kMean,
                                      const Tensor& weight = Tensor())
      : Module("LabelSmoothingCrossEntropy") {
    ARCLIGHT_CHECK(std::isfinite(label_smoothing) && label_smoothing >= 0.0 && label_smoothing <= 1.0,
                   "nn::LabelSmoothingCrossEntropy", "expected label_smoothing in [0, 1], got ", label_smoothing);
    config_.label_smoothing = label_smoothing;
    config_.reduction = reduction;
    if (weight.defined()) {
      ARCLIGHT_CHECK(weight.dim() == 1, "nn::LabelSmoothingCrossEntropy", "expected 1-D class weights, got ",
                     weight.str());
      weight_ = register_buffer("weight", weight.detach());
    }
  }

  using Module::forward;  // the single-tensor forward does not apply (a loss needs labels)

  // requires: logits [N, K], labels i64 [N] (and weight [K] when set). ensures: the loss (see ops::cross_entropy).
  Tensor forward(const Tensor& logits, const Tensor& labels) {
    return ops::cross_entropy(logits, labels, config_, weight_);
  }

  const ops::CrossEntropyConfig& config() const { return config_; }
  const Tensor& weight() const { return weight_; }

 private:
  ops::CrossEntropyConfig config_;
  Tensor weight_;
};

// Per-class weights w_c = (1/log1p(n_c)) normalised to mean 1 (Σ w_c = classes), so the loss keeps its
// scale. requires: counts >= 1. ensures: a new [classes] tensor of `dtype`.
inline Tensor class_weights_from_counts(const std::vector<std::int64_t>& counts, DType dtype = DType::f32) {
  ARCLIGHT_CHECK(!counts.empty(), "nn::class_weights_from_counts", "expected at least one class count");
  std::vector<double> w(counts.size());
  double total = 0.0;
  for (std::size_t c = 0; c < counts.size(); ++c) {
    ARCLIGHT_CHECK(counts[c] >= 1, "nn::class_weights_from_counts", "expected counts >= 1, got ", counts[c],
                   " for class ", c);
    w[c] = 1.0 / std::log1p(double(counts[c]));
    total += w[c];
  }
  for (auto& v : w) v *= double(counts.size()) / total;
  return from_vector(w, {std::int64_t(counts.size())}, dtype);
}

}  // namespace arclight::nn
