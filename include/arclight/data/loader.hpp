// The threaded data loader: N worker threads load (decode) and augment samples into whole batches, held
// in a bounded queue of ready batches that the training loop drains in order. Batch k of an epoch always
// holds the same samples with the same augmentation, whatever the worker count: the order is a seeded
// per-epoch permutation and each sample's randomness is keyed by (seed, epoch, dataset index). A worker's
// error stops the epoch and reaches the caller at the batch where it happened, with the sample's name;
// unreadable samples can instead be skipped (logged and counted). Batches are plain structs (contiguous
// float NCHW + int64 labels) so the core can wrap them into Tensors without this layer knowing Tensor.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/core/rng.hpp"
#include "arclight/data/dataset.hpp"
#include "arclight/data/transforms.hpp"

namespace arclight::data {

struct Batch {
  std::vector<float> data;            // N x C x H x W, contiguous
  std::vector<std::int64_t> shape;    // {N, C, H, W}
  std::vector<std::int64_t> labels;   // N
  std::vector<std::int64_t> indices;  // N dataset indices
  std::size_t batch_index = 0;        // position within the epoch
  std::size_t size() const { return labels.size(); }
};

enum class UnreadablePolicy { fail, skip };

struct LoaderOptions {
  std::size_t batch_size = 32;
  int num_workers = 2;
  bool shuffle = true;
  bool drop_last = false;
  std::uint64_t seed = 0;
  // Bounded queue: at most this many batches are built (or being built) ahead of the consumer. Workers
  // build whole batches, so keep it >= num_workers or some workers idle.
  std::size_t prefetch_batches = 4;
  UnreadablePolicy on_unreadable = UnreadablePolicy::fail;
  // Receives one line per skipped sample (default: std::cerr); called from worker threads, one at a time.
  std::function<void(const std::string&)> log;
};

// The sample order of an epoch: identity, or a Fisher-Yates shuffle seeded by (seed, epoch).
inline std::vector<std::size_t> epoch_order(std::size_t n, bool shuffle, std::uint64_t seed, std::uint64_t epoch) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (shuffle && n > 1) {
    RandomStream rng(seed ^ 0x9E3779B97F4A7C15ull, 0xD1B54A32D192ED03ull + epoch);
    for (std::size_t i = n - 1; i > 0; --i)
      std::swap(order[i], order[static_cast<std::size_t>(rng.randint(0, static_cast<std::int64_t>(i)))]);
  }
  return order;
}

// One consumer thread drives a DataLoader (start_epoch / next / stop); the workers are internal.
class DataLoader {
 public:
  // requires: dataset non-null, batch_size >= 1, num_workers >= 1, prefetch_batches >= 1.
  DataLoader(std::shared_ptr<const Dataset> dataset, Pipeline pipeline, LoaderOptions opts)
      : ds_(std::move(dataset)), pipe_(std::move(pipeline)), opts_(std::move(opts)) {
    ARCLIGHT_CHECK(ds_ != nullptr, "DataLoader", "null dataset");
    ARCLIGHT_CHECK(opts_.batch_size >= 1, "DataLoader", "batch_size = ", opts_.batch_size, ", expected >= 1");
    ARCLIGHT_CHECK(opts_.num_workers >= 1 && opts_.num_workers <= 256, "DataLoader", "num_workers = ",
                   opts_.num_workers, ", expected 1..256");
    ARCLIGHT_CHECK(opts_.prefetch_batches >= 1, "DataLoader", "prefetch_batches = 0, expected >= 1");
    if (!opts_.log) opts_.log = [](const std::string& line) { std::cerr << line << '\n'; };
  }
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;
  ~DataLoader() { stop(); }

  std::size_t batches_per_epoch() const {
    const std::size_t n = ds_->size(), b = opts_.batch_size;
    return opts_.drop_last ? n / b : (n + b - 1) / b;
  }
  const Dataset& dataset() const { return *ds_; }
  const LoaderOptions& options() const { return opts_; }
  // Samples skipped so far (all epochs) under UnreadablePolicy::skip.
  std::size_t skipped() const { return skipped_.load(); }

  // Starts (or restarts) epoch `epoch`: stops any running epoch, draws the order, launches the workers.
  void start_epoch(std::uint64_t epoch) {
    stop();
    epoch_ = epoch;
    order_ = epoch_order(ds_->size(), opts_.shuffle, opts_.seed, epoch);
    total_ = batches_per_epoch();
    next_claim_ = 0;
    next_out_ = 0;
    error_batch_ = SIZE_MAX;
    error_ = nullptr;
    ready_.clear();
    stopping_ = false;
    running_ = true;
    for (int w = 0; w < opts_.num_workers; ++w) workers_.emplace_back([this] { worker_loop(); });
  }

  // The next batch of the running epoch in order, or nullopt when the epoch is done (or none started).
  // throws: the first worker error (arclight::Error naming the sample), after which the epoch is over.
  std::optional<Batch> next() {
    if (!running_) return std::nullopt;
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      if (next_out_ >= total_) {
        lock.unlock();
        stop();
        return std::nullopt;
      }
      if (next_out_ == error_batch_) {
        std::exception_ptr err = error_;
        lock.unlock();
        stop();
        std::rethrow_exception(err);
      }
      auto it = ready_.find(next_out_);
      if (it != ready_.end()) {
        Batch b = std::move(it->second);
        ready_.erase(it);
        ++next_out_;
        lock.unlock();
        space_cv_.notify_all();
        if (b.size() == 0) {  // every sample of this batch was skipped
          lock.lock();
          continue;
        }
        return b;
      }
      ready_cv_.wait(lock);
    }
  }

  // Stops the workers of the running epoch and joins them (idempotent, never throws).
  void stop() noexcept {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    space_cv_.notify_all();
    ready_cv_.notify_all();
    for (auto& t : workers_)
      if (t.joinable()) t.join();
    workers_.clear();
    running_ = false;
  }

  // Builds batch `b` of `epoch` on the calling thread (no workers): the reference the threaded path must
  // reproduce. Honors the unreadable-sample policy; throws like next().
  Batch build_batch(std::uint64_t epoch, std::size_t b) const {
    const auto order = epoch_order(ds_->size(), opts_.shuffle, opts_.seed, epoch);
    return make_batch(order, epoch, b);
  }

 private:
  Batch make_batch(const std::vector<std::size_t>& order, std::uint64_t epoch, std::size_t b) const {
    const std::size_t lo = b * opts_.batch_size;
    const std::size_t hi = std::min(order.size(), lo + opts_.batch_size);
    Batch batch;
    batch.batch_index = b;
    std::size_t per = 0;
    std::int64_t C = 0, H = 0, W = 0;
    for (std::size_t k = lo; k < hi; ++k) {
      const std::size_t idx = order[k];
      Image img;
      try {
        img = ds_->load(idx);
      } catch (const std::exception& e) {
        if (opts_.on_unreadable == UnreadablePolicy::skip) {
          ++skipped_;
          std::lock_guard<std::mutex> log_lock(log_mu_);
          opts_.log(str_cat("DataLoader: skipped unreadable sample ", idx, " ('", ds_->name(idx), "'): ", e.what()));
          continue;
        }
        fail("DataLoader", "sample ", idx, " ('", ds_->name(idx), "'): ", e.what());
      }
      try {
        img = pipe_.apply(std::move(img), opts_.seed, epoch, idx);
      } catch (const std::exception& e) {
        fail("DataLoader", "sample ", idx, " ('", ds_->name(idx), "'): augmentation failed: ", e.what());
      }
      if (batch.labels.empty()) {
        C = img.channels, H = img.height, W = img.width;
        per = img.pixels.size();
        batch.data.resize(per * (hi - lo));
      } else if (img.channels != C || img.height != H || img.width != W) {
        fail("DataLoader", "sample ", idx, " ('", ds_->name(idx), "') is ", img.height, "x", img.width, "x",
             img.channels, " after the pipeline but the batch is ", H, "x", W, "x", C,
             " (HxWxC); end the pipeline with a resize step");
      }
      pipe_.to_tensor(img, batch.data.data() + batch.labels.size() * per);
      batch.labels.push_back(ds_->label(idx));
      batch.indices.push_back(static_cast<std::int64_t>(idx));
    }
    batch.data.resize(per * batch.labels.size());
    batch.shape = {static_cast<std::int64_t>(batch.labels.size()), C, H, W};
    return batch;
  }

  void worker_loop() {
    while (true) {
      std::size_t b;
      {
        std::unique_lock<std::mutex> lock(mu_);
        // Bounded queue: claim batch b only when b < next_out_ + prefetch (the consumer has room for it).
        space_cv_.wait(lock, [&] {
          return stopping_ || next_claim_ >= total_ || next_claim_ >= error_batch_ ||
                 next_claim_ < next_out_ + opts_.prefetch_batches;
        });
        if (stopping_ || next_claim_ >= total_ || next_claim_ >= error_batch_) return;
        b = next_claim_++;
      }
      try {
        Batch batch = make_batch(order_, epoch_, b);
        std::lock_guard<std::mutex> lock(mu_);
        ready_.emplace(b, std::move(batch));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (b < error_batch_) {  // keep the earliest failing batch: that is where the consumer stops
          error_batch_ = b;
          error_ = std::current_exception();
        }
      }
      ready_cv_.notify_all();
      space_cv_.notify_all();
    }
  }

  std::shared_ptr<const Dataset> ds_;
  Pipeline pipe_;
  LoaderOptions opts_;
  mutable std::atomic<std::size_t> skipped_{0};
  mutable std::mutex log_mu_;  // log lines come from worker threads; the callback is called serially

  std::mutex mu_;
  std::condition_variable ready_cv_, space_cv_;
  std::vector<std::thread> workers_;
  std::vector<std::size_t> order_;
  std::uint64_t epoch_ = 0;
  std::size_t total_ = 0, next_claim_ = 0, next_out_ = 0, error_batch_ = SIZE_MAX;
  std::exception_ptr error_;
  std::map<std::size_t, Batch> ready_;
  bool stopping_ = false;
  bool running_ = false;
};

}  // namespace arclight::data
