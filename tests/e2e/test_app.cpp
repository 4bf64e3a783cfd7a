// End-to-end tests of the arclight-retrieval application, run as separate processes (posix_spawn) the way a
// person runs it: training on an image folder and a CSV (tiny synthetic PNG/JPEG sets written with the
// project's encoders), the bad-input policy and error messages, stratified folds with the best checkpoint per
// fold and the validation curve, exact resume after SIGKILL at random moments (bit-identical weights and
// optimizer state, identical per-epoch losses), clean SIGINT, predict (text and JSON), ensembles, the report
// rendered by headless Chromium, and --help on every subcommand.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "arclight/cuda/runtime.hpp"
#include "arclight/data/image_io.hpp"
#include "arclight/io/checkpoint.hpp"
#include "arclight/io/safetensors.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Result {
  int rc = -1;       // exit status, or -1 when killed by a signal
  int signal = 0;    // the signal that ended it, if any
  std::string out, err;
  double seconds = 0;
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A fresh scratch folder per test (and per process: ctest runs each test in its own process).
fs::path scratch(const std::string& name) {
  const fs::path d = fs::path(::testing::TempDir()) / ("arclight_app_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Starts the app with `args`, stdout/stderr to files next to `log_stem`.
pid_t spawn_app(const std::vector<std::string>& args, const fs::path& log_stem) {
  std::vector<std::string> a{ARCLIGHT_APP_PATH};
  a.insert(a.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const std::string o = log_stem.string() + ".out", e = log_stem.string() + ".err";
  posix_spawn_file_actions_addopen(&fa, 1, o.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, e.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

Result wait_app(pid_t pid, const fs::path& log_stem, std::chrono::steady_clock::time_point t0) {
  Result r;
  int status = 0;
  if (pid > 0 && waitpid(pid, &status, 0) == pid) {
    if (WIFEXITED(status)) r.rc = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.out = read_text(log_stem.string() + ".out");
  r.err = read_text(log_stem.string() + ".err");
  return r;
}

// Runs the app to completion.
Result run_app(const std::vector<std::string>& args, const fs::path& work) {
  static int n = 0;
  const fs::path stem = work / ("call" + std::to_string(n++));
  const auto t0 = std::chrono::steady_clock::now();
  return wait_app(spawn_app(args, stem), stem, t0);
}

std::string describe(const Result& r) {
  return "rc " + std::to_string(r.rc) + ", signal " + std::to_string(r.signal) + "\n--- stdout\n" + r.out +
         "--- stderr\n" + r.err;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Synthetic products: class "hstripes" (horizontal bars), "vstripes" (vertical bars), "circle" (a disc),
// each with its own colour, random phase and noise, `size` px; PNG, every third image JPEG.
void make_image_folder(const fs::path& root, int per_class, int size, std::uint32_t seed) {
  std::mt19937 rng(seed);
  const char* names[] = {"circle", "hstripes", "vstripes"};
  for (int c = 0; c < 3; ++c) {
    fs::create_directories(root / names[c]);
    for (int i = 0; i < per_class; ++i) {
      arclight::data::Image img(size, size, 3);
      const int phase = static_cast<int>(rng() % 4), r0 = 4 + static_cast<int>(rng() % 4);
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
          bool on = false;
          if (c == 0) on = (x - size / 2) * (x - size / 2) + (y - size / 2) * (y - size / 2) < r0 * r0 * 2;
          if (c == 1) on = ((y + phase) / 3) % 2 == 0;
          if (c == 2) on = ((x + phase) / 3) % 2 == 0;
          for (int ch = 0; ch < 3; ++ch) {
            const int base = on ? (ch == c ? 230 : 90) : 20;
            const int v = base + static_cast<int>(rng() % 25);
            img.pixels[static_cast<std::size_t>((y * size + x) * 3 + ch)] = static_cast<std::uint8_t>(std::min(v, 255));
          }
        }
      const bool jpeg = i % 3 == 2;
      const fs::path p = root / names[c] / ("img_" + std::to_string(i) + (jpeg ? ".jpg" : ".png"));
      if (jpeg) arclight::data::write_jpeg(p, img, 92);
      else arclight::data::write_png(p, img);
    }
  }
}

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> v;
  std::istringstream in(read_text(p));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) v.push_back(json::parse(line));
  return v;
}

const std::vector<std::string> kSmallMlp{"--hidden", "32", "--embedding-dim", "16", "--threads", "1", "--workers", "1"};

std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- image folder, CSV, predict ---------------------------------------------------------------------------

TEST(RetrievalApp, FolderTrainEmbedEvalPredict) {
  const fs::path w = scratch("folder");
  make_image_folder(w / "train", 16, 24, 1);
  make_image_folder(w / "test", 4, 24, 2);
  const std::string run = (w / "run").string();
  Result r = run_app(cat({"train", "--run", run, "--data", "folder:" + (w / "train").string(), "--test-data",
                          "folder:" + (w / "test").string(), "--epochs", "1", "--batch", "8"},
                         kSmallMlp),
                     w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  const json cfg = json::parse(read_text(w / "run" / "config.json"));
  EXPECT_EQ(cfg["image_size"], 32);  // folder data defaults: 32 px, RGB
  EXPECT_EQ(cfg["channels"], 3);
  EXPECT_EQ(read_jsonl(w / "run" / "train_log.jsonl").size(), 1u);
  EXPECT_TRUE(contains(r.out, "48 images")) << r.out;

  r = run_app({"embed", "--run", run}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  r = run_app({"eval", "--run", run}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  const json m = json::parse(read_text(w / "run" / "metrics.json"));
  EXPECT_EQ(m["n_gallery"], 48);
  EXPECT_EQ(m["n_queries"], 12);
  EXPECT_EQ(m["class_names"], json({"circle", "hstripes", "vstripes"}));

  // predict --json: 3 classes → 3 products, 5 nearest gallery images whose sources are the training files
  const std::string query = (w / "test" / "vstripes" / "img_0.png").string();
  r = run_app({"predict", "--run", run, "--json", query}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  const json p = json::parse(r.out);
  ASSERT_EQ(p["predictions"].size(), 1u);
  const json& q = p["predictions"][0];
  EXPECT_EQ(q["image"], query);
  ASSERT_EQ(q["products"].size(), 3u);
  std::vector<std::string> classes;
  for (const auto& x : q["products"]) classes.push_back(x["class"]);
  std::sort(classes.begin(), classes.end());
  EXPECT_EQ(classes, (std::vector<std::string>{"circle", "hstripes", "vstripes"}));
  EXPECT_GE(q["products"][0]["score"].get<double>(), q["products"][1]["score"].get<double>());
  ASSERT_EQ(q["neighbours"].size(), 5u);
  double prev = 2.0;
  for (const auto& nb : q["neighbours"]) {
    const std::string src = nb["source"];
    EXPECT_TRUE(fs::is_regular_file(src)) << src;
    EXPECT_TRUE(contains(src, (w / "train").string())) << src;
    EXPECT_TRUE(contains(src, "/" + nb["class"].get<std::string>() + "/")) << src;  // label matches its folder
    EXPECT_LE(nb["score"].get<double>(), prev + 1e-6);
    prev = nb["score"].get<double>();
  }
  // the text form names the products and the gallery files
  r = run_app({"predict", "--run", run, query}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "products:")) << r.out;
  EXPECT_TRUE(contains(r.out, q["neighbours"][0]["source"].get<std::string>())) << r.out;

  // a non-image (and a missing file) is a clear error naming it, with no partial output
  std::ofstream(w / "notes.txt") << "not an image\n";
  r = run_app({"predict", "--run", run, query, (w / "notes.txt").string()}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "notes.txt") && contains(r.err, "is not a readable image")) << describe(r);
  EXPECT_EQ(r.out, "");
  r = run_app({"predict", "--run", run, (w / "missing.png").string()}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "missing.png")) << describe(r);
}

TEST(RetrievalApp, CsvTrainOneEpochAndMissingFiles) {
  const fs::path w = scratch("csv");
  make_image_folder(w / "imgs", 8, 20, 3);
  std::string csv = "path,label\n";
  std::size_t rows = 0;
  for (const auto& e : fs::recursive_directory_iterator(w / "imgs"))
    if (e.is_regular_file()) {
      csv += fs::relative(e.path(), w).string() + "," + e.path().parent_path().filename().string() + "\n";
      ++rows;
    }
  ASSERT_EQ(rows, 24u);
  std::ofstream(w / "train.csv") << csv;
  Result r = run_app(cat({"train", "--run", (w / "run").string(), "--data", "csv:" + (w / "train.csv").string(),
                          "--epochs", "1", "--batch", "8", "--image-size", "16"},
                         kSmallMlp),
                     w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "24 images")) << r.out;
  EXPECT_EQ(read_jsonl(w / "run" / "train_log.jsonl").size(), 1u);
  EXPECT_TRUE(arclight::io::load_checkpoint(w / "run" / "checkpoints").files.count("model.safetensors"));

  // a CSV row pointing at a missing file: error names the file and the line, and nothing is trained
  std::ofstream(w / "bad.csv") << csv << "imgs/circle/gone.png,circle\n";
  r = run_app(cat({"train", "--run", (w / "bad").string(), "--data", "csv:" + (w / "bad.csv").string(), "--epochs", "1"},
                  kSmallMlp),
              w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "gone.png") && contains(r.err, "does not exist") && contains(r.err, "line 26"))
      << describe(r);
  EXPECT_FALSE(fs::exists(w / "bad" / "checkpoints"));
  r = run_app({"train", "--run", (w / "bad2").string(), "--data", "csv:" + (w / "nope.csv").string()}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "nope.csv") && contains(r.err, "does not exist")) << describe(r);
}

TEST(RetrievalApp, BadInputsGiveClearErrors) {
  const fs::path w = scratch("bad");
  // missing data folder
  Result r = run_app({"train", "--run", (w / "r0").string(), "--data", "folder:" + (w / "no_such").string()}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "data folder '" + (w / "no_such").string() + "' does not exist")) << describe(r);

  // empty class folder
  make_image_folder(w / "data", 8, 16, 4);
  fs::create_directories(w / "data" / "zempty");
  r = run_app({"train", "--run", (w / "r1").string(), "--data", "folder:" + (w / "data").string()}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "zempty") && contains(r.err, "holds no image")) << describe(r);
  fs::remove(w / "data" / "zempty");

  // an unreadable image: `fail` names it; `skip` trains and reports the count
  const fs::path broken = w / "data" / "hstripes" / "img_3.png";
  std::ofstream(broken, std::ios::binary | std::ios::trunc) << "\x89PNG\r\n\x1a\n truncated garbage";
  const std::vector<std::string> common = cat({"--data", "folder:" + (w / "data").string(), "--epochs", "1", "--batch",
                                               "4", "--image-size", "16"},
                                              kSmallMlp);
  r = run_app(cat({"train", "--run", (w / "r2").string(), "--on-bad-image", "fail"}, common), w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, broken.string())) << describe(r);
  r = run_app(cat({"train", "--run", (w / "r3").string(), "--on-bad-image", "skip"}, common), w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "skipped 1 unreadable image")) << r.out;
  EXPECT_TRUE(contains(r.err, "img_3.png")) << r.err;  // the per-sample line names it

  // eval on a run with no embeddings; embed of a folder run without queries; unknown fold
  r = run_app({"eval", "--run", (w / "r3").string()}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "no embeddings at") && contains(r.err, "run `embed")) << describe(r);
  r = run_app({"embed", "--run", (w / "r3").string()}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "23 gallery images") && contains(r.out, "no queries")) << r.out;  // 24 - 1 skipped
  r = run_app({"eval", "--run", (w / "r3").string()}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "queries.safetensors")) << describe(r);
  r = run_app({"train", "--run", (w / "r4").string(), "--fold", "5", "--folds", "3"}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "fold '5', expected 0..2 or all")) << describe(r);
  // training again into a run that has checkpoints needs --resume
  r = run_app(cat({"train", "--run", (w / "r3").string(), "--on-bad-image", "skip"}, common), w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "already holds training checkpoints; pass --resume")) << describe(r);
}

// --device cuda: without a usable GPU a clear error before anything is written; with one, a run trained on the GPU
// embeds on the CPU (the run folder does not depend on the device).
TEST(RetrievalApp, DeviceOption) {
  const fs::path w = scratch("device");
  make_image_folder(w / "data", 8, 16, 4);
  // the conv model (conv, batch norm + SiLU, GeM, linear, ArcMargin), 2 epochs of 4 steps
  const std::vector<std::string> common{"--data",          "folder:" + (w / "data").string(),
                                       "--epochs",        "2",
                                       "--batch",         "8",
                                       "--image-size",    "16",
                                       "--model",         "cnn",
                                       "--embedding-dim", "16",
                                       "--threads",       "1",
                                       "--workers",       "1"};
  Result r = run_app(cat({"train", "--run", (w / "gpu").string(), "--device", "cuda"}, common), w);
  if (!arclight::cuda::available()) {
    EXPECT_NE(r.rc, 0);
    EXPECT_TRUE(contains(r.err, "--device cuda") && contains(r.err, "needs a CUDA device")) << describe(r);
    EXPECT_FALSE(fs::exists(w / "gpu")) << "nothing is written when the device is refused";
  } else {
    ASSERT_EQ(r.rc, 0) << describe(r);
    EXPECT_TRUE(contains(r.out, "computing on cuda:0")) << r.out;
    // the same run on the CPU (same seed, same batches): the per-epoch losses agree to float rounding
    r = run_app(cat({"train", "--run", (w / "cpu").string(), "--device", "cpu"}, common), w);
    ASSERT_EQ(r.rc, 0) << describe(r);
    const auto gpu_log = read_jsonl(w / "gpu" / "train_log.jsonl"), cpu_log = read_jsonl(w / "cpu" / "train_log.jsonl");
    ASSERT_EQ(gpu_log.size(), 2u);
    ASSERT_EQ(cpu_log.size(), 2u);
    for (std::size_t e = 0; e < 2; ++e) {
      const double g = gpu_log[e]["loss"].get<double>(), c = cpu_log[e]["loss"].get<double>();
      EXPECT_TRUE(std::isfinite(g) && g > 0) << g;
      EXPECT_NEAR(g, c, 2e-3 * std::abs(c)) << "epoch " << e + 1;
    }
    // bf16 autocast stays close to the float32 run
    r = run_app(cat({"train", "--run", (w / "bf16").string(), "--device", "cuda", "--amp", "bf16"}, common), w);
    ASSERT_EQ(r.rc, 0) << describe(r);
    const auto bf16_log = read_jsonl(w / "bf16" / "train_log.jsonl");
    ASSERT_EQ(bf16_log.size(), 2u);
    for (std::size_t e = 0; e < 2; ++e) {
      const double a = bf16_log[e]["loss"].get<double>(), c = cpu_log[e]["loss"].get<double>();
      EXPECT_NEAR(a, c, 0.05 * std::abs(c) + 0.05) << "bf16 epoch " << e + 1;
    }
    // fp16 with dynamic loss scaling from 2^16: the first steps' scaled gradients overflow float16, so those steps
    // are skipped and the scale halves each time, until a step goes through. The log reports both.
    r = run_app(cat({"train", "--run", (w / "fp16").string(), "--device", "cuda", "--amp", "fp16"}, common), w);
    ASSERT_EQ(r.rc, 0) << describe(r);
    const auto fp16_log = read_jsonl(w / "fp16" / "train_log.jsonl");
    ASSERT_EQ(fp16_log.size(), 2u);
    for (const auto& e : fp16_log) EXPECT_TRUE(std::isfinite(e["loss"].get<double>())) << e.dump();
    const std::string marker = "fp16 loss scaling skipped ";
    const auto at = r.out.rfind(marker);
    if (at != std::string::npos) {
      const int skipped = std::stoi(r.out.substr(at + marker.size()));
      const auto scale_at = r.out.find("loss scale now ", at);
      ASSERT_NE(scale_at, std::string::npos) << r.out;
      const double scale = std::stod(r.out.substr(scale_at + 15));
      EXPECT_GE(skipped, 1);
      EXPECT_LT(skipped, 6) << "at least one of the 6 steps must go through";
      EXPECT_EQ(scale, std::ldexp(1.0, 16 - skipped)) << r.out;
      EXPECT_LT(fp16_log[1]["loss"].get<double>(), fp16_log[0]["loss"].get<double>()) << "the steps taken learn";
      // the scaler's state is part of the checkpoint's loop state (a resumed run continues from it)
      const auto ck = arclight::io::load_checkpoint(w / "fp16" / "checkpoints");
      const auto& sj = ck.files.at("state.json");
      const json loop = json::parse(json::parse(std::string(sj.begin(), sj.end())).at("config").at("app").get<std::string>());
      EXPECT_EQ(loop.at("loss_scale").get<double>(), scale) << loop.dump();
    } else {  // no overflow at all: then fp16 tracks the float32 run like bf16
      for (std::size_t e = 0; e < 2; ++e)
        EXPECT_NEAR(fp16_log[e]["loss"].get<double>(), cpu_log[e]["loss"].get<double>(),
                    0.05 * std::abs(cpu_log[e]["loss"].get<double>()) + 0.05);
    }
    r = run_app({"embed", "--run", (w / "gpu").string(), "--device", "cpu"}, w);
    ASSERT_EQ(r.rc, 0) << describe(r);
  }
  r = run_app(cat({"train", "--run", (w / "amp_cpu").string(), "--device", "cpu", "--amp", "bf16"}, common), w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "--amp bf16 needs --device cuda")) << describe(r);
  EXPECT_FALSE(fs::exists(w / "amp_cpu")) << "nothing is written when --amp is refused";
  r = run_app(cat({"train", "--run", (w / "bad").string(), "--device", "tpu"}, common), w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "--device") && contains(r.err, "tpu")) << describe(r);
}

// ---- folds, best checkpoint, ensemble, report ---------------------------------------------------------------

std::size_t count(const std::string& s, const std::string& part) {
  std::size_t n = 0;
  for (auto p = s.find(part); p != std::string::npos; p = s.find(part, p + 1)) ++n;
  return n;
}

void check_report_in_chromium(const fs::path& page, const fs::path& work, const std::string& html);

TEST(RetrievalApp, FoldsKeepBestPerFoldEnsembleAndReport) {
  const fs::path w = scratch("folds");
  const std::string run = (w / "run").string();
  const std::vector<std::string> data{"--limit-train", "600", "--limit-test", "150", "--batch", "32"};
  Result r = run_app(cat(cat({"train", "--run", run, "--fold", "all", "--folds", "2", "--epochs", "3"}, data), kSmallMlp), w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  ASSERT_TRUE(fs::exists(w / "run" / "folds.txt"));
  for (int k = 0; k < 2; ++k) {
    SCOPED_TRACE("fold " + std::to_string(k));
    const fs::path fd = w / "run" / ("fold" + std::to_string(k));
    const auto log = read_jsonl(fd / "train_log.jsonl");
    ASSERT_EQ(log.size(), 3u);
    double best = -1;
    int best_epoch = 0;
    for (const auto& e : log) {
      ASSERT_TRUE(e.contains("val_acc"));
      const double a = e["val_acc"];
      EXPECT_TRUE(a >= 0 && a <= 1) << a;
      EXPECT_EQ(e["fold"], k);
      if (a > best) best = a, best_epoch = e["epoch"];
    }
    // best/ holds the epoch with the highest validation accuracy; checkpoints/ the last epoch
    const auto b = arclight::io::load_checkpoint(fd / "best");
    const auto& bj_bytes = b.files.at("best.json");
    const json bj = json::parse(std::string(bj_bytes.begin(), bj_bytes.end()));
    EXPECT_EQ(bj["epoch"], best_epoch);
    EXPECT_DOUBLE_EQ(bj["val_acc"].get<double>(), best);
    EXPECT_EQ(b.name, "epoch-" + std::to_string(best_epoch));
    EXPECT_EQ(arclight::io::load_checkpoint(fd / "checkpoints").name, "epoch-3");
  }
  // the folds' validation sets partition the training subset: 300 each
  EXPECT_TRUE(contains(r.out, "fold 0: 300 images (+ 300 validation)")) << r.out;

  // embed = ensemble of the two folds' best models: 2 × 16-d
  r = run_app({"embed", "--run", run}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "2 model(s)")) << r.out;
  auto g = arclight::io::SafetensorsFile::open(w / "run" / "gallery.safetensors");
  EXPECT_EQ(g.find("embeddings")->shape, (std::vector<std::int64_t>{600, 32}));
  r = run_app({"eval", "--run", run}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  const json m = json::parse(read_text(w / "run" / "metrics.json"));
  EXPECT_EQ(m["n_queries"], 150);
  EXPECT_EQ(m["n_models"], 2);
  EXPECT_GT(m["top1"].get<double>(), 0.3);  // 10 classes: far above chance after 3 short epochs

  // predict on a 10-class run: the top 5 products (ensemble of both folds) and 5 gallery neighbours
  {
    arclight::data::Image img(40, 30, 3);  // RGB and another size: converted to grey 28 x 28 by the app
    for (std::size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<std::uint8_t>((i * 37) % 251);
    arclight::data::write_png(w / "photo.png", img);
    r = run_app({"predict", "--run", run, "--json", (w / "photo.png").string()}, w);
    ASSERT_EQ(r.rc, 0) << describe(r);
    const json p = json::parse(r.out)["predictions"][0];
    ASSERT_EQ(p["products"].size(), 5u);
    ASSERT_EQ(p["neighbours"].size(), 5u);
    for (const auto& nb : p["neighbours"]) {
      EXPECT_TRUE(contains(nb["source"].get<std::string>(), "fashion-mnist/train")) << nb.dump();
      EXPECT_EQ(nb["class"], m["class_names"][nb["label"].get<int>()]);
    }
  }

  // an ensemble across runs: + a plain run → 3 models, 48-d, written to its own folder
  const std::string plain = (w / "plain").string();
  r = run_app(cat(cat({"train", "--run", plain, "--epochs", "1"}, data), kSmallMlp), w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  const std::string ens = (w / "ens").string();
  r = run_app({"embed", "--run", run, "--run", plain, "--out", ens, "--tta-flip"}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "3 model(s) with flip TTA")) << r.out;
  auto ge = arclight::io::SafetensorsFile::open(w / "ens" / "queries.safetensors");
  EXPECT_EQ(ge.find("embeddings")->shape, (std::vector<std::int64_t>{150, 48}));
  EXPECT_EQ(ge.find("class_cos")->shape, (std::vector<std::int64_t>{150, 10}));
  r = run_app({"eval", "--run", ens}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_EQ(json::parse(read_text(w / "ens" / "metrics.json"))["n_models"], 3);  // 2 folds + 1
  // runs on other images cannot form an ensemble
  const std::string other = (w / "other").string();
  r = run_app(cat({"train", "--run", other, "--epochs", "1", "--limit-train", "300", "--limit-test", "150"}, kSmallMlp), w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  r = run_app({"embed", "--run", run, "--run", other, "--out", (w / "bad_ens").string()}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "an ensemble needs the same images")) << describe(r);

  // the report: every section, the validation-accuracy curve of each fold, thumbnails; no scripts
  r = run_app({"report", "--run", run}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  const std::string html = read_text(w / "run" / "report.html");
  for (const char* part : {"id='metrics'", "id='curves'", "id='confusion'", "id='per-class'", "id='neighbours'",
                           "id='config'", ">validation accuracy</text>", ">val acc fold 0</text>",
                           ">val acc fold 1</text>", "data:image/png;base64,"})
    EXPECT_TRUE(contains(html, part)) << part;
  EXPECT_EQ(count(html, "<svg"), 4u);  // loss, lr, validation accuracy, confusion
  EXPECT_EQ(count(html, "<polyline"), 6u);  // 3 charts × 2 folds
  EXPECT_FALSE(contains(html, "no data"));
  EXPECT_FALSE(contains(html, "<script"));
  EXPECT_EQ(count(html, "<img class='q'"), 24u);
  check_report_in_chromium(w / "run" / "report.html", w, html);
}

bool chromium_on_path() { return std::system("command -v chromium > /dev/null 2>&1") == 0; }

// Loads `page` in headless Chromium; returns {exit status, serialised DOM, console lines}.
std::tuple<int, std::string, std::string> chromium(const fs::path& page, const fs::path& work) {
  const fs::path dom = work / "dom.html", log = work / "chromium.log";
  const std::string cmd = "timeout 120 chromium --headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0 "
                          "--user-data-dir='" + (work / "profile").string() + "' --dump-dom 'file://" +
                          fs::absolute(page).string() + "' > '" + dom.string() + "' 2> '" + log.string() + "'";
  const int rc = std::system(cmd.c_str());
  std::string console;
  std::istringstream in(read_text(log));
  for (std::string line; std::getline(in, line);)
    if (contains(line, ":CONSOLE")) console += line + "\n";
  return {rc, read_text(dom), console};
}

void check_report_in_chromium(const fs::path& page, const fs::path& work, const std::string& html) {
  if (!chromium_on_path()) GTEST_SKIP() << "chromium is not on PATH (apt-get install chromium): render check skipped";
  // negative control: the same check sees a planted console error
  const fs::path bad = work / "planted.html";
  std::ofstream(bad) << "<!DOCTYPE html><html><head><meta charset='utf-8'><title>x</title></head><body>"
                        "<script>console.error('planted'); no_such_function();</script></body></html>\n";
  const auto [brc, bdom, bconsole] = chromium(bad, work);
  ASSERT_EQ(brc, 0);
  EXPECT_TRUE(contains(bconsole, "planted") && contains(bconsole, "no_such_function")) << bconsole;

  const auto [rc, dom, console] = chromium(page, work);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(console, "") << "console output while loading the report";
  // Chromium parsed the structure: the same figures, table rows and sections as the file
  EXPECT_EQ(count(dom, "<svg"), count(html, "<svg"));
  EXPECT_EQ(count(dom, "<tr>"), count(html, "<tr>"));
  EXPECT_GT(count(dom, "<tr>"), 40u);
  for (const char* id : {"id=\"metrics\"", "id=\"curves\"", "id=\"confusion\"", "id=\"per-class\"", "id=\"neighbours\"",
                         "id=\"config\""})
    EXPECT_TRUE(contains(dom, id)) << id;
  EXPECT_EQ(count(dom, "<img"), count(html, "<img"));
}

// ---- interruption and exact resume ------------------------------------------------------------------------

// A small deterministic training run (cnn, 1 thread, `epochs` epochs of 10 steps, a checkpoint every
// `every` steps), with --resume unless `resume` is false.
std::vector<std::string> resume_args(const std::string& run, int epochs = 3, int every = 4, bool resume = true) {
  std::vector<std::string> a{"train", "--run", run, "--model", "cnn", "--embedding-dim", "32", "--image-size", "20",
                             "--limit-train", "320", "--limit-test", "50", "--batch", "32", "--epochs",
                             std::to_string(epochs), "--checkpoint-every", std::to_string(every), "--threads", "1",
                             "--workers", "2"};
  if (resume) a.push_back("--resume");
  return a;
}

// The bytes that define where training is: model and optimizer state of the final checkpoint.
std::pair<std::vector<std::uint8_t>, std::vector<std::uint8_t>> final_state(const fs::path& run) {
  const auto ck = arclight::io::load_checkpoint(run / "checkpoints");
  EXPECT_EQ(ck.name, "epoch-3");
  return {ck.files.at("model.safetensors"), ck.files.at("optimizer.safetensors")};
}

TEST(RetrievalApp, SigkillAtRandomMomentsThenResumeGivesBitIdenticalWeights) {
  const fs::path w = scratch("kill");
  const auto t_start = std::chrono::steady_clock::now();
  // the uninterrupted reference (--resume on an empty run starts from scratch)
  Result ref = run_app(resume_args((w / "ref").string()), w);
  ASSERT_EQ(ref.rc, 0) << describe(ref);
  EXPECT_TRUE(contains(ref.out, "no checkpoint in")) << ref.out;
  const auto [ref_model, ref_opt] = final_state(w / "ref");
  const auto ref_log = read_jsonl(w / "ref" / "train_log.jsonl");
  ASSERT_EQ(ref_log.size(), 3u);

  std::uint32_t seed = static_cast<std::uint32_t>(std::chrono::system_clock::now().time_since_epoch().count());
  if (const char* s = std::getenv("ARCLIGHT_KILL_SEED")) seed = static_cast<std::uint32_t>(std::stoul(s));
  std::printf("[ INFO     ] kill seed %u (set ARCLIGHT_KILL_SEED to replay); reference run %.2f s\n", seed, ref.seconds);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> delay(0.3 * ref.seconds, 0.8 * ref.seconds);
  const fs::path run = w / "killed";
  int kills = 0, resumes_from_checkpoint = 0;
  for (int attempt = 0; attempt < 12; ++attempt) {
    const fs::path stem = w / ("attempt" + std::to_string(attempt));
    const auto t0 = std::chrono::steady_clock::now();
    const pid_t pid = spawn_app(resume_args(run.string()), stem);
    ASSERT_GT(pid, 0);
    const bool try_kill = kills < 4;
    if (try_kill) {
      std::this_thread::sleep_for(std::chrono::duration<double>(delay(rng)));
      kill(pid, SIGKILL);
    }
    const Result r = wait_app(pid, stem, t0);
    if (contains(r.out, "resuming from")) ++resumes_from_checkpoint;
    if (r.signal == SIGKILL) {
      ++kills;
      std::printf("[ INFO     ] attempt %d killed after %.2f s\n", attempt, r.seconds);
      continue;
    }
    ASSERT_EQ(r.rc, 0) << describe(r);
    if (resumes_from_checkpoint == 0 && attempt < 8) {
      // finished (or every kill came before the first checkpoint) without exercising a resume: start over
      std::printf("[ INFO     ] attempt %d finished without a resume; starting over\n", attempt);
      fs::remove_all(run);
      kills = 0;
      continue;
    }
    if (!contains(r.out, "already complete")) {
      ASSERT_TRUE(contains(r.out, "train epoch 3/3")) << r.out;
    }
    break;
  }
  EXPECT_GE(kills, 1);
  EXPECT_GE(resumes_from_checkpoint, 1) << "no rerun resumed from a checkpoint: the kills all came too early";
  const auto [model, opt] = final_state(run);
  EXPECT_TRUE(model == ref_model) << "model weights differ from the uninterrupted run";
  EXPECT_TRUE(opt == ref_opt) << "optimizer state differs from the uninterrupted run";
  const auto log = read_jsonl(run / "train_log.jsonl");
  ASSERT_EQ(log.size(), 3u);
  for (std::size_t e = 0; e < 3; ++e) {
    EXPECT_EQ(log[e]["loss"], ref_log[e]["loss"]) << "epoch " << e + 1;  // bit-identical per-epoch mean loss
    EXPECT_EQ(log[e]["lr"], ref_log[e]["lr"]);
    EXPECT_EQ(log[e]["steps"], ref_log[e]["steps"]);
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  std::printf("[ INFO     ] %d kills, %d resumes from a checkpoint, %.1f s in all\n", kills, resumes_from_checkpoint,
              total);
}

class InterruptSignal : public ::testing::TestWithParam<int> {};

TEST_P(InterruptSignal, SavesACheckpointAndExitsCleanly) {
  const int sig = GetParam();
  const fs::path w = scratch("signal" + std::to_string(sig));
  const auto args = resume_args((w / "run").string(), 50, 0, false);  // a fresh run that would take minutes
  const fs::path stem = w / "train";
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = spawn_app(args, stem);
  ASSERT_GT(pid, 0);
  // wait until it is training (the first epoch line), then Ctrl-C
  for (int i = 0; i < 600 && !contains(read_text(stem.string() + ".out"), "epoch 1/50"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(pid, sig);
  const Result r = wait_app(pid, stem, t0);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "interrupted at step") && contains(r.out, "--resume")) << r.out;
  EXPECT_FALSE(contains(r.out, "epoch 50/50"));
  // a loadable checkpoint at the step where it stopped
  const auto ck = arclight::io::load_checkpoint(w / "run" / "checkpoints");
  const auto& sj = ck.files.at("state.json");
  const json st = json::parse(std::string(sj.begin(), sj.end()));
  EXPECT_GT(st["step"].get<int>(), 10);
  EXPECT_TRUE(contains(r.out, "interrupted at step " + std::to_string(st["step"].get<int>()))) << r.out;
  // ... that the app loads: embed and eval work from it
  Result e = run_app({"embed", "--run", (w / "run").string()}, w);
  ASSERT_EQ(e.rc, 0) << describe(e);
  e = run_app({"eval", "--run", (w / "run").string()}, w);
  ASSERT_EQ(e.rc, 0) << describe(e);
}

INSTANTIATE_TEST_SUITE_P(RetrievalApp, InterruptSignal, ::testing::Values(SIGINT, SIGTERM),
                         [](const auto& info) { return std::string(info.param == SIGINT ? "SIGINT" : "SIGTERM"); });

// ---- help -----------------------------------------------------------------------------------------------

TEST(RetrievalApp, HelpOnEverySubcommand) {
  const fs::path w = scratch("help");
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases{
      {"", {"train", "embed", "eval", "predict", "report", "demo", "info"}},
      {"train", {"--data", "--test-data", "--fold", "--folds", "--resume", "--on-bad-image", "--checkpoint-every",
                 "--image-size", "--per-class"}},
      {"embed", {"--run", "--out", "--tta-flip"}},
      {"eval", {"--run"}},
      {"predict", {"--run", "--json", "--top", "images"}},
      {"report", {"--run"}},
      {"demo", {"--quick", "--run"}},
      {"info", {"backend"}}};
  for (const auto& [sub, parts] : cases) {
    std::vector<std::string> args;
    if (!sub.empty()) args.push_back(sub);
    args.push_back("--help");
    const Result r = run_app(args, w);
    EXPECT_EQ(r.rc, 0) << sub << "\n" << describe(r);
    for (const auto& p : parts) EXPECT_TRUE(contains(r.out, p)) << sub << " --help lacks " << p << ":\n" << r.out;
  }
}

}  // namespace

// METHOD.md's backbones run in the app: a registered model name builds backbone → GeM → Linear → BN1d, trains,
// checkpoints (with the model's random stream for drop-path), embeds and evaluates.
TEST(RetrievalApp, RegisteredBackboneTrainsEmbedsAndEvaluates) {
  const fs::path w = scratch("backbone");
  make_image_folder(w / "train", 12, 32, 5);
  make_image_folder(w / "test", 3, 32, 6);
  const std::string run = (w / "run").string();
  Result r = run_app({"train", "--run", run, "--data", "folder:" + (w / "train").string(), "--test-data",
                      "folder:" + (w / "test").string(), "--model", "efficientnet_b0", "--image-size", "32",
                      "--epochs", "1", "--batch", "8", "--embedding-dim", "32", "--threads", "2"},
                     w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "model efficientnet_b0")) << r.out;
  // The checkpoint holds the backbone's timm-named tensors and the model's RNG state.
  bool found_backbone = false;
  for (const auto& e : fs::recursive_directory_iterator(w / "run" / "checkpoints"))
    if (e.path().filename() == "model.safetensors") {
      auto f = arclight::io::SafetensorsFile::open(e.path());
      found_backbone = found_backbone || f.find("backbone.conv_stem.weight") != nullptr;
    }
  EXPECT_TRUE(found_backbone);
  r = run_app({"embed", "--run", run}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  r = run_app({"eval", "--run", run}, w);
  ASSERT_EQ(r.rc, 0) << describe(r);
  const json m = json::parse(read_text(w / "run" / "metrics.json"));
  EXPECT_EQ(m["n_queries"], 3 * static_cast<int>(m["class_names"].size()));
  const double top1 = m["top1"].get<double>();
  EXPECT_TRUE(top1 >= 0.0 && top1 <= 1.0) << top1;
  auto g = arclight::io::SafetensorsFile::open(w / "run" / "gallery.safetensors");
  EXPECT_EQ(g.find("embeddings")->shape, (std::vector<std::int64_t>{12 * static_cast<std::int64_t>(m["class_names"].size()), 32}));
  // An unknown name is refused before anything is written.
  r = run_app({"train", "--run", (w / "bad").string(), "--model", "resnet9000"}, w);
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(contains(r.err, "unknown model 'resnet9000'")) << describe(r);
  EXPECT_FALSE(fs::exists(w / "bad"));
}
