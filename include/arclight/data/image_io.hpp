// Image decoding and encoding for the data pipeline: JPEG and PNG only, through stb_image/stb_image_write
// compiled privately (detail/stb_impl.hpp). Decoding is defensive because training data comes from the
// wild: the format is identified by its magic bytes (a GIF/BMP/PSD renamed .jpg is refused, never handed
// to a decoder), the header is read with stbi_info_from_memory and the image is refused over a pixel or
// side cap before any pixel buffer is allocated, and every failure names the input and stb's reason.
// Files are written atomically (temporary name + rename), so a crash never leaves a partial image.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>
#include <zlib.h>

#include "arclight/core/error.hpp"
#include "arclight/data/detail/stb_impl.hpp"
#include "arclight/data/image.hpp"

namespace arclight::data {

enum class ImageFormat { jpeg, png, gif, bmp, psd, tiff, webp, hdr, pnm, unknown };

inline const char* format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::jpeg: return "JPEG";
    case ImageFormat::png: return "PNG";
    case ImageFormat::gif: return "GIF";
    case ImageFormat::bmp: return "BMP";
    case ImageFormat::psd: return "PSD";
    case ImageFormat::tiff: return "TIFF";
    case ImageFormat::webp: return "WebP";
    case ImageFormat::hdr: return "Radiance HDR";
    case ImageFormat::pnm: return "PNM";
    default: return "unknown";
  }
}

// Identifies the container by its leading magic bytes (never by file extension).
inline ImageFormat detect_format(const std::uint8_t* data, std::size_t size) {
  auto starts = [&](std::initializer_list<int> magic) {
    if (size < magic.size()) return false;
    std::size_t i = 0;
    for (int b : magic)
      if (data[i++] != static_cast<std::uint8_t>(b)) return false;
    return true;
  };
  if (starts({0xFF, 0xD8, 0xFF})) return ImageFormat::jpeg;
  if (starts({0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A})) return ImageFormat::png;
  if (starts({'G', 'I', 'F', '8'})) return ImageFormat::gif;
  if (starts({'B', 'M'})) return ImageFormat::bmp;
  if (starts({'8', 'B', 'P', 'S'})) return ImageFormat::psd;
  if (starts({'I', 'I', 0x2A, 0x00}) || starts({'M', 'M', 0x00, 0x2A})) return ImageFormat::tiff;
  if (starts({'R', 'I', 'F', 'F'}) && size >= 12 && data[8] == 'W' && data[9] == 'E' && data[10] == 'B' &&
      data[11] == 'P')
    return ImageFormat::webp;
  if (starts({'#', '?'})) return ImageFormat::hdr;
  if (size >= 2 && data[0] == 'P' && data[1] >= '1' && data[1] <= '7') return ImageFormat::pnm;
  return ImageFormat::unknown;
}

struct DecodeOptions {
  // Output channels: 1 (grey; colour is converted by stb's luma weights), 3 (RGB; grey is replicated,
  // alpha dropped) or 0 (as stored: grey and grey+alpha give 1, RGB and RGBA give 3).
  int channels = 3;
  // Refuse images with more pixels than this (default 64 Mi pixels) before decoding.
  std::int64_t max_pixels = std::int64_t{1} << 26;
  // Refuse images whose width or height exceeds this (at most 65536, stb's compiled-in ceiling).
  int max_side = 16384;
  // Refuse inputs larger than this many bytes.
  std::size_t max_bytes = std::size_t{1} << 30;
};

namespace detail {
inline std::string hex_prefix(const std::uint8_t* data, std::size_t size) {
  static const char* digits = "0123456789ABCDEF";
  std::string s;
  for (std::size_t i = 0; i < size && i < 8; ++i) {
    if (i) s += ' ';
    s += digits[data[i] >> 4];
    s += digits[data[i] & 15];
  }
  return s.empty() ? std::string("(nothing)") : s;
}
inline std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return (r && *r) ? std::string(r) : std::string("corrupt data (no reason given)");
}

// Walks the PNG chunk list (length, type, data, CRC-32): every chunk must fit in the input with a valid
// CRC, and the list must reach IEND. stb_image checks neither the CRCs nor that IEND is present, so
// without this a PNG cut inside its last chunk would decode "successfully".
inline void check_png_chunks(const std::uint8_t* data, std::size_t size, const std::string& where) {
  std::size_t pos = 8;  // after the signature
  while (true) {
    ARCLIGHT_CHECK(size - pos >= 12, where, "truncated PNG: ", size - pos, " bytes left at offset ", pos,
                   " where a chunk (12+ bytes) or IEND was expected");
    const std::uint32_t len = (std::uint32_t{data[pos]} << 24) | (std::uint32_t{data[pos + 1]} << 16) |
                              (std::uint32_t{data[pos + 2]} << 8) | std::uint32_t{data[pos + 3]};
    const std::string type(reinterpret_cast<const char*>(data + pos + 4), 4);
    ARCLIGHT_CHECK(len <= 0x7FFFFFFFu && static_cast<std::size_t>(len) <= size - pos - 12, where,
                   "truncated PNG: chunk '", type, "' at offset ", pos, " declares ", len, " data bytes but only ",
                   size - pos - 12, " remain");
    const std::uint8_t* c = data + pos + 8 + len;
    const std::uint32_t stored = (std::uint32_t{c[0]} << 24) | (std::uint32_t{c[1]} << 16) |
                                 (std::uint32_t{c[2]} << 8) | std::uint32_t{c[3]};
    const auto computed = static_cast<std::uint32_t>(crc32(0L, data + pos + 4, static_cast<uInt>(len) + 4u));
    ARCLIGHT_CHECK(stored == computed, where, "corrupt PNG: chunk '", type, "' at offset ", pos, " has CRC 0x",
                   std::hex, stored, ", computed 0x", computed, std::dec);
    if (type == "IEND") return;
    pos += 12 + static_cast<std::size_t>(len);
  }
}

// Walks the JPEG marker segments of the whole stream the way stb_image finds them (it resynchronises on
// bytes between segments, and skips entropy-coded data, in which 0xFF is always stuffed or a restart
// marker) and refuses, with the offset, what stb_image 2.27 would not survive or would decode from
// uninitialised memory (each found by tests/fuzz/fuzz_image_decode):
//  - a Huffman table (DHT) whose 16 code counts sum past 255. Past 256, stb overflows its size[257]
//    array (fixed upstream in 2.28). At exactly 256, the symbol with index 255 collides with the "not in
//    the fast table" flag of stb's 9-bit lookup, and decoding it trips an assertion (an abort in any
//    build without NDEBUG). No encoder needs more than 162 symbols per table for 8-bit JPEG.
//  - a scan (SOS) that uses a Huffman or quantization table no earlier segment defined: stb allocates its
//    tables without initialising them, so such a scan decodes garbage or trips the same assertion. A scan
//    needs, per component, the quantization table named by the frame header, and: in a baseline or
//    sequential frame both its DC and AC tables; in a progressive frame its DC table for a first DC scan
//    (Ss = 0, Ah = 0), none for a DC refinement, and its AC table for an AC scan (Ss > 0).
// A segment running past the end of the input is refused as truncated. Other structural problems (bad
// table ids, unknown components, wrong segment lengths) are left to stb, which reports them.
inline void check_jpeg_segments(const std::uint8_t* data, std::size_t size, const std::string& where) {
  bool dc_defined[4] = {}, ac_defined[4] = {}, quant_defined[4] = {};
  bool have_frame = false, progressive = false;
  int frame_components = 0;
  std::uint8_t component_id[4] = {}, component_quant[4] = {};
  std::size_t pos = 2;  // after SOI
  while (pos < size) {
    if (data[pos] != 0xFF) {  // junk between segments: stb skips it looking for the next marker
      ++pos;
      continue;
    }
    while (pos < size && data[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= size) return;
    const std::uint8_t m = data[pos++];
    if (m == 0xD9) return;                                              // EOI
    if ((m >= 0xD0 && m <= 0xD7) || m == 0x01 || m == 0x00) continue;  // standalone (or a stuffed zero)
    ARCLIGHT_CHECK(size - pos >= 2, where, "truncated JPEG: marker 0xFF", std::hex, int{m}, std::dec,
                   " at offset ", pos - 2, " has no length");
    const std::size_t len = (std::size_t{data[pos]} << 8) | data[pos + 1];
    if (len < 2) return;  // stb reports the bad length
    ARCLIGHT_CHECK(len <= size - pos, where, "truncated JPEG: segment 0xFF", std::hex, int{m}, std::dec,
                   " at offset ", pos - 2, " declares ", len, " bytes but only ", size - pos, " remain");
    const std::size_t seg = pos + 2, end = pos + len, at = pos - 2;
    if (m == 0xC4) {  // DHT: one or more (class/id, 16 counts, symbols) tables
      std::size_t q = seg;
      while (q < end) {
        ARCLIGHT_CHECK(end - q >= 17, where, "corrupt JPEG: DHT segment at offset ", at, " is truncated");
        const int table_class = data[q] >> 4, table_id = data[q] & 15;
        ARCLIGHT_CHECK(table_class <= 1 && table_id <= 3, where, "corrupt JPEG: DHT table class ", table_class,
                       " id ", table_id, " (expected class 0..1, id 0..3)");
        std::size_t codes = 0;
        for (int i = 1; i <= 16; ++i) codes += data[q + i];
        ARCLIGHT_CHECK(codes <= 255, where, "corrupt JPEG: Huffman table with ", codes, " codes at offset ", q,
                       " (at most 255 are supported)");
        ARCLIGHT_CHECK(codes <= end - q - 17, where, "corrupt JPEG: Huffman table at offset ", q,
                       " runs past its DHT segment");
        (table_class == 0 ? dc_defined : ac_defined)[table_id] = true;
        q += 17 + codes;
      }
    } else if (m == 0xDB) {  // DQT: (precision/id, 64 or 128 bytes) tables; malformed ones are stb's to report
      std::size_t q = seg;
      while (q < end) {
        const int precision = data[q] >> 4, table_id = data[q] & 15;
        const std::size_t n = precision == 0 ? 64 : 128;
        if (precision > 1 || table_id > 3 || end - q < 1 + n) break;
        quant_defined[table_id] = true;
        q += 1 + n;
      }
    } else if ((m == 0xC0 || m == 0xC1 || m == 0xC2) && !have_frame) {  // the frame header stb decodes
      if (len >= 8) {
        const int nf = data[seg + 5];
        if (nf >= 1 && nf <= 4 && len >= 8 + 3 * static_cast<std::size_t>(nf)) {
          have_frame = true;
          progressive = m == 0xC2;
          frame_components = nf;
          for (int c = 0; c < nf; ++c) {
            component_id[c] = data[seg + 6 + 3 * c];
            component_quant[c] = data[seg + 8 + 3 * c];
          }
        }
      }
    } else if (m == 0xDA && have_frame && len >= 3) {  // SOS: the tables its components decode with
      const std::size_t ns = data[seg];
      if (len >= 6 + 2 * ns) {
        const std::size_t tail = seg + 1 + 2 * ns;
        const int spec_start = data[tail], succ_high = data[tail + 2] >> 4;
        for (std::size_t k = 0; k < ns; ++k) {
          const int id = data[seg + 1 + 2 * k], td = data[seg + 2 + 2 * k] >> 4, ta = data[seg + 2 + 2 * k] & 15;
          int c = 0;
          while (c < frame_components && component_id[c] != id) ++c;
          if (c == frame_components) continue;  // stb reports the unknown component
          const int tq = component_quant[c];
          ARCLIGHT_CHECK(tq > 3 || quant_defined[tq], where, "corrupt JPEG: the scan at offset ", at,
                         " decodes component ", id, " with quantization table ", tq,
                         ", which no earlier DQT segment defines");
          const bool needs_dc = progressive ? (spec_start == 0 && succ_high == 0) : true;
          const bool needs_ac = progressive ? spec_start > 0 : true;
          ARCLIGHT_CHECK(!needs_dc || td > 3 || dc_defined[td], where, "corrupt JPEG: the scan at offset ", at,
                         " decodes component ", id, " with DC Huffman table ", td,
                         ", which no earlier DHT segment defines");
          ARCLIGHT_CHECK(!needs_ac || ta > 3 || ac_defined[ta], where, "corrupt JPEG: the scan at offset ", at,
                         " decodes component ", id, " with AC Huffman table ", ta,
                         ", which no earlier DHT segment defines");
        }
      }
    }
    pos = end;
    if (m == 0xDA) {  // SOS: skip the entropy-coded data to the next real marker
      while (pos + 1 < size &&
             !(data[pos] == 0xFF && data[pos + 1] != 0x00 && !(data[pos + 1] >= 0xD0 && data[pos + 1] <= 0xD7)))
        ++pos;
      if (pos + 1 >= size) return;
    }
  }
}
}  // namespace detail

// Reads the header only. requires: a JPEG or PNG in memory. ensures: width/height/channels as stored.
struct ImageInfo {
  int width = 0, height = 0, channels = 0;
  ImageFormat format = ImageFormat::unknown;
};

inline ImageInfo probe_image(const std::uint8_t* data, std::size_t size, std::string_view name = "<memory>") {
  const std::string where = str_cat("decode_image: ", name);
  ARCLIGHT_CHECK(size > 0 && data != nullptr, where, "empty input (0 bytes), expected a JPEG or PNG image");
  ARCLIGHT_CHECK(size <= static_cast<std::size_t>(INT_MAX), where, "input is ", size,
                 " bytes, more than the decoder's limit of ", INT_MAX);
  ImageInfo info;
  info.format = detect_format(data, size);
  if (info.format != ImageFormat::jpeg && info.format != ImageFormat::png)
    fail(where, format_name(info.format), " data is not supported: expected JPEG (FF D8 FF) or PNG (89 50 4E 47 0D 0A 1A 0A) "
         "magic bytes, found ", detail::hex_prefix(data, size));
  // Structure first: stb's header read already parses JPEG segments (and trusts their Huffman tables).
  if (info.format == ImageFormat::png) detail::check_png_chunks(data, size, where);
  else detail::check_jpeg_segments(data, size, where);
  if (!stbi_info_from_memory(data, static_cast<int>(size), &info.width, &info.height, &info.channels)) {
    // stbi_info_from_memory tries every compiled decoder and reports the last one's complaint ("unknown
    // image type"); rerun the header read of the format we identified to get its own reason.
    stbi__context ctx;
    stbi__start_mem(&ctx, data, static_cast<int>(size));
    int x = 0, y = 0, c = 0;
    if (info.format == ImageFormat::png) stbi__png_info(&ctx, &x, &y, &c);
    else stbi__jpeg_info(&ctx, &x, &y, &c);
    fail(where, "cannot read the ", format_name(info.format), " header (", size, " bytes): ", detail::stb_reason());
  }
  return info;
}

// Decodes a JPEG or PNG held in memory.
// requires: opts.channels in {0, 1, 3}. ensures: an Image of the stored size with the requested channels.
// throws: arclight::Error naming `name` for a non-JPEG/PNG magic, a truncated or corrupt stream, a zero
// size, or an image over opts.max_side / opts.max_pixels (checked from the header, before decoding).
inline Image decode_image(const std::uint8_t* data, std::size_t size, const DecodeOptions& opts = {},
                          std::string_view name = "<memory>") {
  const std::string where = str_cat("decode_image: ", name);
  ARCLIGHT_CHECK(opts.channels == 0 || opts.channels == 1 || opts.channels == 3, where,
                 "channels = ", opts.channels, ", expected 0 (as stored), 1 or 3");
  ARCLIGHT_CHECK(opts.max_side > 0 && opts.max_pixels > 0, where, "caps must be positive (max_side ", opts.max_side,
                 ", max_pixels ", opts.max_pixels, ")");
  ARCLIGHT_CHECK(size <= opts.max_bytes, where, "input is ", size, " bytes, over the cap of ", opts.max_bytes);
  const ImageInfo info = probe_image(data, size, name);
  ARCLIGHT_CHECK(info.width > 0 && info.height > 0, where, "zero-size image ", info.width, "x", info.height);
  ARCLIGHT_CHECK(info.width <= opts.max_side && info.height <= opts.max_side, where, "image is ", info.width, "x",
                 info.height, ", a side over the cap of ", opts.max_side, " pixels");
  const std::size_t pixels =
      checked_mul(static_cast<std::size_t>(info.width), static_cast<std::size_t>(info.height), "decode_image");
  ARCLIGHT_CHECK(pixels <= static_cast<std::uint64_t>(opts.max_pixels), where, "image is ", info.width, "x",
                 info.height, " = ", pixels, " pixels, over the cap of ", opts.max_pixels);
  const int want = opts.channels != 0 ? opts.channels : (info.channels <= 2 ? 1 : 3);
  // Bytes of the output buffer, checked before stb computes the same product in int arithmetic.
  const std::size_t bytes = checked_mul(pixels, static_cast<std::size_t>(want), "decode_image");
  ARCLIGHT_CHECK(bytes <= static_cast<std::size_t>(INT_MAX), where, "decoded size ", bytes, " bytes is too large");

  int w = 0, h = 0, stored = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pix(
      stbi_load_from_memory(data, static_cast<int>(size), &w, &h, &stored, want), &stbi_image_free);
  if (!pix) fail(where, format_name(info.format), " decode failed: ", detail::stb_reason());
  ARCLIGHT_CHECK(w == info.width && h == info.height, where, "decoder returned ", w, "x", h, " but the header says ",
                 info.width, "x", info.height);
  Image img(h, w, want);
  std::copy(pix.get(), pix.get() + bytes, img.pixels.begin());
  return img;
}

inline Image decode_image(const std::vector<std::uint8_t>& bytes, const DecodeOptions& opts = {},
                          std::string_view name = "<memory>") {
  return decode_image(bytes.data(), bytes.size(), opts, name);
}

// Reads a whole file. throws: arclight::Error naming the path if it cannot be opened/read or is larger
// than max_bytes.
inline std::vector<std::uint8_t> read_file_bytes(const std::filesystem::path& path,
                                                 std::size_t max_bytes = std::size_t{1} << 30) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  ARCLIGHT_CHECK(in.is_open(), "read_file", "cannot open '", path.string(), "'");
  const std::streamoff end = in.tellg();
  ARCLIGHT_CHECK(end >= 0, "read_file", "cannot determine the size of '", path.string(), "'");
  ARCLIGHT_CHECK(static_cast<std::uint64_t>(end) <= max_bytes, "read_file", "'", path.string(), "' is ", end,
                 " bytes, over the cap of ", max_bytes);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(end));
  in.seekg(0);
  if (!bytes.empty()) {
    in.read(reinterpret_cast<char*>(bytes.data()), end);
    ARCLIGHT_CHECK(static_cast<std::streamoff>(in.gcount()) == end, "read_file", "read error on '", path.string(),
                   "': got ", in.gcount(), " of ", end, " bytes");
  }
  return bytes;
}

// Reads and decodes an image file (format from its bytes, not its extension); errors name the path.
inline Image read_image(const std::filesystem::path& path, const DecodeOptions& opts = {}) {
  const auto bytes = read_file_bytes(path, opts.max_bytes);
  return decode_image(bytes.data(), bytes.size(), opts, path.string());
}

namespace detail {
inline void append_bytes(void* ctx, void* data, int size) {
  auto* out = static_cast<std::vector<std::uint8_t>*>(ctx);
  const auto* p = static_cast<const std::uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}
inline void check_encodable(const Image& img, const char* where) {
  ARCLIGHT_CHECK(img.width > 0 && img.height > 0, where, "cannot encode an empty image (", img.width, "x",
                 img.height, ")");
  ARCLIGHT_CHECK(img.channels == 1 || img.channels == 3 || img.channels == 4, where, "channels = ", img.channels,
                 ", expected 1, 3 or 4");
  ARCLIGHT_CHECK(img.pixels.size() == img.row_stride() * static_cast<std::size_t>(img.height), where,
                 "pixel buffer holds ", img.pixels.size(), " bytes, expected ", img.row_stride() * img.height);
  ARCLIGHT_CHECK(img.width <= 65535 && img.height <= 65535, where, "image ", img.width, "x", img.height,
                 " exceeds 65535 pixels on a side");
}
}  // namespace detail

// Encodes to JPEG in memory. requires: quality in [1, 100], 1/3/4 channels (alpha is dropped).
// Quality > 90 stores chroma at full resolution (stb's rule), so q = 100 is near-lossless.
inline std::vector<std::uint8_t> encode_jpeg(const Image& img, int quality = 95) {
  detail::check_encodable(img, "encode_jpeg");
  ARCLIGHT_CHECK(quality >= 1 && quality <= 100, "encode_jpeg", "quality = ", quality, ", expected 1..100");
  std::vector<std::uint8_t> out;
  out.reserve(img.pixels.size() / 4 + 1024);
  if (!stbi_write_jpg_to_func(&detail::append_bytes, &out, img.width, img.height, img.channels, img.data(), quality))
    fail("encode_jpeg", "stb_image_write failed for a ", img.width, "x", img.height, "x", img.channels, " image");
  return out;
}

// Encodes to PNG (lossless) in memory. requires: 1/3/4 channels.
inline std::vector<std::uint8_t> encode_png(const Image& img) {
  detail::check_encodable(img, "encode_png");
  std::vector<std::uint8_t> out;
  if (!stbi_write_png_to_func(&detail::append_bytes, &out, img.width, img.height, img.channels, img.data(),
                              static_cast<int>(img.row_stride())))
    fail("encode_png", "stb_image_write failed for a ", img.width, "x", img.height, "x", img.channels, " image");
  return out;
}

// Writes bytes to `path` atomically: a temporary file in the same folder, then rename. On any failure the
// temporary is removed and nothing is left at `path` that was not there before.
inline void write_file_atomic(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes) {
  static std::atomic<std::uint64_t> counter{0};
  std::filesystem::path tmp = path;
  tmp += str_cat(".tmp-", ::getpid(), "-", counter.fetch_add(1));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    ARCLIGHT_CHECK(out.is_open(), "write_file", "cannot create '", tmp.string(), "'");
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out.good()) {
      out.close();
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      fail("write_file", "write error on '", tmp.string(), "'");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignore;
    std::filesystem::remove(tmp, ignore);
    fail("write_file", "cannot rename '", tmp.string(), "' to '", path.string(), "': ", ec.message());
  }
}

inline void write_png(const std::filesystem::path& path, const Image& img) { write_file_atomic(path, encode_png(img)); }
inline void write_jpeg(const std::filesystem::path& path, const Image& img, int quality = 95) {
  write_file_atomic(path, encode_jpeg(img, quality));
}

// Writes by extension: .png, or .jpg/.jpeg (quality `jpeg_quality`). Anything else is an error.
inline void write_image(const std::filesystem::path& path, const Image& img, int jpeg_quality = 95) {
  std::string ext = path.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == ".png") return write_png(path, img);
  if (ext == ".jpg" || ext == ".jpeg") return write_jpeg(path, img, jpeg_quality);
  fail("write_image", "'", path.string(), "': extension '", ext, "' is not supported, expected .png, .jpg or .jpeg");
}

}  // namespace arclight::data
