// arclight-retrieval: the product-retrieval system's command line (train, embed, eval, report, demo,
// info). `demo` is the README's main job: train on Fashion-MNIST's 60 000 training images, embed them as the
// gallery and the 10 000 official test images as queries, evaluate, and write runs/demo/metrics.json and
// runs/demo/report.html.
#include <CLI/CLI.hpp>

#include "app.hpp"

namespace ra = retrieval_app;
using arclight::Tensor;
namespace ops = arclight::ops;

namespace {

// Rebuilds the model of a run from its config and latest checkpoint.
std::unique_ptr<ra::EmbeddingModel> load_model(const ra::fs::path& run, const ra::DataSplits& data, ra::Config& cfg) {
  const auto cfg_path = run / "config.json";
  ARCLIGHT_CHECK(ra::fs::exists(cfg_path), "load_model", "no run at ", run.string(), " (", cfg_path.string(),
                 " missing); run `train` first");
  std::ifstream in(cfg_path);
  cfg = ra::Config::from_json(ra::json::parse(in));
  const auto first = data.train->load(0);
  auto model = std::make_unique<ra::EmbeddingModel>(cfg, first.channels, std::int64_t{first.height} * first.width * first.channels,
                                                    static_cast<std::int64_t>(data.class_names.size()));
  auto ck = arclight::io::load_checkpoint(run / "checkpoints");
  ra::load_state(*model, ck.files.at("model.safetensors"), (ck.directory / "model.safetensors").string());
  return model;
}

void run_embed(const ra::fs::path& run, const ra::DataSplits& data, std::ostream& log) {
  ra::Config cfg;
  auto model = load_model(run, data, cfg);
  const auto t0 = std::chrono::steady_clock::now();
  auto gallery = ra::embed_dataset(*model, *data.train, cfg);
  auto queries = ra::embed_dataset(*model, *data.test, cfg);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ra::save_embeddings(run / "gallery.safetensors", gallery);
  ra::save_embeddings(run / "queries.safetensors", queries);
  ra::log_line(log, arclight::str_cat("embed: ", gallery.labels.size(), " gallery + ", queries.labels.size(),
                                      " query images in ", secs, " s"));
}

ra::json run_eval(const ra::fs::path& run, const ra::DataSplits& data, double train_seconds, std::ostream& log) {
  const auto t0 = std::chrono::steady_clock::now();
  ra::Config cfg;
  auto model = load_model(run, data, cfg);
  auto gallery = ra::load_embeddings(run / "gallery.safetensors");
  auto queries = ra::load_embeddings(run / "queries.safetensors");
  const auto nc = static_cast<std::int64_t>(data.class_names.size());
  arclight::retrieval::FlatIndex index(gallery.emb, gallery.labels);
  auto m = arclight::retrieval::evaluate(index, queries.emb, queries.labels, nc);
  // classifier: cosine to the ArcMargin class centres
  arclight::NoGradGuard ng;
  Tensor class_cos = model->head().cosine(queries.emb);
  auto cls_pred = ops::argmax(class_cos, 1).to_vector<std::int64_t>();
  auto comb = ra::combined_predictions(index, queries.emb, class_cos, nc);
  double cls_hits = 0, comb_hits = 0;
  for (std::size_t i = 0; i < queries.labels.size(); ++i) {
    cls_hits += cls_pred[i] == queries.labels[i];
    comb_hits += comb[i] == queries.labels[i];
  }
  const double nq = static_cast<double>(queries.labels.size());
  ra::json recall;
  for (auto& [k, v] : m.recall_at_k) recall[std::to_string(k)] = v;
  ra::json j{{"top1", m.top1_knn},
             {"top1_knn", m.top1_knn},
             {"top1_vote", m.top1_vote},
             {"top1_classifier", cls_hits / nq},
             {"top1_combined", comb_hits / nq},
             {"p_at_1", m.top1_knn},
             {"map_at_r", m.map_at_r},
             {"r_precision", m.r_precision},
             {"recall_at_k", recall},
             {"n_gallery", m.n_gallery},
             {"n_queries", m.n_queries},
             {"per_class_accuracy", m.per_class_accuracy},
             {"confusion", m.confusion},
             {"class_names", data.class_names},
             {"backend", arclight::backend_info()},
             {"train_seconds", train_seconds},
             {"wall_seconds", 0.0}};
  j["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() + train_seconds;
  arclight::io::write_file_atomic(run / "metrics.json", j.dump(2));
  ra::log_line(log, arclight::str_cat("eval: top1 (nearest neighbour) ", m.top1_knn, ", vote ", m.top1_vote,
                                      ", classifier ", cls_hits / nq, ", combined ", comb_hits / nq, ", MAP@R ",
                                      m.map_at_r));
  return j;
}

std::string thumb_b64(const arclight::data::Dataset& ds, std::size_t i) {
  return ra::base64(arclight::data::encode_png(ds.load(i)));
}

void run_report(const ra::fs::path& run, const ra::DataSplits& data, std::ostream& log) {
  const auto mpath = run / "metrics.json";
  ARCLIGHT_CHECK(ra::fs::exists(mpath), "report", "no metrics at ", mpath.string(), "; run `eval` first");
  std::ifstream min(mpath);
  const ra::json m = ra::json::parse(min);
  std::ifstream cin(run / "config.json");
  const ra::json cfg = ra::json::parse(cin);
  ra::ReportData d;
  d.title = "arclight product retrieval — " + run.filename().string();
  for (auto& [k, v] : cfg.items()) d.config.emplace_back(k, v.dump());
  for (const char* k : {"top1", "top1_knn", "top1_vote", "top1_classifier", "top1_combined", "map_at_r", "r_precision",
                        "n_gallery", "n_queries", "train_seconds", "wall_seconds", "backend"})
    if (m.contains(k)) d.metrics.emplace_back(k, m[k].is_string() ? m[k].get<std::string>() : m[k].dump());
  for (auto& [k, v] : m["recall_at_k"].items()) d.metrics.emplace_back("recall@" + k, v.dump());
  ra::Curve loss{"train loss", "#c33", {}}, lr{"lr", "#36c", {}};
  std::ifstream lin(run / "train_log.jsonl");
  for (std::string line; std::getline(lin, line);) {
    if (line.empty()) continue;
    auto e = ra::json::parse(line);
    loss.points.push_back({e["epoch"].get<double>(), e["loss"].get<double>()});
    lr.points.push_back({e["epoch"].get<double>(), e["lr"].get<double>()});
  }
  d.loss_curves = {loss};
  d.lr_curves = {lr};
  d.class_names = m["class_names"].get<std::vector<std::string>>();
  d.confusion = m["confusion"].get<std::vector<std::vector<std::int64_t>>>();
  d.per_class_accuracy = m["per_class_accuracy"].get<std::vector<double>>();
  // neighbours: 24 queries, failures (by confidence) first
  auto gallery = ra::load_embeddings(run / "gallery.safetensors");
  auto queries = ra::load_embeddings(run / "queries.safetensors");
  arclight::retrieval::FlatIndex index(gallery.emb, gallery.labels);
  auto r = index.search(queries.emb, 5);
  const float* s = r.scores.data_ptr<float>();
  const std::int64_t* ix = r.indices.data_ptr<std::int64_t>();
  std::vector<std::pair<double, std::size_t>> order;
  for (std::size_t q = 0; q < queries.labels.size(); ++q) {
    const bool wrong = gallery.labels[static_cast<std::size_t>(ix[q * 5])] != queries.labels[q];
    order.emplace_back(wrong ? -s[q * 5] : 1.0 - s[q * 5], q);  // confident failures first
  }
  std::sort(order.begin(), order.end());
  for (std::size_t n = 0; n < std::min<std::size_t>(24, order.size()); ++n) {
    const std::size_t q = order[n].second;
    ra::NeighbourRow row;
    row.query_png_b64 = thumb_b64(*data.test, q);
    row.query_label = queries.labels[q];
    row.predicted = gallery.labels[static_cast<std::size_t>(ix[q * 5])];
    row.margin = order[n].first;
    for (int j = 0; j < 5; ++j) {
      const auto g = static_cast<std::size_t>(ix[q * 5 + j]);
      row.neighbour_png_b64.push_back(thumb_b64(*data.train, g));
      row.neighbour_labels.push_back(gallery.labels[g]);
      row.neighbour_scores.push_back(s[q * 5 + j]);
    }
    d.neighbours.push_back(std::move(row));
  }
  arclight::io::write_file_atomic(run / "report.html", ra::render_report(d));
  ra::log_line(log, "report: " + (run / "report.html").string());
}

void add_train_options(CLI::App* cmd, ra::Config& c) {
  cmd->add_option("--data", c.data, "fashion-mnist");
  cmd->add_option("--model", c.model, "model name (cnn, mlp)");
  cmd->add_option("--epochs", c.epochs)->check(CLI::PositiveNumber);
  cmd->add_option("--batch", c.batch)->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--optimizer", c.optimizer)->check(CLI::IsMember({"adamw", "sgd"}));
  cmd->add_option("--lr", c.lr)->check(CLI::PositiveNumber);
  cmd->add_option("--weight-decay", c.weight_decay)->check(CLI::NonNegativeNumber);
  cmd->add_option("--warmup-epochs", c.warmup_epochs)->check(CLI::NonNegativeNumber);
  cmd->add_option("--scale,-s", c.scale, "ArcMargin scale s")->check(CLI::PositiveNumber);
  cmd->add_option("--margin,-m", c.margin, "ArcMargin margin m")->check(CLI::Range(0.0, 1.5));
  cmd->add_option("--margin-warmup-epochs", c.margin_warmup_epochs)->check(CLI::NonNegativeNumber);
  cmd->add_option("--label-smoothing", c.label_smoothing)->check(CLI::Range(0.0, 0.99));
  cmd->add_option("--augment", c.augment, "augmentation pipeline (e.g. reference, or 'hflip(p=0.5) | cutout(...)')");
  cmd->add_option("--limit-train", c.limit_train, "use only this many training images (0: all)");
  cmd->add_option("--limit-test", c.limit_test, "use only this many test images (0: all)");
  cmd->add_option("--seed", c.seed);
  cmd->add_option("--threads", c.threads, "compute threads (0: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--workers", c.workers, "data loader threads")->check(CLI::PositiveNumber);
  cmd->add_option("--time-budget", c.time_budget_s, "stop training after this many seconds (0: none)");
  cmd->add_flag("--tta-flip", c.tta_flip, "average the embedding with the horizontally flipped view");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"arclight-retrieval: ArcFace product retrieval (train, embed, eval, report, demo)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", arclight::backend_info());
  ra::Config cfg;
  std::string run_dir = "runs/demo";
  bool quick = false;

  auto* demo = app.add_subcommand("demo", "train + embed + eval + report on Fashion-MNIST (the README's main job)");
  demo->add_option("--run", run_dir, "run folder");
  demo->add_flag("--quick", quick, "a shorter run (≤ 2 minutes) used by the end-to-end test");
  auto* train = app.add_subcommand("train", "train an embedding model into a run folder");
  train->add_option("--run", run_dir, "run folder")->required();
  add_train_options(train, cfg);
  auto* embed = app.add_subcommand("embed", "embed the gallery (training set) and the queries (test set)");
  embed->add_option("--run", run_dir, "run folder")->required();
  auto* eval = app.add_subcommand("eval", "evaluate retrieval: metrics.json");
  eval->add_option("--run", run_dir, "run folder")->required();
  auto* report = app.add_subcommand("report", "write report.html");
  report->add_option("--run", run_dir, "run folder")->required();
  app.add_subcommand("info", "print the backend in use");

  CLI11_PARSE(app, argc, argv);
  std::signal(SIGINT, [](int) { ra::interrupted() = true; });
  try {
    std::ostream& log = std::cout;
    if (app.got_subcommand("info")) {
      std::cout << arclight::backend_info() << "\n";
      return 0;
    }
    const ra::fs::path run(run_dir);
    if (app.got_subcommand(demo)) {
      // CPU-sized defaults: fits the 10-minute budget on 2 cores; --quick for the test suite.
      if (quick) {
        cfg.epochs = 2;
        cfg.limit_test = 2000;  // all 60 000 training images (train + gallery), 2 000 test queries
        cfg.time_budget_s = 90;
      } else {
        cfg.epochs = 6;
        cfg.time_budget_s = 480;
      }
      const auto data = ra::load_data(cfg);
      ra::log_line(log, arclight::str_cat("demo: ", arclight::backend_info()));
      auto summary = ra::train(cfg, run, data, log);
      run_embed(run, data, log);
      auto m = run_eval(run, data, summary.seconds, log);
      run_report(run, data, log);
      std::printf("\ndemo done: top1 %.4f (nearest neighbour), classifier %.4f, MAP@R %.4f on %lld queries; "
                  "training %.0f s\nmetrics: %s\nreport:  %s\n",
                  m["top1"].get<double>(), m["top1_classifier"].get<double>(), m["map_at_r"].get<double>(),
                  static_cast<long long>(m["n_queries"].get<std::int64_t>()), summary.seconds,
                  (run / "metrics.json").c_str(), (run / "report.html").c_str());
      return 0;
    }
    if (app.got_subcommand(train)) {
      const auto data = ra::load_data(cfg);
      ra::train(cfg, run, data, log);
      return 0;
    }
    ra::Config stored;
    {
      const auto p = run / "config.json";
      ARCLIGHT_CHECK(ra::fs::exists(p), "arclight-retrieval", "no run at ", run.string(), " (", p.string(),
                     " missing); run `train` first");
      std::ifstream in(p);
      stored = ra::Config::from_json(ra::json::parse(in));
    }
    const auto data = ra::load_data(stored);
    if (app.got_subcommand(embed)) run_embed(run, data, log);
    if (app.got_subcommand(eval)) run_eval(run, data, 0.0, log);
    if (app.got_subcommand(report)) run_report(run, data, log);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
