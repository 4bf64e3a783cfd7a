// The op-level profiler: wall time per op type, forward and backward, so the hot spots of a training step are
// visible without an external tool.
//
//   ARCLIGHT_PROFILE=1 ./my_program      # enabled from the start; the table goes to stderr at exit
//   profiler::enable(true); ...; std::cerr << profiler::report(10); profiler::reset();
//
// Ops open a `profiler::Scope` on entry (forward) and the autograd engine opens one around every backward node
// (phase backward, the node's name). Time is charged to the OUTERMOST open scope of the calling thread only:
// a backward closure that calls ops, or an op built from other ops (linear = matmul + add), counts once, under
// its own name — so the rows add up to the profiled time and nothing is counted twice. Time spent outside any
// scope (module glue, the optimizer's bookkeeping, allocation outside ops) is reported as "(outside ops)":
// the span between enable(true) and the report minus the profiled total.
//
// Asynchronous devices: ops on GPU tensors return once their kernels are queued, so host time says little. With
// set_device_sync(fn) (e.g. arclight::cuda::profile_device_time(true)) every outermost scope calls fn — a wait for
// the device — on entry and before it stops the clock, so each row is the op's device time (the waits serialise
// the device and the host: use it to find hot spots, not to measure throughput).
//
// Cost when disabled: one relaxed atomic load per op call. When enabled, each outermost scope takes two
// steady_clock reads and one locked map update; nested scopes only touch a thread-local counter.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace arclight::profiler {

enum class Phase : std::uint8_t { forward = 0, backward = 1 };

// One row of the table: an op type in one phase.
struct Entry {
  std::string name;
  Phase phase = Phase::forward;
  std::int64_t calls = 0;
  double seconds = 0.0;
};

namespace detail {

using Clock = std::chrono::steady_clock;

struct State {
  std::atomic<bool> enabled{false};
  std::atomic<void (*)()> device_sync{nullptr};
  std::mutex mutex;
  std::map<std::pair<std::string, Phase>, Entry> entries;
  Clock::time_point since = Clock::now();  // start of the profiled span (enable(true) or reset())
  double span_seconds = 0.0;               // closed spans (enable(false) closes the current one)
  bool print_at_exit = false;

  ~State() {
    if (print_at_exit) std::fputs(report_locked(25).c_str(), stderr);
  }
  std::string report_locked(std::size_t top);
};

inline State& state() {
  // A function-local static: destroyed at exit, which prints the table when ARCLIGHT_PROFILE=1 asked for it.
  static State s;
  static const bool from_env = [] {
    const char* v = std::getenv("ARCLIGHT_PROFILE");
    if (v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0) {
      s.print_at_exit = true;
      s.since = Clock::now();
      s.enabled.store(true, std::memory_order_relaxed);
    }
    return true;
  }();
  (void)from_env;
  return s;
}

inline thread_local int depth = 0;

inline void add(const char* name, Phase phase, double seconds) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  Entry& e = s.entries[{std::string(name), phase}];
  if (e.calls == 0) e.name = name, e.phase = phase;
  ++e.calls;
  e.seconds += seconds;
}

inline std::string format_row(const char* name, const char* phase, std::int64_t calls, double secs, double total) {
  char line[256];
  std::snprintf(line, sizeof line, "%-34s %-4s %9lld %11.2f %10.1f %6.1f%%\n", name, phase,
                static_cast<long long>(calls), secs * 1e3, calls > 0 ? secs * 1e6 / static_cast<double>(calls) : 0.0,
                total > 0 ? 100.0 * secs / total : 0.0);
  return line;
}

inline std::string State::report_locked(std::size_t top) {
  std::vector<Entry> rows;
  double profiled = 0;
  for (const auto& [k, e] : entries) rows.push_back(e), profiled += e.seconds;
  std::sort(rows.begin(), rows.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  double span = span_seconds;
  if (enabled.load(std::memory_order_relaxed)) span += std::chrono::duration<double>(Clock::now() - since).count();
  const double total = std::max(span, profiled);
  std::string out = "arclight profiler: time per op type (charged to the outermost op; fwd = forward, bwd = backward)\n";
  char head[160];
  std::snprintf(head, sizeof head, "%-34s %-4s %9s %11s %10s %7s\n", "op", "pass", "calls", "total ms", "us/call", "share");
  out += head;
  for (std::size_t i = 0; i < rows.size() && i < top; ++i)
    out += format_row(rows[i].name.c_str(), rows[i].phase == Phase::forward ? "fwd" : "bwd", rows[i].calls,
                      rows[i].seconds, total);
  if (rows.size() > top) {
    double rest = 0;
    std::int64_t calls = 0;
    for (std::size_t i = top; i < rows.size(); ++i) rest += rows[i].seconds, calls += rows[i].calls;
    out += format_row(("(" + std::to_string(rows.size() - top) + " more op types)").c_str(), "", calls, rest, total);
  }
  out += format_row("(outside ops)", "", 0, std::max(0.0, span - profiled), total);
  out += format_row("(profiled span)", "", 0, total, total);
  return out;
}

}  // namespace detail

// Turns collection on or off (the span between the two counts as profiled wall time).
inline void enable(bool on) {
  detail::State& s = detail::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  const bool was = s.enabled.load(std::memory_order_relaxed);
  if (on && !was) s.since = detail::Clock::now();
  if (!on && was) s.span_seconds += std::chrono::duration<double>(detail::Clock::now() - s.since).count();
  s.enabled.store(on, std::memory_order_relaxed);
}
inline bool enabled() { return detail::state().enabled.load(std::memory_order_relaxed); }

// Installs (or, with nullptr, removes) the wait each outermost scope makes on entry and exit (see the file comment).
inline void set_device_sync(void (*fn)()) { detail::state().device_sync.store(fn, std::memory_order_relaxed); }

// Forgets every row and the span (collection stays on or off as it was).
inline void reset() {
  detail::State& s = detail::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.entries.clear();
  s.span_seconds = 0;
  s.since = detail::Clock::now();
}

// The rows collected so far, largest total first.
inline std::vector<Entry> entries() {
  detail::State& s = detail::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::vector<Entry> rows;
  for (const auto& [k, e] : s.entries) rows.push_back(e);
  std::sort(rows.begin(), rows.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return rows;
}

// The table of the `top` largest rows plus the rest, the time outside ops and the profiled span.
inline std::string report(std::size_t top = 10) {
  detail::State& s = detail::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.report_locked(top);
}

// RAII: times the enclosed op under `name` (a string that outlives the scope, e.g. a literal or a node's name)
// when profiling is on and no other scope is open on this thread.
class Scope {
 public:
  explicit Scope(const char* name, Phase phase = Phase::forward) {
    if (!detail::state().enabled.load(std::memory_order_relaxed)) return;
    if (detail::depth++ == 0) {
      name_ = name, phase_ = phase;
      if (auto* sync = detail::state().device_sync.load(std::memory_order_relaxed)) sync();  // earlier work is not ours
      t0_ = detail::Clock::now();
    }
    active_ = true;
  }
  ~Scope() {
    if (!active_) return;
    if (--detail::depth == 0 && name_ != nullptr) {
      if (auto* sync = detail::state().device_sync.load(std::memory_order_relaxed)) sync();
      detail::add(name_, phase_, std::chrono::duration<double>(detail::Clock::now() - t0_).count());
    }
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_ = nullptr;
  Phase phase_ = Phase::forward;
  bool active_ = false;
  detail::Clock::time_point t0_{};
};

}  // namespace arclight::profiler
