// Batch normalisation layers with torch.nn.BatchNorm semantics and state_dict keys: parameters "weight"
// (init 1) and "bias" (init 0), buffers "running_mean" (0), "running_var" (1) and "num_batches_tracked" (a
// 0-d i64 counter). In train() mode the forward normalises with the batch statistics and updates the running
// ones in place (momentum, unbiased variance) and counts the batch; in eval() mode it uses the running
// statistics. BatchNorm2d takes [N, C, H, W], BatchNorm1d [N, C] or [N, C, L] (the embedding neck's
// BatchNorm1d(512)); BatchNormAct2d is timm's BatchNormAct2d (same keys, the activation fused into the
// kernel). Defaults eps 1e-5 / momentum 0.1 (PyTorch); TF-ported models (tf_efficientnet) use 1e-3 / 0.01.
// torch's momentum=None (cumulative moving average) is not supported: momentum is a number in [0, 1].
#pragma once

#include <cmath>
#include <string>

#include "arclight/nn/module.hpp"
#include "arclight/ops/batch_norm.hpp"

namespace arclight::nn {

// The shared implementation of BatchNorm1d/2d/Act2d; use those.
class BatchNormBase : public Module {
 public:
  // requires: input [N, C, ...] with a rank the subclass accepts and C == num_features; in training, more than
  //   one value per channel. ensures: the normalised tensor (differentiable); in training the running
  //   statistics are updated in place and num_batches_tracked grows by one.
  Tensor forward(const Tensor& x) override {
    ARCLIGHT_CHECK(x.defined() && x.dim() >= min_rank_ && x.dim() <= max_rank_, who_, "expected input of rank ",
                   min_rank_ == max_rank_ ? std::to_string(min_rank_) : str_cat(min_rank_, " or ", max_rank_), " ",
                   rank_hint_, ", got ", x.defined() ? x.str() : std::string("undefined"));
    ARCLIGHT_CHECK(x.shape()[1] == num_features_, who_, "channel mismatch: input ", x.str(), " has ", x.shape()[1],
                   " channels (dim 1), the layer has num_features ", num_features_);
    const bool use_batch = is_training() || !track_running_stats_;
    Tensor y = ops::batch_norm(x, weight_, bias_, running_mean_, running_var_, use_batch, momentum_, eps_, act_);
    if (is_training() && track_running_stats_) ++*num_batches_tracked_.data_ptr<std::int64_t>();
    return y;
  }

  std::int64_t num_features() const { return num_features_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }
  ops::Activation activation() const { return act_; }
  const Tensor& weight() const { return weight_; }  // undefined when !affine
  const Tensor& bias() const { return bias_; }
  const Tensor& running_mean() const { return running_mean_; }  // undefined when !track_running_stats
  const Tensor& running_var() const { return running_var_; }
  std::int64_t num_batches_tracked() const {
    return num_batches_tracked_.defined() ? *num_batches_tracked_.data_ptr<std::int64_t>() : 0;
  }

 protected:
  BatchNormBase(const char* type, std::int64_t min_rank, std::int64_t max_rank, const char* rank_hint,
                std::int64_t num_features, double eps, double momentum, bool affine, bool track_running_stats,
                ops::Activation act, DType dtype)
      : Module(type),
        who_(str_cat("nn::", type)),
        rank_hint_(rank_hint),
        min_rank_(min_rank),
        max_rank_(max_rank),
        num_features_(num_features),
        eps_(eps),
        momentum_(momentum),
        track_running_stats_(track_running_stats),
        act_(act) {
    ARCLIGHT_CHECK(num_features > 0, who_, "expected num_features > 0, got ", num_features);
    ARCLIGHT_CHECK(std::isfinite(eps) && eps >= 0.0, who_, "eps must be finite and >= 0, got ", eps);
    ARCLIGHT_CHECK(std::isfinite(momentum) && momentum >= 0.0 && momentum <= 1.0, who_,
                   "momentum must be in [0, 1], got ", momentum);
    ARCLIGHT_CHECK(dtype == DType::f32 || dtype == DType::f64, who_, "expected dtype f32 or f64, got ",
                   dtype_name(dtype));
    if (affine) {
      weight_ = register_parameter("weight", ones({num_features}, dtype), /*no_weight_decay=*/true);
      bias_ = register_parameter("bias", zeros({num_features}, dtype), /*no_weight_decay=*/true);
    }
    if (track_running_stats) {
      running_mean_ = register_buffer("running_mean", zeros({num_features}, dtype));
      running_var_ = register_buffer("running_var", ones({num_features}, dtype));
      num_batches_tracked_ = register_buffer("num_batches_tracked", zeros({}, DType::i64));
    }
  }

 private:
  std::string who_, rank_hint_;
  std::int64_t min_rank_, max_rank_, num_features_;
  double eps_, momentum_;
  bool track_running_stats_;
  ops::Activation act_;
  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
};

// BatchNorm2d over [N, C, H, W] (torch.nn.BatchNorm2d).
class BatchNorm2d : public BatchNormBase {
 public:
  // requires: num_features > 0, eps >= 0, momentum in [0, 1], dtype f32/f64.
  explicit BatchNorm2d(std::int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       bool track_running_stats = true, DType dtype = DType::f32)
      : BatchNormBase("BatchNorm2d", 4, 4, "[N, C, H, W]", num_features, eps, momentum, affine, track_running_stats,
                      ops::Activation::Identity, dtype) {}
};

// BatchNorm1d over [N, C] or [N, C, L] (torch.nn.BatchNorm1d).
class BatchNorm1d : public BatchNormBase {
 public:
  explicit BatchNorm1d(std::int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       bool track_running_stats = true, DType dtype = DType::f32)
      : BatchNormBase("BatchNorm1d", 2, 3, "[N, C] or [N, C, L]", num_features, eps, momentum, affine,
                      track_running_stats, ops::Activation::Identity, dtype) {}
};

// BatchNormAct2d: BatchNorm2d followed by an activation, fused in one kernel pass (timm's BatchNormAct2d;
// its state_dict keys are BatchNorm2d's). act: Identity, ReLU, SiLU, GELU or Sigmoid.
class BatchNormAct2d : public BatchNormBase {
 public:
  explicit BatchNormAct2d(std::int64_t num_features, ops::Activation act = ops::Activation::ReLU, double eps = 1e-5,
                          double momentum = 0.1, bool affine = true, bool track_running_stats = true,
                          DType dtype = DType::f32)
      : BatchNormBase("BatchNormAct2d", 4, 4, "[N, C, H, W]", num_features, eps, momentum, affine,
                      track_running_stats, act, dtype) {}
};

}  // namespace arclight::nn
