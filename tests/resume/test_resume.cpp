// Issue 4, "Resume is exact": N training steps in one process and N/2 steps + checkpoint + N/2 steps in a
// FRESH process give bit-identical model parameters, buffers and optimizer state. The loop is
// resume_trainer.cpp (EmbeddingNet, fused ArcMargin, AdamW + warm-up/cosine, GeM clamp hook, drop-path and
// input dropout, synthetic data from a seeded Generator), run here with posix_spawn, 2 OpenMP/BLAS threads
// in every process (deterministic since the depthwise-kernel fix; see test_model_determinism.cpp).
// Also: what the checkpoint holds (state.json counters, RNG states, config, version), a negative control
// (resuming without restoring the generators must diverge: the RNG really matters), and the error messages of
// io::load_training_checkpoint.
#include <gtest/gtest.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "arclight/io/sha256.hpp"
#include "arclight/io/training_state.hpp"
#include "arclight/nn/init.hpp"
#include "arclight/nn/linear.hpp"
#include "arclight/ops/elementwise.hpp"
#include "arclight/ops/reduce.hpp"
#include "arclight/optim/adamw.hpp"
#include "arclight/optim/sgd.hpp"
#include "harness.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace arclight;

constexpr int kTotalSteps = 16;
constexpr const char* kThreads = "2";

// Runs resume_trainer with `args` in a new process; returns its exit status (-1 if it did not exit).
int run_trainer(std::vector<std::string> args) {
  args.insert(args.begin(), RESUME_TRAINER_PATH);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<std::uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::string sha(const std::vector<std::uint8_t>& b) { return io::to_hex(io::sha256(b.data(), b.size())); }

// A fresh scratch directory per test.
fs::path scratch(const std::string& name) {
  fs::path d = fs::path(::testing::TempDir()) / ("arclight_resume_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

const std::string kN = std::to_string(kTotalSteps), kHalf = std::to_string(kTotalSteps / 2);

TEST(ExactResume, HalfPlusHalfInFreshProcessIsBitIdenticalToOneGo) {
  const fs::path d = scratch("exact");
  const std::string ck = (d / "ckpt").string();
  ASSERT_EQ(run_trainer({"--ckpt", (d / "unused").string(), "--total", kN, "--threads", kThreads, "--out",
                         (d / "full.bin").string()}),
            0);
  ASSERT_EQ(run_trainer({"--ckpt", ck, "--total", kN, "--stop-at", kHalf, "--threads", kThreads, "--out",
                         (d / "half.bin").string()}),
            0);
  ASSERT_EQ(run_trainer({"--ckpt", ck, "--total", kN, "--resume", "--threads", kThreads, "--out",
                         (d / "resumed.bin").string()}),
            0);
  const auto full = read_bytes(d / "full.bin"), half = read_bytes(d / "half.bin"),
             resumed = read_bytes(d / "resumed.bin");
  ASSERT_GT(full.size(), 100000u);  // model + optimizer state of ~100k parameters
  // Training moved the state between step N/2 and N (else the comparison below would prove nothing).
  EXPECT_NE(sha(full), sha(half));
  EXPECT_EQ(full.size(), resumed.size());
  EXPECT_EQ(sha(full), sha(resumed)) << "model + optimizer state after " << kTotalSteps
                                     << " steps differs between one run and a resumed run";
  EXPECT_TRUE(full == resumed);

  // The negative control: the same resume without restoring the generators (data order, dropout and
  // drop-path masks drawn afresh) must diverge — so the equality above depends on the saved RNG states.
  ASSERT_EQ(run_trainer({"--ckpt", ck, "--total", kN, "--resume", "--skip-rng-restore", "--threads", kThreads,
                         "--out", (d / "no_rng.bin").string()}),
            0);
  EXPECT_NE(sha(full), sha(read_bytes(d / "no_rng.bin")));

  // What the checkpoint holds: one verified directory with the three files, the counters and RNG states.
  const io::Checkpoint c = io::load_checkpoint(ck, {nullptr});
  EXPECT_EQ(c.name, "step-" + kHalf);
  EXPECT_TRUE(c.is_latest);
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "state.json"})
    EXPECT_TRUE(c.files.count(f)) << f;
  const auto& sj = c.files.at("state.json");
  const io::json::Value st = io::json::parse(std::string(sj.begin(), sj.end()));
  auto num = [&](const io::json::Value& v, const char* k) {
    std::int64_t x = -1;
    const io::json::Value* m = v.find(k);
    EXPECT_TRUE(m && io::json::to_i64(*m, x) == io::json::IntStatus::ok) << k;
    return x;
  };
  EXPECT_EQ(st.find("format")->text, "arclight-training-state");
  EXPECT_EQ(num(st, "version"), io::kTrainingStateVersion);
  EXPECT_EQ(num(st, "step"), kTotalSteps / 2);
  EXPECT_EQ(num(st, "scheduler_step"), kTotalSteps / 2);
  EXPECT_EQ(num(st, "sample_index"), 8 * (kTotalSteps / 2));
  EXPECT_EQ(num(*st.find("optimizer"), "step"), kTotalSteps / 2);
  EXPECT_EQ(num(*st.find("config"), "total_steps"), kTotalSteps);
  EXPECT_EQ(num(*st.find("config"), "threads"), 2);
  for (const char* g : {"model", "data", "dropout"}) {
    const io::json::Value* r = st.find("rngs")->find(g);
    ASSERT_NE(r, nullptr) << g;
    EXPECT_GT(num(*r, "offset"), 0) << g << ": the generator was never drawn from";
  }
  fs::remove_all(d);
}

// A tiny model and optimizer for the API's own round trip and errors.
struct Tiny {
  Generator gen{5};
  nn::Linear lin{4, 3, true, gen};
};

void one_step(Tiny& t, optim::Optimizer& opt, Generator& g) {
  Tensor x = randn({5, 4}, DType::f32, g);
  Tensor loss = ops::sum(ops::mul(t.lin.forward(x), t.lin.forward(x)));
  opt.zero_grad();
  loss.backward();
  opt.step();
}

TEST(TrainingState, RoundTripRestoresModelOptimizerCountersAndRngs) {
  const fs::path d = scratch("roundtrip");
  Tiny a;
  optim::AdamW oa(a.lin.parameters(), {});
  Generator data(77);
  for (int i = 0; i < 3; ++i) one_step(a, oa, data);
  io::TrainingState st;
  st.step = 3;
  st.epoch = 1;
  st.sample_index = 15;
  st.scheduler_step = 3;
  st.capture_rng("data", data);
  st.config.set("lr", io::json::Value::number(0.1 + 0.2));  // a double that needs 17 digits
  io::save_training_checkpoint(d, "ck", a.lin, oa, st);

  Tiny b;  // same architecture, then different weights
  {
    NoGradGuard ng;
    Tensor w = b.lin.weight();
    Generator other(4242);
    nn::init::normal_(w, 0.0, 1.0, other);
  }
  ASSERT_NE(models::serialize_state_dict(b.lin), models::serialize_state_dict(a.lin));
  optim::AdamW ob(b.lin.parameters(), {});
  Generator data_b(1);
  const io::TrainingState got = io::load_training_checkpoint(d, b.lin, ob, {nullptr});
  got.restore_rng("data", data_b);
  EXPECT_EQ(got.step, 3);
  EXPECT_EQ(got.epoch, 1);
  EXPECT_EQ(got.sample_index, 15);
  EXPECT_EQ(got.scheduler_step, 3);
  EXPECT_EQ(data_b.seed(), data.seed());
  EXPECT_EQ(data_b.offset(), data.offset());
  double lr = 0;
  ASSERT_TRUE(io::json::to_double(*got.config.find("lr"), lr));
  EXPECT_EQ(lr, 0.1 + 0.2);
  EXPECT_EQ(ob.step_count(), 3);
  EXPECT_EQ(ob.lr(), oa.lr());
  EXPECT_EQ(models::serialize_state_dict(b.lin), models::serialize_state_dict(a.lin));
  // The next step from the restored state equals the next step of the original.
  one_step(a, oa, data);
  one_step(b, ob, data_b);
  EXPECT_EQ(models::serialize_state_dict(b.lin), models::serialize_state_dict(a.lin));
  EXPECT_ERROR_WITH(got.restore_rng("dropout", data_b), "io::TrainingState", "no RNG state named 'dropout'",
                    "saved: data");
  fs::remove_all(d);
}

TEST(TrainingState, LoadErrorsNameWhatIsWrong) {
  const fs::path d = scratch("errors");
  Tiny a;
  optim::AdamW oa(a.lin.parameters(), {});
  Generator data(3);
  one_step(a, oa, data);
  io::save_training_checkpoint(d, "ck", a.lin, oa, io::TrainingState{});
  {  // another optimizer kind
    Tiny b;
    optim::SGD sgd(b.lin.parameters(), optim::SgdOptions{});
    EXPECT_ERROR_WITH(io::load_training_checkpoint(d, b.lin, sgd, {nullptr}), "io::load_training_checkpoint",
                      "optimizer is 'optim::AdamW'", "'optim::SGD'");
  }
  {  // another model shape
    Generator g(1);
    nn::Linear other(4, 2, true, g);
    optim::AdamW oo(other.parameters(), {});
    EXPECT_THROW(io::load_training_checkpoint(d, other, oo, {nullptr}), arclight::Error);
  }
  {  // no checkpoint at all
    Tiny b;
    optim::AdamW ob(b.lin.parameters(), {});
    EXPECT_ERROR_WITH(io::load_training_checkpoint(d / "nothing", b.lin, ob, {nullptr}), "io::load_checkpoint");
  }
  {  // a non-object config is refused at save time
    io::TrainingState bad;
    bad.config = io::json::Value::integer(3);
    EXPECT_ERROR_WITH(io::save_training_checkpoint(d, "ck2", a.lin, oa, bad), "io::save_training_checkpoint",
                      "config must be a JSON object");
  }
  fs::remove_all(d);
}

}  // namespace
