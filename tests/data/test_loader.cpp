// Tests of arclight/data/loader.hpp: reproducible batches for any worker count, epoch shuffling,
// drop_last, the bounded prefetch queue, error propagation with the sample's name, the skip policy,
// and clean shutdown mid-epoch.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "arclight/data/loader.hpp"
#include "test_util.hpp"

namespace ad = arclight::data;
using ad::testing::pattern_image;

namespace {

std::shared_ptr<ad::InMemoryDataset> toy_dataset(std::size_t n, int h = 16, int w = 16) {
  std::vector<std::uint8_t> px;
  std::vector<std::int64_t> labels;
  for (std::size_t i = 0; i < n; ++i) {
    const ad::Image img = pattern_image(h, w, 3, static_cast<std::uint32_t>(i + 1));
    px.insert(px.end(), img.pixels.begin(), img.pixels.end());
    labels.push_back(static_cast<std::int64_t>(i % 5));
  }
  return std::make_shared<ad::InMemoryDataset>(std::move(px), h, w, 3, std::move(labels),
                                               std::vector<std::string>{"a", "b", "c", "d", "e"}, "toy");
}

// Wraps a dataset: counts loads, fails on chosen indices, optionally returns a different size.
class FaultyDataset final : public ad::Dataset {
 public:
  FaultyDataset(std::shared_ptr<const ad::Dataset> base, std::set<std::size_t> bad, std::size_t odd_size = SIZE_MAX)
      : base_(std::move(base)), bad_(std::move(bad)), odd_(odd_size) {}
  std::size_t size() const override { return base_->size(); }
  std::int64_t label(std::size_t i) const override { return base_->label(i); }
  ad::Image load(std::size_t i) const override {
    ++loads;
    if (bad_.count(i)) arclight::fail("read_file", "cannot open '", name(i), "'");
    if (i == odd_) return pattern_image(9, 9, 3);
    return base_->load(i);
  }
  std::string name(std::size_t i) const override { return "img/" + std::to_string(i) + ".jpg"; }
  std::size_t num_classes() const override { return base_->num_classes(); }
  const std::vector<std::string>& class_names() const override { return base_->class_names(); }
  mutable std::atomic<int> loads{0};

 private:
  std::shared_ptr<const ad::Dataset> base_;
  std::set<std::size_t> bad_;
  std::size_t odd_;
};

std::vector<ad::Batch> run_epoch(ad::DataLoader& loader, std::uint64_t epoch) {
  std::vector<ad::Batch> out;
  loader.start_epoch(epoch);
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

ad::Pipeline test_pipeline() {
  ad::Pipeline p = ad::parse_pipeline("reference");
  p.normalize(ad::NormalizeSpec::imagenet());
  return p;
}

}  // namespace

TEST(Loader, SameSeedSameBatchesWithOneAndFourWorkers) {
  auto ds = toy_dataset(37);
  ad::LoaderOptions o;
  o.batch_size = 8;
  o.seed = 1234;
  o.num_workers = 1;
  ad::DataLoader one(ds, test_pipeline(), o);
  o.num_workers = 4;
  o.prefetch_batches = 2;
  ad::DataLoader four(ds, test_pipeline(), o);
  for (std::uint64_t epoch : {0u, 1u}) {
    const auto a = run_epoch(one, epoch);
    const auto b = run_epoch(four, epoch);
    ASSERT_EQ(a.size(), 5u);
    ASSERT_EQ(b.size(), 5u);
    for (std::size_t k = 0; k < a.size(); ++k) {
      EXPECT_EQ(a[k].batch_index, k);
      EXPECT_EQ(a[k].indices, b[k].indices);
      EXPECT_EQ(a[k].labels, b[k].labels);
      EXPECT_EQ(a[k].shape, b[k].shape);
      EXPECT_EQ(a[k].data, b[k].data) << "epoch " << epoch << " batch " << k;
      // And equal to the single-threaded reference construction.
      EXPECT_EQ(one.build_batch(epoch, k).data, a[k].data);
    }
    EXPECT_EQ(a[0].shape, (std::vector<std::int64_t>{8, 3, 16, 16}));
    EXPECT_EQ(a[4].shape, (std::vector<std::int64_t>{5, 3, 16, 16}));
  }
}

TEST(Loader, BatchContentIsThePipelineOutputOfEachSample) {
  auto ds = toy_dataset(10);
  const ad::Pipeline pipe = test_pipeline();
  ad::LoaderOptions o;
  o.batch_size = 4;
  o.seed = 77;
  ad::DataLoader loader(ds, pipe, o);
  const auto batches = run_epoch(loader, 3);
  const std::size_t per = 3 * 16 * 16;
  std::set<std::int64_t> seen;
  for (const auto& b : batches)
    for (std::size_t j = 0; j < b.size(); ++j) {
      const auto idx = static_cast<std::size_t>(b.indices[j]);
      seen.insert(b.indices[j]);
      EXPECT_EQ(b.labels[j], ds->label(idx));
      const ad::Image aug = pipe.apply(ds->load(idx), 77, 3, idx);
      std::vector<float> want(per, std::nanf(""));
      pipe.to_tensor(aug, want.data());
      for (std::size_t e = 0; e < per; ++e) ASSERT_EQ(b.data[j * per + e], want[e]) << idx << " " << e;
    }
  EXPECT_EQ(seen.size(), 10u);
}

TEST(Loader, ShufflesPerEpochAndHonorsDropLast) {
  auto ds = toy_dataset(37, 4, 4);
  ad::LoaderOptions o;
  o.batch_size = 8;
  o.seed = 5;
  o.drop_last = true;
  ad::DataLoader loader(ds, ad::Pipeline(), o);
  EXPECT_EQ(loader.batches_per_epoch(), 4u);
  auto order_of = [&](std::uint64_t epoch) {
    std::vector<std::int64_t> order;
    for (const auto& b : run_epoch(loader, epoch)) {
      EXPECT_EQ(b.size(), 8u);
      order.insert(order.end(), b.indices.begin(), b.indices.end());
    }
    return order;
  };
  const auto e0 = order_of(0), e1 = order_of(1), e0again = order_of(0);
  EXPECT_EQ(e0.size(), 32u);
  EXPECT_EQ(e0, e0again);
  EXPECT_NE(e0, e1);
  EXPECT_EQ(std::set<std::int64_t>(e0.begin(), e0.end()).size(), 32u);  // no repeats
  // No shuffle: identity order; without drop_last the tail batch comes too.
  o.shuffle = false;
  o.drop_last = false;
  ad::DataLoader plain(ds, ad::Pipeline(), o);
  std::int64_t expect = 0;
  for (const auto& b : run_epoch(plain, 0))
    for (auto i : b.indices) EXPECT_EQ(i, expect++);
  EXPECT_EQ(expect, 37);
  // The permutation is a full shuffle: the first position takes many values across epochs.
  std::set<std::size_t> firsts;
  for (std::uint64_t e = 0; e < 100; ++e) firsts.insert(ad::epoch_order(37, true, 5, e)[0]);
  EXPECT_GT(firsts.size(), 25u);
}

TEST(Loader, PrefetchQueueIsBounded) {
  auto faulty = std::make_shared<FaultyDataset>(toy_dataset(64, 4, 4), std::set<std::size_t>{});
  ad::LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 3;
  o.prefetch_batches = 2;
  ad::DataLoader loader(faulty, ad::Pipeline(), o);
  // Wait (up to 10 s on a loaded machine) until the workers have filled the queue, then give them time
  // to overrun it if they could: at most `prefetch` batches are built ahead of the consumer.
  auto wait_for = [&](int n) {
    for (int i = 0; i < 1000 && faulty->loads.load() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  };
  loader.start_epoch(0);
  wait_for(2 * 4);
  EXPECT_EQ(faulty->loads.load(), 2 * 4);
  ASSERT_TRUE(loader.next().has_value());
  wait_for(3 * 4);
  EXPECT_EQ(faulty->loads.load(), 3 * 4);
  std::size_t rest = 0;
  while (loader.next()) ++rest;
  EXPECT_EQ(rest, 15u);
  EXPECT_EQ(faulty->loads.load(), 64);
}

TEST(Loader, WorkerErrorReachesTheCallerWithTheSampleName) {
  auto faulty = std::make_shared<FaultyDataset>(toy_dataset(20, 4, 4), std::set<std::size_t>{13});
  ad::LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 3;
  o.shuffle = false;
  ad::DataLoader loader(faulty, ad::Pipeline(), o);
  loader.start_epoch(0);
  for (int k = 0; k < 3; ++k) {  // batches 0..2 (samples 0..11) arrive before the failing one
    auto b = loader.next();
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(b->indices.front(), 4 * k);
  }
  EXPECT_ERROR_WITH(loader.next(), "DataLoader", "sample 13", "img/13.jpg", "cannot open");
  EXPECT_FALSE(loader.next().has_value());  // the epoch is over
  // The loader is reusable after an error.
  loader.start_epoch(1);
  EXPECT_TRUE(loader.next().has_value());
  loader.stop();
}

TEST(Loader, SkipPolicyLogsAndCounts) {
  auto faulty = std::make_shared<FaultyDataset>(toy_dataset(20, 4, 4), std::set<std::size_t>{2, 13});
  ad::LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 2;
  o.on_unreadable = ad::UnreadablePolicy::skip;
  std::vector<std::string> lines;
  std::mutex mu;
  o.log = [&](const std::string& s) {
    std::lock_guard<std::mutex> lock(mu);
    lines.push_back(s);
  };
  ad::DataLoader loader(faulty, ad::Pipeline(), o);
  std::size_t total = 0;
  std::set<std::int64_t> seen;
  for (const auto& b : run_epoch(loader, 0)) {
    total += b.size();
    EXPECT_EQ(b.shape[0], static_cast<std::int64_t>(b.size()));
    EXPECT_EQ(b.data.size(), b.size() * 3 * 4 * 4);
    seen.insert(b.indices.begin(), b.indices.end());
  }
  EXPECT_EQ(total, 18u);
  EXPECT_FALSE(seen.count(2));
  EXPECT_FALSE(seen.count(13));
  EXPECT_EQ(loader.skipped(), 2u);
  ASSERT_EQ(lines.size(), 2u);
  std::sort(lines.begin(), lines.end());
  EXPECT_NE(lines[0].find("img/13.jpg"), std::string::npos);
  EXPECT_NE(lines[1].find("img/2.jpg"), std::string::npos);
}

TEST(Loader, MismatchedSampleShapesAreAnErrorEvenWhenSkipping) {
  auto faulty = std::make_shared<FaultyDataset>(toy_dataset(8, 4, 4), std::set<std::size_t>{}, 5);
  ad::LoaderOptions o;
  o.batch_size = 8;
  o.shuffle = false;
  o.on_unreadable = ad::UnreadablePolicy::skip;
  ad::DataLoader loader(faulty, ad::Pipeline(), o);
  loader.start_epoch(0);
  EXPECT_ERROR_WITH(loader.next(), "sample 5", "img/5.jpg", "9x9x3", "end the pipeline with a resize step");
  // With a resize at the end every sample fits.
  ad::DataLoader fixed(faulty, ad::parse_pipeline("resize(size=4)"), o);
  const auto batches = run_epoch(fixed, 0);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].shape, (std::vector<std::int64_t>{8, 3, 4, 4}));
}

TEST(Loader, StopsCleanlyMidEpochAndRejectsBadOptions) {
  auto ds = toy_dataset(40, 8, 8);
  ad::LoaderOptions o;
  o.batch_size = 2;
  o.num_workers = 4;
  {
    ad::DataLoader loader(ds, test_pipeline(), o);
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next().has_value());
    loader.start_epoch(1);  // restart while workers are busy
    ASSERT_TRUE(loader.next().has_value());
  }  // destructor joins the workers mid-epoch
  ad::DataLoader idle(ds, ad::Pipeline(), o);
  EXPECT_FALSE(idle.next().has_value());  // no epoch started
  o.batch_size = 0;
  EXPECT_ERROR_WITH(ad::DataLoader(ds, ad::Pipeline(), o), "batch_size = 0");
  o.batch_size = 1;
  o.num_workers = 0;
  EXPECT_ERROR_WITH(ad::DataLoader(ds, ad::Pipeline(), o), "num_workers = 0");
  o.num_workers = 1;
  EXPECT_ERROR_WITH(ad::DataLoader(nullptr, ad::Pipeline(), o), "null dataset");
}
