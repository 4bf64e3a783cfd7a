// The flat cosine index against brute force on random data (exact top-k, ties by index, blocks of any
// size), save/load round trip, and the retrieval metrics on hand-built cases whose values are known.
#include <algorithm>
#include <filesystem>
#include <numeric>

#include "arclight/retrieval/metrics.hpp"
#include "harness.hpp"

namespace {

using namespace arclight;
using namespace arclight::retrieval;

TEST(FlatIndex, MatchesBruteForceForAnyBlocking) {
  Generator g(5);
  Tensor gallery = randn({1037, 24}, DType::f32, g);
  Tensor queries = randn({71, 24}, DType::f32, g);
  FlatIndex index(gallery);
  // brute force in double
  Tensor gn = ops::to(ops::l2_normalize(gallery, 1), DType::f64), qn = ops::to(ops::l2_normalize(queries, 1), DType::f64);
  auto sims = ops::mm(qn, ops::transpose(gn, 0, 1)).to_vector<double>();
  const std::int64_t k = 13;
  for (SearchOptions opt : {SearchOptions{256, 8192}, SearchOptions{7, 100}, SearchOptions{1, 1}}) {
    SearchResult r = index.search(queries, k, opt);
    auto idx = r.indices.to_vector<std::int64_t>();
    auto sc = r.scores.to_vector<float>();
    for (std::int64_t q = 0; q < 71; ++q) {
      std::vector<std::int64_t> order(1037);
      std::iota(order.begin(), order.end(), 0);
      const double* row = sims.data() + q * 1037;
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](auto a, auto b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      for (std::int64_t j = 0; j < k; ++j) {
        ASSERT_EQ(idx[q * k + j], order[j]) << "query " << q << " rank " << j << " blocks " << opt.query_block;
        ASSERT_NEAR(sc[q * k + j], row[order[j]], 1e-5);
      }
    }
  }
  EXPECT_ERROR_WITH(index.search(queries, 0), "search", "k = 0");
  EXPECT_ERROR_WITH(index.search(randn({2, 5}), 1), "search", "[Q, 24]");
}

TEST(FlatIndex, SaveLoadRoundTrip) {
  Tensor e = randn({50, 8});
  std::vector<std::int64_t> labels(50);
  std::iota(labels.begin(), labels.end(), 100);
  FlatIndex index(e, labels);
  const auto path = std::filesystem::temp_directory_path() / "arclight_index_test.safetensors";
  index.save(path);
  FlatIndex back = FlatIndex::load(path);
  std::filesystem::remove(path);
  EXPECT_EQ(back.labels(), labels);
  EXPECT_TRUE(arclight::testing::all_close(back.embeddings(), index.embeddings(), 0, 0));
}

TEST(Metrics, KnownValuesOnAHandBuiltGallery) {
  // 1-D directions on the circle: gallery at angles, labels chosen so the rankings are known.
  auto at = [](double deg) { return std::vector<float>{static_cast<float>(std::cos(deg * M_PI / 180)), static_cast<float>(std::sin(deg * M_PI / 180))}; };
  std::vector<float> g;
  for (double d : {0.0, 10.0, 20.0, 180.0, 190.0}) {
    auto v = at(d);
    g.insert(g.end(), v.begin(), v.end());
  }
  FlatIndex index(from_vector(g, {5, 2}), {0, 0, 1, 1, 1});
  // query at 5°, label 0: ranking 0°(0), 10°(0), 20°(1), 190°(1), 180°(1). R = 2: both relevant → RP 1, MAP 1.
  // query at 15°, label 1: ranking 10°(0)/20°(1) tie-free: 20°(1) at 5°, 10°(0) at 5°... use 16°: 20°(1), 10°(0), 0°(0), 190, 180.
  //   R = 3: relevant at rank 1 only within top 3 → RP 1/3, AP = (1/1)/3.
  std::vector<float> q;
  for (double d : {5.0, 16.0}) {
    auto v = at(d);
    q.insert(q.end(), v.begin(), v.end());
  }
  auto m = evaluate(index, from_vector(q, {2, 2}), {0, 1}, 2, EvalOptions{{1, 2, 5}, 3, 1});
  EXPECT_DOUBLE_EQ(m.top1_knn, 1.0);
  EXPECT_DOUBLE_EQ(m.r_precision, (1.0 + 1.0 / 3) / 2);
  EXPECT_DOUBLE_EQ(m.map_at_r, (1.0 + 1.0 / 3) / 2);
  EXPECT_DOUBLE_EQ(m.recall_at_k[1], 1.0);
  // vote over top 3 for the 16° query: labels 1, 0, 0 → class 0 wins (two close neighbours)
  EXPECT_EQ(m.vote_predictions[1], 0);
  EXPECT_DOUBLE_EQ(m.top1_vote, 0.5);
  EXPECT_EQ(m.confusion[1][1], 1);
  EXPECT_EQ(m.n_gallery, 5);
  EXPECT_ERROR_WITH(evaluate(index, from_vector(q, {2, 2}), {0, 7}, 2), "evaluate", "query label 7");
}

}  // namespace
