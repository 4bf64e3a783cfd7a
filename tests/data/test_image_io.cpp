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


// A hand-assembled baseline 8x8 grey JPEG: quantization table 0 of ones, a DC table (class 0, id 0) with
// the given 16 code counts and symbols, an AC table (class 1, id 0) with one 1-bit code for symbol 0x00
// (end of block), and the given entropy-coded bytes for the single block.
std::vector<std::uint8_t> tiny_grey_jpeg(const std::vector<int>& dc_counts, const std::vector<std::uint8_t>& dc_symbols,
                                         const std::vector<std::uint8_t>& scan) {
  std::vector<std::uint8_t> b = {0xFF, 0xD8};
  auto segment = [&](std::uint8_t marker, const std::vector<std::uint8_t>& body) {
    const std::size_t len = body.size() + 2;
    b.insert(b.end(), {0xFF, marker, static_cast<std::uint8_t>(len >> 8), static_cast<std::uint8_t>(len)});
    b.insert(b.end(), body.begin(), body.end());
  };
  std::vector<std::uint8_t> dqt(65, 1);
  dqt[0] = 0x00;
  segment(0xDB, dqt);
  segment(0xC0, {8, 0, 8, 0, 8, 1, 1, 0x11, 0});
  std::vector<std::uint8_t> dht = {0x00};
  for (int c : dc_counts) dht.push_back(static_cast<std::uint8_t>(c));
  dht.insert(dht.end(), dc_symbols.begin(), dc_symbols.end());
  segment(0xC4, dht);
  std::vector<std::uint8_t> ac(18, 0);
  ac[0] = 0x10;
  ac[1] = 1;  // one code of length 1, symbol 0x00
  segment(0xC4, ac);
  segment(0xDA, {1, 1, 0x00, 0, 63, 0});
  b.insert(b.end(), scan.begin(), scan.end());
  b.insert(b.end(), {0xFF, 0xD9});
  return b;
}

// Offset of the first marker `m` (0xFF m) in a JPEG stream.
std::size_t jpeg_marker(const std::vector<std::uint8_t>& b, std::uint8_t m) {
  for (std::size_t i = 2; i + 1 < b.size(); ++i)
    if (b[i] == 0xFF && b[i + 1] == m) return i;
  ADD_FAILURE() << "no marker 0xFF" << std::hex << int{m};
  return 0;
}

// A 16x16 RGB progressive JPEG (libjpeg's cjpeg -progressive -quality 90 -optimize) of the smooth image
// R = 12x + 2y + 20, G = 12y + 3x + 10, B = 128 + 4(x - y). Its first scan is the interleaved DC scan,
// whose selectors name AC table 0 before any AC table is defined, as progressive encoders do.
const std::vector<std::uint8_t> kProgressiveJpeg = {
  0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01,
  0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43,
  0x00, 0x03, 0x02, 0x02, 0x03, 0x02, 0x02, 0x03, 0x03, 0x03, 0x03, 0x04,
  0x03, 0x03, 0x04, 0x05, 0x08, 0x05, 0x05, 0x04, 0x04, 0x05, 0x0a, 0x07,
  0x07, 0x06, 0x08, 0x0c, 0x0a, 0x0c, 0x0c, 0x0b, 0x0a, 0x0b, 0x0b, 0x0d,
  0x0e, 0x12, 0x10, 0x0d, 0x0e, 0x11, 0x0e, 0x0b, 0x0b, 0x10, 0x16, 0x10,
  0x11, 0x13, 0x14, 0x15, 0x15, 0x15, 0x0c, 0x0f, 0x17, 0x18, 0x16, 0x14,
  0x18, 0x12, 0x14, 0x15, 0x14, 0xff, 0xdb, 0x00, 0x43, 0x01, 0x03, 0x04,
  0x04, 0x05, 0x04, 0x05, 0x09, 0x05, 0x05, 0x09, 0x14, 0x0d, 0x0b, 0x0d,
  0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
  0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
  0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
  0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
  0x14, 0x14, 0xff, 0xc2, 0x00, 0x11, 0x08, 0x00, 0x10, 0x00, 0x10, 0x03,
  0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x00,
  0x16, 0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x04, 0x07, 0xff, 0xc4, 0x00,
  0x15, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0xff, 0xda, 0x00, 0x0c,
  0x03, 0x01, 0x00, 0x02, 0x10, 0x03, 0x10, 0x00, 0x00, 0x01, 0xcd, 0x1f,
  0x5e, 0xfa, 0xdf, 0xff, 0xc4, 0x00, 0x16, 0x10, 0x00, 0x03, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x04, 0x05, 0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x01, 0x05,
  0x02, 0x4a, 0x78, 0x94, 0xf1, 0x29, 0xe2, 0x53, 0xcf, 0xff, 0xc4, 0x00,
  0x17, 0x11, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x21, 0x31, 0xff, 0xda,
  0x00, 0x08, 0x01, 0x03, 0x01, 0x01, 0x3f, 0x01, 0x2d, 0x1c, 0xb9, 0xff,
  0xc4, 0x00, 0x17, 0x11, 0x00, 0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x05, 0x61,
  0xff, 0xda, 0x00, 0x08, 0x01, 0x02, 0x01, 0x01, 0x3f, 0x01, 0x65, 0xdd,
  0x3f, 0xff, 0xc4, 0x00, 0x16, 0x10, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
  0x21, 0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x06, 0x3f, 0x02, 0x50,
  0x50, 0x50, 0x50, 0xff, 0xc4, 0x00, 0x14, 0x10, 0x01, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x20, 0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x01, 0x3f, 0x21, 0x08,
  0x80, 0x1f, 0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02, 0x00, 0x03,
  0x00, 0x00, 0x00, 0x10, 0x03, 0xff, 0xc4, 0x00, 0x14, 0x11, 0x01, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0xff, 0xda, 0x00, 0x08, 0x01, 0x03, 0x01, 0x01, 0x3f,
  0x10, 0x07, 0xff, 0xc4, 0x00, 0x14, 0x11, 0x01, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0xff, 0xda, 0x00, 0x08, 0x01, 0x02, 0x01, 0x01, 0x3f, 0x10, 0x5f, 0xff,
  0xc4, 0x00, 0x15, 0x10, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf1, 0xff, 0xda,
  0x00, 0x08, 0x01, 0x01, 0x00, 0x01, 0x3f, 0x10, 0x92, 0x92, 0x9a, 0x9a,
  0xff, 0xd9};
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
  EXPECT_ERROR_WITH(ad::decode_image(jpg, {}, "dht.jpg"), "dht.jpg", "Huffman table with 640 codes", "at most 255");
  // A segment longer than the file is truncation.
  auto cut = ad::encode_jpeg(pattern_image(16, 16, 3), 90);
  put_be16(cut, dht + 2, 0xFFF0);
  EXPECT_ERROR_WITH(ad::decode_image(cut), "truncated JPEG", "declares 65520 bytes");
}

TEST(ImageIO, HuffmanTableOf256CodesIsRefused) {
  // 254 codes of 8 bits and one or two of 9 bits. With two (256 codes) the symbol with index 255 collides
  // with the "not in the fast table" flag of stb_image 2.27's 9-bit lookup; decoding its code 111111101
  // then trips an assertion in stb (the abort tests/fuzz/fuzz_image_decode found). The scan is that code
  // followed by a 0 bit, so stb's slow path lands on the wrong symbol index.
  std::vector<int> counts(16, 0);
  counts[7] = 254;
  counts[8] = 2;
  const auto bad = tiny_grey_jpeg(counts, std::vector<std::uint8_t>(256, 0), {0xFE, 0xBF});
  EXPECT_ERROR_WITH(ad::decode_image(bad, {}, "sym255.jpg"), "sym255.jpg", "Huffman table with 256 codes",
                    "at most 255");
  // The same file with 255 codes is a valid JPEG: the scan decodes the 9-bit code 111111100 (DC difference
  // 0) and then end of block, so every pixel is the level-shift value 128.
  counts[8] = 1;
  const auto good = tiny_grey_jpeg(counts, std::vector<std::uint8_t>(255, 0), {0xFE, 0x3F});
  ad::DecodeOptions grey;
  grey.channels = 1;
  const ad::Image img = ad::decode_image(good, grey, "sym254.jpg");
  ASSERT_EQ(img.height, 8);
  ASSERT_EQ(img.width, 8);
  for (std::uint8_t v : img.pixels) EXPECT_EQ(v, 128);
}

TEST(ImageIO, ScansUsingUndefinedTablesAreRefused) {
  // stb_image allocates its Huffman and quantization tables uninitialised, so a scan naming a table no
  // segment defined would decode from garbage memory (or trip stb's assertion).
  const auto jpg = ad::encode_jpeg(pattern_image(16, 16, 3), 90);
  ASSERT_NO_THROW(ad::decode_image(jpg));
  {
    auto b = jpg;  // the DHT marker renamed to an APP5 segment, which stb skips
    b[jpeg_marker(b, 0xC4) + 1] = 0xE5;
    EXPECT_ERROR_WITH(ad::decode_image(b, {}, "nodht.jpg"), "nodht.jpg", "scan at offset",
                      "DC Huffman table 0", "no earlier DHT segment defines");
  }
  {
    auto b = jpg;  // the first scan component's AC table selector set to 3, which stb_image_write never writes
    const std::size_t sos = jpeg_marker(b, 0xDA);
    b[sos + 6] = static_cast<std::uint8_t>((b[sos + 6] & 0xF0) | 3);
    EXPECT_ERROR_WITH(ad::decode_image(b, {}, "ac3.jpg"), "ac3.jpg", "AC Huffman table 3",
                      "no earlier DHT segment defines");
  }
  {
    auto b = jpg;  // the frame's first component reads quantization table 2
    b[jpeg_marker(b, 0xC0) + 12] = 2;
    EXPECT_ERROR_WITH(ad::decode_image(b, {}, "q2.jpg"), "q2.jpg", "quantization table 2",
                      "no earlier DQT segment defines");
  }
}

TEST(ImageIO, ProgressiveJpegDecodes) {
  // The table check must not refuse a progressive stream whose DC scans name AC tables defined only later.
  const ad::Image img = ad::decode_image(kProgressiveJpeg, {}, "progressive.jpg");
  ASSERT_EQ(img.height, 16);
  ASSERT_EQ(img.width, 16);
  ASSERT_EQ(img.channels, 3);
  double sum = 0, worst = 0;
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x) {
      const int want[3] = {12 * x + 2 * y + 20, 12 * y + 3 * x + 10, 128 + 4 * (x - y)};
      for (int c = 0; c < 3; ++c) {
        const double d = std::abs(double(img.at(y, x, c)) - want[c]);
        sum += d;
        worst = std::max(worst, d);
      }
    }
  EXPECT_LT(sum / (16 * 16 * 3), 3.0);
  EXPECT_LT(worst, 16.0);
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
