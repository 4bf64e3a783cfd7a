// The op profiler (core/profiler.hpp): rows per op type and pass, time charged to the outermost op only,
// nothing collected while disabled, backward nodes recorded by the engine under their names, reset.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "arclight/arclight.hpp"
#include "arclight/core/profiler.hpp"

using namespace arclight;

namespace {
const profiler::Entry* find(const std::vector<profiler::Entry>& rows, const std::string& name, profiler::Phase p) {
  auto it = std::find_if(rows.begin(), rows.end(), [&](const profiler::Entry& e) { return e.name == name && e.phase == p; });
  return it == rows.end() ? nullptr : &*it;
}
struct ProfilerOff {
  ~ProfilerOff() {
    profiler::enable(false);
    profiler::reset();
  }
};
}  // namespace

TEST(Profiler, CollectsNothingWhileDisabled) {
  ProfilerOff guard;
  profiler::enable(false);
  profiler::reset();
  Tensor a = ones({16, 16});
  (void)ops::matmul(a, a);
  EXPECT_TRUE(profiler::entries().empty());
}

TEST(Profiler, ChargesTheOutermostScopeOnly) {
  ProfilerOff guard;
  profiler::reset();
  profiler::enable(true);
  {
    profiler::Scope outer("outer_op");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    {
      profiler::Scope inner("inner_op");  // nested: not a row of its own
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  const auto rows = profiler::entries();
  const auto* outer = find(rows, "outer_op", profiler::Phase::forward);
  ASSERT_NE(outer, nullptr);
  EXPECT_EQ(outer->calls, 1);
  EXPECT_GE(outer->seconds, 0.024);
  EXPECT_EQ(find(rows, "inner_op", profiler::Phase::forward), nullptr);
}

TEST(Profiler, RecordsForwardOpsAndBackwardNodes) {
  ProfilerOff guard;
  profiler::reset();
  profiler::enable(true);
  Generator gen(3);
  Tensor x = randn({8, 32}, DType::f32, gen).set_requires_grad();
  Tensor w = randn({32, 4}, DType::f32, gen).set_requires_grad();
  for (int i = 0; i < 3; ++i) {
    Tensor loss = ops::sum(ops::matmul(x, w));
    loss.backward();
  }
  profiler::enable(false);
  const auto rows = profiler::entries();
  const auto* mm = find(rows, "matmul", profiler::Phase::forward);
  ASSERT_NE(mm, nullptr);
  EXPECT_EQ(mm->calls, 3);
  const auto* sum = find(rows, "sum", profiler::Phase::forward);
  ASSERT_NE(sum, nullptr);
  EXPECT_EQ(sum->calls, 3);
  // The engine names backward rows after the graph's nodes; at least one backward row per step.
  std::int64_t bwd_calls = 0;
  for (const auto& e : rows) bwd_calls += e.phase == profiler::Phase::backward ? e.calls : 0;
  EXPECT_GE(bwd_calls, 3);
  const std::string table = profiler::report(5);
  EXPECT_NE(table.find("matmul"), std::string::npos);
  EXPECT_NE(table.find("(outside ops)"), std::string::npos);
  EXPECT_NE(table.find("bwd"), std::string::npos);
  profiler::reset();
  EXPECT_TRUE(profiler::entries().empty());
}

namespace {
std::atomic<int> g_syncs{0};
// A "device" that takes 200 ms to drain on odd calls (a scope's entry) and 3 ms on even ones (its exit).
void counting_sync() {
  const int n = ++g_syncs;
  std::this_thread::sleep_for(std::chrono::milliseconds(n % 2 == 1 ? 200 : 3));
}
}  // namespace

// The device-time mode: the wait runs on entry and exit of each OUTERMOST scope only, never while disabled, and the
// exit wait is charged to the op (its device work finishes inside the measured span).
TEST(Profiler, DeviceSyncRunsAroundOutermostScopesOnly) {
  ProfilerOff guard;
  struct Unhook {
    ~Unhook() { profiler::set_device_sync(nullptr); }
  } unhook;
  profiler::set_device_sync(&counting_sync);
  g_syncs = 0;
  profiler::enable(false);
  { profiler::Scope s("off"); }
  EXPECT_EQ(g_syncs.load(), 0) << "no wait while disabled";
  profiler::reset();
  profiler::enable(true);
  {
    profiler::Scope outer("outer");
    profiler::Scope inner("inner");
  }
  EXPECT_EQ(g_syncs.load(), 2) << "one wait on entry and one on exit of the outermost scope";
  profiler::enable(false);
  const auto rows = profiler::entries();
  const profiler::Entry* outer = find(rows, "outer", profiler::Phase::forward);
  ASSERT_NE(outer, nullptr);
  EXPECT_EQ(find(rows, "inner", profiler::Phase::forward), nullptr);
  EXPECT_GE(outer->seconds, 0.003) << "the exit wait belongs to the op";
  EXPECT_LT(outer->seconds, 0.2) << "the entry wait (200 ms) does not";
  profiler::set_device_sync(nullptr);
  profiler::enable(true);
  { profiler::Scope s("unhooked"); }
  EXPECT_EQ(g_syncs.load(), 2) << "removed hook is not called";
}
