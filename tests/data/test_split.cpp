// Tests of arclight/data/split.hpp: stratified k-fold against scikit-learn's allocation, seeded
// shuffling, hold-out splits, and the fold file (round trip and corrupt files).
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "arclight/data/split.hpp"
#include "test_util.hpp"

namespace ad = arclight::data;
using ad::testing::TempDir;

TEST(StratifiedKFold, UnshuffledMatchesScikitLearn) {
  // sklearn.model_selection.StratifiedKFold(3).split(X, y) for this y gives test folds
  // [0, 0, 0, 0, 1, 1, 1, 2, 2, 2] (worked by its algorithm: per-fold class counts from the sorted labels
  // dealt round-robin, then fold tags handed out to each class in index order).
  const std::vector<std::int64_t> y = {0, 0, 1, 1, 1, 0, 1, 1, 0, 1};
  const auto fa = ad::stratified_kfold(y, 3, 0, /*shuffle=*/false);
  EXPECT_EQ(fa.fold, (std::vector<int>{0, 0, 0, 0, 1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(fa.val_indices(1), (std::vector<std::size_t>{4, 5, 6}));
  EXPECT_EQ(fa.train_indices(1), (std::vector<std::size_t>{0, 1, 2, 3, 7, 8, 9}));
  EXPECT_ERROR_WITH(fa.val_indices(3), "fold 3, expected 0..2");
}

TEST(StratifiedKFold, ShuffledFoldsAreSeededAndStratified) {
  std::vector<std::int64_t> y;
  for (int i = 0; i < 503; ++i) y.push_back((i * 7919) % 11 < 3 ? 100 : (i * 31) % 6);  // 7 uneven classes
  const auto a = ad::stratified_kfold(y, 5, 42);
  const auto b = ad::stratified_kfold(y, 5, 42);
  const auto c = ad::stratified_kfold(y, 5, 43);
  const auto plain = ad::stratified_kfold(y, 5, 42, false);
  EXPECT_EQ(a.fold, b.fold);
  EXPECT_NE(a.fold, c.fold);
  EXPECT_NE(a.fold, plain.fold);
  // Per class, each fold gets floor or ceil of count / 5, and the same counts as without shuffling.
  std::map<std::int64_t, std::vector<int>> per, per_plain;
  for (std::size_t i = 0; i < y.size(); ++i) {
    per[y[i]].resize(5);
    per_plain[y[i]].resize(5);
    ++per[y[i]][a.fold[i]];
    ++per_plain[y[i]][plain.fold[i]];
  }
  for (auto& [cls, counts] : per) {
    EXPECT_EQ(counts, per_plain[cls]);
    const int lo = *std::min_element(counts.begin(), counts.end());
    const int hi = *std::max_element(counts.begin(), counts.end());
    EXPECT_LE(hi - lo, 1) << "class " << cls;
  }
  // Folds partition the samples and have balanced sizes.
  std::size_t total = 0;
  for (int k = 0; k < 5; ++k) {
    const auto v = a.val_indices(k);
    EXPECT_GE(v.size(), 100u);
    EXPECT_LE(v.size(), 101u);
    EXPECT_EQ(v.size() + a.train_indices(k).size(), y.size());
    total += v.size();
  }
  EXPECT_EQ(total, y.size());
  EXPECT_ERROR_WITH(ad::stratified_kfold(y, 1, 0), "n_splits = 1, expected >= 2");
  EXPECT_ERROR_WITH(ad::stratified_kfold({1, 2}, 3, 0), "greater than the number of samples (2)");
}

TEST(Holdout, StratifiedFractionPerClass) {
  std::vector<std::int64_t> y;
  for (int i = 0; i < 100; ++i) y.push_back(i % 4);
  const auto s = ad::holdout_split(y, 0.2, 9);
  EXPECT_EQ(s.val.size(), 20u);
  EXPECT_EQ(s.train.size(), 80u);
  std::vector<int> per(4, 0);
  for (auto i : s.val) ++per[static_cast<std::size_t>(y[i])];
  EXPECT_EQ(per, (std::vector<int>{5, 5, 5, 5}));
  EXPECT_EQ(ad::holdout_split(y, 0.2, 9).val, s.val);
  EXPECT_NE(ad::holdout_split(y, 0.2, 10).val, s.val);
  EXPECT_TRUE(std::is_sorted(s.val.begin(), s.val.end()));
  EXPECT_EQ(ad::holdout_split(y, 0.0, 1).val.size(), 0u);
  EXPECT_EQ(ad::holdout_split(y, 1.0, 1).train.size(), 0u);
  EXPECT_EQ(ad::holdout_split(y, 0.3, 1, false).val.size(), 30u);
  EXPECT_ERROR_WITH(ad::holdout_split(y, 1.5, 1), "val_fraction = 1.5");
}

TEST(FoldFile, RoundTripsAndRejectsCorruptOrForeignFiles) {
  TempDir dir;
  std::vector<std::int64_t> y;
  for (int i = 0; i < 150; ++i) y.push_back(i % 7);
  const auto fa = ad::stratified_kfold(y, 5, 17);
  const auto path = dir.path() / "folds.txt";
  ad::save_folds(path, fa);
  const auto back = ad::load_folds(path, &y);
  EXPECT_EQ(back.fold, fa.fold);
  EXPECT_EQ(back.n_splits, 5);
  EXPECT_EQ(back.seed, 17u);
  EXPECT_TRUE(back.shuffle);
  // Different labels (another dataset): refused.
  auto other = y;
  other[3] = 6;
  EXPECT_ERROR_WITH(ad::load_folds(path, &other), "folds.txt", "made for 150 samples");
  // Corruptions.
  std::string text;
  {
    std::ifstream in(path);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& s) { std::ofstream(path) << s; };
  write(text + "3\n");
  EXPECT_ERROR_WITH(ad::load_folds(path), "trailing data");
  write(text.substr(0, text.size() - 4));
  EXPECT_ERROR_WITH(ad::load_folds(path), "fold entries");
  std::string bad = text;
  bad[bad.find("folds\n") + 6] = '9';
  write(bad);
  EXPECT_ERROR_WITH(ad::load_folds(path), "entry 0 is fold 9");
  write("arclight-folds 2\n");
  EXPECT_ERROR_WITH(ad::load_folds(path), "unsupported version 2");
  write("hello\n");
  EXPECT_ERROR_WITH(ad::load_folds(path), "expected 'arclight-folds'");
  EXPECT_ERROR_WITH(ad::load_folds(dir.path() / "none.txt"), "cannot open");
  // A count the text cannot hold is refused before the entries are allocated (2^40 would be 4 TiB).
  write("arclight-folds 1\nn_splits 5\nseed 1\nshuffle 1\nlabels_hash 7\nn_samples 1099511627776\nfolds\n0 1\n");
  EXPECT_ERROR_WITH(ad::load_folds(path), "folds.txt", "n_samples 1099511627776", "too few");
  // The largest count a text can hold still parses when the entries are there.
  const std::string head = "arclight-folds 1\nn_splits 2\nseed 1\nshuffle 0\nlabels_hash 7\nn_samples 3\nfolds\n";
  const ad::FoldAssignment parsed = ad::parse_folds(head + "1 0 1", "mem");
  EXPECT_EQ(parsed.fold, (std::vector<int>{1, 0, 1}));
  EXPECT_ERROR_WITH(ad::parse_folds(head + "1 0", "mem.txt"), "mem.txt", "only 2 of 3 fold entries");
}
