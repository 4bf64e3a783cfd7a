// Tests of arclight/data/image_io.hpp: JPEG/PNG round trips, channel conversion, the caps and the
// magic-byte gate, and crafted bad inputs (truncated, empty, zero-size, huge, foreign formats).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "arclight/data/image_io.hpp"
#include "test_util.hpp"

namespace ad = arclight::data;
using ad::testing::pattern_image;
using ad::testing::TempDir;

namespace {

double max_abs_diff(const ad::Image& a, const ad::Image& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) m = std::max(m, std::abs(double(a.pixels[i]) - b.pixels[i]));
  return m;
}
double mean_abs_diff(const ad::Image& a, const ad::Image& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) s += std::abs(double(a.pixels[i]) - b.pixels[i]);
  return s / a.pixels.size();
}

// Offset of the first SOFn marker's height field in a JPEG stream.
std::size_t jpeg_sof_height_offset(const std::vector<std::uint8_t>& b) {
  for (std::size_t i = 2; i + 9 < b.size(); ++i)
    if (b[i] == 0xFF && (b[i + 1] == 0xC0 || b[i + 1] == 0xC1 || b[i + 1] == 0xC2)) return i + 5;
  ADD_FAILURE() << "no SOF marker";
  return 0;
}
void put_be16(std::vector<std::uint8_t>& b, std::size_t at, unsigned v) {
  b[at] = static_cast<std::uint8_t>(v >> 8);
  b[at + 1] = static_cast<std::uint8_t>(v);
}
void put_be32(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t v) {
  for (int k = 0; k < 4; ++k) b[at + k] = static_cast<std::uint8_t>(v >> (24 - 8 * k));
}
// Rewrites the IHDR size (and its CRC, so only the size is wrong).
std::vector<std::uint8_t> png_with_size(std::vector<std::uint8_t> b, std::uint32_t w, std::uint32_t h) {
  put_be32(b, 16, w);
  put_be32(b, 20, h);
  put_be32(b, 29, static_cast<std::uint32_t>(crc32(0L, b.data() + 12, 17)));
  return b;
}

}  // namespace

TEST(ImageIO, PngRoundTripIsExactForGreyRgbAndRgba) {
  for (int c : {1, 3, 4}) {
    const ad::Image img = pattern_image(23, 37, c, 7);
    const auto bytes = ad::encode_png(img);
    ASSERT_EQ(ad::detect_format(bytes.data(), bytes.size()), ad::ImageFormat::png);
    ad::DecodeOptions opts;
    opts.channels = 0;
    const ad::Image back = ad::decode_image(bytes, opts);
    if (c == 4) {  // as stored: RGBA decodes to RGB, alpha dropped
      ASSERT_EQ(back.channels, 3);
      for (int y = 0; y < img.height; ++y)
        for (int x = 0; x < img.width; ++x)
          for (int k = 0; k < 3; ++k) ASSERT_EQ(back.at(y, x, k), img.at(y, x, k));
    } else {
      EXPECT_EQ(back, img) << "channels " << c;
    }
  }
}

TEST(ImageIO, GreyIsReplicatedToRgbAndRgbConvertsToGrey) {
  const ad::Image grey = pattern_image(9, 11, 1, 3);
  const ad::Image rgb = ad::decode_image(ad::encode_png(grey), {});  // default: 3 channels
  ASSERT_EQ(rgb.channels, 3);
  for (int y = 0; y < 9; ++y)
    for (int x = 0; x < 11; ++x)
      for (int k = 0; k < 3; ++k) ASSERT_EQ(rgb.at(y, x, k), grey.at(y, x, 0));
  // RGB -> grey uses luma weights (~0.30 R + 0.59 G + 0.11 B): check one pure-colour image.
  ad::Image red(4, 4, 3);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) red.at(y, x, 0) = 200;
  ad::DecodeOptions o1;
  o1.channels = 1;
  const ad::Image g = ad::decode_image(ad::encode_png(red), o1);
  ASSERT_EQ(g.channels, 1);
  EXPECT_NEAR(g.at(2, 2, 0), 200 * 0.299, 2.0);
}

TEST(ImageIO, JpegQuality100RoundTripErrorIsSmall) {
  const ad::Image img = pattern_image(64, 80, 3, 11, /*smooth=*/true);
  const auto q100 = ad::encode_jpeg(img, 100);
  ASSERT_EQ(ad::detect_format(q100.data(), q100.size()), ad::ImageFormat::jpeg);
  const ad::Image back = ad::decode_image(q100);
  ASSERT_EQ(back.height, 64);
  ASSERT_EQ(back.width, 80);
  EXPECT_LE(mean_abs_diff(img, back), 1.0);
  EXPECT_LE(max_abs_diff(img, back), 8.0);
  // A low quality is measurably worse and smaller: the quality argument reaches the encoder.
  const auto q10 = ad::encode_jpeg(img, 10);
  const ad::Image back10 = ad::decode_image(q10);
  EXPECT_LT(q10.size(), q100.size());
  EXPECT_GT(mean_abs_diff(img, back10), 2.0 * mean_abs_diff(img, back));
  // Grey JPEG round trip.
  const ad::Image grey = pattern_image(32, 32, 1, 5, true);
  ad::DecodeOptions o1;
  o1.channels = 1;
  EXPECT_LE(mean_abs_diff(grey, ad::decode_image(ad::encode_jpeg(grey, 100), o1)), 1.0);
}

TEST(ImageIO, EncodeRejectsBadArguments) {
  const ad::Image img = pattern_image(8, 8, 3);
  EXPECT_ERROR_WITH(ad::encode_jpeg(img, 0), "encode_jpeg", "quality = 0", "1..100");
  EXPECT_ERROR_WITH(ad::encode_jpeg(img, 101), "encode_jpeg", "quality = 101");
  EXPECT_ERROR_WITH(ad::encode_png(ad::Image()), "encode_png", "empty image");
  EXPECT_ERROR_WITH(ad::decode_image(ad::encode_png(img), ad::DecodeOptions{2}), "channels = 2");
}

TEST(ImageIO, EmptyAndTruncatedInputsAreRejected) {
  EXPECT_ERROR_WITH(ad::decode_image(std::vector<std::uint8_t>{}, {}, "empty.jpg"), "decode_image: empty.jpg",
                    "empty input");
  const ad::Image img = pattern_image(40, 30, 3, 2);
  const auto jpg = ad::encode_jpeg(img, 90);
  const auto png = ad::encode_png(img);
  for (std::size_t cut : {std::size_t{3}, std::size_t{20}, jpg.size() / 2, jpg.size() - 2, jpg.size() - 1}) {
    std::vector<std::uint8_t> t(jpg.begin(), jpg.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_ERROR_WITH(ad::decode_image(t, {}, "cut.jpg"), "decode_image: cut.jpg", "JPEG");
  }
  for (std::size_t cut : {std::size_t{8}, std::size_t{30}, png.size() / 2, png.size() - 12, png.size() - 1}) {
    std::vector<std::uint8_t> t(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_ERROR_WITH(ad::decode_image(t, {}, "cut.png"), "decode_image: cut.png", "PNG");
  }
  // A cut inside the last chunk is caught by the chunk walk (stb alone accepts it).
  std::vector<std::uint8_t> t(png.begin(), png.end() - 1);
  EXPECT_ERROR_WITH(ad::decode_image(t), "truncated PNG");
  // A flipped bit in the pixel data fails the CRC.
  std::vector<std::uint8_t> bad = png;
  bad[bad.size() / 2] ^= 0x10;
  EXPECT_ERROR_WITH(ad::decode_image(bad), "corrupt PNG", "CRC");
}

TEST(ImageIO, ZeroSizeImagesAreRejected) {
  const ad::Image img = pattern_image(16, 16, 3);
  auto jpg = ad::encode_jpeg(img, 90);
  put_be16(jpg, jpeg_sof_height_offset(jpg), 0);
  EXPECT_ERROR_WITH(ad::decode_image(jpg, {}, "zero.jpg"), "zero.jpg", "JPEG");
  auto jpgw = ad::encode_jpeg(img, 90);
  put_be16(jpgw, jpeg_sof_height_offset(jpgw) + 2, 0);
  EXPECT_ERROR_WITH(ad::decode_image(jpgw, {}, "zerow.jpg"), "zerow.jpg", "JPEG");
  EXPECT_ERROR_WITH(ad::decode_image(png_with_size(ad::encode_png(img), 0, 16), {}, "zero.png"), "zero.png", "PNG");
}

TEST(ImageIO, HugeDimensionsAreRejectedBeforeDecoding) {
  const ad::Image img = pattern_image(16, 16, 3);
  // JPEG header claiming 60000 x 60000 (3.6 G pixels): refused by the side cap from the header alone.
  auto jpg = ad::encode_jpeg(img, 90);
  const auto off = jpeg_sof_height_offset(jpg);
  put_be16(jpg, off, 60000);
  put_be16(jpg, off + 2, 60000);
  EXPECT_ERROR_WITH(ad::decode_image(jpg, {}, "huge.jpg"), "huge.jpg", "60000x60000", "cap of 16384");
  // PNG 10000 x 10000 (100 MP, within the side cap of a relaxed config): refused by the pixel cap.
  ad::DecodeOptions relaxed;
  relaxed.max_side = 65536;
  const auto png = png_with_size(ad::encode_png(img), 10000, 10000);
  EXPECT_ERROR_WITH(ad::decode_image(png, relaxed, "huge.png"), "huge.png", "100000000 pixels", "cap of 67108864");
  // PNG over stb's own limits (2^16 + 1 per side; 20000 x 20000 x 3 bytes > 1 GiB): stb refuses in the
  // header read, and its reason reaches the message.
  EXPECT_ERROR_WITH(ad::decode_image(png_with_size(ad::encode_png(img), 70000, 70000), relaxed), "PNG header",
                    "too large");
  EXPECT_ERROR_WITH(ad::decode_image(png_with_size(ad::encode_png(img), 20000, 20000), relaxed), "too large");
  // PNG 2^31 - 1 wide: no overflow on the way to the error.
  EXPECT_ERROR_WITH(ad::decode_image(png_with_size(ad::encode_png(img), 0x7FFFFFFFu, 1), relaxed), "PNG");
  // Custom caps apply to an ordinary image.
  ad::DecodeOptions tight;
  tight.max_pixels = 100;
  EXPECT_ERROR_WITH(ad::decode_image(ad::encode_png(img), tight), "256 pixels", "cap of 100");
  tight.max_pixels = 1 << 20;
  tight.max_side = 15;
  EXPECT_ERROR_WITH(ad::decode_image(ad::encode_png(img), tight), "16x16", "cap of 15");
}

TEST(ImageIO, ForeignFormatsRenamedJpgAreRefusedByMagic) {
  TempDir dir;
  struct Case {
    const char* file;
    std::vector<std::uint8_t> bytes;
    const char* format;
  };
  const std::vector<Case> cases = {
      {"anim.jpg", {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, ',', 0}, "GIF"},
      {"bitmap.jpg", {'B', 'M', 0x3A, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0, 0x28, 0, 0, 0, 1, 0, 0, 0, 1, 0}, "BMP"},
      {"layers.jpg", {'8', 'B', 'P', 'S', 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 8, 0, 3}, "PSD"},
      {"text.jpg", {'h', 'e', 'l', 'l', 'o'}, "unknown"},
  };
  for (const auto& c : cases) {
    const auto path = dir.path() / c.file;
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(c.bytes.data()), c.bytes.size());
    EXPECT_ERROR_WITH(ad::read_image(path), c.file, c.format, "data is not supported", "expected JPEG");
  }
}

TEST(ImageIO, OversizedHuffmanTableIsRefusedBeforeStbSeesIt) {
  // stb_image 2.27 overflows its 257-entry size table when a DHT's 16 code counts sum past 256 (found by
  // tests/fuzz/fuzz_image_decode); our segment walk refuses such a table first, even when it hides after
  // junk bytes where only stb's resynchronisation would find it.
  auto jpg = ad::encode_jpeg(pattern_image(16, 16, 3), 90);
  std::size_t dht = 0;
  for (std::size_t i = 2; i + 1 < jpg.size(); ++i)
    if (jpg[i] == 0xFF && jpg[i + 1] == 0xC4) {
      dht = i;
      break;
    }
  ASSERT_GT(dht, 0u);
  for (int k = 0; k < 16; ++k) jpg[dht + 5 + k] = 40;  // 16 x 40 = 640 codes
  EXPECT_ERROR_WITH(ad::decode_image(jpg, {}, "dht.jpg"), "dht.jpg", "Huffman table with 640 codes", "at most 256");
  // A segment longer than the file is truncation.
  auto cut = ad::encode_jpeg(pattern_image(16, 16, 3), 90);
  put_be16(cut, dht + 2, 0xFFF0);
  EXPECT_ERROR_WITH(ad::decode_image(cut), "truncated JPEG", "declares 65520 bytes");
}

TEST(ImageIO, GarbageAfterAValidMagicIsRejected) {
  std::vector<std::uint8_t> b = {0xFF, 0xD8, 0xFF};
  for (int i = 0; i < 200; ++i) b.push_back(static_cast<std::uint8_t>(i * 73 + 5));
  EXPECT_ERROR_WITH(ad::decode_image(b), "JPEG");
  std::vector<std::uint8_t> p = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  for (int i = 0; i < 200; ++i) p.push_back(static_cast<std::uint8_t>(i * 31 + 1));
  EXPECT_ERROR_WITH(ad::decode_image(p), "PNG");
}

TEST(ImageIO, FilesAreWrittenAtomicallyAndReadBack) {
  TempDir dir;
  const ad::Image img = pattern_image(12, 20, 3, 9);
  ad::write_image(dir.path() / "a.png", img);
  ad::write_image(dir.path() / "b.JPG", img, 100);
  EXPECT_EQ(ad::read_image(dir.path() / "a.png"), img);
  EXPECT_LE(mean_abs_diff(ad::read_image(dir.path() / "b.JPG"), img), 6.0);
  // Only the two files: no temporaries left behind.
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    ++n;
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  }
  EXPECT_EQ(n, 2);
  // Overwriting replaces the content.
  const ad::Image other = pattern_image(5, 6, 1, 4);
  ad::write_png(dir.path() / "a.png", other);
  ad::DecodeOptions o;
  o.channels = 0;
  EXPECT_EQ(ad::read_image(dir.path() / "a.png", o), other);
  // Failures name the path and leave nothing.
  EXPECT_ERROR_WITH(ad::write_png(dir.path() / "missing-dir" / "x.png", img), "write_file", "missing-dir");
  EXPECT_ERROR_WITH(ad::write_image(dir.path() / "x.bmp", img), "write_image", ".bmp");
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "x.bmp"));
  EXPECT_ERROR_WITH(ad::read_image(dir.path() / "nope.png"), "cannot open", "nope.png");
}
