// Tests of arclight/data/idx.hpp: the real Fashion-MNIST files, and crafted IDX/gzip inputs that must
// be refused (wrong magic, unknown type code, overflowing dims, one byte short/long, count mismatch,
// labels out of range, truncated gzip).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <zlib.h>

#include "arclight/data/idx.hpp"
#include "test_util.hpp"

namespace ad = arclight::data;
using ad::testing::TempDir;

namespace {

std::vector<std::uint8_t> idx_bytes(std::uint8_t type, const std::vector<std::uint32_t>& dims, std::size_t payload,
                                    std::uint8_t fill_mod = 251) {
  std::vector<std::uint8_t> b = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims)
    for (int k = 3; k >= 0; --k) b.push_back(static_cast<std::uint8_t>(d >> (8 * k)));
  for (std::size_t i = 0; i < payload; ++i) b.push_back(static_cast<std::uint8_t>((i * 7 + 3) % fill_mod));
  return b;
}

std::vector<std::uint8_t> gzip_bytes(const std::vector<std::uint8_t>& in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<std::uint8_t> out(deflateBound(&zs, in.size()) + 32);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void write_bytes(const std::filesystem::path& p, const std::vector<std::uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace

TEST(FashionMnist, LoadsBothSplitsWithKnownFirstLabels) {
  const std::filesystem::path dir = ad::fashion_mnist_default_dir();
  if (!std::filesystem::exists(dir / "train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << dir << " (Debian package dataset-fashion-mnist)";
  const auto t0 = std::chrono::steady_clock::now();
  const ad::InMemoryDataset train = ad::load_fashion_mnist(dir, "train");
  const auto t1 = std::chrono::steady_clock::now();
  const ad::InMemoryDataset test = ad::load_fashion_mnist(dir, "test");
  const auto t2 = std::chrono::steady_clock::now();
  std::printf("[ timing ] Fashion-MNIST train %.3f s, test %.3f s (bench_loader measures it properly)\n",
              std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count());
  ASSERT_EQ(train.size(), 60000u);
  ASSERT_EQ(test.size(), 10000u);
  EXPECT_EQ(train.height(), 28);
  EXPECT_EQ(train.width(), 28);
  EXPECT_EQ(train.channels(), 1);
  const std::vector<std::int64_t> train_first = {9, 0, 0, 3, 0, 2};
  const std::vector<std::int64_t> test_first = {9, 2, 1, 1, 6};
  for (std::size_t i = 0; i < train_first.size(); ++i) EXPECT_EQ(train.label(i), train_first[i]) << "train " << i;
  for (std::size_t i = 0; i < test_first.size(); ++i) EXPECT_EQ(test.label(i), test_first[i]) << "test " << i;
  EXPECT_EQ(train.num_classes(), 10u);
  EXPECT_EQ(train.class_names()[9], "Ankle boot");
  // Balanced classes: 6000 / 1000 each.
  std::vector<int> counts(10, 0);
  for (std::size_t i = 0; i < train.size(); ++i) ++counts[static_cast<std::size_t>(train.label(i))];
  for (int c : counts) EXPECT_EQ(c, 6000);
  // The first image is an ankle boot: a real picture, not zeros, with the background black at the corners.
  const ad::Image first = train.load(0);
  ASSERT_EQ(first.pixels.size(), 784u);
  EXPECT_EQ(first.at(0, 0, 0), 0);
  int nonzero = 0;
  for (auto v : first.pixels) nonzero += v != 0;
  EXPECT_GT(nonzero, 200);
  EXPECT_EQ(train.name(5), "fashion-mnist/train[5]");
}

TEST(Idx, ParsesAValidArray) {
  const auto b = idx_bytes(0x08, {3, 2, 4}, 24);
  const ad::IdxArray a = ad::parse_idx(b.data(), b.size(), "ok.idx");
  EXPECT_EQ(a.dims, (std::vector<std::uint32_t>{3, 2, 4}));
  ASSERT_EQ(a.data.size(), 24u);
  for (std::size_t i = 0; i < 24; ++i) EXPECT_EQ(a.data[i], (i * 7 + 3) % 251);
}

TEST(Idx, RejectsBadHeaders) {
  auto b = idx_bytes(0x08, {3, 2, 4}, 24);
  b[0] = 0x01;
  EXPECT_ERROR_WITH(ad::parse_idx(b.data(), b.size(), "m.idx"), "parse_idx: m.idx", "wrong magic number 0x1000803");
  const auto unknown = idx_bytes(0x07, {3}, 3);
  EXPECT_ERROR_WITH(ad::parse_idx(unknown.data(), unknown.size()), "unknown type code 0x7");
  const auto f32 = idx_bytes(0x0D, {3}, 12);
  EXPECT_ERROR_WITH(ad::parse_idx(f32.data(), f32.size()), "type code 0xd (float32) is not supported");
  const auto rank0 = idx_bytes(0x08, {}, 0);
  EXPECT_ERROR_WITH(ad::parse_idx(rank0.data(), rank0.size()), "rank 0");
  const auto rank5 = idx_bytes(0x08, {1, 1, 1, 1, 1}, 1);
  EXPECT_ERROR_WITH(ad::parse_idx(rank5.data(), rank5.size()), "rank 5");
  const auto zero = idx_bytes(0x08, {3, 0, 4}, 0);
  EXPECT_ERROR_WITH(ad::parse_idx(zero.data(), zero.size()), "dimension 1 is 0");
  const std::vector<std::uint8_t> tiny = {0, 0, 8};
  EXPECT_ERROR_WITH(ad::parse_idx(tiny.data(), tiny.size()), "truncated header");
  auto short_dims = idx_bytes(0x08, {3, 2, 4}, 0);
  short_dims.resize(10);
  EXPECT_ERROR_WITH(ad::parse_idx(short_dims.data(), short_dims.size()), "truncated header", "expected 16");
}

TEST(Idx, RejectsOverflowingDims) {
  const auto b = idx_bytes(0x08, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, 8);
  EXPECT_ERROR_WITH(ad::parse_idx(b.data(), b.size()), "4294967295x4294967295x4294967295", "overflow");
  const auto big = idx_bytes(0x08, {0x10000u, 0x10000u, 2}, 8);  // 2^33 elements: no overflow, over the cap
  EXPECT_ERROR_WITH(ad::parse_idx(big.data(), big.size()), "over the cap");
}

TEST(Idx, PayloadMustBeExact) {
  const auto good = idx_bytes(0x08, {5, 3}, 15);
  auto one_short = good;
  one_short.pop_back();
  EXPECT_ERROR_WITH(ad::parse_idx(one_short.data(), one_short.size()), "payload is 14 bytes, expected 15",
                    "1 bytes short");
  auto one_long = good;
  one_long.push_back(0);
  EXPECT_ERROR_WITH(ad::parse_idx(one_long.data(), one_long.size()), "payload is 16 bytes, expected 15",
                    "1 bytes of trailing data");
}

TEST(Idx, ReadsGzipFilesAndRejectsBrokenOnes) {
  TempDir dir;
  const auto raw = idx_bytes(0x08, {4, 3, 3}, 36);
  write_bytes(dir.path() / "a.idx.gz", gzip_bytes(raw));
  write_bytes(dir.path() / "a.idx", raw);
  const ad::IdxArray from_gz = ad::read_idx(dir.path() / "a.idx.gz");
  const ad::IdxArray from_raw = ad::read_idx(dir.path() / "a.idx");
  EXPECT_EQ(from_gz.dims, from_raw.dims);
  EXPECT_EQ(from_gz.data, from_raw.data);
  // Truncated gzip stream.
  auto gz = gzip_bytes(raw);
  gz.resize(gz.size() / 2);
  write_bytes(dir.path() / "cut.gz", gz);
  EXPECT_ERROR_WITH(ad::read_idx(dir.path() / "cut.gz"), "gunzip", "cut.gz", "truncated");
  // Corrupt deflate data.
  auto bad = gzip_bytes(raw);
  for (std::size_t i = 10; i < bad.size() - 8; ++i) bad[i] ^= 0xA5;
  write_bytes(dir.path() / "bad.gz", bad);
  EXPECT_ERROR_WITH(ad::read_idx(dir.path() / "bad.gz"), "bad.gz");
  // An IDX one byte long inside a valid gzip stream.
  auto long_raw = raw;
  long_raw.push_back(1);
  write_bytes(dir.path() / "long.gz", gzip_bytes(long_raw));
  EXPECT_ERROR_WITH(ad::read_idx(dir.path() / "long.gz"), "long.gz", "1 bytes of trailing data");
  // Output cap.
  EXPECT_ERROR_WITH(ad::gunzip(gzip_bytes(raw).data(), gzip_bytes(raw).size(), 10), "exceeds the cap of 10");
}

TEST(Idx, DatasetChecksCountsAndLabels) {
  const auto imgs_b = idx_bytes(0x08, {4, 2, 3}, 24);
  const auto imgs = ad::parse_idx(imgs_b.data(), imgs_b.size());
  const std::vector<std::string> names = {"a", "b", "c"};
  std::vector<std::uint8_t> lab_b = {0, 0, 8, 1, 0, 0, 0, 4, 2, 0, 1, 2};
  const auto labs = ad::parse_idx(lab_b.data(), lab_b.size());
  const ad::InMemoryDataset ds = ad::idx_dataset(imgs, labs, names, "toy");
  ASSERT_EQ(ds.size(), 4u);
  EXPECT_EQ(ds.label(0), 2);
  EXPECT_EQ(ds.label(3), 2);
  const ad::Image im1 = ds.load(1);
  EXPECT_EQ(im1.height, 2);
  EXPECT_EQ(im1.width, 3);
  for (int k = 0; k < 6; ++k) EXPECT_EQ(im1.pixels[static_cast<std::size_t>(k)], ((6 + k) * 7 + 3) % 251);
  EXPECT_ERROR_WITH(ds.load(4), "index 4 out of range");

  std::vector<std::uint8_t> lab3 = {0, 0, 8, 1, 0, 0, 0, 3, 0, 1, 2};
  EXPECT_ERROR_WITH(ad::idx_dataset(imgs, ad::parse_idx(lab3.data(), lab3.size()), names, "toy"),
                    "count mismatch: 4 images but 3 labels");
  std::vector<std::uint8_t> lab_big = {0, 0, 8, 1, 0, 0, 0, 4, 2, 0, 3, 1};
  EXPECT_ERROR_WITH(ad::idx_dataset(imgs, ad::parse_idx(lab_big.data(), lab_big.size()), names, "toy"),
                    "label 3 of sample 2 is >= the number of classes (3)");
  EXPECT_ERROR_WITH(ad::idx_dataset(labs, labs, names, "toy"), "image array has rank 1, expected 3");
  EXPECT_ERROR_WITH(ad::load_fashion_mnist("/nonexistent-dir", "train"), "missing file", "/nonexistent-dir");
  EXPECT_ERROR_WITH(ad::load_fashion_mnist("/nonexistent-dir", "val"), "split 'val'");
}
