// Tests of the file-backed datasets (image folders, CSV lists), the CSV parser, subsets and per-class
// subsampling, and the class map file.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "arclight/data/csv_dataset.hpp"
#include "arclight/data/image_folder.hpp"
#include "test_util.hpp"

namespace ad = arclight::data;
using ad::testing::pattern_image;
using ad::testing::TempDir;

namespace {
void write_text(const std::filesystem::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }
}  // namespace

TEST(ImageFolder, SortedClassesAndFilesWithLabels) {
  TempDir dir;
  namespace fs = std::filesystem;
  for (const char* c : {"zebra", "apple", "mango"}) fs::create_directories(dir.path() / c);
  fs::create_directories(dir.path() / ".hidden");
  ad::write_png(dir.path() / "zebra" / "b.png", pattern_image(8, 8, 3, 1));
  ad::write_jpeg(dir.path() / "zebra" / "a.JPG", pattern_image(8, 8, 3, 2), 95);
  ad::write_png(dir.path() / "apple" / "x.png", pattern_image(6, 5, 1, 3));
  ad::write_png(dir.path() / "mango" / "m.png", pattern_image(4, 4, 3, 4));
  write_text(dir.path() / "mango" / "notes.txt", "not an image");
  ad::write_png(dir.path() / ".hidden" / "h.png", pattern_image(4, 4, 3, 5));

  const ad::ImageFolderDataset ds(dir.path());
  ASSERT_EQ(ds.num_classes(), 3u);
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"apple", "mango", "zebra"}));
  ASSERT_EQ(ds.size(), 4u);
  EXPECT_EQ(ds.label(0), 0);
  EXPECT_EQ(ds.label(1), 1);
  EXPECT_EQ(ds.label(2), 2);
  EXPECT_EQ(ds.label(3), 2);
  EXPECT_NE(ds.name(2).find("a.JPG"), std::string::npos);  // sorted: a.JPG before b.png
  EXPECT_NE(ds.name(3).find("b.png"), std::string::npos);
  const ad::Image apple = ds.load(0);  // grey PNG decoded to RGB (default channels = 3)
  EXPECT_EQ(apple.channels, 3);
  EXPECT_EQ(apple.height, 6);
  EXPECT_EQ(ds.load(3), pattern_image(8, 8, 3, 1));

  // The class map round-trips through its file.
  ad::save_class_map(dir.path() / "classes.tsv", ds.class_names());
  EXPECT_EQ(ad::load_class_map(dir.path() / "classes.tsv"), ds.class_names());
  // Its parser: comments and blank lines skipped, the last line may lack its newline, a name keeps any further
  // tabs; a missing tab or an index out of sequence is an error naming the file and line.
  EXPECT_EQ(ad::parse_class_map("# c\n\n0\ta\n1\tb\tc\n2\td", "m"), (std::vector<std::string>{"a", "b\tc", "d"}));
  EXPECT_ERROR_WITH(ad::parse_class_map("0\ta\n1 b\n", "map.tsv"), "map.tsv line 2", "expected index<TAB>name");
  EXPECT_ERROR_WITH(ad::parse_class_map("0\ta\n2\tb\n", "map.tsv"), "map.tsv line 2", "index '2', expected 1");
  EXPECT_ERROR_WITH(ad::load_class_map(dir.path() / "missing.tsv"), "missing.tsv", "cannot open");

  // An unreadable file is an error that names it.
  write_text(dir.path() / "apple" / "broken.jpg", "GIF89a....");
  const ad::ImageFolderDataset ds2(dir.path());
  ASSERT_EQ(ds2.size(), 5u);
  EXPECT_ERROR_WITH(ds2.load(0), "broken.jpg", "GIF");
}

TEST(ImageFolder, RejectsEmptyOrMissingRoots) {
  TempDir dir;
  EXPECT_ERROR_WITH(ad::ImageFolderDataset(dir.path() / "nope"), "not a directory");
  EXPECT_ERROR_WITH(ad::ImageFolderDataset(dir.path()), "no class sub-folders");
  std::filesystem::create_directories(dir.path() / "empty_class");
  EXPECT_ERROR_WITH(ad::ImageFolderDataset(dir.path()), "empty_class", "holds no image");
  ad::ImageFolderOptions o;
  o.allow_empty_classes = true;
  EXPECT_EQ(ad::ImageFolderDataset(dir.path(), o).size(), 0u);
}

TEST(Csv, ParsesQuotesCommasNewlinesAndCrlf) {
  const std::string text =
      "\xEF\xBB\xBFpath,label,note\r\n"
      "a.jpg,7,plain\r\n"
      "\"b, with comma.jpg\",3,\"say \"\"hi\"\"\"\r\n"
      "\r\n"
      "c.jpg,7,\"two\nlines\"\n"
      "d.jpg,12,";
  const ad::CsvTable t = ad::parse_csv(text, "t.csv");
  EXPECT_EQ(t.header, (std::vector<std::string>{"path", "label", "note"}));
  ASSERT_EQ(t.rows.size(), 4u);
  EXPECT_EQ(t.rows[1][0], "b, with comma.jpg");
  EXPECT_EQ(t.rows[1][2], "say \"hi\"");
  EXPECT_EQ(t.rows[2][2], "two\nlines");
  EXPECT_EQ(t.rows[3][2], "");
  EXPECT_EQ(t.row_lines, (std::vector<std::size_t>{2, 3, 5, 7}));
}

TEST(Csv, MalformedTextIsAnErrorWithTheLine) {
  EXPECT_ERROR_WITH(ad::parse_csv("path,label\na.jpg\n", "x.csv"), "parse_csv: x.csv", "line 2 has 1 fields, expected 2");
  EXPECT_ERROR_WITH(ad::parse_csv("path,label\na.jpg,1,extra\n"), "line 2 has 3 fields");
  EXPECT_ERROR_WITH(ad::parse_csv("path,label\n\"a.jpg,1\n"), "unterminated quoted field starting on line 2");
  EXPECT_ERROR_WITH(ad::parse_csv("path,label\n\"a\"x,1\n"), "line 2", "after a closing quote");
  EXPECT_ERROR_WITH(ad::parse_csv("path,label\na\"b,1\n"), "quote inside an unquoted field");
  EXPECT_ERROR_WITH(ad::parse_csv("path,path\n"), "duplicate header column 'path'");
  EXPECT_ERROR_WITH(ad::parse_csv("path,,label\n"), "empty name");
  EXPECT_ERROR_WITH(ad::parse_csv(""), "no header row");
  EXPECT_ERROR_WITH(ad::parse_csv("\n\n"), "no header row");
}

TEST(CsvDataset, ResolvesRelativePathsAgainstTheCsvFolder) {
  TempDir dir;
  namespace fs = std::filesystem;
  fs::create_directories(dir.path() / "meta");
  fs::create_directories(dir.path() / "meta" / "img");
  ad::write_png(dir.path() / "meta" / "img" / "p1.png", pattern_image(5, 7, 3, 1));
  ad::write_png(dir.path() / "meta" / "img" / "p 2.png", pattern_image(5, 7, 3, 2));
  ad::write_png(dir.path() / "abs.png", pattern_image(3, 3, 3, 3));
  const std::string abs = (dir.path() / "abs.png").string();
  write_text(dir.path() / "meta" / "train.csv",
             "id,label,path\n1,10,img/p1.png\n2,9,\"img/p 2.png\"\n3,10," + abs + "\n");
  const ad::CsvDataset ds = ad::CsvDataset::from_file(dir.path() / "meta" / "train.csv");
  ASSERT_EQ(ds.size(), 3u);
  // Integer labels are ordered numerically: "9" < "10".
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"9", "10"}));
  EXPECT_EQ(ds.label(0), 1);
  EXPECT_EQ(ds.label(1), 0);
  EXPECT_EQ(ds.label(2), 1);
  EXPECT_EQ(ds.load(1), pattern_image(5, 7, 3, 2));
  EXPECT_EQ(ds.name(2), abs);
  EXPECT_EQ(ds.path(0), (dir.path() / "meta" / "img/p1.png").string());

  // String labels sort lexicographically; a suffix and custom columns.
  write_text(dir.path() / "meta" / "ids.csv", "image,product\nimg/p1,shoe\nimg/p 2,bag\n");
  ad::CsvDatasetOptions o;
  o.path_column = "image";
  o.label_column = "product";
  o.path_suffix = ".png";
  const ad::CsvDataset ds2 = ad::CsvDataset::from_file(dir.path() / "meta" / "ids.csv", o);
  EXPECT_EQ(ds2.class_names(), (std::vector<std::string>{"bag", "shoe"}));
  EXPECT_EQ(ds2.label(0), 1);
}

TEST(CsvDataset, MissingColumnsAndMissingFilesAreNamed) {
  TempDir dir;
  ad::write_png(dir.path() / "ok.png", pattern_image(4, 4, 3));
  write_text(dir.path() / "nolabel.csv", "path,class\nok.png,1\n");
  EXPECT_ERROR_WITH(ad::CsvDataset::from_file(dir.path() / "nolabel.csv"), "nolabel.csv", "missing column 'label'",
                    "header has [path, class]");
  write_text(dir.path() / "nopath.csv", "file,label\nok.png,1\n");
  EXPECT_ERROR_WITH(ad::CsvDataset::from_file(dir.path() / "nopath.csv"), "missing column 'path'");
  write_text(dir.path() / "missing.csv", "path,label\nok.png,1\ngone.png,2\n");
  EXPECT_ERROR_WITH(ad::CsvDataset::from_file(dir.path() / "missing.csv"), "line 3", "gone.png", "does not exist");
  write_text(dir.path() / "empty_field.csv", "path,label\nok.png,\n");
  EXPECT_ERROR_WITH(ad::CsvDataset::from_file(dir.path() / "empty_field.csv"), "line 2", "empty 'label' field");
  EXPECT_ERROR_WITH(ad::CsvDataset::from_file(dir.path() / "absent.csv"), "cannot open", "absent.csv");
}

TEST(Subsample, KPerClassIsSeededSortedAndBounded) {
  std::vector<std::int64_t> labels;
  for (int i = 0; i < 100; ++i) labels.push_back(i % 4 == 3 ? 3 : i % 3);  // uneven classes
  labels.push_back(9);  // a class with a single sample
  const auto a = ad::sample_per_class(labels, 5, 42);
  const auto b = ad::sample_per_class(labels, 5, 42);
  const auto c = ad::sample_per_class(labels, 5, 43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  std::map<std::int64_t, int> per;
  for (auto i : a) ++per[labels[i]];
  EXPECT_EQ(per[0], 5);
  EXPECT_EQ(per[1], 5);
  EXPECT_EQ(per[2], 5);
  EXPECT_EQ(per[3], 5);
  EXPECT_EQ(per[9], 1);
  EXPECT_EQ(std::set<std::size_t>(a.begin(), a.end()).size(), a.size());
  // k larger than every class: everything, in order.
  const auto all = ad::sample_per_class(labels, 1000, 1);
  ASSERT_EQ(all.size(), labels.size());
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], i);
  // Every member of a class is reachable across seeds (no bias toward low indices).
  std::set<std::size_t> seen;
  for (std::uint64_t s = 0; s < 200; ++s)
    for (auto i : ad::sample_per_class(labels, 1, s))
      if (labels[i] == 0) seen.insert(i);
  std::size_t zeros = 0;
  for (auto l : labels) zeros += l == 0;
  EXPECT_EQ(seen.size(), zeros);
}

TEST(Subset, ViewsTheBaseDataset) {
  std::vector<std::uint8_t> px(5 * 4);
  for (std::size_t i = 0; i < px.size(); ++i) px[i] = static_cast<std::uint8_t>(i * 3 + 1);
  auto base = std::make_shared<ad::InMemoryDataset>(px, 2, 2, 1, std::vector<std::int64_t>{0, 1, 2, 1, 0},
                                                    std::vector<std::string>{"a", "b", "c"}, "toy");
  const ad::SubsetDataset sub(base, {4, 1});
  ASSERT_EQ(sub.size(), 2u);
  EXPECT_EQ(sub.label(0), 0);
  EXPECT_EQ(sub.label(1), 1);
  EXPECT_EQ(sub.load(0).pixels, base->load(4).pixels);
  EXPECT_EQ(sub.name(1), "toy[1]");
  EXPECT_EQ(sub.num_classes(), 3u);
  EXPECT_ERROR_WITH(ad::SubsetDataset(base, {5}), "index 5 at position 0 is out of range");
  const auto few = ad::subsample_per_class(base, 1, 3);
  EXPECT_EQ(few->size(), 3u);
  EXPECT_ERROR_WITH(ad::InMemoryDataset(px, 2, 2, 1, {0, 1, 2, 1, 5}, {"a", "b", "c"}, "toy"),
                    "label 5 of sample 4 is outside [0, 3)");
  EXPECT_ERROR_WITH(ad::InMemoryDataset(px, 2, 2, 1, {0, 1}, {"a"}, "toy"), "image buffer holds 20 bytes");
}
