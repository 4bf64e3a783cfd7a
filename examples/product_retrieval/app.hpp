// The product-retrieval application (METHOD.md): train an ArcFace embedding model, embed a gallery and
// queries, evaluate retrieval, predict, and write a report. Everything a run produces lives in its run
// folder:
//   config.json                 the training configuration (what `--resume` continues with)
//   folds.txt                   the stratified fold assignment (with --fold), checked against the labels
//   checkpoints/                without --fold: crash-safe training checkpoints (`latest` for resume)
//   fold<k>/checkpoints/        with --fold: the same per fold, plus fold<k>/best/ (the checkpoint of the
//   fold<k>/best/               epoch with the best validation accuracy) and fold<k>/train_log.jsonl
//   train_log.jsonl             one JSON line per epoch: loss, lr, images/s, val_acc (with a fold)
//   gallery.safetensors         embeddings f32 [N, D], labels i64 [N], indices i64 [N], sources u8 (the
//   queries.safetensors         newline-joined source names), class_cos f32 [N, C] (queries); metadata
//                               holds the class names and the runs of an ensemble
//   metrics.json, report.html
//
// The model is built by EmbeddingModel from a name; the embedding network is backbone → embedding with an
// ArcMargin head trained by the fused ArcMargin → label-smoothing cross-entropy loss.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/cuda/grad_scaler.hpp"
#include "arclight/cuda/upload.hpp"
#include "arclight/data/csv_dataset.hpp"
#include "arclight/data/data.hpp"
#include "arclight/data/image_folder.hpp"
#include "arclight/data/split.hpp"
#include "arclight/io/checkpoint.hpp"
#include "arclight/io/safetensors.hpp"
#include "arclight/io/training_state.hpp"
#include "arclight/models/registry.hpp"
#include "arclight/nn/arc_margin.hpp"
#include "arclight/nn/batch_norm.hpp"
#include "arclight/nn/conv.hpp"
#include "arclight/nn/gem.hpp"
#include "arclight/nn/linear.hpp"
#include "arclight/optim/adamw.hpp"
#include "arclight/optim/schedule.hpp"
#include "arclight/optim/sgd.hpp"
#include "arclight/retrieval/metrics.hpp"
#include "report.hpp"

namespace retrieval_app {

namespace fs = std::filesystem;
using arclight::DType;
using arclight::Tensor;
using nlohmann::json;
namespace ops = arclight::ops;
namespace nn = arclight::nn;
namespace data = arclight::data;

// ---- configuration ----------------------------------------------------------------------------------

struct Config {
  std::string data = "fashion-mnist";  // fashion-mnist | folder:PATH | csv:PATH
  std::string test_data;               // queries for folder:/csv: data (same forms); empty = none
  std::string model = "mlp";
  std::int64_t image_size = 0;  // square side the images are resized to; 0 = 28 (Fashion-MNIST) or 32
  int channels = 0;             // 1 or 3; 0 = 1 (Fashion-MNIST) or 3
  std::int64_t embedding_dim = 512;
  std::int64_t hidden = 1024;
  std::int64_t epochs = 4;
  std::int64_t batch = 128;
  std::string optimizer = "adamw";  // adamw | sgd
  double lr = 2e-3;
  double weight_decay = 1e-4;
  double warmup_epochs = 0.5;
  double lr_min = 1e-5;
  double scale = 30.0;
  double margin = 0.2;  // METHOD.md: m = 0.2 beat 0.5 within a fixed CPU budget on this data
  double margin_warmup_epochs = 1.0;  // margin ramps linearly from 0 to `margin` over these epochs
  double label_smoothing = 0.1;
  std::string augment = "hflip(p=0.5)";
  std::int64_t limit_train = 0;  // 0 = all
  std::int64_t limit_test = 0;
  std::int64_t per_class = 0;    // keep at most this many training images per class (0 = all)
  std::string fold;              // "" = no validation split; "k" (0-based) or "all"
  int folds = 5;                 // K of the stratified K-fold split
  std::string on_bad_image = "fail";  // fail | skip
  std::int64_t checkpoint_every = 0;  // also checkpoint every N optimizer steps (0 = at epoch ends only)
  std::uint64_t seed = 1;
  int threads = 0;  // 0 = all cores
  int workers = 2;
  double time_budget_s = 0;  // 0 = none: stop training (after the current step) when exceeded
  bool tta_flip = false;

  json to_json() const {
    return json{{"data", data}, {"test_data", test_data}, {"model", model}, {"image_size", image_size},
                {"channels", channels}, {"embedding_dim", embedding_dim}, {"hidden", hidden}, {"epochs", epochs},
                {"batch", batch}, {"optimizer", optimizer}, {"lr", lr}, {"weight_decay", weight_decay},
                {"warmup_epochs", warmup_epochs}, {"lr_min", lr_min}, {"scale", scale}, {"margin", margin},
                {"margin_warmup_epochs", margin_warmup_epochs}, {"label_smoothing", label_smoothing},
                {"augment", augment}, {"limit_train", limit_train}, {"limit_test", limit_test},
                {"per_class", per_class}, {"fold", fold}, {"folds", folds}, {"on_bad_image", on_bad_image},
                {"checkpoint_every", checkpoint_every}, {"seed", seed}, {"threads", threads}, {"workers", workers},
                {"time_budget_s", time_budget_s}, {"tta_flip", tta_flip}};
  }
  static Config from_json(const json& j) {
    Config c;
    auto get = [&](const char* k, auto& v) {
      if (j.contains(k)) j.at(k).get_to(v);
    };
    get("data", c.data), get("test_data", c.test_data), get("model", c.model), get("image_size", c.image_size);
    get("channels", c.channels), get("embedding_dim", c.embedding_dim), get("hidden", c.hidden);
    get("epochs", c.epochs), get("batch", c.batch), get("optimizer", c.optimizer), get("lr", c.lr);
    get("weight_decay", c.weight_decay), get("warmup_epochs", c.warmup_epochs), get("lr_min", c.lr_min);
    get("scale", c.scale), get("margin", c.margin), get("margin_warmup_epochs", c.margin_warmup_epochs);
    get("label_smoothing", c.label_smoothing), get("augment", c.augment), get("limit_train", c.limit_train);
    get("limit_test", c.limit_test), get("per_class", c.per_class), get("fold", c.fold), get("folds", c.folds);
    get("on_bad_image", c.on_bad_image), get("checkpoint_every", c.checkpoint_every);
    get("seed", c.seed), get("threads", c.threads), get("workers", c.workers);
    get("time_budget_s", c.time_budget_s), get("tta_flip", c.tta_flip);
    return c;
  }
  bool is_fashion() const { return data == "fashion-mnist"; }
  // Fills the data-dependent defaults (image size, channels) so config.json records what was used.
  void resolve() {
    if (image_size == 0) image_size = is_fashion() ? 28 : 32;
    if (channels == 0) channels = is_fashion() ? 1 : 3;
  }
  // The folds this run trains (empty: no validation split).
  std::vector<int> fold_list() const {
    if (fold.empty()) return {};
    if (fold == "all") {
      std::vector<int> v(static_cast<std::size_t>(folds));
      for (int k = 0; k < folds; ++k) v[static_cast<std::size_t>(k)] = k;
      return v;
    }
    return {std::stoi(fold)};
  }
  void validate() const {
    const char* w = "config";
    ARCLIGHT_CHECK(epochs >= 1, w, "epochs = ", epochs, ", expected >= 1");
    ARCLIGHT_CHECK(batch >= 2, w, "batch = ", batch, ", expected >= 2");
    ARCLIGHT_CHECK(lr > 0, w, "lr = ", lr, ", expected > 0");
    ARCLIGHT_CHECK(margin >= 0 && margin < 1.6, w, "margin = ", margin, ", expected in [0, 1.6)");
    ARCLIGHT_CHECK(scale > 0, w, "scale = ", scale, ", expected > 0");
    ARCLIGHT_CHECK(label_smoothing >= 0 && label_smoothing < 1, w, "label smoothing = ", label_smoothing,
                   ", expected in [0, 1)");
    ARCLIGHT_CHECK(optimizer == "adamw" || optimizer == "sgd", w, "optimizer '", optimizer, "', expected adamw or sgd");
    ARCLIGHT_CHECK(embedding_dim >= 2, w, "embedding_dim = ", embedding_dim, ", expected >= 2");
    ARCLIGHT_CHECK(workers >= 1, w, "workers = ", workers, ", expected >= 1");
    ARCLIGHT_CHECK(model == "cnn" || model == "mlp" || arclight::models::is_registered_model(model), w, "unknown model '",
                   model, "', expected cnn, mlp or a registered backbone (efficientnet_b0..b7, tf_efficientnet_*, "
                   "dm_nfnet_f0..f3, nfnet_l0, eca_nfnet_l0, nf_resnet26/50)");
    ARCLIGHT_CHECK(image_size >= 4 && image_size <= 4096, w, "image size ", image_size, ", expected 4..4096");
    ARCLIGHT_CHECK(channels == 1 || channels == 3, w, "channels = ", channels, ", expected 1 or 3");
    ARCLIGHT_CHECK(on_bad_image == "fail" || on_bad_image == "skip", w, "on-bad-image '", on_bad_image,
                   "', expected fail or skip");
    ARCLIGHT_CHECK(checkpoint_every >= 0, w, "checkpoint-every = ", checkpoint_every, ", expected >= 0");
    ARCLIGHT_CHECK(folds >= 2, w, "folds = ", folds, ", expected >= 2");
    if (!fold.empty() && fold != "all") {
      const bool digits = std::all_of(fold.begin(), fold.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
      ARCLIGHT_CHECK(digits && fold.size() <= 4 && std::stoi(fold) < folds, w, "fold '", fold, "', expected 0..",
                     folds - 1, " or all");
    }
  }
};

// ---- data -------------------------------------------------------------------------------------------

// A dataset whose labels are re-indexed into another class list by name (a query folder that lacks some
// classes, or lists them in another order, still uses the training run's class indices).
class RenamedClassesDataset final : public data::Dataset {
 public:
  RenamedClassesDataset(std::shared_ptr<const data::Dataset> base, std::vector<std::string> names,
                        const std::string& what)
      : base_(std::move(base)), names_(std::move(names)) {
    std::map<std::string, std::int64_t> index;
    for (std::size_t i = 0; i < names_.size(); ++i) index.emplace(names_[i], static_cast<std::int64_t>(i));
    for (const auto& n : base_->class_names()) {
      auto it = index.find(n);
      ARCLIGHT_CHECK(it != index.end(), "data", what, " has class '", n, "', which the training data does not have");
      map_.push_back(it->second);
    }
  }
  std::size_t size() const override { return base_->size(); }
  std::int64_t label(std::size_t i) const override { return map_[static_cast<std::size_t>(base_->label(i))]; }
  data::Image load(std::size_t i) const override { return base_->load(i); }
  std::string name(std::size_t i) const override { return base_->name(i); }
  std::size_t num_classes() const override { return names_.size(); }
  const std::vector<std::string>& class_names() const override { return names_; }

 private:
  std::shared_ptr<const data::Dataset> base_;
  std::vector<std::string> names_;
  std::vector<std::int64_t> map_;
};

struct DataSplits {
  std::shared_ptr<const data::Dataset> train, test;  // test may be null (no queries)
  std::vector<std::string> class_names;
};

inline std::shared_ptr<const data::Dataset> limit(std::shared_ptr<const data::Dataset> ds, std::int64_t n,
                                                  std::uint64_t seed) {
  if (n <= 0 || n >= static_cast<std::int64_t>(ds->size())) return ds;
  // a random subset: the first n of a seeded shuffle, kept in index order
  auto order = data::epoch_order(ds->size(), true, seed, 0);
  order.resize(static_cast<std::size_t>(n));
  std::sort(order.begin(), order.end());
  return std::make_shared<data::SubsetDataset>(ds, order);
}

// Opens `spec` (folder:PATH or csv:PATH). `what` names the option in errors.
inline std::shared_ptr<const data::Dataset> open_image_source(const std::string& spec, int channels,
                                                              const std::string& what) {
  data::DecodeOptions dec;
  dec.channels = channels;
  if (spec.rfind("folder:", 0) == 0) {
    const fs::path dir = spec.substr(7);
    std::error_code ec;
    ARCLIGHT_CHECK(fs::is_directory(dir, ec), "data", what, ": data folder '", dir.string(),
                   "' does not exist (expected folder:PATH with one sub-folder of images per class)");
    data::ImageFolderOptions o;
    o.decode = dec;
    return std::make_shared<data::ImageFolderDataset>(dir, o);
  }
  if (spec.rfind("csv:", 0) == 0) {
    const fs::path csv = spec.substr(4);
    std::error_code ec;
    ARCLIGHT_CHECK(fs::is_regular_file(csv, ec), "data", what, ": CSV file '", csv.string(), "' does not exist");
    data::CsvDatasetOptions o;
    o.decode = dec;
    return std::make_shared<data::CsvDataset>(data::CsvDataset::from_file(csv, o));
  }
  arclight::fail("data", what, ": unknown data source '", spec, "'; expected fashion-mnist, folder:PATH or csv:PATH");
}

inline DataSplits load_data(const Config& c) {
  DataSplits d;
  if (c.is_fashion()) {
    ARCLIGHT_CHECK(c.test_data.empty(), "data", "--test-data is for folder:/csv: data; Fashion-MNIST uses its test set");
    const char* dir = data::fashion_mnist_default_dir();
    ARCLIGHT_CHECK(fs::exists(dir), "data", "Fashion-MNIST not found at ", dir,
                   "; install Debian's dataset-fashion-mnist (scripts/setup.sh does)");
    auto train = std::make_shared<data::InMemoryDataset>(data::load_fashion_mnist(dir, "train"));
    auto test = std::make_shared<data::InMemoryDataset>(data::load_fashion_mnist(dir, "test"));
    d.class_names = train->class_names();
    d.train = train;
    d.test = limit(test, c.limit_test, c.seed + 1);
  } else {
    d.train = open_image_source(c.data, c.channels, "--data");
    d.class_names = d.train->class_names();
    if (!c.test_data.empty()) {
      auto t = open_image_source(c.test_data, c.channels, "--test-data");
      d.test = limit(std::make_shared<RenamedClassesDataset>(t, d.class_names, "--test-data"), c.limit_test, c.seed + 1);
    }
  }
  if (c.per_class > 0) d.train = data::subsample_per_class(d.train, static_cast<std::size_t>(c.per_class), c.seed);
  d.train = limit(d.train, c.limit_train, c.seed);
  return d;
}

// The training pipeline: the augmentations, then a resize to the model's input size (a no-op when equal).
inline data::Pipeline train_pipeline(const Config& c) {
  data::Pipeline p = data::parse_pipeline(c.augment);
  p.add(data::Resize(static_cast<int>(c.image_size), static_cast<int>(c.image_size)));
  return p;
}
inline data::Pipeline eval_pipeline(const Config& c) {
  data::Pipeline p;
  p.add(data::Resize(static_cast<int>(c.image_size), static_cast<int>(c.image_size)));
  return p;
}
inline data::UnreadablePolicy bad_image_policy(const Config& c) {
  return c.on_bad_image == "skip" ? data::UnreadablePolicy::skip : data::UnreadablePolicy::fail;
}

// ---- model ------------------------------------------------------------------------------------------

// Backbone → embedding, plus the ArcMargin head. Models:
//   cnn: a small conv trunk sized for 28–32 px images (conv 3×3 + BN + SiLU blocks, 32 → 64 → 128 channels,
//        two stride-2 stages) → GeM → Linear(128 → D) → BatchNorm1d — METHOD.md's pooling and neck on a
//        trunk that fits a CPU budget;
//   mlp: flatten → Linear(→ hidden) → ReLU → Linear(→ D), a fast baseline;
//   any registered backbone (efficientnet_b0…b7, tf_efficientnet_*, dm_nfnet_f0…, nfnet_l0, eca_nfnet_l0,
//        nf_resnet26/50): its feature map → GeM → Linear(features → D) → BatchNorm1d, METHOD.md's full recipe
//        (images under 96 px use the backbone's small-input stem, so 32–64 px inputs keep a 2×2+ map).
class EmbeddingModel : public nn::Module {
 public:
  // The input is [N, c.channels, c.image_size, c.image_size]; `init_seed` seeds the initial weights.
  EmbeddingModel(const Config& c, std::int64_t num_classes, std::uint64_t init_seed)
      : Module("EmbeddingModel"), cfg_(c), rng_(init_seed ^ 0x9E3779B97F4A7C15ull) {
    arclight::Generator gen(init_seed);
    const std::int64_t in_channels = c.channels, in_features = c.channels * c.image_size * c.image_size;
    if (c.model == "cnn") {
      trunk_ = register_module("trunk", std::make_shared<nn::Sequential>());
      const std::int64_t widths[] = {32, 64, 64, 128, 128};
      const std::int64_t strides[] = {1, 2, 1, 2, 1};
      std::int64_t in = in_channels;
      for (int i = 0; i < 5; ++i) {
        trunk_->push_back(std::make_shared<nn::Conv2d>(in, widths[i], 3, strides[i], 1, 1, 1, false, gen));
        trunk_->push_back(std::make_shared<nn::BatchNormAct2d>(widths[i], arclight::ops::Activation::SiLU));
        in = widths[i];
      }
      gem_ = register_module("pool", std::make_shared<nn::GeM>());
      fc_ = register_module("fc", std::make_shared<nn::Linear>(in, c.embedding_dim, true, gen));
      bn_ = register_module("bn", std::make_shared<nn::BatchNorm1d>(c.embedding_dim));
    } else if (arclight::models::is_registered_model(c.model)) {
      arclight::models::ModelOptions mo;
      mo.num_classes = 0;
      mo.in_chans = in_channels;
      mo.small_input = c.image_size < 96;
      mo.generator = &rng_;  // the model's own stream: initial weights, then drop-path masks (checkpointed)
      backbone_ = register_module("backbone", arclight::models::create_model(c.model, mo));
      gem_ = register_module("pool", std::make_shared<nn::GeM>());
      fc_ = register_module("fc", std::make_shared<nn::Linear>(backbone_->num_features(), c.embedding_dim, true, gen));
      bn_ = register_module("bn", std::make_shared<nn::BatchNorm1d>(c.embedding_dim));
    } else if (c.model == "mlp") {
      fc1_ = register_module("fc1", std::make_shared<nn::Linear>(in_features, c.hidden, true, gen));
      fc_ = register_module("fc2", std::make_shared<nn::Linear>(c.hidden, c.embedding_dim, true, gen));
    } else {
      arclight::fail("model", "unknown model '", c.model, "'; available: cnn, mlp, or a registered backbone");
    }
    arclight::ops::ArcMarginConfig ac;
    ac.scale = c.scale;
    ac.margin = c.margin;
    head_ = register_module("head", std::make_shared<nn::ArcMargin>(c.embedding_dim, num_classes, ac, gen));
  }
  // x [N, C, H, W] → raw (unnormalised) embedding [N, D].
  Tensor embed_raw(const Tensor& x) {
    if (trunk_) return bn_->forward(fc_->forward(gem_->forward(trunk_->forward(x))));
    if (backbone_) return bn_->forward(fc_->forward(gem_->forward(backbone_->forward_features(x))));
    Tensor h = ops::flatten(x, 1);
    h = ops::clamp_min(fc1_->forward(h), 0.0);
    return fc_->forward(h);
  }
  Tensor forward(const Tensor& x) override { return embed_raw(x); }
  nn::ArcMargin& head() { return *head_; }
  // The model's random stream (a backbone's initial weights and drop-path masks); checkpoints carry it.
  arclight::Generator& rng() { return rng_; }

 private:
  Config cfg_;
  arclight::Generator rng_;  // declared before the modules that keep a pointer to it
  std::shared_ptr<nn::Sequential> trunk_;
  std::shared_ptr<arclight::models::Backbone> backbone_;
  std::shared_ptr<nn::GeM> gem_;
  std::shared_ptr<nn::BatchNorm1d> bn_;
  std::shared_ptr<nn::Linear> fc1_, fc_;
  std::shared_ptr<nn::ArcMargin> head_;
};

// ---- state dict <-> safetensors ------------------------------------------------------------------------

inline std::vector<std::uint8_t> state_to_bytes(const std::vector<std::pair<std::string, Tensor>>& sd,
                                                const arclight::io::SafetensorsMetadata& meta = {}) {
  std::vector<Tensor> keep;
  std::vector<arclight::io::TensorBytes> ts;
  for (const auto& [name, t] : sd) {
    Tensor c = ops::contiguous(t.detach());
    keep.push_back(c);
    ts.push_back({name, c.dtype(), c.shape(),
                  {static_cast<const std::uint8_t*>(c.raw_data()), static_cast<std::size_t>(c.numel()) * c.element_size()}});
  }
  return arclight::io::serialize_safetensors(ts, meta);
}

// The device the app computes on (train, embed, predict: --device). The CPU by default; cuda moves each model
// there (Module::to) and each batch (Tensor::to) — data loading and augmentation stay on the host, embeddings come
// back to the host (training uploads batches asynchronously through pinned memory: cuda::BatchUploader). A run
// folder does not record the device: a GPU-trained run embeds on a CPU and vice versa.
inline arclight::Device& compute_device() {
  static arclight::Device d = arclight::Device::cpu();
  return d;
}
// requires: name "cpu" or "cuda"; cuda needs the CUDA backend and a usable GPU (else arclight::Error saying why).
inline void set_compute_device(const std::string& name) {
  ARCLIGHT_CHECK(name == "cpu" || name == "cuda", "--device", "expected cpu or cuda, got '", name, "'");
  if (name == "cuda") arclight::cuda::require_available("--device cuda");
  compute_device() = name == "cuda" ? arclight::Device::cuda(0) : arclight::Device::cpu();
}

// Mixed precision for training on the GPU (train, demo: --amp): off (float32), bf16 (convolutions and GEMMs in
// bfloat16 under cuda::AutocastScope) or fp16 (float16 autocast with dynamic loss scaling: cuda::GradScaler skips
// the steps whose gradients overflow). Master weights, GeM, the loss and the optimizer stay float32; embedding for
// retrieval always runs in float32. Like --device it is not recorded in the run folder.
inline std::string& amp_mode() {
  static std::string m = "off";
  return m;
}
// requires: name off, bf16 or fp16; anything but off needs --device cuda (call after set_compute_device).
inline void set_amp(const std::string& name) {
  ARCLIGHT_CHECK(name == "off" || name == "bf16" || name == "fp16", "--amp", "expected off, bf16 or fp16, got '", name,
                 "'");
  ARCLIGHT_CHECK(name == "off" || compute_device().is_cuda(), "--amp", "--amp ", name,
                 " needs --device cuda (mixed precision runs on the GPU only)");
  amp_mode() = name;
}
inline arclight::DType amp_dtype() {
  return amp_mode() == "bf16" ? arclight::DType::bf16 : amp_mode() == "fp16" ? arclight::DType::f16 : arclight::DType::f32;
}

// Copies every tensor of the file into the module's state of the same name (strict: all keys, same shapes).
inline void load_state(nn::Module& m, const std::vector<std::uint8_t>& bytes, const std::string& source) {
  auto file = arclight::io::SafetensorsFile::from_bytes(bytes, source);
  arclight::NoGradGuard ng;
  for (auto& [name, t] : m.state_dict()) {
    const auto* e = file.find(name);
    ARCLIGHT_CHECK(e != nullptr, "load_state", source, ": missing tensor '", name, "'");
    ARCLIGHT_CHECK(e->dtype == t.dtype() && e->shape == t.shape(), "load_state", source, ": tensor '", name,
                   "' has shape ", arclight::shape_str(e->shape), ", expected ", arclight::shape_str(t.shape()));
    std::memcpy(t.raw_data(), e->data.data(), e->data.size());
  }
}

// ---- interruption -----------------------------------------------------------------------------------

// Set by SIGINT/SIGTERM; the training loop finishes its step, saves a checkpoint and returns.
inline std::atomic<bool>& interrupted() {
  static std::atomic<bool> flag{false};
  return flag;
}

// Installs the handlers: the first SIGINT/SIGTERM sets interrupted(); the handler then resets itself, so a
// second Ctrl-C terminates at once.
inline void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = [](int) { interrupted().store(true); };
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// ---- training ---------------------------------------------------------------------------------------

inline Tensor batch_images(const data::Batch& b) {
  return arclight::from_vector(b.data, arclight::Shape(b.shape.begin(), b.shape.end()));
}

struct TrainSummary {
  std::int64_t steps = 0;
  double seconds = 0;  // training time, summed over the processes of a resumed run
  double images_per_s = 0;
  double final_loss = 0;
  std::int64_t epochs_done = 0;
  bool interrupted = false;
  std::size_t skipped_images = 0;
};

inline void log_line(std::ostream& os, const std::string& line) { os << line << std::endl; }

// The folder of fold k (k < 0: the run itself, no validation split) and its seed (weights and data order).
inline fs::path fold_dir(const fs::path& run, int k) { return k < 0 ? run : run / ("fold" + std::to_string(k)); }
inline std::uint64_t fold_seed(const Config& c, int k) {
  return k < 0 ? c.seed : c.seed + 1000 * static_cast<std::uint64_t>(k + 1);
}

inline bool has_checkpoint(const fs::path& root) {
  std::error_code ec;
  return fs::is_directory(root, ec) && !arclight::io::list_checkpoints(root).empty();
}

// The checkpoint roots whose models a run's embedding uses: the run's `checkpoints`, or per trained fold its
// `best` (or `checkpoints` when no best was kept).
inline std::vector<fs::path> model_roots(const fs::path& run, const Config& c) {
  std::vector<fs::path> roots;
  const auto folds = c.fold_list();
  if (folds.empty()) {
    roots.push_back(run / "checkpoints");
  } else {
    for (int k : folds) {
      const fs::path d = fold_dir(run, k);
      if (has_checkpoint(d / "best")) roots.push_back(d / "best");
      else if (has_checkpoint(d / "checkpoints")) roots.push_back(d / "checkpoints");
    }
  }
  return roots;
}

inline std::unique_ptr<arclight::optim::Optimizer> make_optimizer(const Config& c, nn::Module& model) {
  auto groups = arclight::optim::param_groups(model, c.weight_decay);
  if (c.optimizer == "adamw") {
    arclight::optim::AdamWOptions o;
    o.lr = c.lr;
    o.weight_decay = c.weight_decay;
    return std::make_unique<arclight::optim::AdamW>(groups, o);
  }
  arclight::optim::SgdOptions o;
  o.lr = c.lr;
  o.momentum = 0.9;
  o.nesterov = true;
  o.weight_decay = c.weight_decay;
  return std::make_unique<arclight::optim::SGD>(groups, o);
}

// The models of an ensemble share one input format (checked by the caller).
struct EmbedOutput {
  Tensor emb;        // [N, ΣD] L2-normalised concatenation of the per-model L2-normalised embeddings
  Tensor class_cos;  // [N, C] mean over the models of the ArcMargin class cosines
};

inline Tensor hflip(const Tensor& x) {
  const std::int64_t w = x.shape()[3];
  std::vector<std::int64_t> rev(static_cast<std::size_t>(w));
  for (std::int64_t i = 0; i < w; ++i) rev[static_cast<std::size_t>(i)] = w - 1 - i;
  return ops::index_select(x, 3, arclight::from_vector(rev, {w}));
}

// Embeds a batch x [N, C, H, W] with every model (eval mode, no grad); TTA averages each model's embedding
// with that of the horizontally flipped image before normalising.
inline EmbedOutput embed_batch(const std::vector<EmbeddingModel*>& models, const Tensor& x, bool tta_flip) {
  arclight::NoGradGuard ng;
  std::vector<Tensor> embs;
  Tensor cos_sum;
  Tensor x_flip = tta_flip ? hflip(x) : Tensor();  // on the host (x is a host batch)
  for (EmbeddingModel* m : models) {
    m->eval();
    const arclight::Device dev = m->device();
    Tensor e = ops::l2_normalize(m->embed_raw(x.to(dev)), 1);
    if (tta_flip) e = ops::l2_normalize(ops::add(e, ops::l2_normalize(m->embed_raw(x_flip.to(dev)), 1)), 1);
    Tensor cc = m->head().cosine(e).to(arclight::Device::cpu());
    cos_sum = cos_sum.defined() ? ops::add(cos_sum, cc) : cc;
    embs.push_back(e.to(arclight::Device::cpu()));
  }
  EmbedOutput out;
  out.emb = embs.size() == 1 ? embs[0] : ops::l2_normalize(ops::cat(embs, 1), 1);
  out.class_cos = models.size() == 1 ? cos_sum : ops::div(cos_sum, static_cast<double>(models.size()));
  return out;
}

struct Embeddings {
  Tensor emb;  // [N, D] L2-normalised
  std::vector<std::int64_t> labels;
  std::vector<std::int64_t> indices;  // dataset index of each row
  std::vector<std::string> sources;   // the dataset's name of each row (file path or set[index])
  Tensor class_cos;                   // [N, C] or undefined
};

// Embeds every (readable) image of `ds` with the eval pipeline; unreadable images follow c.on_bad_image.
inline Embeddings embed_dataset(const std::vector<EmbeddingModel*>& models, const data::Dataset& ds, const Config& c,
                                bool tta_flip, bool with_class_cos, std::size_t* skipped = nullptr) {
  arclight::NoGradGuard ng;
  data::LoaderOptions lo;
  lo.batch_size = 512;
  lo.num_workers = c.workers;
  lo.shuffle = false;
  lo.on_unreadable = bad_image_policy(c);
  data::DataLoader loader(std::shared_ptr<const data::Dataset>(&ds, [](auto*) {}), eval_pipeline(c), lo);
  loader.start_epoch(0);
  std::vector<Tensor> parts, cos_parts;
  Embeddings out;
  while (auto b = loader.next()) {
    auto e = embed_batch(models, batch_images(*b), tta_flip);
    parts.push_back(e.emb);
    if (with_class_cos) cos_parts.push_back(e.class_cos);
    out.labels.insert(out.labels.end(), b->labels.begin(), b->labels.end());
    out.indices.insert(out.indices.end(), b->indices.begin(), b->indices.end());
    for (auto i : b->indices) out.sources.push_back(ds.name(static_cast<std::size_t>(i)));
  }
  loader.stop();
  if (skipped) *skipped = loader.skipped();
  ARCLIGHT_CHECK(!parts.empty(), "embed", "no readable image in a set of ", ds.size());
  out.emb = ops::cat(parts, 0);
  if (with_class_cos) out.class_cos = ops::cat(cos_parts, 0);
  return out;
}

// Classifier top-1 (argmax of the ArcMargin class cosines) on `val`: the per-epoch validation accuracy.
inline double validation_accuracy(EmbeddingModel& model, const data::Dataset& val, const Config& c) {
  auto e = embed_dataset({&model}, val, c, false, true);
  const auto pred = ops::argmax(e.class_cos, 1).to_vector<std::int64_t>();
  std::size_t hits = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) hits += pred[i] == e.labels[i];
  return static_cast<double>(hits) / static_cast<double>(std::max<std::size_t>(1, pred.size()));
}

// The loop state a checkpoint carries besides model/optimizer/counters (TrainingState.config["app"]).
struct LoopState {
  std::int64_t batch_in_epoch = 0;  // batches of the current epoch already consumed
  double loss_sum = 0;              // of the current epoch so far
  std::int64_t loss_steps = 0, images = 0;
  double best_val = -1;
  std::int64_t best_epoch = 0;
  double seconds = 0;  // training time spent before this process
  double loss_scale = 0;  // --amp fp16: the loss scaler's state (0: no scaler ran)
  std::int64_t loss_scale_growth = 0;
  json to_json() const {
    return {{"batch_in_epoch", batch_in_epoch}, {"loss_sum", loss_sum},     {"loss_steps", loss_steps},
            {"images", images},                 {"best_val", best_val},     {"best_epoch", best_epoch},
            {"seconds", seconds},               {"loss_scale", loss_scale}, {"loss_scale_growth", loss_scale_growth}};
  }
  static LoopState from_json(const json& j) {
    LoopState s;
    j.at("batch_in_epoch").get_to(s.batch_in_epoch), j.at("loss_sum").get_to(s.loss_sum);
    j.at("loss_steps").get_to(s.loss_steps), j.at("images").get_to(s.images), j.at("best_val").get_to(s.best_val);
    j.at("best_epoch").get_to(s.best_epoch), j.at("seconds").get_to(s.seconds);
    if (j.contains("loss_scale")) j.at("loss_scale").get_to(s.loss_scale), j.at("loss_scale_growth").get_to(s.loss_scale_growth);
    return s;
  }
};

// Keeps the lines of a JSONL training log whose epoch is <= `epochs` (a resumed run rewrites what follows).
inline void truncate_log(const fs::path& path, std::int64_t epochs) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    try {
      if (json::parse(line).at("epoch").get<std::int64_t>() <= epochs) kept += line + "\n";
    } catch (const std::exception&) {  // a line torn by a kill: drop it
    }
  }
  in.close();
  arclight::io::write_file_atomic(path, std::vector<std::uint8_t>(kept.begin(), kept.end()));
}

// Trains one model (fold k, or the whole training set when k < 0) into `dir`: checkpoints/ (`latest` =
// resume point: at each epoch end, every c.checkpoint_every steps, and on interruption or time budget) and,
// with a validation set, best/ (the epoch with the highest validation accuracy) and val_acc in the log.
// With `resume`, continues from dir/checkpoints' newest valid checkpoint (fresh when there is none) and, in
// the same thread count, reaches bit-identical weights to an uninterrupted run.
inline TrainSummary train_fold(const Config& c, int k, const fs::path& dir, std::shared_ptr<const data::Dataset> train_ds,
                               std::shared_ptr<const data::Dataset> val_ds, std::int64_t num_classes, bool resume,
                               std::ostream& log) {
  const std::string tag = k < 0 ? std::string("train") : arclight::str_cat("fold ", k);
  fs::create_directories(dir);
  const std::uint64_t seed = fold_seed(c, k);
  EmbeddingModel model(c, num_classes, seed);
  const arclight::Device dev = compute_device();
  model.to(dev);  // before the optimizer, whose state lives beside the parameters
  auto opt = make_optimizer(c, model);
  opt->add_post_step_hook([&model] { nn::clamp_gem_p_(model); });  // keep GeM's p >= 1 (projected step)
  data::LoaderOptions lo;
  lo.batch_size = static_cast<std::size_t>(c.batch);
  lo.num_workers = c.workers;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.seed = seed;
  lo.on_unreadable = bad_image_policy(c);
  data::DataLoader loader(train_ds, train_pipeline(c), lo);
  const auto steps_per_epoch = static_cast<std::int64_t>(loader.batches_per_epoch());
  ARCLIGHT_CHECK(steps_per_epoch >= 1, "train", tag, ": ", train_ds->size(), " training images, fewer than one batch of ",
                 c.batch, "; lower --batch");
  const std::int64_t total_steps = steps_per_epoch * c.epochs;
  auto sched_cfg = arclight::optim::cosine_schedule(c.lr, static_cast<double>(total_steps),
                                                    c.warmup_epochs * static_cast<double>(steps_per_epoch), c.lr * 0.01,
                                                    c.lr_min);
  arclight::optim::Scheduler sched(*opt, sched_cfg, arclight::optim::ScheduleUnit::kStep);
  arclight::ops::CrossEntropyConfig ce;
  ce.label_smoothing = c.label_smoothing;

  const fs::path ckpt_root = dir / "checkpoints", best_root = dir / "best", log_path = dir / "train_log.jsonl";
  arclight::io::TrainingState st;
  LoopState ls;
  TrainSummary s;
  if (resume && has_checkpoint(ckpt_root)) {
    st = arclight::io::load_training_checkpoint(ckpt_root, model, *opt);
    const auto* app = st.config.find("app");
    ARCLIGHT_CHECK(app && app->is_string(), "train", ckpt_root.string(), ": the checkpoint has no loop state");
    ls = LoopState::from_json(json::parse(app->text));
    if (st.rngs.count("model")) st.restore_rng("model", model.rng());
    sched.step_update(st.scheduler_step);
    truncate_log(log_path, st.epoch);
    if (st.epoch >= c.epochs) {
      log_line(log, arclight::str_cat(tag, ": already complete (", st.epoch, " epochs)"));
      s.steps = st.step, s.epochs_done = st.epoch, s.seconds = ls.seconds;
      return s;
    }
    log_line(log, arclight::str_cat(tag, ": resuming from ", ckpt_root.string(), " at epoch ", st.epoch, " + batch ",
                                    ls.batch_in_epoch, ", step ", st.step));
  } else {
    if (resume) log_line(log, arclight::str_cat(tag, ": no checkpoint in ", ckpt_root.string(), "; starting from scratch"));
    arclight::io::write_file_atomic(log_path, std::vector<std::uint8_t>{});
  }
  std::ofstream train_log(log_path, std::ios::app);
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  // Batches go to the device through pinned staging buffers (asynchronous copies). The step losses stay where they
  // were computed until the loop needs their sum (a log line or a checkpoint): reading one back every step would
  // make the host wait for the device each step instead of queueing the next step's work. They are added in step
  // order in double, as if read one by one.
  arclight::cuda::BatchUploader uploader;
  const arclight::DType amp = amp_dtype();
  arclight::cuda::GradScalerConfig scaler_cfg;
  scaler_cfg.enabled = amp == arclight::DType::f16;  // disabled: scale_loss is the loss, step is opt->step()
  arclight::cuda::GradScaler scaler(scaler_cfg);
  if (scaler.enabled() && ls.loss_scale > 0) scaler.load_state({ls.loss_scale, ls.loss_scale_growth});
  std::vector<Tensor> pending_losses;
  auto settle_losses = [&] {
    for (const Tensor& l : pending_losses) ls.loss_sum += l.item();
    pending_losses.clear();
  };
  auto save = [&](const std::string& name) {
    settle_losses();
    LoopState now = ls;
    if (scaler.enabled()) now.loss_scale = scaler.scale(), now.loss_scale_growth = scaler.growth_tracker();
    now.seconds = ls.seconds + elapsed();
    st.config = arclight::io::json::Value::object();
    st.config.set("app", arclight::io::json::Value::string_value(now.to_json().dump()));
    st.config.set("run_config", arclight::io::json::Value::string_value(c.to_json().dump()));
    st.capture_rng("model", model.rng());
    arclight::io::save_training_checkpoint(ckpt_root, name, model, *opt, st);
  };
  log_line(log, arclight::str_cat(tag, ": ", train_ds->size(), " images", val_ds ? arclight::str_cat(" (+ ", val_ds->size(), " validation)") : std::string(),
                                  ", ", steps_per_epoch, " steps/epoch × ", c.epochs, " epochs, model ", c.model, " (",
                                  model.num_parameters(), " parameters), ", arclight::backend_info(), ", computing on ",
                                  dev.str()));
  bool stop = false;
  for (std::int64_t epoch = st.epoch; epoch < c.epochs && !stop; ++epoch) {
    model.train();
    const bool mid_epoch = ls.batch_in_epoch > 0;  // resuming inside this epoch: build the remaining batches here
    auto b_next = static_cast<std::size_t>(ls.batch_in_epoch);
    if (!mid_epoch) loader.start_epoch(static_cast<std::uint64_t>(epoch));
    auto next = [&]() -> std::optional<data::Batch> {
      if (!mid_epoch) return loader.next();
      while (b_next < static_cast<std::size_t>(steps_per_epoch)) {
        auto b = loader.build_batch(static_cast<std::uint64_t>(epoch), b_next++);
        if (b.size() > 0) return b;
      }
      return std::nullopt;
    };
    const double epoch_t0 = elapsed();
    const std::int64_t images_before = ls.images;
    bool epoch_done = false;
    while (true) {
      auto b = next();
      if (!b) {
        epoch_done = true;
        break;
      }
      const double progress = static_cast<double>(st.step) / static_cast<double>(steps_per_epoch);
      model.head().set_margin_scale(c.margin_warmup_epochs > 0 ? std::min(1.0, progress / c.margin_warmup_epochs) : 1.0);
      Tensor x = uploader.upload(b->data, arclight::Shape(b->shape.begin(), b->shape.end()), dev);
      Tensor y = uploader.upload(b->labels, {static_cast<std::int64_t>(b->labels.size())}, dev);
      Tensor loss;
      {
        arclight::cuda::AutocastScope autocast(amp);
        loss = model.head().loss(model.embed_raw(x), y, ce);
      }
      scaler.scale_loss(loss).backward();
      scaler.step(*opt);  // fp16: unscale, skip the step on inf/NaN gradients, adapt the scale
      opt->zero_grad();
      ++st.step;
      st.scheduler_step = st.step;
      st.sample_index += static_cast<std::int64_t>(b->size());
      sched.step_update(st.scheduler_step);
      pending_losses.push_back(loss.detach());
      ++ls.loss_steps;
      ls.images += static_cast<std::int64_t>(b->size());
      ls.batch_in_epoch = static_cast<std::int64_t>(b->batch_index) + 1;
      const bool last_batch = ls.batch_in_epoch >= steps_per_epoch;
      if (interrupted() || (c.time_budget_s > 0 && ls.seconds + elapsed() > c.time_budget_s)) {
        stop = true;
        s.interrupted = interrupted();
        epoch_done = last_batch;
        break;
      }
      if (c.checkpoint_every > 0 && st.step % c.checkpoint_every == 0 && !last_batch)
        save(arclight::str_cat("step-", st.step));
    }
    loader.stop();
    if (!epoch_done) {  // stopped inside the epoch: a checkpoint at this step is the resume point
      save(arclight::str_cat("step-", st.step));
      break;
    }
    settle_losses();
    const double secs = elapsed() - epoch_t0;
    s.final_loss = ls.loss_sum / static_cast<double>(std::max<std::int64_t>(1, ls.loss_steps));
    const double ips = static_cast<double>(ls.images - images_before) / std::max(secs, 1e-9);
    json entry{{"epoch", epoch + 1}, {"steps", st.step},   {"loss", s.final_loss},
               {"lr", opt->lr()},    {"images_per_s", ips}, {"seconds", ls.seconds + elapsed()}};
    if (k >= 0) entry["fold"] = k;
    std::string val_text;
    if (val_ds) {
      const double acc = validation_accuracy(model, *val_ds, c);
      entry["val_acc"] = acc;
      val_text = arclight::str_cat("  val_acc ", acc);
      if (acc > ls.best_val) {
        ls.best_val = acc;
        ls.best_epoch = epoch + 1;
        // best first, then latest: a kill in between redoes this epoch and saves the same best again
        const std::string info = json{{"epoch", epoch + 1}, {"val_acc", acc}, {"step", st.step}}.dump();
        arclight::io::save_checkpoint(best_root, arclight::str_cat("epoch-", epoch + 1),
                                      {{"model.safetensors", arclight::models::serialize_state_dict(model)},
                                       {"best.json", std::vector<std::uint8_t>(info.begin(), info.end())}});
        val_text += " (best)";
      }
    }
    train_log << entry.dump() << "\n" << std::flush;
    const double eta = secs * static_cast<double>(c.epochs - epoch - 1);
    log_line(log, arclight::str_cat(tag, " epoch ", epoch + 1, "/", c.epochs, "  loss ", s.final_loss, "  lr ", opt->lr(),
                                    val_text, "  ", static_cast<std::int64_t>(ips), " img/s  ETA ",
                                    static_cast<std::int64_t>(eta), " s"));
    if (scaler.skipped_steps() > 0)
      log_line(log, arclight::str_cat(tag, ": fp16 loss scaling skipped ", scaler.skipped_steps(),
                                      " step(s) with inf/NaN gradients so far; loss scale now ", scaler.scale()));
    if (loader.skipped() > 0)
      log_line(log, arclight::str_cat(tag, ": skipped ", loader.skipped(), " unreadable image(s) so far (--on-bad-image skip)"));
    st.epoch = epoch + 1;
    ls.batch_in_epoch = 0, ls.loss_sum = 0, ls.loss_steps = 0;
    save(arclight::str_cat("epoch-", epoch + 1));
  }
  s.steps = st.step;
  s.epochs_done = st.epoch;
  s.seconds = ls.seconds + elapsed();
  s.images_per_s = static_cast<double>(ls.images) / std::max(s.seconds, 1e-9);
  s.skipped_images = loader.skipped();
  if (s.interrupted)
    log_line(log, arclight::str_cat(tag, ": interrupted at step ", st.step, "; checkpoint saved in ", ckpt_root.string(),
                                    "; continue with `train --run ", dir.string(), " --resume`"));
  return s;
}

// Trains the run: the whole training set, or each fold of --fold (k or all) with its stratified validation
// split (folds.txt records the assignment; a resumed run checks it against the labels).
// requires: `data` loaded from `c`; without `resume`, no checkpoint in the run yet.
inline TrainSummary train(const Config& c, const fs::path& run, const DataSplits& data, bool resume, std::ostream& log) {
  c.validate();
  const auto folds = c.fold_list();
  if (!resume) {
    bool any = has_checkpoint(run / "checkpoints");
    for (int k = 0; k < c.folds; ++k) any = any || has_checkpoint(fold_dir(run, k) / "checkpoints");
    ARCLIGHT_CHECK(!any, "train", "run folder '", run.string(),
                   "' already holds training checkpoints; pass --resume to continue it or choose a new --run");
  }
  fs::create_directories(run);
  arclight::io::write_file_atomic(run / "config.json", c.to_json().dump(2));
  if (c.threads > 0) arclight::set_num_threads(c.threads);
  const auto nc = static_cast<std::int64_t>(data.class_names.size());
  if (folds.empty()) return train_fold(c, -1, run, data.train, nullptr, nc, resume, log);
  const auto labels = data::dataset_labels(*data.train);
  const fs::path folds_path = run / "folds.txt";
  data::FoldAssignment fa;
  if (resume && fs::exists(folds_path)) {
    fa = data::load_folds(folds_path, &labels);
    ARCLIGHT_CHECK(fa.n_splits == c.folds, "train", folds_path.string(), " has ", fa.n_splits, " folds, expected ", c.folds);
  } else {
    fa = data::stratified_kfold(labels, c.folds, c.seed);
    data::save_folds(folds_path, fa);
  }
  TrainSummary total;
  for (int k : folds) {
    auto tr = std::make_shared<data::SubsetDataset>(data.train, fa.train_indices(k));
    auto va = std::make_shared<data::SubsetDataset>(data.train, fa.val_indices(k));
    auto s = train_fold(c, k, fold_dir(run, k), tr, va, nc, resume, log);
    total.steps += s.steps, total.seconds += s.seconds, total.final_loss = s.final_loss;
    total.epochs_done += s.epochs_done, total.skipped_images += s.skipped_images;
    if (s.interrupted) {
      total.interrupted = true;
      break;
    }
  }
  total.images_per_s = 0;
  return total;
}

// ---- runs, models, embeddings ------------------------------------------------------------------------------

inline Config load_run_config(const fs::path& run, const char* who) {
  const auto p = run / "config.json";
  ARCLIGHT_CHECK(fs::exists(p), who, "no run at ", run.string(), " (", p.string(), " missing); run `train` first");
  std::ifstream in(p);
  Config c = Config::from_json(json::parse(in));
  c.resolve();
  return c;
}

// The run's models (one per model root: the run's checkpoints, or each trained fold's best), in eval mode.
inline std::vector<std::unique_ptr<EmbeddingModel>> load_models(const fs::path& run, const Config& c,
                                                                 std::int64_t num_classes) {
  std::vector<std::unique_ptr<EmbeddingModel>> out;
  for (const auto& root : model_roots(run, c)) {
    auto m = std::make_unique<EmbeddingModel>(c, num_classes, 0);
    auto ck = arclight::io::load_checkpoint(root);
    load_state(*m, ck.files.at("model.safetensors"), (ck.directory / "model.safetensors").string());
    m->to(compute_device());
    m->eval();
    out.push_back(std::move(m));
  }
  ARCLIGHT_CHECK(!out.empty(), "load_models", "run ", run.string(), " has no trained model (no checkpoint); run `train` first");
  return out;
}

inline void save_embeddings(const fs::path& path, const Embeddings& e, const std::vector<std::string>& class_names,
                            const std::vector<std::string>& runs, std::size_t n_models) {
  const auto n = static_cast<std::int64_t>(e.labels.size());
  std::string joined;
  for (const auto& s : e.sources) {
    ARCLIGHT_CHECK(s.find('\n') == std::string::npos, "embed", "source name '", s, "' contains a newline");
    joined += s + "\n";
  }
  std::vector<std::pair<std::string, Tensor>> ts{{"embeddings", e.emb},
                                                 {"labels", arclight::from_vector(e.labels, {n})},
                                                 {"indices", arclight::from_vector(e.indices, {n})}};
  std::vector<std::uint8_t> src(joined.begin(), joined.end());
  ts.emplace_back("sources", arclight::from_vector(src, {static_cast<std::int64_t>(src.size())}));
  if (e.class_cos.defined()) ts.emplace_back("class_cos", e.class_cos);
  arclight::io::SafetensorsMetadata meta{{"class_names", json(class_names).dump()}, {"runs", json(runs).dump()},
                                          {"n_models", std::to_string(n_models)}};
  arclight::io::write_file_atomic(path, state_to_bytes(ts, meta));
}

struct LoadedEmbeddings : Embeddings {
  std::vector<std::string> class_names, runs;
  std::size_t n_models = 1;
};

inline LoadedEmbeddings load_embeddings(const fs::path& path, const char* who = "eval") {
  ARCLIGHT_CHECK(fs::exists(path), who, "no embeddings at ", path.string(), "; run `embed --run ",
                 path.parent_path().string(), "` first");
  auto f = arclight::io::SafetensorsFile::open(path);
  const auto* e = f.find("embeddings");
  const auto* l = f.find("labels");
  const auto* ix = f.find("indices");
  const auto* src = f.find("sources");
  ARCLIGHT_CHECK(e && l && ix && src && e->dtype == DType::f32 && l->dtype == DType::i64 && ix->dtype == DType::i64 &&
                     e->shape.size() == 2 && l->shape.size() == 1 && l->shape[0] == e->shape[0] &&
                     ix->shape == l->shape && src->dtype == DType::u8,
                 who, path.string(),
                 ": expected 'embeddings' f32 [N, D], 'labels' i64 [N], 'indices' i64 [N] and 'sources' u8 "
                 "(re-run `embed`)");
  LoadedEmbeddings out;
  out.emb = arclight::empty({e->shape[0], e->shape[1]});
  std::memcpy(out.emb.raw_data(), e->data.data(), e->data.size());
  out.labels.resize(static_cast<std::size_t>(l->shape[0]));
  std::memcpy(out.labels.data(), l->data.data(), l->data.size());
  out.indices.resize(out.labels.size());
  std::memcpy(out.indices.data(), ix->data.data(), ix->data.size());
  std::string joined(reinterpret_cast<const char*>(src->data.data()), src->data.size());
  for (std::size_t p = 0; p < joined.size();) {
    const auto q = joined.find('\n', p);
    out.sources.push_back(joined.substr(p, q - p));
    p = q == std::string::npos ? joined.size() : q + 1;
  }
  ARCLIGHT_CHECK(out.sources.size() == out.labels.size(), who, path.string(), ": ", out.sources.size(),
                 " source names for ", out.labels.size(), " rows");
  if (const auto* cc = f.find("class_cos")) {
    ARCLIGHT_CHECK(cc->dtype == DType::f32 && cc->shape.size() == 2 && cc->shape[0] == e->shape[0], who,
                   path.string(), ": 'class_cos' must be f32 [N, C]");
    out.class_cos = arclight::empty({cc->shape[0], cc->shape[1]});
    std::memcpy(out.class_cos.raw_data(), cc->data.data(), cc->data.size());
  }
  const auto& meta = f.metadata();
  if (auto it = meta.find("class_names"); it != meta.end()) out.class_names = json::parse(it->second).get<std::vector<std::string>>();
  if (auto it = meta.find("runs"); it != meta.end()) out.runs = json::parse(it->second).get<std::vector<std::string>>();
  if (auto it = meta.find("n_models"); it != meta.end()) out.n_models = std::stoul(it->second);
  return out;
}

// METHOD.md §9's combined rule: for each candidate class, Σ over the top-5 neighbours of that class of
// sim^9 × (classifier cosine of that class)^10; the argmax is the prediction.
inline std::vector<std::int64_t> combined_predictions(const arclight::retrieval::FlatIndex& index, const Tensor& queries,
                                                      const Tensor& class_cos, std::int64_t num_classes) {
  auto r = index.search(queries, std::min<std::int64_t>(5, index.size()));
  const auto k = r.indices.shape()[1];
  const float* s = r.scores.data_ptr<float>();
  const std::int64_t* ix = r.indices.data_ptr<std::int64_t>();
  Tensor cc = ops::contiguous(class_cos);
  const float* cp = cc.data_ptr<float>();
  std::vector<std::int64_t> out(static_cast<std::size_t>(queries.shape()[0]));
  for (std::int64_t q = 0; q < queries.shape()[0]; ++q) {
    std::vector<double> score(static_cast<std::size_t>(num_classes), 0.0);
    for (std::int64_t j = 0; j < k; ++j) {
      const auto cls = index.labels()[static_cast<std::size_t>(ix[q * k + j])];
      const double sim = std::max(0.0f, s[q * k + j]);
      const double ccos = std::max(0.0f, cp[q * num_classes + cls]);
      score[static_cast<std::size_t>(cls)] += std::pow(sim, 9) * std::pow(ccos, 10);
    }
    // The rule needs a positive classifier cosine for some neighbour's class; when every one is <= 0 (all
    // scores 0: no signal), the nearest neighbour's class is the prediction.
    const auto best = std::max_element(score.begin(), score.end());
    out[static_cast<std::size_t>(q)] =
        *best > 0.0 ? best - score.begin() : index.labels()[static_cast<std::size_t>(ix[q * k])];
  }
  return out;
}

}  // namespace retrieval_app
