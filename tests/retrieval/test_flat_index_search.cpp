// FlatIndex::search beyond random data: both work splits (query blocks shared among threads, and the
// gallery split into per-thread parts merged afterwards) on data built so that scores are exact in float
// and full of ties, against a brute force with the documented order (score desc, then lower index);
// the OpenBLAS thread count restored after a search; NaN rows and bad block sizes.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "arclight/retrieval/flat_index.hpp"
#include "harness.hpp"

namespace {

using namespace arclight;
using namespace arclight::retrieval;

// Rows of ±1 in 16 dimensions: after normalisation every entry is ±1/4 (exact), so every similarity is a
// multiple of 1/16 computed exactly in any summation order, and many gallery rows tie.
std::vector<float> sign_rows(std::int64_t n, std::uint64_t seed) {
  Generator g(seed);
  auto bits = randint(0, 2, {n, 16}, DType::i64, g).to_vector<std::int64_t>();
  std::vector<float> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) out[i] = bits[i] ? 1.0f : -1.0f;
  return out;
}

struct Expected {
  std::vector<std::int64_t> ids;
  std::vector<float> scores;
};

Expected brute_force(const std::vector<float>& q, const std::vector<float>& g, std::int64_t nq, std::int64_t ng,
                     std::int64_t k) {
  Expected e;
  for (std::int64_t i = 0; i < nq; ++i) {
    std::vector<std::pair<int, std::int64_t>> s(static_cast<std::size_t>(ng));  // integer dot of ±1 rows
    for (std::int64_t j = 0; j < ng; ++j) {
      int d = 0;
      for (int t = 0; t < 16; ++t) d += static_cast<int>(q[i * 16 + t] * g[j * 16 + t]);
      s[static_cast<std::size_t>(j)] = {d, j};
    }
    std::partial_sort(s.begin(), s.begin() + k, s.end(),
                      [](auto a, auto b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    for (std::int64_t r = 0; r < k; ++r) {
      e.ids.push_back(s[static_cast<std::size_t>(r)].second);
      e.scores.push_back(static_cast<float>(s[static_cast<std::size_t>(r)].first) / 16.0f);
    }
  }
  return e;
}

class ThreadCount {  // restores arclight's thread count (OpenMP and OpenBLAS) after a test
 public:
  ThreadCount() : saved_(num_threads()) {}
  ~ThreadCount() { set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(FlatIndexSearch, TiesGoToTheLowerIndexForEveryWorkSplit) {
  ThreadCount restore;
  const std::int64_t ng = 997, k = 25;
  const auto g = sign_rows(ng, 11);
  FlatIndex index(from_vector(g, {ng, 16}));
  for (std::int64_t nq : {3, 200}) {  // 3 queries: gallery parts per thread; 200: query blocks shared
    const auto q = sign_rows(nq, 12 + static_cast<std::uint64_t>(nq));
    const Expected want = brute_force(q, g, nq, ng, k);
    // Ties really occur among the top k (otherwise this test would prove nothing about tie-breaking).
    std::int64_t tied = 0;
    for (std::int64_t i = 0; i < nq; ++i)
      for (std::int64_t r = 1; r < k; ++r) tied += want.scores[i * k + r] == want.scores[i * k + r - 1];
    ASSERT_GT(tied, nq * 5);
    for (int threads : {1, 2, 3}) {
      set_num_threads(threads);
      for (SearchOptions opt : {SearchOptions{256, 2048}, SearchOptions{8, 64}, SearchOptions{1, 7}, SearchOptions{5, 1}}) {
        SearchResult r = index.search(from_vector(q, {nq, 16}), k, opt);
        ASSERT_EQ(r.indices.shape(), (Shape{nq, k}));
        const auto ids = r.indices.to_vector<std::int64_t>();
        const auto sc = r.scores.to_vector<float>();
        for (std::int64_t i = 0; i < nq * k; ++i) {
          ASSERT_EQ(ids[static_cast<std::size_t>(i)], want.ids[static_cast<std::size_t>(i)])
              << "query " << i / k << " rank " << i % k << ", " << threads << " threads, blocks " << opt.query_block
              << " x " << opt.gallery_block;
          ASSERT_EQ(sc[static_cast<std::size_t>(i)], want.scores[static_cast<std::size_t>(i)]);
        }
      }
    }
  }
}

TEST(FlatIndexSearch, RestoresTheBlasThreadCount) {
  ThreadCount restore;
  set_num_threads(2);
  openblas_set_num_threads(2);  // as a program that uses OpenBLAS itself might have set it
  FlatIndex index(randn({300, 8}));
  index.search(randn({40, 8}), 3, SearchOptions{4, 32});
  EXPECT_EQ(openblas_get_num_threads(), 2);
  EXPECT_EQ(num_threads(), 2);
  openblas_set_num_threads(1);
}

TEST(FlatIndexSearch, WholeGalleryAsK) {  // k = G: every row returned once, sorted
  Generator gen(3);
  FlatIndex index(randn({37, 6}, DType::f32, gen));
  SearchResult r = index.search(randn({4, 6}, DType::f32, gen), 37, SearchOptions{3, 5});
  auto ids = r.indices.to_vector<std::int64_t>();
  auto sc = r.scores.to_vector<float>();
  for (std::int64_t i = 0; i < 4; ++i) {
    std::vector<std::int64_t> row(ids.begin() + i * 37, ids.begin() + (i + 1) * 37);
    std::sort(row.begin(), row.end());
    for (std::int64_t j = 0; j < 37; ++j) EXPECT_EQ(row[static_cast<std::size_t>(j)], j);
    EXPECT_TRUE(std::is_sorted(sc.begin() + i * 37, sc.begin() + (i + 1) * 37, std::greater<float>()));
  }
}

TEST(FlatIndexSearch, NanRowsAreNeverReturnedAndTooFewFiniteScoresIsAnError) {
  Generator gen(4);
  auto g = randn({6, 5}, DType::f32, gen).to_vector<float>();
  g[1 * 5 + 2] = std::numeric_limits<float>::quiet_NaN();
  g[4 * 5 + 0] = std::numeric_limits<float>::quiet_NaN();
  FlatIndex index(from_vector(g, {6, 5}));
  Tensor q = randn({2, 5}, DType::f32, gen);
  SearchResult r = index.search(q, 4, SearchOptions{1, 2});
  auto ids = r.indices.to_vector<std::int64_t>();
  for (auto id : ids) EXPECT_TRUE(id != 1 && id != 4) << id;
  std::vector<std::int64_t> first(ids.begin(), ids.begin() + 4);
  std::sort(first.begin(), first.end());
  EXPECT_EQ(first, (std::vector<std::int64_t>{0, 2, 3, 5}));
  EXPECT_ERROR_WITH(index.search(q, 5), "FlatIndex::search", "non-finite", "k = 5");
}

TEST(FlatIndexSearch, RejectsBadBlockSizes) {
  FlatIndex index(randn({10, 4}));
  EXPECT_ERROR_WITH(index.search(randn({2, 4}), 1, SearchOptions{0, 16}), "FlatIndex::search", "block sizes", "0 x 16");
  EXPECT_ERROR_WITH(index.search(randn({2, 4}), 1, SearchOptions{4, -1}), "FlatIndex::search", "4 x -1");
}

}  // namespace
