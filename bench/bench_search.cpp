// Exact cosine search, side by side: arclight's retrieval::FlatIndex against FAISS's IndexFlatIP on the
// same L2-normalised random data (default 10 000 queries × 60 000 gallery × 512-d, top-10), the same
// thread count for OpenMP and OpenBLAS, alternating repetitions in one run; prints one line per contender
// (median / min ms per full search) and the ratio ours / FAISS (of the medians, of the minima, and the
// median of the per-repetition ratios). Before timing, both results are checked:
// every rank must hold the same gallery id, except where the two ids are an exact-score tie (their
// similarities, recomputed in double, differ by no more than float32 rounding of a D-term dot product);
// a sample of queries is also checked against a double-precision brute force over the whole gallery.
// Any disagreement prints the first offending queries and exits with status 1.
// Built without FAISS (not found at configure time), it times FlatIndex alone and says the FAISS
// contender is skipped.
// Run: build/bench/bench_search [--queries N] [--gallery N] [--dim N] [--k N] [--threads N] [--reps N]
//                               [--seed N] [--query-block N] [--gallery-block N] [--profile]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cblas.h>

#include "arclight/arclight.hpp"
#include "arclight/retrieval/flat_index.hpp"

#ifdef ARCLIGHT_HAVE_FAISS
#include <faiss/IndexFlat.h>
#include <faiss/utils/distances.h>
using FaissIdx = faiss::Index::idx_t;  // faiss::idx_t from FAISS 1.7.4 on
#endif

namespace {

using namespace arclight;
using Clock = std::chrono::steady_clock;

struct Args {
  std::int64_t queries = 10000, gallery = 60000, dim = 512, k = 10, threads = 2, reps = 5, seed = 20261127;
  retrieval::SearchOptions search;
  bool profile = false;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> std::int64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_search: %s needs a value\n", f.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (f == "--queries") a.queries = value();
    else if (f == "--gallery") a.gallery = value();
    else if (f == "--dim") a.dim = value();
    else if (f == "--k") a.k = value();
    else if (f == "--threads") a.threads = value();
    else if (f == "--reps") a.reps = value();
    else if (f == "--seed") a.seed = value();
    else if (f == "--query-block") a.search.query_block = value();
    else if (f == "--gallery-block") a.search.gallery_block = value();
    else if (f == "--profile") a.profile = true;
    else {
      std::fprintf(stderr, "bench_search: unknown flag %s (see the header of bench/bench_search.cpp)\n", f.c_str());
      std::exit(2);
    }
  }
  if (a.queries < 1 || a.gallery < 1 || a.dim < 1 || a.k < 1 || a.k > a.gallery || a.threads < 1 || a.reps < 1) {
    std::fprintf(stderr, "bench_search: need queries, gallery, dim, threads, reps >= 1 and 1 <= k <= gallery\n");
    std::exit(2);
  }
  return a;
}

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double dot_f64(const float* a, const float* b, std::int64_t d) {
  double s = 0;
  for (std::int64_t i = 0; i < d; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

// A float32 dot product of D unit-vector terms is off from the exact value by at most ~D·2⁻²⁴ (loose
// worst case); two ids whose exact similarities lie within twice that are an exact-score tie as far as a
// float32 search can tell.
double tie_tolerance(std::int64_t d) { return 2.0 * static_cast<double>(d) * std::ldexp(1.0, -24); }

struct Check {
  std::int64_t queries_identical = 0, tie_swaps = 0, disagreements = 0;
  double max_tie_delta = 0;  // largest |exact score difference| among the accepted tie swaps
};

// Compares two [Q, k] id lists rank by rank; a differing rank passes only as a tie (see tie_tolerance).
Check compare(const Args& a, const float* q, const float* g, const std::int64_t* ids_a, const std::int64_t* ids_b,
              const char* name_a, const char* name_b) {
  Check c;
  const double tol = tie_tolerance(a.dim);
  int shown = 0;
  for (std::int64_t i = 0; i < a.queries; ++i) {
    bool same = true;
    for (std::int64_t r = 0; r < a.k; ++r) {
      const std::int64_t x = ids_a[i * a.k + r], y = ids_b[i * a.k + r];
      if (x == y) continue;
      same = false;
      const bool valid = x >= 0 && x < a.gallery && y >= 0 && y < a.gallery;
      const double sx = valid ? dot_f64(q + i * a.dim, g + x * a.dim, a.dim) : 0;
      const double sy = valid ? dot_f64(q + i * a.dim, g + y * a.dim, a.dim) : 0;
      if (valid && std::abs(sx - sy) <= tol) {
        ++c.tie_swaps;
        c.max_tie_delta = std::max(c.max_tie_delta, std::abs(sx - sy));
      } else {
        ++c.disagreements;
        if (shown++ < 5)
          std::fprintf(stderr, "  DISAGREE query %lld rank %lld: %s id %lld (%.9f) vs %s id %lld (%.9f)\n",
                       static_cast<long long>(i), static_cast<long long>(r), name_a, static_cast<long long>(x), sx,
                       name_b, static_cast<long long>(y), sy);
      }
    }
    c.queries_identical += same;
  }
  return c;
}

// Double-precision brute force over the whole gallery for `n` evenly spaced queries: our top-k must equal
// it, ties (within tie_tolerance) allowed to swap. Returns the number of disagreeing ranks.
std::int64_t check_brute_force(const Args& a, const float* q, const float* g, const std::int64_t* ids,
                               std::int64_t n) {
  const double tol = tie_tolerance(a.dim);
  std::int64_t bad = 0;
  std::vector<std::pair<double, std::int64_t>> all(static_cast<std::size_t>(a.gallery));
  for (std::int64_t s = 0; s < n; ++s) {
    const std::int64_t i = s * a.queries / n;
    for (std::int64_t j = 0; j < a.gallery; ++j) all[static_cast<std::size_t>(j)] = {dot_f64(q + i * a.dim, g + j * a.dim, a.dim), j};
    std::partial_sort(all.begin(), all.begin() + a.k, all.end(), [](const auto& x, const auto& y) {
      return x.first > y.first || (x.first == y.first && x.second < y.second);
    });
    for (std::int64_t r = 0; r < a.k; ++r) {
      const std::int64_t got = ids[i * a.k + r];
      const double want_s = all[static_cast<std::size_t>(r)].first;
      if (got == all[static_cast<std::size_t>(r)].second) continue;
      const double got_s = got >= 0 && got < a.gallery ? dot_f64(q + i * a.dim, g + got * a.dim, a.dim) : -1e30;
      if (std::abs(got_s - want_s) > tol) {
        ++bad;
        std::fprintf(stderr, "  BRUTE-FORCE MISMATCH query %lld rank %lld: got id %lld (%.9f), want %lld (%.9f)\n",
                     static_cast<long long>(i), static_cast<long long>(r), static_cast<long long>(got), got_s,
                     static_cast<long long>(all[static_cast<std::size_t>(r)].second), want_s);
      }
    }
  }
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  omp_set_num_threads(static_cast<int>(a.threads));
  openblas_set_num_threads(static_cast<int>(a.threads));
  std::printf("bench_search: %lld queries x %lld gallery x %lld-d, top-%lld, %lld threads (OpenMP and OpenBLAS), "
              "%lld repetitions, seed %lld, FlatIndex blocks %lld x %lld\n",
              static_cast<long long>(a.queries), static_cast<long long>(a.gallery), static_cast<long long>(a.dim),
              static_cast<long long>(a.k), static_cast<long long>(a.threads), static_cast<long long>(a.reps),
              static_cast<long long>(a.seed), static_cast<long long>(a.search.query_block),
              static_cast<long long>(a.search.gallery_block));

  // Data: Gaussian rows, L2-normalised once, so both contenders see bit-identical unit vectors.
  Generator gen(static_cast<std::uint64_t>(a.seed));
  Tensor gallery = ops::contiguous(ops::l2_normalize(randn({a.gallery, a.dim}, DType::f32, gen), 1));
  Tensor queries = ops::contiguous(ops::l2_normalize(randn({a.queries, a.dim}, DType::f32, gen), 1));
  const float* gp = gallery.data_ptr<float>();
  const float* qp = queries.data_ptr<float>();

  retrieval::FlatIndex ours(gallery);
  retrieval::SearchResult ours_result = ours.search(queries, a.k, a.search);  // warm-up + the checked result
  const std::int64_t* ours_ids = ours_result.indices.data_ptr<std::int64_t>();
  const std::int64_t brute_bad = check_brute_force(a, qp, ours.embeddings().data_ptr<float>(), ours_ids, 20);
  std::printf("check: FlatIndex vs double-precision brute force on 20 queries: %s\n",
              brute_bad == 0 ? "OK" : "FAILED");
  if (brute_bad != 0) return 1;

#ifdef ARCLIGHT_HAVE_FAISS
  faiss::IndexFlatIP theirs(static_cast<FaissIdx>(a.dim));
  theirs.add(static_cast<FaissIdx>(a.gallery), gp);
  std::vector<float> f_scores(static_cast<std::size_t>(a.queries * a.k));
  std::vector<FaissIdx> f_ids(static_cast<std::size_t>(a.queries * a.k));
  auto faiss_search = [&] {
    theirs.search(static_cast<FaissIdx>(a.queries), qp, static_cast<FaissIdx>(a.k), f_scores.data(),
                  f_ids.data());
  };
  std::fill(f_ids.begin(), f_ids.end(), FaissIdx(-7));
  faiss_search();  // warm-up + the checked result
  std::vector<std::int64_t> f_ids64(f_ids.begin(), f_ids.end());
  const Check c = compare(a, qp, gp, ours_ids, f_ids64.data(), "FlatIndex", "FAISS");
  std::printf("check: FlatIndex vs FAISS IndexFlatIP top-%lld: %lld/%lld queries identical, %lld ranks differ by "
              "an exact-score tie (largest |delta| %.1e in double, allowed %.1e), %lld disagreements -> %s\n",
              static_cast<long long>(a.k), static_cast<long long>(c.queries_identical),
              static_cast<long long>(a.queries), static_cast<long long>(c.tie_swaps), c.max_tie_delta, tie_tolerance(a.dim),
              static_cast<long long>(c.disagreements), c.disagreements == 0 ? "OK" : "FAILED");
  if (c.disagreements != 0) {
    std::fprintf(stderr, "bench_search: FlatIndex and FAISS disagree; no timing reported\n");
    return 1;
  }
#else
  std::printf("FAISS: not found at configure time (libfaiss-dev); the FAISS contender is skipped\n");
#endif

  // Alternating repetitions so drifting machine load hits both contenders alike.
  std::vector<double> t_ours, t_faiss;
  std::vector<double> t_gemm, t_select;
  for (std::int64_t r = 0; r < a.reps; ++r) {
    retrieval::SearchStats stats;
    retrieval::SearchOptions opt = a.search;
    opt.stats = a.profile ? &stats : nullptr;
    auto t0 = Clock::now();
    retrieval::SearchResult res = ours.search(queries, a.k, opt);
    t_ours.push_back(ms_since(t0));
    if (a.profile) {
      t_gemm.push_back(stats.gemm_seconds * 1e3);
      t_select.push_back(stats.select_seconds * 1e3);
    }
    if (std::memcmp(res.indices.raw_data(), ours_result.indices.raw_data(),
                    static_cast<std::size_t>(a.queries * a.k) * sizeof(std::int64_t)) != 0) {
      std::fprintf(stderr, "bench_search: FlatIndex is not deterministic across repetitions\n");
      return 1;
    }
#ifdef ARCLIGHT_HAVE_FAISS
    t0 = Clock::now();
    faiss_search();
    t_faiss.push_back(ms_since(t0));
#endif
  }
  const double gflop = 2.0 * static_cast<double>(a.queries) * static_cast<double>(a.gallery) * a.dim * 1e-9;
  auto line = [&](const char* name, const std::vector<double>& t) {
    std::printf("%-28s median %9.1f ms  min %9.1f ms  (%6.1f GFLOP/s at the median)  all:", name, median(t),
                *std::min_element(t.begin(), t.end()), gflop / (median(t) * 1e-3));
    for (double x : t) std::printf(" %.0f", x);
    std::printf("\n");
  };
  line("arclight FlatIndex", t_ours);
  if (a.profile)
    std::printf("  FlatIndex profile (medians): GEMM %.1f ms, top-k selection %.1f ms, rest %.1f ms\n",
                median(t_gemm), median(t_select), median(t_ours) - median(t_gemm) - median(t_select));
#ifdef ARCLIGHT_HAVE_FAISS
  line("FAISS IndexFlatIP", t_faiss);
  // Each repetition runs the two back to back, so the per-repetition ratio cancels slow load drifts.
  std::vector<double> paired;
  for (std::size_t r = 0; r < t_ours.size(); ++r) paired.push_back(t_ours[r] / t_faiss[r]);
  std::printf("ratio ours / FAISS: %.3f (medians), %.3f (mins), %.3f (median of the per-repetition ratios)\n",
              median(t_ours) / median(t_faiss),
              *std::min_element(t_ours.begin(), t_ours.end()) / *std::min_element(t_faiss.begin(), t_faiss.end()),
              median(paired));
#endif
  return 0;
}
