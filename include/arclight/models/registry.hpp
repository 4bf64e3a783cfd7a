// The model registry: one place that maps a model name to its family, builds it (create_model), and
// describes it without building it (describe_model / model_info / list_models: parameter count and FLOPs at
// a chosen resolution, from the analytic ModelPlan — no tensor is allocated, so listing the whole zoo costs
// microseconds). Names follow timm: efficientnet_b0…b7, tf_efficientnet_b0…b7, dm_nfnet_f0…f3, nfnet_l0,
// eca_nfnet_l0, nf_resnet26, nf_resnet50.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "arclight/models/backbone.hpp"
#include "arclight/models/efficientnet.hpp"
#include "arclight/models/nfnet.hpp"

namespace arclight::models {

// Every registered name, in a stable order (EfficientNets, TF EfficientNets, NFNets).
inline const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (int b = 0; b < 8; ++b) n.push_back("efficientnet_b" + std::to_string(b));
    for (int b = 0; b < 8; ++b) n.push_back("tf_efficientnet_b" + std::to_string(b));
    for (const char* s : {"dm_nfnet_f0", "dm_nfnet_f1", "dm_nfnet_f2", "dm_nfnet_f3", "nfnet_l0", "eca_nfnet_l0",
                          "nf_resnet26", "nf_resnet50"})
      n.emplace_back(s);
    return n;
  }();
  return names;
}

inline bool is_registered_model(const std::string& name) {
  for (const auto& n : model_names())
    if (n == name) return true;
  return false;
}

namespace detail {
[[noreturn]] inline void unknown_model(const std::string& name, const char* who) {
  std::string list;
  for (const auto& n : model_names()) list += (list.empty() ? "" : ", ") + n;
  fail(who, "unknown model '", name, "'; registered models: ", list);
}
}  // namespace detail

// Builds the model `name` with `opt` (random init from opt.gen(), training mode).
// requires: a registered name (else arclight::Error listing the registered ones); valid options.
inline std::shared_ptr<Backbone> create_model(const std::string& name, const ModelOptions& opt = {}) {
  if (auto c = efficientnet_config(name)) return std::make_shared<EfficientNet>(decode_efficientnet(*c, opt), opt);
  if (auto c = nfnet_config(name)) return std::make_shared<NormFreeNet>(decode_nfnet(*c, opt), opt);
  detail::unknown_model(name, "models::create_model");
}

// The analytic plan of `name` with `opt` at an input of `height` × `width` (0: the variant's default
// resolution). Exact parameter manifest (timm names and shapes) and MACs; allocates no tensors.
inline ModelPlan describe_model(const std::string& name, const ModelOptions& opt = {}, std::int64_t height = 0,
                                std::int64_t width = 0) {
  ARCLIGHT_CHECK(height >= 0 && width >= 0, "models::describe_model", "expected a non-negative input size, got ",
                 height, "x", width);
  if (auto c = efficientnet_config(name)) {
    if (height == 0) height = c->resolution;
    if (width == 0) width = height;
    return describe_efficientnet(decode_efficientnet(*c, opt), {height, width});
  }
  if (auto c = nfnet_config(name)) {
    if (height == 0) height = c->resolution;
    if (width == 0) width = height;
    return describe_nfnet(decode_nfnet(*c, opt), {height, width});
  }
  detail::unknown_model(name, "models::describe_model");
}

// One row of the model listing.
struct ModelInfo {
  std::string name;
  std::string family;             // "efficientnet" | "nfnet"
  std::int64_t default_resolution;
  std::int64_t resolution;        // the resolution the FLOPs are counted at
  std::int64_t num_parameters;    // with the options' classifier (1000 classes by default)
  std::int64_t num_features;      // channels of forward_features
  std::int64_t macs;              // multiply-accumulates for one image (conv + linear)
  std::int64_t flops() const { return 2 * macs; }
};

// Info of one model at `resolution` (0: its default resolution).
inline ModelInfo model_info(const std::string& name, const ModelOptions& opt = {}, std::int64_t resolution = 0) {
  ModelInfo info;
  info.name = name;
  if (auto c = efficientnet_config(name)) {
    info.family = "efficientnet";
    info.default_resolution = c->resolution;
  } else if (auto c2 = nfnet_config(name)) {
    info.family = "nfnet";
    info.default_resolution = c2->resolution;
  } else {
    detail::unknown_model(name, "models::model_info");
  }
  info.resolution = resolution > 0 ? resolution : info.default_resolution;
  const ModelPlan p = describe_model(name, opt, info.resolution, info.resolution);
  info.num_parameters = p.num_parameters();
  info.num_features = p.num_features;
  info.macs = p.macs();
  return info;
}

// Every registered model with its parameter count and FLOPs at `resolution` (0: each model's default).
inline std::vector<ModelInfo> list_models(std::int64_t resolution = 0, const ModelOptions& opt = {}) {
  std::vector<ModelInfo> out;
  for (const auto& n : model_names()) out.push_back(model_info(n, opt, resolution));
  return out;
}

}  // namespace arclight::models
