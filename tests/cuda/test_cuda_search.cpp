// GPU exact top-k search (kernels/cuda/search.cuh) against the CPU FlatIndex (retrieval/flat_index.hpp) and a
// brute-force double-precision reference: random data with fresh seeds (scores to float rounding, indices equal
// except between near-equal scores), and exactly representable data full of duplicate rows, where every score
// is exact in any summation order, so the tie rule (smaller gallery index first) must match FlatIndex exactly.
// Block sizes cover k larger than the gallery block (the running top-k carries across many blocks), ng and nq not
// multiples of their blocks, and one block holding everything. Outputs are pre-filled with garbage.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "arclight/retrieval/flat_index.hpp"
#include "cuda_test_util.hpp"
#include "harness.hpp"
#include "kernels/cuda/launchers.hpp"

namespace kc = arclight::kernels::cuda;
using namespace arclight::testing::cuda;
using arclight::cuda::DeviceBuffer;

namespace {

struct GpuResult {
  std::vector<float> scores;
  std::vector<std::int64_t> indices;
};

GpuResult gpu_search(const std::vector<float>& q, const std::vector<float>& g, std::int64_t d, std::int64_t k,
                     kc::SearchMetric metric, std::int64_t qb, std::int64_t gb) {
  kc::TopkSearchShape s;
  s.nq = std::int64_t(q.size()) / d;
  s.ng = std::int64_t(g.size()) / d;
  s.d = d;
  s.k = k;
  s.query_block = qb;
  s.gallery_block = gb;
  DeviceBuffer<float> dq(q), dg(g);
  DeviceBuffer<float> scores = garbage(std::size_t(s.nq * k));
  DeviceBuffer<std::int64_t> idx(std::vector<std::int64_t>(std::size_t(s.nq * k), 777777));
  DeviceBuffer<float> ws = garbage(std::size_t(kc::topk_search_workspace_floats(s)));
  kc::topk_search(s, metric, dq.data(), dg.data(), scores.data(), idx.data(), ws.data(), nullptr);
  return {scores.download(), idx.download()};
}

// Brute force in double: (score desc, index asc), the first k.
GpuResult reference(const std::vector<float>& q, const std::vector<float>& g, std::int64_t d, std::int64_t k,
                    bool cosine) {
  const std::int64_t nq = std::int64_t(q.size()) / d, ng = std::int64_t(g.size()) / d;
  auto norm = [&](const std::vector<float>& x, std::int64_t r) {
    double s = 0;
    for (std::int64_t c = 0; c < d; ++c) s += double(x[r * d + c]) * x[r * d + c];
    return std::max(std::sqrt(s), 1e-12);
  };
  GpuResult out;
  std::vector<std::pair<double, std::int64_t>> cand(static_cast<std::size_t>(ng));
  for (std::int64_t i = 0; i < nq; ++i) {
    for (std::int64_t j = 0; j < ng; ++j) {
      double dot = 0;
      for (std::int64_t c = 0; c < d; ++c) dot += double(q[i * d + c]) * g[j * d + c];
      if (cosine) dot /= norm(q, i) * norm(g, j);
      cand[std::size_t(j)] = {dot, j};
    }
    std::sort(cand.begin(), cand.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    for (std::int64_t t = 0; t < k; ++t) {
      out.scores.push_back(float(cand[std::size_t(t)].first));
      out.indices.push_back(cand[std::size_t(t)].second);
    }
  }
  return out;
}

// Scores within tol at every rank; an index may differ from the reference only where the two scores at that rank
// are within tol (a near-tie that float rounding can order either way), and the GPU's indices are distinct.
void expect_same_ranking(const GpuResult& got, const GpuResult& want, std::int64_t nq, std::int64_t k, double tol,
                         const std::string& what) {
  ASSERT_EQ(got.scores.size(), want.scores.size()) << what;
  std::size_t bad = 0;
  for (std::int64_t i = 0; i < nq; ++i) {
    std::vector<std::int64_t> seen;
    for (std::int64_t t = 0; t < k; ++t) {
      const std::size_t e = std::size_t(i * k + t);
      const bool score_ok = std::abs(double(got.scores[e]) - double(want.scores[e])) <= tol;
      const bool index_ok = got.indices[e] == want.indices[e] || score_ok;
      if ((!score_ok || !index_ok) && bad++ < 8)
        ADD_FAILURE() << what << ": query " << i << " rank " << t << ": got (" << got.scores[e] << ", "
                      << got.indices[e] << "), want (" << want.scores[e] << ", " << want.indices[e] << ")";
      seen.push_back(got.indices[e]);
    }
    std::sort(seen.begin(), seen.end());
    if (std::adjacent_find(seen.begin(), seen.end()) != seen.end() && bad++ < 8)
      ADD_FAILURE() << what << ": query " << i << " has a repeated gallery index";
  }
  EXPECT_EQ(bad, 0u) << what;
}

struct SearchCase {
  std::int64_t nq, ng, d, k, qb, gb;
};

TEST(CudaSearch, RandomDataMatchesFlatIndexAndBruteForce) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 gen(seed);
  const std::vector<SearchCase> cases{
      {300, 5000, 64, 10, 128, 1024},  // ng, nq not multiples of the blocks
      {37, 2001, 48, 100, 1024, 50},   // k > gallery block: the running top-k spans 41 blocks
      {20, 3000, 33, 128, 7, 20000},   // one gallery block, k at the maximum, odd d
      {5, 129, 16, 129 - 1, 2, 64},    // k close to ng
      {3, 1, 8, 1, 1, 1},              // a one-row gallery
  };
  for (const SearchCase& c : cases) {
    const std::string what = "nq" + std::to_string(c.nq) + " ng" + std::to_string(c.ng) + " d" + std::to_string(c.d) +
                             " k" + std::to_string(c.k) + " qb" + std::to_string(c.qb) + " gb" + std::to_string(c.gb);
    const std::vector<float> q = normal(std::size_t(c.nq * c.d), gen), g = normal(std::size_t(c.ng * c.d), gen);
    // Cosine vs FlatIndex (which normalises both sides) and vs brute force.
    const GpuResult cos = gpu_search(q, g, c.d, c.k, kc::SearchMetric::kCosine, c.qb, c.gb);
    arclight::retrieval::FlatIndex index(arclight::from_vector(g, {c.ng, c.d}));
    const arclight::retrieval::SearchResult cpu = index.search(arclight::from_vector(q, {c.nq, c.d}), c.k);
    const GpuResult flat{cpu.scores.to_vector<float>(), cpu.indices.to_vector<std::int64_t>()};
    expect_same_ranking(cos, flat, c.nq, c.k, 2e-6, what + " cosine vs FlatIndex");
    expect_same_ranking(cos, reference(q, g, c.d, c.k, true), c.nq, c.k, 2e-6, what + " cosine vs brute force");
    // Inner product vs brute force (scores of size ~sqrt(d): a relative tolerance).
    const GpuResult ip = gpu_search(q, g, c.d, c.k, kc::SearchMetric::kInnerProduct, c.qb, c.gb);
    expect_same_ranking(ip, reference(q, g, c.d, c.k, false), c.nq, c.k, 2e-6 * std::sqrt(double(c.d)) * 4,
                        what + " inner product vs brute force");
  }
}

// Unit vectors with ±0.5 on 4 of d coordinates: norms are exactly 1 and every dot product is a multiple of
// 0.25, exact in float whatever the order of summation, so ties are exact ties on every implementation.
std::vector<float> quarter_units(std::int64_t rows, std::int64_t d, std::mt19937_64& g) {
  std::vector<float> v(std::size_t(rows * d), 0.f);
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<std::int64_t> cols(static_cast<std::size_t>(d));
    std::iota(cols.begin(), cols.end(), 0);
    std::shuffle(cols.begin(), cols.end(), g);
    for (int t = 0; t < 4; ++t) v[std::size_t(r * d + cols[std::size_t(t)])] = (g() & 1) ? 0.5f : -0.5f;
  }
  return v;
}

TEST(CudaSearch, ExactTiesFollowTheSmallerIndexLikeFlatIndex) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 gen(seed);
  const std::int64_t d = 16, unique = 40, ng = 3001, nq = 70;
  // The gallery repeats 40 distinct rows at random positions (each row ~75 times): massive ties.
  const std::vector<float> base = quarter_units(unique, d, gen);
  std::vector<float> g(std::size_t(ng * d));
  for (std::int64_t r = 0; r < ng; ++r) {
    const std::int64_t u = std::int64_t(gen() % std::uint64_t(unique));
    std::copy(base.begin() + u * d, base.begin() + (u + 1) * d, g.begin() + r * d);
  }
  const std::vector<float> q = quarter_units(nq, d, gen);
  arclight::retrieval::FlatIndex index(arclight::from_vector(g, {ng, d}));
  for (std::int64_t k : {1, 7, 100, 128}) {
    for (std::int64_t gb : {64, 1000, 4096}) {
      const std::string what = "k" + std::to_string(k) + " gb" + std::to_string(gb);
      const arclight::retrieval::SearchResult cpu = index.search(arclight::from_vector(q, {nq, d}), k);
      const std::vector<std::int64_t> flat_idx = cpu.indices.to_vector<std::int64_t>();
      const std::vector<float> flat_scores = cpu.scores.to_vector<float>();
      const GpuResult ref = reference(q, g, d, k, true);
      EXPECT_EQ(flat_idx, ref.indices) << what << ": FlatIndex and the brute force disagree on ties";
      for (kc::SearchMetric m : {kc::SearchMetric::kCosine, kc::SearchMetric::kInnerProduct}) {
        const GpuResult got = gpu_search(q, g, d, k, m, 32, gb);
        EXPECT_EQ(got.indices, flat_idx) << what << (m == kc::SearchMetric::kCosine ? " cosine" : " inner product");
        EXPECT_EQ(got.scores, flat_scores) << what;
      }
    }
  }
}

TEST(CudaSearch, NanScoresAreNeverSelected) {
  ARCLIGHT_REQUIRE_GPU();
  const std::int64_t d = 8, ng = 50, k = 5;
  std::mt19937_64 gen(3);
  std::vector<float> g = normal(std::size_t(ng * d), gen);
  std::vector<float> q = normal(std::size_t(2 * d), gen);
  q[3] = NAN;  // query 0: every score NaN
  for (std::int64_t j = 0; j < ng; j += 2) g[std::size_t(j * d)] = NAN;  // half the gallery rows NaN
  const GpuResult got = gpu_search(q, g, d, k, kc::SearchMetric::kInnerProduct, 16, 16);
  for (std::int64_t t = 0; t < k; ++t) {
    EXPECT_EQ(got.indices[std::size_t(t)], -1) << "query 0 rank " << t;
    EXPECT_EQ(got.scores[std::size_t(t)], -INFINITY) << "query 0 rank " << t;
    const std::int64_t j = got.indices[std::size_t(k + t)];
    EXPECT_TRUE(j >= 0 && j % 2 == 1) << "query 1 rank " << t << " picked gallery row " << j;
    EXPECT_TRUE(std::isfinite(got.scores[std::size_t(k + t)]));
  }
}

TEST(CudaSearch, Validation) {
  kc::TopkSearchShape s;
  s.nq = 4;
  s.ng = 10;
  s.d = 8;
  s.k = 11;
  const float* f = reinterpret_cast<const float*>(std::uintptr_t(256));
  float* w = reinterpret_cast<float*>(std::uintptr_t(256));
  std::int64_t* i = reinterpret_cast<std::int64_t*>(std::uintptr_t(256));
  EXPECT_ERROR_WITH(kc::topk_search(s, kc::SearchMetric::kCosine, f, f, w, i, w, nullptr), "cuda::topk_search",
                    "expected 1 <= k <= min(128, ng=10), got k=11");
  s.ng = 1000;
  s.k = 129;
  EXPECT_ERROR_WITH(kc::topk_search(s, kc::SearchMetric::kCosine, f, f, w, i, w, nullptr), "got k=129");
  s.k = 5;
  s.gallery_block = 0;
  EXPECT_ERROR_WITH(kc::topk_search(s, kc::SearchMetric::kCosine, f, f, w, i, w, nullptr),
                    "expected query_block >= 1 and gallery_block >= 1");
  s.gallery_block = 100;
  EXPECT_ERROR_WITH(kc::topk_search(s, kc::SearchMetric::kCosine, f, f, w, i, nullptr, nullptr), "expected a workspace of",
                    std::to_string(4 * 100 + 4 + 1000) + " floats");
  EXPECT_ERROR_WITH(kc::topk_search(s, kc::SearchMetric(7), f, f, w, i, w, nullptr), "unknown metric 7");
  EXPECT_EQ(kc::topk_search_workspace_floats(s), 4 * 100 + 4 + 1000);
}

}  // namespace
