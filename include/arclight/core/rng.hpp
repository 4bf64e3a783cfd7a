// Random number generation. A Generator is (seed, offset): every draw consumes a contiguous range of
// Philox counters and advances the offset, so a run is reproducible from its seed and a resumed run
// continues the same stream by restoring (seed, offset). RandomStream gives scalar draws keyed by an
// explicit stream id (e.g. epoch and sample index for augmentations), independent of thread scheduling.
#pragma once

#include <cmath>
#include <cstdint>
#include <mutex>

#include "arclight/core/error.hpp"
#include "kernels/common/philox.hpp"

namespace arclight {

// Sequential scalar draws from one Philox stream; cheap to construct, not shared between threads.
class RandomStream {
 public:
  RandomStream(std::uint64_t seed, std::uint64_t stream) : seed_(seed), stream_(stream) {}

  std::uint32_t next_u32() {
    if (pos_ == 4) {
      buf_ = kernels::philox_block(seed_, stream_, block_++);
      pos_ = 0;
    }
    return buf_.v[pos_++];
  }
  std::uint64_t next_u64() {
    const std::uint64_t hi = next_u32();
    return (hi << 32) | next_u32();
  }
  // Uniform in [0, 1) with 53 bits.
  double uniform() {
    const std::uint32_t hi = next_u32();
    return kernels::philox_uniform_f64(hi, next_u32());
  }
  // Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [lo, hi] (inclusive), without modulo bias (Lemire's multiply-shift on 64 bits).
  std::int64_t randint(std::int64_t lo, std::int64_t hi) {
    ARCLIGHT_CHECK(hi >= lo, "RandomStream::randint", "empty range [", lo, ", ", hi, "]");
    const std::uint64_t range = static_cast<std::uint64_t>(hi - lo) + 1u;
    if (range == 0) return static_cast<std::int64_t>(next_u64());  // full 64-bit range
    const unsigned __int128 m = static_cast<unsigned __int128>(next_u64()) * range;
    return lo + static_cast<std::int64_t>(static_cast<std::uint64_t>(m >> 64));
  }
  bool bernoulli(double p) { return uniform() < p; }
  double normal() {
    double u1 = uniform();
    const double u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;  // log(0) guard
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t seed_, stream_, block_ = 0;
  kernels::Philox4 buf_{};
  int pos_ = 4;
};

// A seeded generator for tensor factories. reserve(n) hands out a fresh range of n 128-bit Philox blocks
// on stream 0; the offset is the saved state. Thread-safe.
class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0x5EEDull) : seed_(seed) {}

  std::uint64_t seed() const { return seed_; }
  std::uint64_t offset() const {
    std::lock_guard<std::mutex> lock(mu_);
    return offset_;
  }
  void set_state(std::uint64_t seed, std::uint64_t offset) {
    std::lock_guard<std::mutex> lock(mu_);
    seed_ = seed;
    offset_ = offset;
  }
  void manual_seed(std::uint64_t seed) { set_state(seed, 0); }
  // Returns the first block of a newly reserved range of `blocks` blocks.
  std::uint64_t reserve(std::uint64_t blocks) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::uint64_t first = offset_;
    offset_ += blocks;
    return first;
  }

 private:
  std::uint64_t seed_;
  std::uint64_t offset_ = 0;
  mutable std::mutex mu_;
};

// The process-wide default generator used when a factory is not given one.
inline Generator& default_generator() {
  static Generator gen;
  return gen;
}
inline void manual_seed(std::uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace arclight
