// Checkpoint directories: round trip, pruning, replacement, fallback to the previous checkpoint when
// the latest is corrupt or incomplete (each kind of damage), clear errors, and crash safety: a child
// process writing checkpoints in a loop is SIGKILLed at random moments and every time the loader must
// return the previous or the new checkpoint, intact.
#include <gtest/gtest.h>
#include <signal.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "arclight/io/checkpoint.hpp"
#include "arclight/io/safetensors.hpp"
#include "io_test_util.hpp"

namespace {

using arclight::DType;
using arclight::Error;
using namespace arclight::io;
using arclight::io::testing::bytes_of;
using arclight::io::testing::ScratchDir;
namespace fs = std::filesystem;

std::string step_name(std::int64_t k) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%06lld", static_cast<long long>(k));
  return buf;
}

// A trainer-like checkpoint for step k: model and optimizer safetensors whose values encode k, and a
// state.json. `model_elems` sets the size (larger files make kills land mid-write more often).
CheckpointFiles files_for_step(std::int64_t k, std::size_t model_elems = 64 * 1024) {
  std::vector<std::int32_t> w(model_elems);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<std::int32_t>(k * 1000003 + static_cast<std::int64_t>(i));
  std::vector<double> m(257);
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<double>(k) + 0.5 * static_cast<double>(i);
  auto as_bytes = [](const auto& v) {
    return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(v.data()), v.size() * sizeof(v[0]));
  };
  const std::vector<TensorBytes> model = {{"w", DType::i32, {static_cast<std::int64_t>(w.size())}, as_bytes(w)}};
  const std::vector<TensorBytes> opt = {{"exp_avg.w", DType::f64, {static_cast<std::int64_t>(m.size())}, as_bytes(m)}};
  CheckpointFiles files;
  files["model.safetensors"] = serialize_safetensors(model, {{"step", std::to_string(k)}});
  files["optimizer.safetensors"] = serialize_safetensors(opt);
  files["state.json"] = bytes_of("{\"format_version\":1,\"step\":" + std::to_string(k) + ",\"epoch\":" + std::to_string(k / 10) + "}");
  return files;
}

// Checks that every file of `ck` is the content files_for_step wrote for the step its name says;
// returns that step.
std::int64_t expect_consistent(const Checkpoint& ck) {
  std::int64_t k = -1;
  EXPECT_EQ(std::sscanf(ck.name.c_str(), "step-%lld", reinterpret_cast<long long*>(&k)), 1) << ck.name;
  EXPECT_EQ(ck.files.size(), 3u);
  const auto expected = files_for_step(k, ck.files.count("model.safetensors")
                                              ? SafetensorsFile::from_bytes(ck.files.at("model.safetensors")).at("w").data.size() / 4
                                              : 0);
  EXPECT_EQ(ck.files, expected) << "checkpoint " << ck.name << " does not hold step " << k << "'s content";
  return k;
}

TEST(Checkpoint, RoundTripAndLayout) {
  ScratchDir root;
  const auto files = files_for_step(7, 1000);
  const auto dir = save_checkpoint(root.path(), "step-000007", files);
  EXPECT_EQ(dir, root / "step-000007");
  EXPECT_TRUE(fs::exists(dir / "MANIFEST"));
  EXPECT_EQ(read_file(root / "latest"), bytes_of("step-000007\n"));
  const auto ck = load_checkpoint(root.path());
  EXPECT_EQ(ck.name, "step-000007");
  EXPECT_EQ(ck.files, files);
  EXPECT_TRUE(ck.is_latest);
  EXPECT_TRUE(ck.rejected.empty());
  EXPECT_EQ(ck.sequence, 1u);
  // The MANIFEST records every file's size and SHA-256.
  const auto manifest = read_file(dir / "MANIFEST");
  const std::string text(manifest.begin(), manifest.end());
  for (const auto& [name, bytes] : files) {
    EXPECT_NE(text.find("\"" + name + "\":{\"size\":" + std::to_string(bytes.size()) + ",\"sha256\":\"" + to_hex(sha256(bytes)) + "\""),
              std::string::npos) << text;
  }
  EXPECT_NE(text.find("\"format_version\":1"), std::string::npos);
  // Nothing hidden is left behind.
  for (const auto& e : fs::directory_iterator(root.path())) EXPECT_NE(e.path().filename().string()[0], '.');
  // An empty file and a checkpoint with no files are fine.
  save_checkpoint(root.path(), "empty", {{"note.txt", {}}});
  EXPECT_TRUE(load_checkpoint(root.path()).files.at("note.txt").empty());
  save_checkpoint(root.path(), "nothing", {});
  EXPECT_TRUE(load_checkpoint(root.path()).files.empty());
}

TEST(Checkpoint, KeepsTheLastKAndPrunesOlder) {
  ScratchDir root;
  for (int k = 1; k <= 5; ++k) save_checkpoint(root.path(), step_name(k), files_for_step(k, 100), {.keep_last = 2});
  auto listed = list_checkpoints(root.path());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].name, step_name(5));
  EXPECT_EQ(listed[1].name, step_name(4));
  EXPECT_EQ(listed[0].sequence, 5u);
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(root.path())) ++entries;
  EXPECT_EQ(entries, 3u);  // two checkpoints + latest
  for (int k = 6; k <= 8; ++k) save_checkpoint(root.path(), step_name(k), files_for_step(k, 100), {.keep_last = 3});
  listed = list_checkpoints(root.path());
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[2].name, step_name(6));
}

TEST(Checkpoint, ResavingANameReplacesItAtomically) {
  ScratchDir root;
  save_checkpoint(root.path(), "a", {{"x", bytes_of("first")}});
  save_checkpoint(root.path(), "b", {{"x", bytes_of("second")}});
  save_checkpoint(root.path(), "a", {{"x", bytes_of("third"), }, {"y", bytes_of("new file")}});
  const auto ck = load_checkpoint(root.path());
  EXPECT_EQ(ck.name, "a");
  EXPECT_EQ(ck.sequence, 3u);
  EXPECT_EQ(ck.files.at("x"), bytes_of("third"));
  EXPECT_EQ(ck.files.at("y"), bytes_of("new file"));
  EXPECT_EQ(load_checkpoint_named(root.path(), "b").files.at("x"), bytes_of("second"));
}

TEST(Checkpoint, RejectsInvalidNamesAndOptions) {
  ScratchDir root;
  auto msg = [&](const std::string& name, const CheckpointFiles& files, std::size_t keep = 2) {
    try {
      save_checkpoint(root.path(), name, files, {.keep_last = keep});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  for (const char* bad : {"", "../escape", "a/b", ".hidden", "latest", "sp ace"})
    EXPECT_NE(msg(bad, {}).find("io::save_checkpoint: invalid checkpoint name"), std::string::npos) << bad;
  EXPECT_NE(msg("ok", {{"MANIFEST", {}}}).find("invalid file name 'MANIFEST'"), std::string::npos);
  EXPECT_NE(msg("ok", {{"../x", {}}}).find("invalid file name '../x'"), std::string::npos);
  EXPECT_NE(msg("ok", {}, 1).find("keep_last = 1, expected ≥ 2"), std::string::npos);
  EXPECT_FALSE(fs::exists(root / "ok"));
  EXPECT_EQ(msg("ok", {}), "<no error>");
}

class CheckpointFallback : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int k = 1; k <= 3; ++k) save_checkpoint(root.path(), step_name(k), files_for_step(k, 500), {.keep_last = 3});
  }
  // Loads, expects a fallback to step 2 with a reason about step 3 containing `why`.
  void expect_fallback_to_step2(const std::string& why) {
    std::ostringstream log;
    const auto ck = load_checkpoint(root.path(), {.log = &log});
    EXPECT_EQ(ck.name, step_name(2));
    EXPECT_EQ(expect_consistent(ck), 2);
    EXPECT_FALSE(ck.is_latest);
    ASSERT_FALSE(ck.rejected.empty());
    EXPECT_NE(ck.rejected[0].find(step_name(3)), std::string::npos) << ck.rejected[0];
    EXPECT_NE(ck.rejected[0].find(why), std::string::npos) << ck.rejected[0];
    EXPECT_NE(log.str().find("WARNING"), std::string::npos) << log.str();
    EXPECT_NE(log.str().find("loaded 'step-000002'"), std::string::npos) << log.str();
    EXPECT_NE(log.str().find(why), std::string::npos) << log.str();
  }
  fs::path latest_dir() const { return root / step_name(3); }
  ScratchDir root;
};

TEST_F(CheckpointFallback, FlippedByteInLatestModel) {
  auto bytes = read_file(latest_dir() / "model.safetensors");
  bytes[bytes.size() / 2] ^= 0x10;  // same size, different hash
  write_file_atomic(latest_dir() / "model.safetensors", bytes);
  expect_fallback_to_step2("file 'model.safetensors' has SHA-256");
}

TEST_F(CheckpointFallback, TruncatedFile) {
  auto bytes = read_file(latest_dir() / "optimizer.safetensors");
  bytes.resize(bytes.size() - 3);
  write_file_atomic(latest_dir() / "optimizer.safetensors", bytes);
  expect_fallback_to_step2("file 'optimizer.safetensors' is ");
}

TEST_F(CheckpointFallback, MissingFile) {
  fs::remove(latest_dir() / "state.json");
  expect_fallback_to_step2("file 'state.json' listed in MANIFEST is missing");
}

TEST_F(CheckpointFallback, MissingManifest) {
  fs::remove(latest_dir() / "MANIFEST");
  expect_fallback_to_step2("no readable MANIFEST (incomplete checkpoint)");
}

TEST_F(CheckpointFallback, TruncatedManifest) {
  auto bytes = read_file(latest_dir() / "MANIFEST");
  bytes.resize(bytes.size() / 2);
  write_file_atomic(latest_dir() / "MANIFEST", bytes);
  expect_fallback_to_step2("MANIFEST is not valid JSON");
}

TEST_F(CheckpointFallback, LatestPointsToAMissingDirectory) {
  fs::remove_all(latest_dir());
  expect_fallback_to_step2("directory does not exist");
}

TEST_F(CheckpointFallback, NoLatestPointerUsesTheHighestSequence) {
  fs::remove(root / "latest");
  std::ostringstream log;
  const auto ck = load_checkpoint(root.path(), {.log = &log});
  EXPECT_EQ(ck.name, step_name(3));
  EXPECT_FALSE(ck.is_latest);
  EXPECT_NE(log.str().find("no 'latest' pointer"), std::string::npos) << log.str();
  // A garbage pointer is reported as such.
  write_file_atomic(root / "latest", std::string_view("../../etc\n"));
  const auto ck2 = load_checkpoint(root.path(), {.log = nullptr});
  EXPECT_EQ(ck2.name, step_name(3));
  ASSERT_EQ(ck2.rejected.size(), 1u);
  EXPECT_NE(ck2.rejected[0].find("'latest' pointer"), std::string::npos);
}

TEST_F(CheckpointFallback, CopiedDirectoryWithForeignManifestIsNotACandidate) {
  fs::copy(root / step_name(3), root / "step-999999");
  EXPECT_EQ(list_checkpoints(root.path()).size(), 3u);
  fs::remove(root / "latest");
  EXPECT_EQ(load_checkpoint(root.path(), {.log = nullptr}).name, step_name(3));
  try {
    load_checkpoint_named(root.path(), "step-999999");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MANIFEST names checkpoint 'step-000003', not 'step-999999'"), std::string::npos)
        << e.what();
  }
}

TEST_F(CheckpointFallback, AllCorruptIsAClearError) {
  for (int k = 1; k <= 3; ++k) {
    auto bytes = read_file(root / step_name(k) / "state.json");
    bytes[0] ^= 1;
    write_file_atomic(root / step_name(k) / "state.json", bytes);
  }
  try {
    load_checkpoint(root.path(), {.log = nullptr});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("io::load_checkpoint: no valid checkpoint in"), std::string::npos) << m;
    EXPECT_NE(m.find("rejected 3 candidate(s)"), std::string::npos) << m;
    for (int k = 1; k <= 3; ++k) EXPECT_NE(m.find("'" + step_name(k) + "': file 'state.json' has SHA-256"), std::string::npos) << m;
  }
}

TEST(Checkpoint, EmptyRootIsAClearError) {
  ScratchDir root;
  for (const auto& r : {root.path(), root / "does-not-exist"}) {
    try {
      load_checkpoint(r);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no checkpoint found in"), std::string::npos) << e.what();
    }
  }
}

TEST(Checkpoint, LeftoversOfAKilledWriterAreIgnoredThenCleaned) {
  ScratchDir root;
  save_checkpoint(root.path(), "one", {{"f", bytes_of("1")}});
  fs::create_directory(root / ".tmp-two-abc123");
  write_file_atomic(root / ".tmp-two-abc123" / "f", std::string_view("partial"));
  write_file_atomic(root / ".latest.tmp-XYZ", std::string_view("two"));
  EXPECT_EQ(load_checkpoint(root.path()).name, "one");
  save_checkpoint(root.path(), "three", {{"f", bytes_of("3")}});
  EXPECT_FALSE(fs::exists(root / ".tmp-two-abc123"));
  EXPECT_FALSE(fs::exists(root / ".latest.tmp-XYZ"));
}

TEST(Checkpoint, UncommittedNewerCheckpointIsRetiredOnTheNextSave) {
  // Simulates a writer killed after moving "b" into place but before updating `latest`: the run
  // resumes from "a", so "b" belongs to an abandoned timeline and must not outlive committed history.
  ScratchDir root;
  save_checkpoint(root.path(), "a", {{"f", bytes_of("a")}}, {.keep_last = 2});
  save_checkpoint(root.path(), "b", {{"f", bytes_of("b")}}, {.keep_last = 2});
  write_file_atomic(root / "latest", std::string_view("a\n"));
  EXPECT_EQ(load_checkpoint(root.path()).name, "a");
  save_checkpoint(root.path(), "c", {{"f", bytes_of("c")}}, {.keep_last = 2});
  EXPECT_FALSE(fs::exists(root / "b"));
  const auto listed = list_checkpoints(root.path());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].name, "c");
  EXPECT_EQ(listed[1].name, "a");
}

// The crash-safety test. A child saves step s, s+1, ... in a loop and reports each completed save on a
// pipe; the parent SIGKILLs it at a random moment, then loads. The loaded checkpoint must be intact
// (hashes verified by the loader, content re-derived here) and be either the last one the child
// reported as saved ("previous") or the one it was writing ("new"). The next child resumes from it.
// Delays are scaled by a measured save time so the kills land inside saves on a fast or a loaded
// machine alike; every other kill first waits for one completed save, so the writers make progress.
TEST(CheckpointCrashSafety, SigkillWhileSavingAlwaysLeavesPreviousOrNewIntact) {
  ScratchDir root;
  const auto c0 = std::chrono::steady_clock::now();
  for (int k = -2; k <= 0; ++k) save_checkpoint(root.path(), step_name(k + 2) + "-calibration", files_for_step(k + 2));
  const double save_us = std::clamp(
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count() / 3.0, 500.0, 300000.0);
  for (int k = -2; k <= 0; ++k) fs::remove_all(root / (step_name(k + 2) + "-calibration"));
  save_checkpoint(root.path(), step_name(0), files_for_step(0));

  std::int64_t last_loaded = 0;
  std::mt19937 rng(20240611);
  std::uniform_real_distribution<double> fraction(0.0, 1.0);
  constexpr int kKills = 30;
  int loaded_new = 0, loaded_previous = 0;
  std::int64_t total_saves = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int kill_no = 0; kill_no < kKills; ++kill_no) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const std::int64_t start = last_loaded + 1;
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      try {
        for (std::int64_t k = start;; ++k) {
          save_checkpoint(root.path(), step_name(k), files_for_step(k), {.keep_last = 2});
          if (::write(fds[1], &k, sizeof k) != static_cast<ssize_t>(sizeof k)) ::_exit(4);
        }
      } catch (...) {
        ::_exit(3);
      }
    }
    ::close(fds[1]);
    std::int64_t reported = -1, k = 0;
    if (kill_no % 2 == 0) {
      // Wait (bounded) for one completed save, then kill somewhere inside the next one.
      pollfd p{fds[0], POLLIN, 0};
      if (::poll(&p, 1, 20000) == 1 && ::read(fds[0], &k, sizeof k) == static_cast<ssize_t>(sizeof k)) {
        reported = k;
        ++total_saves;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long>(fraction(rng) * 1.2 * save_us)));
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long>(fraction(rng) * 2.0 * save_us)));
    }
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the writer died on its own (exit code " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1) << ")";
    while (::read(fds[0], &k, sizeof k) == static_cast<ssize_t>(sizeof k)) {
      reported = k;
      ++total_saves;
    }
    ::close(fds[0]);

    const std::int64_t previous = reported >= 0 ? reported : last_loaded;
    const std::int64_t in_flight = previous + 1;
    const Checkpoint ck = load_checkpoint(root.path(), {.log = nullptr});
    const std::int64_t step = expect_consistent(ck);
    EXPECT_TRUE(step == previous || step == in_flight)
        << "kill " << kill_no << ": loaded step " << step << ", expected " << previous << " or " << in_flight;
    (step == previous ? loaded_previous : loaded_new) += 1;
    // When the new one won, the previous one is still there and intact (it is kept until the new one is complete).
    if (step == in_flight) {
      EXPECT_EQ(expect_consistent(load_checkpoint_named(root.path(), step_name(previous))), previous);
    }
    last_loaded = step;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("saves_completed", static_cast<int>(total_saves));
  RecordProperty("loaded_previous", loaded_previous);
  RecordProperty("loaded_new", loaded_new);
  std::printf("[crash-safety] one save ~%.1f ms; %d kills in %.2f s: %lld saves completed, loaded previous %d times, "
              "new %d times\n",
              save_us / 1000.0, kKills, seconds, static_cast<long long>(total_saves), loaded_previous, loaded_new);
  // Not vacuous: the writers made progress between kills (every other kill waits for a completed save).
  EXPECT_GE(last_loaded, kKills / 2);
}

}  // namespace
