// The ArcFace geometry experiment: trains a small MLP trunk on Fashion-MNIST down to a 2-D or 3-D embedding
// under plain softmax, CosFace and ArcFace (several margins), measures the angles the heads act on (θ_y to
// the own class centre, the angle to the nearest other centre) after every epoch, retrieves the test set
// against the training subset by cosine nearest neighbour, and renders everything into one self-contained
// HTML page (inline SVG, no script) plus a metrics JSON holding exactly the plotted numbers.
// main.cpp is the command line; tests/geometry runs run_cli() with --quick and checks the trend it plots.
// docs/ARCFACE.md explains the figures and links the kernel lines.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "arclight/arclight.hpp"
#include "arclight/data/idx.hpp"
#include "arclight/nn/activation.hpp"
#include "arclight/nn/arc_margin.hpp"
#include "arclight/nn/batch_norm.hpp"
#include "arclight/nn/linear.hpp"
#include "arclight/nn/module.hpp"
#include "arclight/optim/adamw.hpp"
#include "arclight/optim/schedule.hpp"

namespace arclight::examples::arcface_geometry {

constexpr double kPi = 3.14159265358979323846;
constexpr double kDeg = 180.0 / kPi;

// ---- configuration -------------------------------------------------------------------------------

enum class HeadKind { kSoftmax, kCosFace, kArcFace };

inline const char* head_kind_name(HeadKind k) {
  switch (k) {
    case HeadKind::kSoftmax:
      return "softmax";
    case HeadKind::kCosFace:
      return "cosface";
    case HeadKind::kArcFace:
      return "arcface";
  }
  return "unknown";
}

struct Setting {
  HeadKind head = HeadKind::kSoftmax;
  double margin = 0.0;  // angular (ArcFace, radians) or cosine (CosFace); unused for softmax
  std::string label() const {
    char buf[64];
    if (head == HeadKind::kSoftmax) return "softmax";
    std::snprintf(buf, sizeof buf, "%s m=%.2g", head_kind_name(head), margin);
    return buf;
  }
  std::string id() const {
    char buf[64];
    if (head == HeadKind::kSoftmax) return "softmax";
    std::snprintf(buf, sizeof buf, "%s_m%03d", head_kind_name(head), int(std::lround(margin * 100)));
    return buf;
  }
};

struct SweepConfig {
  std::filesystem::path data_dir = data::fashion_mnist_default_dir();
  std::int64_t train_per_class = 2000;  // stratified subsample of the 60k training images (gallery too)
  std::int64_t eval_per_class = 500;    // stratified subsample of the 10k test images (queries, statistics)
  int epochs = 8;
  std::int64_t batch = 128;
  std::int64_t hidden = 128;
  double lr = 1e-2;            // AdamW, cosine per step with 1 epoch of linear warm-up
  double weight_decay = 1e-4;
  double scale = 16.0;         // s of CosFace / ArcFace (10 classes need s >= ~4 to reach p = 0.9, see docs)
  double cosface_margin = 0.2;
  std::vector<double> arc_margins{0.1, 0.3, 0.5};
  std::vector<int> dims{2, 3};
  double margin_warmup_epochs = 1.0;  // margin_scale ramps 0 → 1 linearly over this many epochs
  std::int64_t scatter_points = 1500; // test points drawn per scatter figure
  std::uint64_t seed = 7;
  bool quick = false;
  // One thread by default: every GEMM here is tiny (128×784×128), and on a shared 2-core machine the
  // OpenMP/OpenBLAS workers' spin-waits cost more than the second core gives (measured: one epoch of all ten
  // runs took 4.4 s with 1 thread or OMP_WAIT_POLICY=passive, about 30 s with 2 spinning threads).
  int threads = 1;

  std::vector<Setting> settings() const {
    std::vector<Setting> s{{HeadKind::kSoftmax, 0.0}, {HeadKind::kCosFace, cosface_margin}};
    for (double m : arc_margins) s.push_back({HeadKind::kArcFace, m});
    return s;
  }
};

// The --quick sweep used by the e2e test: same settings and dims, fewer images and epochs.
inline SweepConfig quick_config() {
  SweepConfig c;
  c.quick = true;
  c.train_per_class = 600;
  c.eval_per_class = 300;
  c.epochs = 5;
  c.scatter_points = 600;
  return c;
}

// ---- data ----------------------------------------------------------------------------------------

// Images as normalised floats [n, 784] ((x/255 − 0.2860)/0.3530, Fashion-MNIST's mean/std) and labels.
struct Split {
  std::vector<float> x;
  std::vector<std::int64_t> y;
  std::int64_t n = 0;
  static constexpr std::int64_t kDim = 28 * 28;
};

// A stratified subsample: per_class images of each class, chosen by a seeded shuffle, in shuffled order.
inline Split load_subsample(const std::filesystem::path& dir, const char* split, std::int64_t per_class,
                            std::uint64_t seed) {
  const data::InMemoryDataset ds = data::load_fashion_mnist(dir, split);
  const std::int64_t classes = std::int64_t(ds.num_classes());
  std::vector<std::size_t> order(ds.size());
  std::iota(order.begin(), order.end(), std::size_t(0));
  RandomStream rs(seed, 11);
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[std::size_t(rs.randint(0, std::int64_t(i) - 1))]);
  std::vector<std::int64_t> taken(std::size_t(classes), 0);
  Split out;
  for (std::size_t idx : order) {
    const std::int64_t c = ds.label(idx);
    if (taken[std::size_t(c)] >= per_class) continue;
    ++taken[std::size_t(c)];
    const data::Image img = ds.load(idx);
    ARCLIGHT_CHECK(img.pixels.size() == std::size_t(Split::kDim), "arcface_geometry", "expected 28x28 grey images, got ",
                   img.height, "x", img.width, "x", img.channels);
    for (std::uint8_t p : img.pixels) out.x.push_back(float((double(p) / 255.0 - 0.2860) / 0.3530));
    out.y.push_back(c);
  }
  out.n = std::int64_t(out.y.size());
  ARCLIGHT_CHECK(out.n == per_class * classes, "arcface_geometry", "split '", split, "' has fewer than ", per_class,
                 " images in some class");
  return out;
}

// ---- the model -----------------------------------------------------------------------------------

// Trunk: Linear(784→h) → BN → ReLU → Linear(h→h) → BN → ReLU → Linear(h→d). Head: ArcMargin (CosFace/ArcFace), or
// for softmax a bias-free Linear(d→10), so that in every setting the class decision is a comparison of
// angles to the rows of a [10, d] matrix (softmax additionally lets norms scale the logits).
struct Model {
  std::shared_ptr<nn::Sequential> trunk;
  std::shared_ptr<nn::ArcMargin> arc;     // CosFace / ArcFace
  std::shared_ptr<nn::Linear> classifier; // softmax

  Model(const Setting& st, const SweepConfig& cfg, int dim, Generator& gen) {
    trunk = std::make_shared<nn::Sequential>();
    trunk->push_back(std::make_shared<nn::Linear>(Split::kDim, cfg.hidden, true, gen));
    trunk->push_back(std::make_shared<nn::BatchNorm1d>(cfg.hidden));
    trunk->push_back(std::make_shared<nn::ReLU>());
    trunk->push_back(std::make_shared<nn::Linear>(cfg.hidden, cfg.hidden, true, gen));
    trunk->push_back(std::make_shared<nn::BatchNorm1d>(cfg.hidden));
    trunk->push_back(std::make_shared<nn::ReLU>());
    trunk->push_back(std::make_shared<nn::Linear>(cfg.hidden, dim, true, gen));
    if (st.head == HeadKind::kSoftmax) {
      classifier = std::make_shared<nn::Linear>(dim, 10, false, gen);
    } else {
      ops::ArcMarginConfig ac;
      ac.kind = st.head == HeadKind::kCosFace ? ops::MarginKind::kCosFace : ops::MarginKind::kArcFace;
      ac.margin = st.margin;
      ac.scale = cfg.scale;
      arc = std::make_shared<nn::ArcMargin>(dim, 10, ac, gen);
    }
  }
  std::vector<Tensor> parameters() const {
    std::vector<Tensor> p = trunk->parameters();
    for (const Tensor& t : (arc ? arc->parameters() : classifier->parameters())) p.push_back(t);
    return p;
  }
  // The class directions [10, d] (not normalised).
  std::vector<float> centres() const {
    return (arc ? arc->weight() : classifier->weight()).to_vector<float>();
  }
};

// ---- statistics ----------------------------------------------------------------------------------

constexpr int kHistBins = 40;        // 3° bins over [0°, 120°); larger angles land in the last bin
constexpr double kHistMaxDeg = 120.0;

struct EpochStats {
  int epoch = 0;               // 1-based
  double train_loss = 0.0;     // mean loss over the epoch's steps
  double margin_scale = 0.0;   // ramp factor at the epoch's end
  double mean_theta_y = 0.0;   // degrees, mean over the eval set of ∠(x̂, ŵ_y)
  double median_theta_y = 0.0;
  double mean_nearest_other = 0.0;  // degrees, mean over the eval set of min_{j≠y} ∠(x̂, ŵ_j)
  double median_nearest_other = 0.0;
  double mean_gap = 0.0;               // degrees, mean over the eval set of (nearest other − θ_y)
  double mean_theta_class_mean = 0.0;  // degrees, ∠(x̂, mean direction of its class's eval embeddings)
  double class_mean_nn_angle = 0.0;    // degrees, mean over classes of the angle to the nearest other class mean
  double min_centre_angle = 0.0;       // degrees, min_{j≠k} ∠(ŵ_j, ŵ_k)
  double mean_nearest_centre_angle = 0.0;  // degrees, mean_j min_{k≠j} ∠(ŵ_j, ŵ_k)
  double centre_top1 = 0.0;            // argmax_j cos(x̂, ŵ_j) == y on the eval set
  std::vector<int> hist_theta_y, hist_nearest_other;
};

struct RunResult {
  Setting setting;
  int dim = 2;
  std::vector<EpochStats> epochs;
  double knn_top1 = 0.0;      // eval set queried against the training subset, cosine, 1-NN
  double train_seconds = 0.0;
  std::vector<float> centres;         // [10, dim], normalised
  std::vector<float> points;          // [scatter, dim], normalised eval embeddings drawn in the figure
  std::vector<std::int64_t> point_labels;
};

inline void normalise_rows(std::vector<float>& v, int dim) {
  for (std::size_t i = 0; i + std::size_t(dim) <= v.size(); i += std::size_t(dim)) {
    double ss = 0.0;
    for (int d = 0; d < dim; ++d) ss += double(v[i + d]) * v[i + d];
    const double inv = 1.0 / std::max(std::sqrt(ss), 1e-12);
    for (int d = 0; d < dim; ++d) v[i + d] = float(v[i + d] * inv);
  }
}

// Angle in degrees between unit vectors, acos clamped to [−1, 1] (rounding can leave |dot| a hair above 1).
inline double angle_deg(const float* a, const float* b, int dim) {
  double dot = 0.0;
  for (int d = 0; d < dim; ++d) dot += double(a[d]) * b[d];
  return std::acos(std::clamp(dot, -1.0, 1.0)) * kDeg;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  const std::size_t h = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(h), v.end());
  double m = v[h];
  if (v.size() % 2 == 0) m = 0.5 * (m + *std::max_element(v.begin(), v.begin() + std::ptrdiff_t(h)));
  return m;
}

inline int hist_bin(double deg) {
  const int b = int(deg / (kHistMaxDeg / kHistBins));
  return std::clamp(b, 0, kHistBins - 1);
}

// Statistics of normalised eval embeddings emb [n, dim] against normalised centres [10, dim].
inline EpochStats geometry_stats(const std::vector<float>& emb, const std::vector<std::int64_t>& y,
                                 const std::vector<float>& centres, int dim) {
  const std::int64_t n = std::int64_t(y.size()), k = std::int64_t(centres.size()) / dim;
  EpochStats s;
  s.hist_theta_y.assign(kHistBins, 0);
  s.hist_nearest_other.assign(kHistBins, 0);
  std::vector<double> ty(static_cast<std::size_t>(n)), no(static_cast<std::size_t>(n));
  std::vector<double> class_mean(std::size_t(k * dim), 0.0);
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float* e = emb.data() + i * dim;
    double best_other = 1e9, best_any = 1e9;
    std::int64_t arg = -1;
    for (std::int64_t j = 0; j < k; ++j) {
      const double a = angle_deg(e, centres.data() + j * dim, dim);
      if (j == y[std::size_t(i)]) ty[std::size_t(i)] = a;
      else best_other = std::min(best_other, a);
      if (a < best_any) best_any = a, arg = j;
    }
    no[std::size_t(i)] = best_other;
    correct += arg == y[std::size_t(i)];
    ++s.hist_theta_y[std::size_t(hist_bin(ty[std::size_t(i)]))];
    ++s.hist_nearest_other[std::size_t(hist_bin(best_other))];
    for (int d = 0; d < dim; ++d) class_mean[std::size_t(y[std::size_t(i)] * dim + d)] += e[d];
  }
  std::vector<float> cm(class_mean.begin(), class_mean.end());
  normalise_rows(cm, dim);
  double tcm = 0.0;
  for (std::int64_t i = 0; i < n; ++i) tcm += angle_deg(emb.data() + i * dim, cm.data() + y[std::size_t(i)] * dim, dim);
  s.mean_theta_y = std::accumulate(ty.begin(), ty.end(), 0.0) / double(n);
  s.mean_nearest_other = std::accumulate(no.begin(), no.end(), 0.0) / double(n);
  s.median_theta_y = median(ty);
  s.median_nearest_other = median(no);
  s.mean_theta_class_mean = tcm / double(n);
  s.mean_gap = s.mean_nearest_other - s.mean_theta_y;
  double cm_nn = 0.0;
  for (std::int64_t j = 0; j < k; ++j) {
    double nn = 1e9;
    for (std::int64_t q = 0; q < k; ++q)
      if (q != j) nn = std::min(nn, angle_deg(cm.data() + j * dim, cm.data() + q * dim, dim));
    cm_nn += nn;
  }
  s.class_mean_nn_angle = cm_nn / double(k);
  s.centre_top1 = double(correct) / double(n);
  double min_c = 1e9, sum_nn = 0.0;
  for (std::int64_t j = 0; j < k; ++j) {
    double nn = 1e9;
    for (std::int64_t q = 0; q < k; ++q)
      if (q != j) nn = std::min(nn, angle_deg(centres.data() + j * dim, centres.data() + q * dim, dim));
    min_c = std::min(min_c, nn);
    sum_nn += nn;
  }
  s.min_centre_angle = min_c;
  s.mean_nearest_centre_angle = sum_nn / double(k);
  return s;
}

// Fraction of queries whose cosine nearest neighbour in the gallery has the query's label.
inline double knn_top1(const std::vector<float>& gallery, const std::vector<std::int64_t>& gy,
                       const std::vector<float>& query, const std::vector<std::int64_t>& qy, int dim) {
  const std::int64_t ng = std::int64_t(gy.size()), nq = std::int64_t(qy.size());
  std::int64_t correct = 0;
#pragma omp parallel for reduction(+ : correct) schedule(static)
  for (std::int64_t i = 0; i < nq; ++i) {
    const float* q = query.data() + i * dim;
    float best = -2.f;
    std::int64_t arg = 0;
    for (std::int64_t j = 0; j < ng; ++j) {
      const float* g = gallery.data() + j * dim;
      float dot = 0.f;
      for (int d = 0; d < dim; ++d) dot += q[d] * g[d];
      if (dot > best) best = dot, arg = j;
    }
    correct += gy[std::size_t(arg)] == qy[std::size_t(i)];
  }
  return double(correct) / double(nq);
}

// Normalised embeddings of a whole split (no graph).
inline std::vector<float> embed(nn::Module& trunk, const Split& s, int dim) {
  NoGradGuard no_grad;
  std::vector<float> out;
  out.reserve(std::size_t(s.n * dim));
  const std::int64_t chunk = 2048;
  for (std::int64_t b = 0; b < s.n; b += chunk) {
    const std::int64_t m = std::min(chunk, s.n - b);
    std::vector<float> xb(s.x.begin() + b * Split::kDim, s.x.begin() + (b + m) * Split::kDim);
    const std::vector<float> e = trunk.forward(from_vector(xb, {m, Split::kDim})).to_vector<float>();
    out.insert(out.end(), e.begin(), e.end());
  }
  normalise_rows(out, dim);
  return out;
}

// ---- training ------------------------------------------------------------------------------------

// Trains one (setting, dim) run. Every run uses the same seed for initialisation and batch order, so runs
// differ only by their loss (common random numbers: the trend between margins is not seed noise).
inline RunResult train_run(const Setting& st, int dim, const SweepConfig& cfg, const Split& train, const Split& eval,
                           std::FILE* log) {
  const auto t0 = std::chrono::steady_clock::now();
  Generator gen(cfg.seed);
  Model model(st, cfg, dim, gen);
  std::vector<optim::ParamGroup> groups;
  {
    nn::Sequential all;
    all.push_back(model.trunk);
    all.push_back(model.arc ? std::static_pointer_cast<nn::Module>(model.arc)
                            : std::static_pointer_cast<nn::Module>(model.classifier));
    groups = optim::param_groups(all, cfg.weight_decay);
  }
  optim::AdamWOptions ao;
  ao.lr = cfg.lr;
  ao.weight_decay = cfg.weight_decay;
  optim::AdamW opt(groups, ao);
  const std::int64_t steps_per_epoch = (train.n + cfg.batch - 1) / cfg.batch;
  const std::int64_t total = steps_per_epoch * cfg.epochs;
  optim::Scheduler sched(opt, optim::cosine_schedule(cfg.lr, double(total), double(steps_per_epoch), cfg.lr * 0.01),
                         optim::ScheduleUnit::kStep);
  const double warm_steps = std::max(1.0, cfg.margin_warmup_epochs * double(steps_per_epoch));

  RunResult r;
  r.setting = st;
  r.dim = dim;
  RandomStream order_rng(cfg.seed, 23);
  std::vector<std::int64_t> order(std::size_t(train.n));
  std::int64_t step = 0;
  std::vector<float> xb;
  std::vector<std::int64_t> yb;
  for (int ep = 0; ep < cfg.epochs; ++ep) {
    std::iota(order.begin(), order.end(), std::int64_t(0));
    for (std::size_t i = order.size(); i > 1; --i)
      std::swap(order[i - 1], order[std::size_t(order_rng.randint(0, std::int64_t(i) - 1))]);
    double loss_sum = 0.0;
    model.trunk->train();
    for (std::int64_t b = 0; b < train.n; b += cfg.batch) {
      const std::int64_t m = std::min(cfg.batch, train.n - b);
      xb.resize(std::size_t(m * Split::kDim));
      yb.resize(std::size_t(m));
      for (std::int64_t i = 0; i < m; ++i) {
        const std::int64_t src = order[std::size_t(b + i)];
        std::copy_n(train.x.begin() + src * Split::kDim, Split::kDim, xb.begin() + i * Split::kDim);
        yb[std::size_t(i)] = train.y[std::size_t(src)];
      }
      const Tensor x = from_vector(xb, {m, Split::kDim});
      const Tensor labels = from_vector(yb, {m}, DType::i64);
      if (model.arc) model.arc->set_margin_scale(std::min(1.0, double(step) / warm_steps));
      const Tensor emb = model.trunk->forward(x);
      const Tensor loss = model.arc ? model.arc->loss(emb, labels)
                                    : ops::cross_entropy(model.classifier->forward(emb), labels);
      opt.zero_grad();
      loss.backward();
      const double lv = loss.item();
      ARCLIGHT_CHECK(std::isfinite(lv), "arcface_geometry", "non-finite loss at step ", step, " of ", st.label());
      loss_sum += lv;
      opt.step();
      ++step;
      sched.step_update(step);
    }
    model.trunk->eval();
    std::vector<float> centres = model.centres();
    normalise_rows(centres, dim);
    const std::vector<float> e = embed(*model.trunk, eval, dim);
    EpochStats s = geometry_stats(e, eval.y, centres, dim);
    s.epoch = ep + 1;
    s.train_loss = loss_sum / double(steps_per_epoch);
    s.margin_scale = model.arc ? model.arc->margin_scale() : 0.0;
    r.epochs.push_back(std::move(s));
    if (ep + 1 == cfg.epochs) {
      r.centres = centres;
      const std::vector<float> g = embed(*model.trunk, train, dim);
      r.knn_top1 = knn_top1(g, train.y, e, eval.y, dim);
      const std::int64_t np = std::min<std::int64_t>(cfg.scatter_points, eval.n);
      r.points.assign(e.begin(), e.begin() + np * dim);
      r.point_labels.assign(eval.y.begin(), eval.y.begin() + np);
    }
  }
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (log != nullptr) {
    const EpochStats& f = r.epochs.back();
    std::fprintf(log,
                 "  %-16s d=%d  loss %.3f  θ_y %.1f° (median %.1f°)  nearest other %.1f° (median %.1f°)  centre-centre "
                 "min %.1f° mean-nn %.1f°  gap %.1f°  class-mean nn %.1f°  kNN top-1 %.3f  centre top-1 %.3f  (%.1f s)\n",
                 st.label().c_str(), dim, f.train_loss, f.mean_theta_y, f.median_theta_y, f.mean_nearest_other,
                 f.median_nearest_other, f.min_centre_angle, f.mean_nearest_centre_angle, f.mean_gap, f.class_mean_nn_angle, r.knn_top1, f.centre_top1,
                 r.train_seconds);
    std::fflush(log);
  }
  return r;
}

struct SweepResult {
  SweepConfig config;
  std::vector<RunResult> runs;
  double total_seconds = 0.0;
  std::vector<std::string> class_names;
};

inline SweepResult run_sweep(const SweepConfig& cfg, std::FILE* log) {
  const auto t0 = std::chrono::steady_clock::now();
  set_num_threads(cfg.threads);
  SweepResult out;
  out.config = cfg;
  out.class_names = data::fashion_mnist_class_names();
  const Split train = load_subsample(cfg.data_dir, "train", cfg.train_per_class, cfg.seed);
  const Split eval = load_subsample(cfg.data_dir, "test", cfg.eval_per_class, cfg.seed + 1);
  if (log != nullptr)
    std::fprintf(log, "arcface-geometry: %lld train / %lld test images, %d epochs, batch %lld, s=%g (%s)\n",
                 (long long)train.n, (long long)eval.n, cfg.epochs, (long long)cfg.batch, cfg.scale,
                 backend_info().c_str());
  for (int dim : cfg.dims)
    for (const Setting& st : cfg.settings()) out.runs.push_back(train_run(st, dim, cfg, train, eval, log));
  out.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

// ---- metrics JSON --------------------------------------------------------------------------------

inline nlohmann::json to_json(const SweepResult& r) {
  using nlohmann::json;
  const SweepConfig& c = r.config;
  json j;
  j["config"] = {{"train_per_class", c.train_per_class}, {"eval_per_class", c.eval_per_class},
                 {"epochs", c.epochs}, {"batch", c.batch}, {"hidden", c.hidden}, {"lr", c.lr},
                 {"weight_decay", c.weight_decay}, {"scale", c.scale}, {"cosface_margin", c.cosface_margin},
                 {"arc_margins", c.arc_margins}, {"dims", c.dims}, {"margin_warmup_epochs", c.margin_warmup_epochs},
                 {"seed", c.seed}, {"quick", c.quick}, {"hist_bins", kHistBins}, {"hist_max_deg", kHistMaxDeg}};
  j["total_seconds"] = r.total_seconds;
  j["class_names"] = r.class_names;
  j["runs"] = json::array();
  for (const RunResult& run : r.runs) {
    json jr = {{"id", run.setting.id()}, {"label", run.setting.label()}, {"head", head_kind_name(run.setting.head)},
               {"margin", run.setting.margin}, {"dim", run.dim}, {"knn_top1", run.knn_top1},
               {"train_seconds", run.train_seconds}, {"centres", run.centres}};
    jr["epochs"] = json::array();
    for (const EpochStats& s : run.epochs)
      jr["epochs"].push_back({{"epoch", s.epoch}, {"train_loss", s.train_loss}, {"margin_scale", s.margin_scale},
                              {"mean_theta_y_deg", s.mean_theta_y}, {"median_theta_y_deg", s.median_theta_y},
                              {"mean_nearest_other_deg", s.mean_nearest_other},
                              {"median_nearest_other_deg", s.median_nearest_other},
                              {"mean_gap_deg", s.mean_gap},
                              {"mean_theta_class_mean_deg", s.mean_theta_class_mean},
                              {"class_mean_nn_angle_deg", s.class_mean_nn_angle},
                              {"min_centre_angle_deg", s.min_centre_angle},
                              {"mean_nearest_centre_angle_deg", s.mean_nearest_centre_angle},
                              {"centre_top1", s.centre_top1}, {"hist_theta_y", s.hist_theta_y},
                              {"hist_nearest_other", s.hist_nearest_other}});
    j["runs"].push_back(jr);
  }
  return j;
}

// ---- HTML / SVG ----------------------------------------------------------------------------------

// Tableau-10, the class colours.
inline const char* class_colour(std::int64_t c) {
  static const char* k[10] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                              "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  return k[std::size_t(c % 10)];
}

inline std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

inline std::string html_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    if (ch == '<') o += "&lt;";
    else if (ch == '>') o += "&gt;";
    else if (ch == '&') o += "&amp;";
    else if (ch == '"') o += "&quot;";
    else o += ch;
  }
  return o;
}

// A deterministic radial jitter in [0.86, 1] for point i, so the density along the circle is visible.
inline double jitter_radius(std::size_t i) {
  std::uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 29;
  return 1.0 - 0.14 * double(h % 10000) / 10000.0;
}

// Hammer equal-area projection of a unit 3-vector: λ = atan2(e2, e1), φ = asin(e3); x ∈ [−2√2, 2√2],
// y ∈ [−√2, √2].
inline void hammer(const float* v, double* x, double* y) {
  const double lam = std::atan2(double(v[1]), double(v[0]));
  const double phi = std::asin(std::clamp(double(v[2]), -1.0, 1.0));
  const double den = std::sqrt(1.0 + std::cos(phi) * std::cos(lam / 2));
  *x = 2.0 * std::sqrt(2.0) * std::cos(phi) * std::sin(lam / 2) / den;
  *y = std::sqrt(2.0) * std::sin(phi) / den;
}

inline std::string scatter_svg(const RunResult& r) {
  std::ostringstream o;
  const int dim = r.dim;
  if (dim == 2) {
    const double c = 150, R = 118;
    o << "<svg class=\"scatter\" xmlns=\"http://www.w3.org/2000/svg\" width=\"300\" height=\"300\" viewBox=\"0 0 300 300\" "
         "role=\"img\" aria-label=\"2-D embeddings of "
      << html_escape(r.setting.label()) << "\">";
    o << "<circle cx=\"150\" cy=\"150\" r=\"" << R << "\" fill=\"none\" stroke=\"#ccc\"/>";
    for (std::size_t i = 0; i < r.point_labels.size(); ++i) {
      const double rad = R * jitter_radius(i);
      o << "<circle cx=\"" << fmt("%.1f", c + rad * r.points[i * 2]) << "\" cy=\""
        << fmt("%.1f", c - rad * r.points[i * 2 + 1]) << "\" r=\"1.6\" fill=\"" << class_colour(r.point_labels[i])
        << "\" fill-opacity=\"0.55\"/>";
    }
    for (std::int64_t j = 0; j < 10; ++j) {
      const double x = r.centres[std::size_t(j * 2)], y = r.centres[std::size_t(j * 2 + 1)];
      o << "<line x1=\"150\" y1=\"150\" x2=\"" << fmt("%.1f", c + 1.12 * R * x) << "\" y2=\""
        << fmt("%.1f", c - 1.12 * R * y) << "\" stroke=\"" << class_colour(j) << "\" stroke-width=\"2.5\"/>";
      o << "<text x=\"" << fmt("%.1f", c + 1.2 * R * x) << "\" y=\"" << fmt("%.1f", c - 1.2 * R * y + 4)
        << "\" font-size=\"11\" text-anchor=\"middle\">" << j << "</text>";
    }
    o << "</svg>";
  } else {
    const double sx = 360 / (4 * std::sqrt(2.0)), cx = 190, cy = 100;
    o << "<svg class=\"scatter\" xmlns=\"http://www.w3.org/2000/svg\" width=\"380\" height=\"200\" viewBox=\"0 0 380 200\" "
         "role=\"img\" aria-label=\"3-D embeddings (Hammer projection) of "
      << html_escape(r.setting.label()) << "\">";
    o << "<ellipse cx=\"" << cx << "\" cy=\"" << cy << "\" rx=\"" << fmt("%.1f", 2 * std::sqrt(2.0) * sx) << "\" ry=\""
      << fmt("%.1f", std::sqrt(2.0) * sx) << "\" fill=\"none\" stroke=\"#ccc\"/>";
    for (std::size_t i = 0; i < r.point_labels.size(); ++i) {
      double x, y;
      hammer(r.points.data() + i * 3, &x, &y);
      o << "<circle cx=\"" << fmt("%.1f", cx + sx * x) << "\" cy=\"" << fmt("%.1f", cy - sx * y)
        << "\" r=\"1.5\" fill=\"" << class_colour(r.point_labels[i]) << "\" fill-opacity=\"0.55\"/>";
    }
    for (std::int64_t j = 0; j < 10; ++j) {
      double x, y;
      hammer(r.centres.data() + j * 3, &x, &y);
      const double px = cx + sx * x, py = cy - sx * y;
      o << "<rect x=\"" << fmt("%.1f", px - 5) << "\" y=\"" << fmt("%.1f", py - 5)
        << "\" width=\"10\" height=\"10\" transform=\"rotate(45 " << fmt("%.1f", px) << " " << fmt("%.1f", py)
        << ")\" fill=\"" << class_colour(j) << "\" stroke=\"#000\"/>";
      o << "<text x=\"" << fmt("%.1f", px + 8) << "\" y=\"" << fmt("%.1f", py - 6) << "\" font-size=\"10\">" << j
        << "</text>";
    }
    o << "</svg>";
  }
  return o.str();
}

// One epoch's two histograms overlaid: θ_y (blue) and the angle to the nearest other centre (orange).
inline std::string hist_svg(const EpochStats& s, int max_count) {
  std::ostringstream o;
  const double W = 280, H = 64, left = 4, bw = (W - 2 * left) / kHistBins;
  o << "<svg class=\"hist\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H + 14
    << "\" viewBox=\"0 0 " << W << " " << H + 14 << "\">";
  auto bars = [&](const std::vector<int>& h, const char* colour) {
    for (int b = 0; b < kHistBins; ++b) {
      if (h[std::size_t(b)] == 0) continue;
      const double bh = (H - 4) * double(h[std::size_t(b)]) / double(std::max(1, max_count));
      o << "<rect x=\"" << fmt("%.1f", left + b * bw) << "\" y=\"" << fmt("%.1f", H - bh) << "\" width=\""
        << fmt("%.1f", bw - 0.5) << "\" height=\"" << fmt("%.1f", bh) << "\" fill=\"" << colour
        << "\" fill-opacity=\"0.6\"/>";
    }
  };
  bars(s.hist_theta_y, "#4e79a7");
  bars(s.hist_nearest_other, "#f28e2b");
  auto mean_line = [&](double deg, const char* colour) {
    const double x = left + std::min(deg, kHistMaxDeg) / kHistMaxDeg * (W - 2 * left);
    o << "<line x1=\"" << fmt("%.1f", x) << "\" y1=\"0\" x2=\"" << fmt("%.1f", x) << "\" y2=\"" << H
      << "\" stroke=\"" << colour << "\" stroke-dasharray=\"3 2\"/>";
  };
  mean_line(s.mean_theta_y, "#1f3b5a");
  mean_line(s.mean_nearest_other, "#8a4a10");
  o << "<line x1=\"" << left << "\" y1=\"" << H << "\" x2=\"" << W - left << "\" y2=\"" << H << "\" stroke=\"#888\"/>";
  for (int t = 0; t <= 120; t += 30)
    o << "<text x=\"" << fmt("%.1f", left + t / kHistMaxDeg * (W - 2 * left)) << "\" y=\"" << H + 12
      << "\" font-size=\"9\" text-anchor=\"middle\">" << t << "°</text>";
  o << "</svg>";
  return o.str();
}

// Bars of the final mean θ_y and mean nearest-other angle for every setting of one dim.
inline std::string trend_svg(const std::vector<const RunResult*>& runs) {
  std::ostringstream o;
  const double W = 520, H = 200, base = 160, top = 12, gw = (W - 40) / double(runs.size());
  double vmax = 1.0;
  for (const RunResult* r : runs) vmax = std::max({vmax, r->epochs.back().mean_theta_y, r->epochs.back().mean_nearest_other});
  vmax = std::ceil(vmax / 10.0) * 10.0;
  o << "<svg class=\"trend\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" viewBox=\"0 0 " << W << " " << H << "\">";
  for (double t = 0; t <= vmax; t += 10) {
    const double y = base - (base - top) * t / vmax;
    o << "<line x1=\"36\" y1=\"" << fmt("%.1f", y) << "\" x2=\"" << W - 4 << "\" y2=\"" << fmt("%.1f", y)
      << "\" stroke=\"#eee\"/><text x=\"32\" y=\"" << fmt("%.1f", y + 3)
      << "\" font-size=\"9\" text-anchor=\"end\">" << t << "°</text>";
  }
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const EpochStats& s = runs[i]->epochs.back();
    const double x0 = 40 + gw * double(i);
    const double h1 = (base - top) * s.mean_theta_y / vmax, h2 = (base - top) * s.mean_nearest_other / vmax;
    o << "<rect x=\"" << fmt("%.1f", x0 + gw * 0.12) << "\" y=\"" << fmt("%.1f", base - h1) << "\" width=\""
      << fmt("%.1f", gw * 0.36) << "\" height=\"" << fmt("%.1f", h1) << "\" fill=\"#4e79a7\"/>";
    o << "<rect x=\"" << fmt("%.1f", x0 + gw * 0.52) << "\" y=\"" << fmt("%.1f", base - h2) << "\" width=\""
      << fmt("%.1f", gw * 0.36) << "\" height=\"" << fmt("%.1f", h2) << "\" fill=\"#f28e2b\"/>";
    o << "<text x=\"" << fmt("%.1f", x0 + gw * 0.5) << "\" y=\"" << base + 14
      << "\" font-size=\"10\" text-anchor=\"middle\">" << html_escape(runs[i]->setting.label()) << "</text>";
    o << "<text x=\"" << fmt("%.1f", x0 + gw * 0.5) << "\" y=\"" << base + 28
      << "\" font-size=\"9\" text-anchor=\"middle\">" << fmt("%.1f", s.mean_theta_y) << "° / "
      << fmt("%.1f", s.mean_nearest_other) << "°</text>";
  }
  o << "</svg>";
  return o.str();
}

inline std::string render_html(const SweepResult& r) {
  const SweepConfig& c = r.config;
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
       "<title>ArcFace geometry on Fashion-MNIST</title>\n<style>\n"
       "body{font-family:sans-serif;max-width:1250px;margin:1em auto;color:#222}\n"
       "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\n"
       "figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:13px}\n"
       ".legend span{display:inline-block;margin-right:12px;font-size:13px}\n"
       ".swatch{display:inline-block;width:10px;height:10px;margin-right:4px}\n"
       ".epochs{display:inline-block;vertical-align:top;margin:4px 10px}\n.epochs div{font-size:11px}\n"
       "</style>\n</head>\n<body>\n";
  o << "<h1>ArcFace geometry on Fashion-MNIST</h1>\n";
  o << "<p>An MLP trunk (784&rarr;" << c.hidden << "&rarr;ReLU&rarr;" << c.hidden << "&rarr;ReLU&rarr;d) trained on "
    << c.train_per_class * 10 << " training images (" << c.train_per_class << " per class) for " << c.epochs
    << " epochs (batch " << c.batch << ", AdamW lr " << c.lr << ", warm-up + cosine), with a d = 2 and a d = 3 "
       "embedding and five heads: plain softmax (bias-free linear classifier + cross-entropy), CosFace (m = "
    << c.cosface_margin << ") and ArcFace (m = ";
  for (std::size_t i = 0; i < c.arc_margins.size(); ++i) o << (i ? ", " : "") << c.arc_margins[i];
  o << " rad), s = " << c.scale << ", margin ramped up over the first " << c.margin_warmup_epochs
    << " epoch(s). Statistics, histograms and figures use " << c.eval_per_class * 10
    << " test images. Every run shares the seed (" << c.seed << "): same initial weights, same batch order."
    << (c.quick ? " <strong>Quick sweep (test size).</strong>" : "") << " Sweep time " << fmt("%.1f", r.total_seconds)
    << " s. See docs/ARCFACE.md for the formulas.</p>\n";
  o << "<p class=\"legend\">";
  for (std::size_t j = 0; j < r.class_names.size(); ++j)
    o << "<span><span class=\"swatch\" style=\"background:" << class_colour(std::int64_t(j)) << "\"></span>" << j << " "
      << html_escape(r.class_names[j]) << "</span>";
  o << "</p>\n";

  o << "<h2 id=\"summary\">Summary (last epoch)</h2>\n<table>\n<tr><th>setting</th><th>d</th><th>kNN top-1</th>"
       "<th>centre top-1</th><th>mean &theta;<sub>y</sub></th><th>median &theta;<sub>y</sub></th>"
       "<th>mean nearest other</th><th>min centre&ndash;centre</th><th>train loss</th><th>time</th></tr>\n";
  for (const RunResult& run : r.runs) {
    const EpochStats& s = run.epochs.back();
    o << "<tr><td style=\"text-align:left\">" << html_escape(run.setting.label()) << "</td><td>" << run.dim
      << "</td><td>" << fmt("%.3f", run.knn_top1) << "</td><td>" << fmt("%.3f", s.centre_top1) << "</td><td>"
      << fmt("%.1f&deg;", s.mean_theta_y) << "</td><td>" << fmt("%.1f&deg;", s.median_theta_y) << "</td><td>"
      << fmt("%.1f&deg;", s.mean_nearest_other) << "</td><td>" << fmt("%.1f&deg;", s.min_centre_angle) << "</td><td>"
      << fmt("%.3f", s.train_loss) << "</td><td>" << fmt("%.1f s", run.train_seconds) << "</td></tr>\n";
  }
  o << "</table>\n<p>kNN top-1: each test image takes the class of its cosine nearest neighbour among the "
       "training subset. Centre top-1: the class of the nearest class centre &wcirc;<sub>j</sub>. &theta;<sub>y</sub>: "
       "angle between the normalised embedding and its own class centre; nearest other: the smallest angle to "
       "any other class centre.</p>\n";

  for (int dim : c.dims) {
    std::vector<const RunResult*> runs;
    for (const RunResult& run : r.runs)
      if (run.dim == dim) runs.push_back(&run);
    o << "<h2 id=\"trend-d" << dim << "\">d = " << dim << ": mean &theta;<sub>y</sub> (blue) and mean angle to the "
         "nearest other centre (orange), last epoch</h2>\n"
      << trend_svg(runs) << "\n";
    o << "<h2 id=\"embeddings-d" << dim << "\">d = " << dim << ": embeddings</h2>\n<p>";
    if (dim == 2)
      o << "Normalised test embeddings on the unit circle (drawn with a radial jitter in [0.86, 1] so the density "
           "shows), coloured by class; the lines are the class-centre directions &wcirc;<sub>j</sub>, numbered by class.";
    else
      o << "Normalised test embeddings on the unit sphere, shown in the Hammer equal-area projection of the "
           "network's own coordinates (longitude atan2(e<sub>2</sub>, e<sub>1</sub>), latitude asin(e<sub>3</sub>)): "
           "areas are preserved, so cluster sizes compare fairly; diamonds are the class centres.";
    o << "</p>\n";
    for (const RunResult* run : runs)
      o << "<figure>" << scatter_svg(*run) << "<figcaption>" << html_escape(run->setting.label()) << " &mdash; kNN top-1 "
        << fmt("%.3f", run->knn_top1) << "</figcaption></figure>\n";
    o << "<h2 id=\"histograms-d" << dim << "\">d = " << dim << ": angle histograms per epoch</h2>\n"
      << "<p>Blue: &theta;<sub>y</sub>; orange: angle to the nearest other centre; dashed: their means. "
      << 120 / kHistBins << "&deg; bins over [0&deg;, 120&deg;) (larger angles in the last bin); heights share one "
         "scale per setting.</p>\n";
    for (const RunResult* run : runs) {
      int max_count = 1;
      for (const EpochStats& s : run->epochs)
        for (int b = 0; b < kHistBins; ++b)
          max_count = std::max({max_count, s.hist_theta_y[std::size_t(b)], s.hist_nearest_other[std::size_t(b)]});
      o << "<div class=\"epochs\"><strong>" << html_escape(run->setting.label()) << "</strong>\n";
      for (const EpochStats& s : run->epochs)
        o << "<div>epoch " << s.epoch << ": &theta;<sub>y</sub> " << fmt("%.1f", s.mean_theta_y) << "&deg;, other "
          << fmt("%.1f", s.mean_nearest_other) << "&deg;</div>" << hist_svg(s, max_count) << "\n";
      o << "</div>\n";
    }
  }
  o << "<p>Numbers: metrics.json next to this page.</p>\n</body>\n</html>\n";
  return o.str();
}

// Writes index.html and metrics.json into out_dir (created if needed).
inline void write_outputs(const SweepResult& r, const std::filesystem::path& out_dir) {
  std::filesystem::create_directories(out_dir);
  {
    std::ofstream f(out_dir / "metrics.json");
    ARCLIGHT_CHECK(f.good(), "arcface_geometry", "cannot write ", (out_dir / "metrics.json").string());
    f << to_json(r).dump(1) << "\n";
  }
  std::ofstream f(out_dir / "index.html");
  ARCLIGHT_CHECK(f.good(), "arcface_geometry", "cannot write ", (out_dir / "index.html").string());
  f << render_html(r);
}

// ---- command line --------------------------------------------------------------------------------

// arclight-arcface-geometry [--quick] [--out DIR] [--seed N] [--data DIR]. Returns the process exit code.
inline int run_cli(int argc, const char* const* argv, std::FILE* log = stdout) {
  std::string out = "arcface_geometry_out";
  bool quick = false;
  std::uint64_t seed = 7;
  std::string data_dir = data::fashion_mnist_default_dir();
  int epochs = 0;
  std::int64_t train_pc = 0, hidden = 0;
  double lr = 0.0, scale = 0.0;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      ARCLIGHT_CHECK(i + 1 < argc, "arclight-arcface-geometry", "option ", name, " expects a value");
      return argv[++i];
    };
    if (a == "--quick") quick = true;
    else if (a == "--out") out = value("--out");
    else if (a == "--seed") seed = std::stoull(value("--seed"));
    else if (a == "--data") data_dir = value("--data");
    else if (a == "--epochs") epochs = std::stoi(value("--epochs"));
    else if (a == "--train-per-class") train_pc = std::stoll(value("--train-per-class"));
    else if (a == "--hidden") hidden = std::stoll(value("--hidden"));
    else if (a == "--lr") lr = std::stod(value("--lr"));
    else if (a == "--scale") scale = std::stod(value("--scale"));
    else if (a == "--threads") threads = std::stoi(value("--threads"));
    else if (a == "--help" || a == "-h") {
      std::fprintf(log,
                   "usage: arclight-arcface-geometry [--quick] [--out DIR] [--seed N] [--data DIR]\n"
                   "         [--epochs N] [--train-per-class N] [--hidden N] [--lr X] [--scale S] [--threads N]\n"
                   "  trains softmax / CosFace / ArcFace (m = 0.1, 0.3, 0.5) on Fashion-MNIST with 2-D and 3-D\n"
                   "  embeddings and writes DIR/index.html (figures) and DIR/metrics.json\n");
      return 0;
    } else {
      fail("arclight-arcface-geometry", "unknown option '", a, "' (try --help)");
    }
  }
  SweepConfig cfg = quick ? quick_config() : SweepConfig{};
  cfg.seed = seed;
  cfg.data_dir = data_dir;
  if (epochs > 0) cfg.epochs = epochs;
  if (train_pc > 0) cfg.train_per_class = train_pc;
  if (hidden > 0) cfg.hidden = hidden;
  if (lr > 0) cfg.lr = lr;
  if (scale > 0) cfg.scale = scale;
  if (threads > 0) cfg.threads = threads;
  const SweepResult r = run_sweep(cfg, log);
  write_outputs(r, out);
  std::fprintf(log, "wrote %s/index.html and %s/metrics.json (%.1f s)\n", out.c_str(), out.c_str(), r.total_seconds);
  return 0;
}

}  // namespace arclight::examples::arcface_geometry
