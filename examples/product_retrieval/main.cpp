// arclight-retrieval: the product-retrieval system's command line (train, embed, eval, predict, report, demo,
// info). `demo` is the README's main job: train on Fashion-MNIST's 60 000 training images, embed them as the
// gallery and the 10 000 official test images as queries, evaluate, and write runs/demo/metrics.json and
// runs/demo/report.html. Every subcommand has --help; errors print "error: ..." and exit with status 1.
#include <CLI/CLI.hpp>

#include "app.hpp"

namespace ra = retrieval_app;
using arclight::Tensor;
namespace ops = arclight::ops;

namespace {

// The fields that decide which images form the gallery and the queries (ensemble members must agree).
std::string data_key(const ra::Config& c) {
  const bool subset = c.limit_train > 0 || c.limit_test > 0 || c.per_class > 0;
  return arclight::str_cat(c.data, "|", c.test_data, "|", c.image_size, "|", c.channels, "|", c.limit_train, "|",
                           c.limit_test, "|", c.per_class, "|", subset ? std::to_string(c.seed) : std::string("-"));
}

// Embeds gallery (training set) and queries (test set) with the models of every run in `runs` (one run: its
// model, or its folds' best models; several: the ensemble of all of them) into `out`.
void run_embed(const std::vector<std::string>& runs, const ra::fs::path& out, std::optional<bool> tta_override,
               std::ostream& log) {
  ARCLIGHT_CHECK(!runs.empty(), "embed", "no --run given");
  const ra::Config first = ra::load_run_config(runs[0], "embed");
  const auto data = ra::load_data(first);
  const auto nc = static_cast<std::int64_t>(data.class_names.size());
  std::vector<std::unique_ptr<ra::EmbeddingModel>> owned;
  for (const auto& r : runs) {
    const ra::Config c = ra::load_run_config(r, "embed");
    ARCLIGHT_CHECK(data_key(c) == data_key(first), "embed", "run ", r, " was trained on other data or another input format than ", runs[0],
                   " (", data_key(c), " vs ", data_key(first), "); an ensemble needs the same images");
    for (auto& m : ra::load_models(r, c, nc)) owned.push_back(std::move(m));
  }
  std::vector<ra::EmbeddingModel*> models;
  for (auto& m : owned) models.push_back(m.get());
  const bool tta = tta_override.value_or(first.tta_flip);
  if (out != ra::fs::path(runs[0])) {
    ra::fs::create_directories(out);
    ra::json cj = first.to_json();
    cj["ensemble"] = runs;
    arclight::io::write_file_atomic(out / "config.json", cj.dump(2));
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::size_t skipped = 0;
  auto gallery = ra::embed_dataset(models, *data.train, first, tta, false, &skipped);
  ra::save_embeddings(out / "gallery.safetensors", gallery, data.class_names, runs, models.size());
  std::string qtext = "no queries (folder:/csv: data needs --test-data at train time)";
  if (data.test) {
    std::size_t qs = 0;
    auto queries = ra::embed_dataset(models, *data.test, first, tta, true, &qs);
    skipped += qs;
    ra::save_embeddings(out / "queries.safetensors", queries, data.class_names, runs, models.size());
    qtext = arclight::str_cat(queries.labels.size(), " query images");
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ra::log_line(log, arclight::str_cat("embed: ", models.size(), " model(s)", tta ? " with flip TTA" : "", ", ",
                                      gallery.labels.size(), " gallery images + ", qtext, " in ", secs, " s",
                                      skipped ? arclight::str_cat(", skipped ", skipped, " unreadable image(s)") : ""));
}

ra::json run_eval(const ra::fs::path& run, double train_seconds, std::ostream& log) {
  const auto t0 = std::chrono::steady_clock::now();
  ra::load_run_config(run, "eval");
  auto gallery = ra::load_embeddings(run / "gallery.safetensors");
  auto queries = ra::load_embeddings(run / "queries.safetensors");
  ARCLIGHT_CHECK(queries.class_cos.defined(), "eval", (run / "queries.safetensors").string(),
                 " has no class cosines; re-run `embed`");
  ARCLIGHT_CHECK(gallery.emb.shape()[1] == queries.emb.shape()[1], "eval", "gallery embeddings are ",
                 gallery.emb.shape()[1], "-d but queries are ", queries.emb.shape()[1], "-d; re-run `embed`");
  const auto nc = static_cast<std::int64_t>(queries.class_cos.shape()[1]);
  arclight::retrieval::FlatIndex index(gallery.emb, gallery.labels);
  auto m = arclight::retrieval::evaluate(index, queries.emb, queries.labels, nc);
  const Tensor& class_cos = queries.class_cos;
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
  // The default method is METHOD.md §9's combined rule (nearest-neighbour similarities × classifier cosines),
  // the reference's prediction; the other rules are reported beside it.
  ra::json j{{"top1", comb_hits / nq},
             {"top1_method", "combined"},
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
             {"n_models", gallery.n_models},
             {"per_class_accuracy", m.per_class_accuracy},
             {"confusion", m.confusion},
             {"class_names", queries.class_names},
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

// predict: each image → the top-k products (mean ArcMargin class cosine over the run's models) and the
// nearest gallery images (cosine), as text or JSON.
void run_predict(const ra::fs::path& run, const std::vector<std::string>& images, int top, bool as_json) {
  const ra::Config c = ra::load_run_config(run, "predict");
  auto gallery = ra::load_embeddings(run / "gallery.safetensors", "predict");
  const auto& names = gallery.class_names;
  ARCLIGHT_CHECK(!names.empty(), "predict", (run / "gallery.safetensors").string(), " has no class names; re-run `embed`");
  std::vector<std::unique_ptr<ra::EmbeddingModel>> owned;
  const std::vector<std::string> runs = gallery.runs.empty() ? std::vector<std::string>{run.string()} : gallery.runs;
  for (const auto& r : runs)
    for (auto& m : ra::load_models(r, ra::load_run_config(r, "predict"), static_cast<std::int64_t>(names.size())))
      owned.push_back(std::move(m));
  std::vector<ra::EmbeddingModel*> models;
  for (auto& m : owned) models.push_back(m.get());
  // decode and preprocess every image first, so a bad file fails before any output
  arclight::data::DecodeOptions dec;
  dec.channels = c.channels;
  const auto pipe = ra::eval_pipeline(c);
  const std::int64_t S = c.image_size, C = c.channels;
  std::vector<float> pixels(static_cast<std::size_t>(images.size() * C * S * S));
  for (std::size_t i = 0; i < images.size(); ++i) {
    arclight::data::Image img;
    try {
      img = arclight::data::read_image(images[i], dec);
    } catch (const std::exception& e) {
      arclight::fail("predict", "'", images[i], "' is not a readable image: ", e.what());
    }
    img = pipe.apply(std::move(img), 0, 0, i);
    pipe.to_tensor(img, pixels.data() + i * C * S * S);
  }
  const auto n = static_cast<std::int64_t>(images.size());
  auto e = ra::embed_batch(models, arclight::from_vector(pixels, {n, C, S, S}), c.tta_flip);
  const int k = std::min<int>(top, static_cast<int>(names.size()));
  auto cls = ops::topk(e.class_cos, k, 1);
  arclight::retrieval::FlatIndex index(gallery.emb, gallery.labels);
  const int kn = static_cast<int>(std::min<std::int64_t>(top, index.size()));
  auto nb = index.search(e.emb, kn);
  const auto cls_v = std::get<0>(cls).to_vector<float>();
  const auto cls_i = std::get<1>(cls).to_vector<std::int64_t>();
  const auto nb_s = nb.scores.to_vector<float>();
  const auto nb_i = nb.indices.to_vector<std::int64_t>();
  ra::json out = ra::json::array();
  for (std::int64_t q = 0; q < n; ++q) {
    ra::json products = ra::json::array(), neighbours = ra::json::array();
    for (int j = 0; j < k; ++j) {
      const auto l = cls_i[static_cast<std::size_t>(q * k + j)];
      products.push_back({{"class", names[static_cast<std::size_t>(l)]}, {"label", l},
                          {"score", cls_v[static_cast<std::size_t>(q * k + j)]}});
    }
    for (int j = 0; j < kn; ++j) {
      const auto g = static_cast<std::size_t>(nb_i[static_cast<std::size_t>(q * kn + j)]);
      neighbours.push_back({{"gallery_row", g}, {"index", gallery.indices[g]}, {"source", gallery.sources[g]},
                            {"label", gallery.labels[g]},
                            {"class", names[static_cast<std::size_t>(gallery.labels[g])]},
                            {"score", nb_s[static_cast<std::size_t>(q * kn + j)]}});
    }
    out.push_back({{"image", images[static_cast<std::size_t>(q)]}, {"products", products}, {"neighbours", neighbours}});
  }
  if (as_json) {
    std::cout << ra::json{{"run", run.string()}, {"predictions", out}}.dump(2) << "\n";
    return;
  }
  for (const auto& p : out) {
    std::cout << p["image"].get<std::string>() << "\n  products:";
    int rank = 1;
    for (const auto& x : p["products"])
      std::printf("  %d. %s (%.3f)", rank++, x["class"].get<std::string>().c_str(), x["score"].get<double>());
    std::cout << "\n  nearest gallery images:\n";
    rank = 1;
    for (const auto& x : p["neighbours"])
      std::printf("    %d. %s  [%s]  %.3f\n", rank++, x["source"].get<std::string>().c_str(),
                  x["class"].get<std::string>().c_str(), x["score"].get<double>());
  }
}

std::string thumb_b64(const arclight::data::Dataset& ds, std::size_t i) {
  try {
    return ra::base64(arclight::data::encode_png(ds.load(i)));
  } catch (const std::exception&) {
    return "";  // an unreadable image (skipped in training) has no thumbnail
  }
}

// The training logs of a run: its own and each fold's (fold<k>/train_log.jsonl), in fold order.
std::vector<std::pair<int, std::vector<ra::json>>> read_logs(const ra::fs::path& run) {
  std::vector<std::pair<int, std::vector<ra::json>>> logs;
  auto read = [](const ra::fs::path& p) {
    std::vector<ra::json> v;
    std::ifstream in(p);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) v.push_back(ra::json::parse(line));
    return v;
  };
  if (ra::fs::exists(run / "train_log.jsonl")) logs.emplace_back(-1, read(run / "train_log.jsonl"));
  for (int k = 0; k < 100; ++k)
    if (ra::fs::exists(ra::fold_dir(run, k) / "train_log.jsonl")) logs.emplace_back(k, read(ra::fold_dir(run, k) / "train_log.jsonl"));
  return logs;
}

void run_report(const ra::fs::path& run, std::ostream& log) {
  const ra::Config stored = ra::load_run_config(run, "report");
  const auto mpath = run / "metrics.json";
  ARCLIGHT_CHECK(ra::fs::exists(mpath), "report", "no metrics at ", mpath.string(), "; run `eval` first");
  std::ifstream min(mpath);
  const ra::json m = ra::json::parse(min);
  std::ifstream cin(run / "config.json");
  const ra::json cfg = ra::json::parse(cin);
  const auto data = ra::load_data(stored);
  ra::ReportData d;
  d.title = "arclight product retrieval — " + run.filename().string();
  for (auto& [k, v] : cfg.items()) d.config.emplace_back(k, v.dump());
  for (const char* k : {"top1", "top1_knn", "top1_vote", "top1_classifier", "top1_combined", "map_at_r", "r_precision",
                        "n_gallery", "n_queries", "n_models", "train_seconds", "wall_seconds", "backend"})
    if (m.contains(k)) d.metrics.emplace_back(k, m[k].is_string() ? m[k].get<std::string>() : m[k].dump());
  for (auto& [k, v] : m["recall_at_k"].items()) d.metrics.emplace_back("recall@" + k, v.dump());
  static const char* colors[] = {"#c33", "#36c", "#393", "#c80", "#939", "#399", "#666"};
  int ci = 0;
  for (const auto& [fold, entries] : read_logs(run)) {
    const std::string suffix = fold < 0 ? "" : " fold " + std::to_string(fold);
    const std::string color = colors[ci++ % 7];
    ra::Curve loss{"train loss" + suffix, color, {}}, lr{"lr" + suffix, color, {}}, acc{"val acc" + suffix, color, {}};
    for (const auto& e : entries) {
      const double x = e["epoch"].get<double>();
      loss.points.push_back({x, e["loss"].get<double>()});
      lr.points.push_back({x, e["lr"].get<double>()});
      if (e.contains("val_acc")) acc.points.push_back({x, e["val_acc"].get<double>()});
    }
    d.loss_curves.push_back(loss);
    d.lr_curves.push_back(lr);
    if (!acc.points.empty()) d.acc_curves.push_back(acc);
  }
  d.class_names = m["class_names"].get<std::vector<std::string>>();
  d.confusion = m["confusion"].get<std::vector<std::vector<std::int64_t>>>();
  d.per_class_accuracy = m["per_class_accuracy"].get<std::vector<double>>();
  // neighbours: 24 queries, failures (by confidence) first
  auto gallery = ra::load_embeddings(run / "gallery.safetensors", "report");
  auto queries = ra::load_embeddings(run / "queries.safetensors", "report");
  ARCLIGHT_CHECK(data.test != nullptr, "report", "the run has no query set");
  arclight::retrieval::FlatIndex index(gallery.emb, gallery.labels);
  const int K = static_cast<int>(std::min<std::int64_t>(5, index.size()));
  auto r = index.search(queries.emb, K);
  const float* s = r.scores.data_ptr<float>();
  const std::int64_t* ix = r.indices.data_ptr<std::int64_t>();
  std::vector<std::pair<double, std::size_t>> order;
  for (std::size_t q = 0; q < queries.labels.size(); ++q) {
    const bool wrong = gallery.labels[static_cast<std::size_t>(ix[q * K])] != queries.labels[q];
    order.emplace_back(wrong ? -s[q * K] : 1.0 - s[q * K], q);  // confident failures first
  }
  std::sort(order.begin(), order.end());
  for (std::size_t n = 0; n < std::min<std::size_t>(24, order.size()); ++n) {
    const std::size_t q = order[n].second;
    ra::NeighbourRow row;
    row.query_png_b64 = thumb_b64(*data.test, static_cast<std::size_t>(queries.indices[q]));
    row.query_label = queries.labels[q];
    row.predicted = gallery.labels[static_cast<std::size_t>(ix[q * K])];
    row.margin = order[n].first;
    for (int j = 0; j < K; ++j) {
      const auto g = static_cast<std::size_t>(ix[q * K + j]);
      row.neighbour_png_b64.push_back(thumb_b64(*data.train, static_cast<std::size_t>(gallery.indices[g])));
      row.neighbour_labels.push_back(gallery.labels[g]);
      row.neighbour_scores.push_back(s[q * K + j]);
    }
    d.neighbours.push_back(std::move(row));
  }
  arclight::io::write_file_atomic(run / "report.html", ra::render_report(d));
  ra::log_line(log, "report: " + (run / "report.html").string());
}

void add_train_options(CLI::App* cmd, ra::Config& c) {
  cmd->add_option("--data", c.data, "fashion-mnist | folder:PATH (one sub-folder of images per class) | csv:PATH "
                                    "(columns path,label; relative paths from the CSV's folder)")
      ->capture_default_str();
  cmd->add_option("--test-data", c.test_data, "query images for folder:/csv: data (same forms; classes by name)");
  cmd->add_option("--model", c.model, "model: cnn, mlp, or a registered backbone (efficientnet_b0..b7, tf_efficientnet_b0.., dm_nfnet_f0..f3, nfnet_l0, eca_nfnet_l0, nf_resnet26/50)")->capture_default_str();
  cmd->add_option("--image-size", c.image_size, "resize images to this square side (0: 28 for Fashion-MNIST, else 32)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--channels", c.channels, "1 (grey) or 3 (RGB); 0: 1 for Fashion-MNIST, else 3")->check(CLI::IsMember({0, 1, 3}));
  cmd->add_option("--embedding-dim", c.embedding_dim, "embedding size")->check(CLI::Range(2, 1 << 16))->capture_default_str();
  cmd->add_option("--hidden", c.hidden, "hidden width of the mlp model")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--epochs", c.epochs)->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--batch", c.batch)->check(CLI::Range(2, 1 << 20))->capture_default_str();
  cmd->add_option("--optimizer", c.optimizer)->check(CLI::IsMember({"adamw", "sgd"}))->capture_default_str();
  cmd->add_option("--lr", c.lr)->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--weight-decay", c.weight_decay)->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--warmup-epochs", c.warmup_epochs)->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--scale,-s", c.scale, "ArcMargin scale s")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--margin,-m", c.margin, "ArcMargin margin m")->check(CLI::Range(0.0, 1.5))->capture_default_str();
  cmd->add_option("--margin-warmup-epochs", c.margin_warmup_epochs)->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--label-smoothing", c.label_smoothing)->check(CLI::Range(0.0, 0.99))->capture_default_str();
  cmd->add_option("--augment", c.augment, "augmentation pipeline (e.g. reference, or 'hflip(p=0.5) | cutout(...)')")
      ->capture_default_str();
  cmd->add_option("--limit-train", c.limit_train, "use only this many training images (0: all)");
  cmd->add_option("--limit-test", c.limit_test, "use only this many test images (0: all)");
  cmd->add_option("--per-class", c.per_class, "keep at most this many training images per class (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--fold", c.fold, "train fold k (0-based) of --folds with its stratified validation split, or 'all'");
  cmd->add_option("--folds", c.folds, "number of stratified folds K")->check(CLI::Range(2, 1000))->capture_default_str();
  cmd->add_option("--on-bad-image", c.on_bad_image, "unreadable image: fail (name it) or skip (count it)")
      ->check(CLI::IsMember({"fail", "skip"}))
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", c.checkpoint_every, "also checkpoint every N steps (0: at epoch ends only)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", c.seed)->capture_default_str();
  cmd->add_option("--threads", c.threads, "compute threads (0: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--workers", c.workers, "data loader threads")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--time-budget", c.time_budget_s, "stop training after this many seconds (0: none)");
  cmd->add_flag("--tta-flip", c.tta_flip, "embed: average the embedding with the horizontally flipped view");
}

}  // namespace

// --device on the commands that compute (demo, train, embed, predict).
void add_device_option(CLI::App* cmd, std::string& device) {
  cmd->add_option("--device", device, "compute on the cpu or on a cuda GPU (needs the CUDA backend and a GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
}

// --amp on the commands that train (demo, train).
void add_amp_option(CLI::App* cmd, std::string& amp) {
  cmd->add_option("--amp", amp, "mixed precision on the GPU: off, bf16, or fp16 with dynamic loss scaling "
                                "(needs --device cuda)")
      ->check(CLI::IsMember({"off", "bf16", "fp16"}))
      ->capture_default_str();
}

int main(int argc, char** argv) {
  CLI::App app{"arclight-retrieval: ArcFace product retrieval (train, embed, eval, predict, report, demo)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", arclight::backend_info());
  ra::Config cfg;
  std::string run_dir = "runs/demo";
  std::vector<std::string> embed_runs, images;
  std::string embed_out, device = "cpu", amp = "off";
  bool quick = false, resume = false, as_json = false, tta_flag = false;
  int top = 5;

  auto* demo = app.add_subcommand("demo", "train + embed + eval + report on Fashion-MNIST (the README's main job)");
  demo->add_option("--run", run_dir, "run folder (its previous checkpoints are replaced)")->capture_default_str();
  demo->add_flag("--quick", quick, "a shorter run (≤ 2 minutes) used by the end-to-end test");
  auto* train = app.add_subcommand("train", "train an embedding model into a run folder (Ctrl-C saves a checkpoint)");
  train->add_option("--run", run_dir, "run folder")->required();
  train->add_flag("--resume", resume,
                  "continue the run from its latest checkpoint, with the run's stored config.json (other training "
                  "options are ignored); starts from scratch when there is no checkpoint yet");
  add_train_options(train, cfg);
  add_device_option(train, device);
  add_device_option(demo, device);
  add_amp_option(train, amp);
  add_amp_option(demo, amp);
  auto* embed = app.add_subcommand("embed", "embed the gallery (training set) and the queries (test set)");
  embed->add_option("--run", embed_runs, "run folder; repeat for an ensemble (concatenated L2-normalised embeddings)")
      ->required();
  embed->add_option("--out", embed_out, "output folder (default: the first --run)");
  embed->add_flag("--tta-flip,!--no-tta-flip", tta_flag, "average each embedding with that of the flipped image "
                                                         "(default: the run's setting)");
  add_device_option(embed, device);
  auto* eval = app.add_subcommand("eval", "evaluate retrieval from the run's embeddings: metrics.json");
  eval->add_option("--run", run_dir, "run folder")->required();
  auto* predict = app.add_subcommand("predict", "identify the product in image files: top products and nearest gallery images");
  predict->add_option("--run", run_dir, "run folder (trained and embedded)")->required();
  predict->add_option("images", images, "image files (PNG or JPEG)")->required();
  predict->add_option("--top", top, "how many products and neighbours")->check(CLI::Range(1, 100))->capture_default_str();
  predict->add_flag("--json", as_json, "print machine-readable JSON");
  add_device_option(predict, device);
  auto* report = app.add_subcommand("report", "write report.html");
  report->add_option("--run", run_dir, "run folder")->required();
  app.add_subcommand("info", "print the backend in use");

  CLI11_PARSE(app, argc, argv);
  ra::install_interrupt_handlers();
  try {
    std::ostream& log = std::cout;
    if (app.got_subcommand("info")) {
      std::cout << arclight::backend_info() << "\n";
      return 0;
    }
    ra::set_compute_device(device);
    ra::set_amp(amp);
    const ra::fs::path run(run_dir);
    if (app.got_subcommand(demo)) {
      // CPU-sized defaults: fits the 10-minute budget on 2 cores; --quick for the test suite.
      cfg.model = "cnn";
      if (quick) {
        cfg.epochs = 2;
        cfg.limit_train = 20000;  // 20 000 training images (train + gallery), 2 000 test queries
        cfg.limit_test = 2000;
        cfg.time_budget_s = 75;
      } else {
        cfg.epochs = 6;
        cfg.time_budget_s = 450;
        cfg.tta_flip = true;  // METHOD.md §9: horizontal-flip TTA (about 30 s of the budget)
      }
      cfg.resolve();
      const auto data = ra::load_data(cfg);
      std::error_code ec;
      ra::fs::remove_all(run / "checkpoints", ec);  // the demo always trains from scratch
      ra::log_line(log, arclight::str_cat("demo: ", arclight::backend_info()));
      auto summary = ra::train(cfg, run, data, false, log);
      if (summary.interrupted) return 0;
      run_embed({run.string()}, run, std::nullopt, log);
      auto m = run_eval(run, summary.seconds, log);
      run_report(run, log);
      std::printf("\ndemo done: top1 %.4f (combined rule), nearest neighbour %.4f, classifier %.4f, MAP@R %.4f on %lld queries; "
                  "training %.0f s\nmetrics: %s\nreport:  %s\n",
                  m["top1"].get<double>(), m["top1_knn"].get<double>(), m["top1_classifier"].get<double>(),
                  m["map_at_r"].get<double>(),
                  static_cast<long long>(m["n_queries"].get<std::int64_t>()), summary.seconds,
                  (run / "metrics.json").c_str(), (run / "report.html").c_str());
      return 0;
    }
    if (app.got_subcommand(train)) {
      if (resume && ra::fs::exists(run / "config.json")) {
        cfg = ra::load_run_config(run, "train");
        ra::log_line(log, "train: --resume continues with " + (run / "config.json").string());
      }
      cfg.resolve();
      cfg.validate();
      const auto data = ra::load_data(cfg);
      ra::train(cfg, run, data, resume, log);
      return 0;
    }
    if (app.got_subcommand(embed)) {
      std::optional<bool> tta;
      if (embed->count("--tta-flip") + embed->count("--no-tta-flip") > 0) tta = tta_flag;
      run_embed(embed_runs, embed_out.empty() ? ra::fs::path(embed_runs[0]) : ra::fs::path(embed_out), tta, log);
      return 0;
    }
    if (app.got_subcommand(eval)) run_eval(run, 0.0, log);
    if (app.got_subcommand(predict)) run_predict(run, images, top, as_json);
    if (app.got_subcommand(report)) run_report(run, log);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
