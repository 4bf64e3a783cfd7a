// Retrieval evaluation on a labelled gallery and labelled queries (closed set): top-1 of the nearest
// neighbour (= P@1), top-1 of a similarity-weighted vote over the top-k, R-Precision and MAP@R (Musgrave,
// Belongie & Lim, "A Metric Learning Reality Check", ECCV 2020: R = the number of gallery items that share
// the query's label), recall@k (a same-label item among the top k), per-class accuracy and the confusion
// matrix of the nearest-neighbour classifier. Queries are processed in blocks, so memory is bounded by
// block × R, never queries × gallery.
#pragma once

#include <algorithm>
#include <map>
#include <vector>

#include "arclight/retrieval/flat_index.hpp"

namespace arclight::retrieval {

struct RetrievalMetrics {
  double top1_knn = 0;      // = P@1
  double top1_vote = 0;     // similarity-weighted vote over the top vote_k neighbours
  double r_precision = 0;
  double map_at_r = 0;
  std::map<std::int64_t, double> recall_at_k;  // k -> fraction
  std::vector<std::vector<std::int64_t>> confusion;  // [true][predicted], nearest neighbour
  std::vector<double> per_class_accuracy;
  std::vector<std::int64_t> predictions;       // nearest-neighbour label per query
  std::vector<std::int64_t> vote_predictions;  // vote label per query
  std::int64_t n_gallery = 0, n_queries = 0;
};

struct EvalOptions {
  std::vector<std::int64_t> recall_ks = {1, 5, 10};
  std::int64_t vote_k = 10;
  std::int64_t query_block = 256;
};

// requires: the index has labels; query_labels has one label per query row; labels in [0, num_classes).
inline RetrievalMetrics evaluate(const FlatIndex& gallery, const Tensor& queries,
                                 const std::vector<std::int64_t>& query_labels, std::int64_t num_classes,
                                 const EvalOptions& opt = {}) {
  const char* where = "retrieval::evaluate";
  ARCLIGHT_CHECK(!gallery.labels().empty(), where, "the gallery index has no labels");
  ARCLIGHT_CHECK(queries.dim() == 2 && queries.shape()[0] == static_cast<std::int64_t>(query_labels.size()), where,
                 "queries ", queries.str(), " and ", query_labels.size(), " labels disagree");
  ARCLIGHT_CHECK(num_classes > 0, where, "num_classes must be positive");
  const auto& glabels = gallery.labels();
  std::vector<std::int64_t> class_count(static_cast<std::size_t>(num_classes), 0);
  for (auto l : glabels) {
    ARCLIGHT_CHECK(l >= 0 && l < num_classes, where, "gallery label ", l, " outside [0, ", num_classes, ")");
    ++class_count[static_cast<std::size_t>(l)];
  }
  for (auto l : query_labels) ARCLIGHT_CHECK(l >= 0 && l < num_classes, where, "query label ", l, " outside [0, ", num_classes, ")");
  std::int64_t max_k = opt.vote_k;
  for (auto k : opt.recall_ks) max_k = std::max(max_k, k);
  for (auto l : query_labels) max_k = std::max(max_k, class_count[static_cast<std::size_t>(l)]);
  max_k = std::min(max_k, gallery.size());

  RetrievalMetrics m;
  const std::int64_t Q = queries.shape()[0];
  m.n_gallery = gallery.size();
  m.n_queries = Q;
  m.confusion.assign(static_cast<std::size_t>(num_classes), std::vector<std::int64_t>(static_cast<std::size_t>(num_classes), 0));
  m.predictions.resize(static_cast<std::size_t>(Q));
  m.vote_predictions.resize(static_cast<std::size_t>(Q));
  std::map<std::int64_t, std::int64_t> recall_hits;
  double sum_rp = 0, sum_map = 0;
  std::int64_t hits1 = 0, hits_vote = 0;
  for (std::int64_t q0 = 0; q0 < Q; q0 += opt.query_block) {
    const std::int64_t nq = std::min(opt.query_block, Q - q0);
    SearchResult r = gallery.search(ops::narrow(queries, 0, q0, nq), max_k);
    const float* s = r.scores.data_ptr<float>();
    const std::int64_t* ix = r.indices.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < nq; ++i) {
      const std::int64_t y = query_labels[static_cast<std::size_t>(q0 + i)];
      const std::int64_t R = class_count[static_cast<std::size_t>(y)];
      const std::int64_t* row = ix + i * max_k;
      const float* srow = s + i * max_k;
      const std::int64_t nn = glabels[static_cast<std::size_t>(row[0])];
      m.predictions[static_cast<std::size_t>(q0 + i)] = nn;
      ++m.confusion[static_cast<std::size_t>(y)][static_cast<std::size_t>(nn)];
      hits1 += nn == y;
      // vote
      std::vector<double> votes(static_cast<std::size_t>(num_classes), 0.0);
      for (std::int64_t j = 0; j < std::min(opt.vote_k, max_k); ++j)
        votes[static_cast<std::size_t>(glabels[static_cast<std::size_t>(row[j])])] += std::max(0.0f, srow[j]) + 1e-12;
      const auto vote = static_cast<std::int64_t>(std::max_element(votes.begin(), votes.end()) - votes.begin());
      m.vote_predictions[static_cast<std::size_t>(q0 + i)] = vote;
      hits_vote += vote == y;
      // recall@k
      for (auto k : opt.recall_ks) {
        bool found = false;
        for (std::int64_t j = 0; j < std::min(k, max_k) && !found; ++j) found = glabels[static_cast<std::size_t>(row[j])] == y;
        recall_hits[k] += found;
      }
      // R-Precision and MAP@R over the top R
      if (R > 0) {
        std::int64_t rel = 0;
        double ap = 0;
        for (std::int64_t j = 0; j < R; ++j) {
          if (glabels[static_cast<std::size_t>(row[j])] == y) {
            ++rel;
            ap += static_cast<double>(rel) / static_cast<double>(j + 1);
          }
        }
        sum_rp += static_cast<double>(rel) / static_cast<double>(R);
        sum_map += ap / static_cast<double>(R);
      }
    }
  }
  const double nQ = static_cast<double>(std::max<std::int64_t>(Q, 1));
  m.top1_knn = hits1 / nQ;
  m.top1_vote = hits_vote / nQ;
  m.r_precision = sum_rp / nQ;
  m.map_at_r = sum_map / nQ;
  for (auto k : opt.recall_ks) m.recall_at_k[k] = recall_hits[k] / nQ;
  m.per_class_accuracy.resize(static_cast<std::size_t>(num_classes));
  for (std::int64_t c = 0; c < num_classes; ++c) {
    std::int64_t total = 0;
    for (auto v : m.confusion[static_cast<std::size_t>(c)]) total += v;
    m.per_class_accuracy[static_cast<std::size_t>(c)] =
        total ? static_cast<double>(m.confusion[static_cast<std::size_t>(c)][static_cast<std::size_t>(c)]) / total : 0.0;
  }
  return m;
}

}  // namespace arclight::retrieval
