// The product-retrieval application (METHOD.md): train an ArcFace embedding model, embed a gallery and
// queries, evaluate retrieval, predict, and write a report. Everything a run produces lives in its run
// folder: config.json, train_log.jsonl, checkpoints/ (crash-safe, `latest` + `best`), gallery/queries
// embeddings (safetensors), metrics.json and report.html.
//
// The model is built by build_model() from a name; the embedding network is backbone → 512-d embedding
// with an ArcMargin head trained by the fused ArcMargin → label-smoothing cross-entropy loss.
#pragma once

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
#include <string>
#include <unistd.h>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/data/data.hpp"
#include "arclight/io/checkpoint.hpp"
#include "arclight/io/safetensors.hpp"
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

// ---- configuration ----------------------------------------------------------------------------------

struct Config {
  std::string data = "fashion-mnist";  // fashion-mnist | folder:PATH | csv:PATH
  std::string model = "mlp";
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
  std::uint64_t seed = 1;
  int threads = 0;  // 0 = all cores
  int workers = 2;
  double time_budget_s = 0;  // 0 = none: stop training (after the current step) when exceeded
  bool tta_flip = false;

  json to_json() const {
    return json{{"data", data}, {"model", model}, {"embedding_dim", embedding_dim}, {"hidden", hidden},
                {"epochs", epochs}, {"batch", batch}, {"optimizer", optimizer}, {"lr", lr},
                {"weight_decay", weight_decay}, {"warmup_epochs", warmup_epochs}, {"lr_min", lr_min},
                {"scale", scale}, {"margin", margin}, {"margin_warmup_epochs", margin_warmup_epochs},
                {"label_smoothing", label_smoothing}, {"augment", augment}, {"limit_train", limit_train},
                {"limit_test", limit_test}, {"seed", seed}, {"threads", threads}, {"workers", workers},
                {"time_budget_s", time_budget_s}, {"tta_flip", tta_flip}};
  }
  static Config from_json(const json& j) {
    Config c;
    auto get = [&](const char* k, auto& v) {
      if (j.contains(k)) j.at(k).get_to(v);
    };
    get("data", c.data), get("model", c.model), get("embedding_dim", c.embedding_dim), get("hidden", c.hidden);
    get("epochs", c.epochs), get("batch", c.batch), get("optimizer", c.optimizer), get("lr", c.lr);
    get("weight_decay", c.weight_decay), get("warmup_epochs", c.warmup_epochs), get("lr_min", c.lr_min);
    get("scale", c.scale), get("margin", c.margin), get("margin_warmup_epochs", c.margin_warmup_epochs);
    get("label_smoothing", c.label_smoothing), get("augment", c.augment), get("limit_train", c.limit_train);
    get("limit_test", c.limit_test), get("seed", c.seed), get("threads", c.threads), get("workers", c.workers);
    get("time_budget_s", c.time_budget_s), get("tta_flip", c.tta_flip);
    return c;
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
    ARCLIGHT_CHECK(model == "cnn" || model == "mlp", w, "unknown model '", model, "', expected cnn or mlp");
  }
};

// ---- data -------------------------------------------------------------------------------------------

struct DataSplits {
  std::shared_ptr<const arclight::data::Dataset> train, test;
  std::vector<std::string> class_names;
};

inline std::shared_ptr<const arclight::data::Dataset> limit(std::shared_ptr<const arclight::data::Dataset> ds,
                                                            std::int64_t n, std::uint64_t seed) {
  if (n <= 0 || n >= static_cast<std::int64_t>(ds->size())) return ds;
  // a stratified-by-construction subset: the first n of a seeded shuffle
  auto order = arclight::data::epoch_order(ds->size(), true, seed, 0);
  order.resize(static_cast<std::size_t>(n));
  std::sort(order.begin(), order.end());
  return std::make_shared<arclight::data::SubsetDataset>(ds, order);
}

inline DataSplits load_data(const Config& c) {
  DataSplits d;
  if (c.data == "fashion-mnist") {
    const char* dir = arclight::data::fashion_mnist_default_dir();
    ARCLIGHT_CHECK(fs::exists(dir), "data", "Fashion-MNIST not found at ", dir,
                   "; install Debian's dataset-fashion-mnist (scripts/setup.sh does)");
    auto train = std::make_shared<arclight::data::InMemoryDataset>(arclight::data::load_fashion_mnist(dir, "train"));
    auto test = std::make_shared<arclight::data::InMemoryDataset>(arclight::data::load_fashion_mnist(dir, "test"));
    d.class_names = train->class_names();
    d.train = limit(train, c.limit_train, c.seed);
    d.test = limit(test, c.limit_test, c.seed + 1);
    return d;
  }
  arclight::fail("data", "unknown data source '", c.data, "'; this build supports: fashion-mnist");
}

// ---- model ------------------------------------------------------------------------------------------

// Backbone → embedding, plus the ArcMargin head. Models:
//   cnn: a small conv trunk sized for 28–32 px images (conv 3×3 + BN + SiLU blocks, 32 → 64 → 128 channels,
//        two stride-2 stages) → GeM → Linear(128 → D) → BatchNorm1d — METHOD.md's pooling and neck on a
//        trunk that fits a CPU budget;
//   mlp: flatten → Linear(→ hidden) → ReLU → Linear(→ D), a fast baseline.
class EmbeddingModel : public nn::Module {
 public:
  EmbeddingModel(const Config& c, std::int64_t in_channels, std::int64_t in_features, std::int64_t num_classes)
      : Module("EmbeddingModel"), cfg_(c) {
    arclight::Generator gen(c.seed);
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
    } else if (c.model == "mlp") {
      fc1_ = register_module("fc1", std::make_shared<nn::Linear>(in_features, c.hidden, true, gen));
      fc_ = register_module("fc2", std::make_shared<nn::Linear>(c.hidden, c.embedding_dim, true, gen));
    } else {
      arclight::fail("model", "unknown model '", c.model, "'; available: cnn, mlp");
    }
    arclight::ops::ArcMarginConfig ac;
    ac.scale = c.scale;
    ac.margin = c.margin;
    head_ = register_module("head", std::make_shared<nn::ArcMargin>(c.embedding_dim, num_classes, ac, gen));
  }
  // x [N, C, H, W] → raw (unnormalised) embedding [N, D].
  Tensor embed_raw(const Tensor& x) {
    if (trunk_) return bn_->forward(fc_->forward(gem_->forward(trunk_->forward(x))));
    Tensor h = ops::flatten(x, 1);
    h = ops::clamp_min(fc1_->forward(h), 0.0);
    return fc_->forward(h);
  }
  Tensor forward(const Tensor& x) override { return embed_raw(x); }
  nn::ArcMargin& head() { return *head_; }

 private:
  Config cfg_;
  std::shared_ptr<nn::Sequential> trunk_;
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

// ---- training ---------------------------------------------------------------------------------------

inline std::atomic<bool>& interrupted() {
  static std::atomic<bool> flag{false};
  return flag;
}

inline Tensor batch_images(const arclight::data::Batch& b) {
  return arclight::from_vector(b.data, arclight::Shape(b.shape.begin(), b.shape.end()));
}

struct TrainSummary {
  std::int64_t steps = 0;
  double seconds = 0;
  double images_per_s = 0;
  double final_loss = 0;
  std::int64_t epochs_done = 0;
};

inline void log_line(std::ostream& os, const std::string& line) {
  os << line << std::endl;
}

inline TrainSummary train(const Config& c, const fs::path& run, const DataSplits& data, std::ostream& log) {
  c.validate();
  fs::create_directories(run);
  arclight::io::write_file_atomic(run / "config.json", c.to_json().dump(2));
  if (c.threads > 0) arclight::set_num_threads(c.threads);
  const auto first = data.train->load(0);
  const std::int64_t in_features = static_cast<std::int64_t>(first.height) * first.width * first.channels;
  EmbeddingModel model(c, first.channels, in_features, static_cast<std::int64_t>(data.class_names.size()));
  std::unique_ptr<arclight::optim::Optimizer> opt;
  auto groups = arclight::optim::param_groups(model, c.weight_decay);
  if (c.optimizer == "adamw") {
    arclight::optim::AdamWOptions o;
    o.lr = c.lr;
    o.weight_decay = c.weight_decay;
    opt = std::make_unique<arclight::optim::AdamW>(groups, o);
  } else {
    arclight::optim::SgdOptions o;
    o.lr = c.lr;
    o.momentum = 0.9;
    o.nesterov = true;
    o.weight_decay = c.weight_decay;
    opt = std::make_unique<arclight::optim::SGD>(groups, o);
  }
  opt->add_post_step_hook([&model] { nn::clamp_gem_p_(model); });  // keep GeM's p >= 1 (projected step)
  arclight::data::LoaderOptions lo;
  lo.batch_size = static_cast<std::size_t>(c.batch);
  lo.num_workers = c.workers;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.seed = c.seed;
  arclight::data::DataLoader loader(data.train, arclight::data::parse_pipeline(c.augment), lo);
  const std::int64_t steps_per_epoch = static_cast<std::int64_t>(data.train->size()) / c.batch;
  const std::int64_t total_steps = steps_per_epoch * c.epochs;
  auto sched_cfg = arclight::optim::cosine_schedule(c.lr, static_cast<double>(total_steps),
                                                    c.warmup_epochs * static_cast<double>(steps_per_epoch), c.lr * 0.01,
                                                    c.lr_min);
  arclight::optim::Scheduler sched(*opt, sched_cfg, arclight::optim::ScheduleUnit::kStep);
  arclight::ops::CrossEntropyConfig ce;
  ce.label_smoothing = c.label_smoothing;

  std::ofstream train_log(run / "train_log.jsonl");
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  TrainSummary s;
  bool stop = false;
  log_line(log, arclight::str_cat("train: ", data.train->size(), " images, ", steps_per_epoch, " steps/epoch × ",
                                  c.epochs, " epochs, model ", c.model, " (", model.num_parameters(), " parameters), ",
                                  arclight::backend_info()));
  for (std::int64_t epoch = 0; epoch < c.epochs && !stop; ++epoch) {
    model.train();
    loader.start_epoch(static_cast<std::uint64_t>(epoch));
    double loss_sum = 0;
    std::int64_t n_steps = 0, n_images = 0;
    const double epoch_t0 = elapsed();
    while (auto b = loader.next()) {
      const double progress = static_cast<double>(s.steps) / std::max<double>(1.0, static_cast<double>(steps_per_epoch));
      model.head().set_margin_scale(c.margin_warmup_epochs > 0 ? std::min(1.0, progress / c.margin_warmup_epochs) : 1.0);
      Tensor x = batch_images(*b);
      Tensor y = arclight::from_vector(b->labels, {static_cast<std::int64_t>(b->labels.size())});
      Tensor loss = model.head().loss(model.embed_raw(x), y, ce);
      loss.backward();
      opt->step();
      opt->zero_grad();
      ++s.steps;
      sched.step_update(s.steps);
      loss_sum += loss.item();
      ++n_steps;
      n_images += static_cast<std::int64_t>(b->size());
      if ((c.time_budget_s > 0 && elapsed() > c.time_budget_s) || interrupted()) {
        stop = true;
        break;
      }
    }
    loader.stop();
    const double secs = elapsed() - epoch_t0;
    s.final_loss = loss_sum / std::max<std::int64_t>(1, n_steps);
    ++s.epochs_done;
    const json entry{{"epoch", epoch + 1}, {"steps", s.steps}, {"loss", s.final_loss}, {"lr", opt->lr()},
                     {"images_per_s", n_images / std::max(secs, 1e-9)}, {"seconds", elapsed()}};
    train_log << entry.dump() << "\n" << std::flush;
    const double eta = secs * static_cast<double>(c.epochs - epoch - 1);
    log_line(log, arclight::str_cat("epoch ", epoch + 1, "/", c.epochs, "  loss ", s.final_loss, "  lr ", opt->lr(),
                                    "  ", static_cast<std::int64_t>(n_images / std::max(secs, 1e-9)), " img/s  ETA ",
                                    static_cast<std::int64_t>(eta), " s"));
    arclight::io::save_checkpoint(run / "checkpoints", arclight::str_cat("epoch-", epoch + 1),
                                  {{"model.safetensors", state_to_bytes(model.state_dict())},
                                   {"state.json", [&] {
                                      const std::string j = json{{"epoch", epoch + 1}, {"step", s.steps},
                                                                 {"format_version", 1}}.dump();
                                      return std::vector<std::uint8_t>(j.begin(), j.end());
                                    }()}});
  }
  s.seconds = elapsed();
  s.images_per_s = static_cast<double>(s.steps * c.batch) / std::max(s.seconds, 1e-9);
  return s;
}

// ---- embedding and evaluation ---------------------------------------------------------------------------

struct Embeddings {
  Tensor emb;  // [N, D] L2-normalised
  std::vector<std::int64_t> labels;
};

inline Embeddings embed_dataset(EmbeddingModel& model, const arclight::data::Dataset& ds, const Config& c) {
  arclight::NoGradGuard ng;
  model.eval();
  arclight::data::LoaderOptions lo;
  lo.batch_size = 512;
  lo.num_workers = c.workers;
  lo.shuffle = false;
  arclight::data::DataLoader loader(std::shared_ptr<const arclight::data::Dataset>(&ds, [](auto*) {}),
                                    arclight::data::Pipeline(), lo);
  loader.start_epoch(0);
  std::vector<Tensor> parts;
  Embeddings out;
  while (auto b = loader.next()) {
    Tensor x = batch_images(*b);
    Tensor e = ops::l2_normalize(model.embed_raw(x), 1);
    if (c.tta_flip) {
      // horizontal flip: reverse the last dim through index_select
      const std::int64_t w = x.shape()[3];
      std::vector<std::int64_t> rev(static_cast<std::size_t>(w));
      for (std::int64_t i = 0; i < w; ++i) rev[static_cast<std::size_t>(i)] = w - 1 - i;
      const Tensor flipped = ops::index_select(x, 3, arclight::from_vector(rev, {w}));
      e = ops::l2_normalize(ops::add(e, ops::l2_normalize(model.embed_raw(flipped), 1)), 1);
    }
    parts.push_back(e);
    out.labels.insert(out.labels.end(), b->labels.begin(), b->labels.end());
  }
  loader.stop();
  out.emb = ops::cat(parts, 0);
  return out;
}

inline void save_embeddings(const fs::path& path, const Embeddings& e) {
  Tensor lab = arclight::from_vector(e.labels, {static_cast<std::int64_t>(e.labels.size())});
  arclight::io::write_file_atomic(path, state_to_bytes({{"embeddings", e.emb}, {"labels", lab}}));
}

inline Embeddings load_embeddings(const fs::path& path) {
  ARCLIGHT_CHECK(fs::exists(path), "eval", "no embeddings at ", path.string(), "; run `embed` first");
  auto f = arclight::io::SafetensorsFile::open(path);
  const auto* e = f.find("embeddings");
  const auto* l = f.find("labels");
  ARCLIGHT_CHECK(e && l && e->dtype == DType::f32 && l->dtype == DType::i64 && e->shape.size() == 2 &&
                     l->shape.size() == 1 && l->shape[0] == e->shape[0],
                 "eval", path.string(), ": expected 'embeddings' f32 [N, D] and 'labels' i64 [N]");
  Embeddings out;
  out.emb = arclight::empty({e->shape[0], e->shape[1]});
  std::memcpy(out.emb.raw_data(), e->data.data(), e->data.size());
  out.labels.resize(static_cast<std::size_t>(l->shape[0]));
  std::memcpy(out.labels.data(), l->data.data(), l->data.size());
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
    out[static_cast<std::size_t>(q)] = std::max_element(score.begin(), score.end()) - score.begin();
  }
  return out;
}

}  // namespace retrieval_app
