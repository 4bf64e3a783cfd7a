// IDX files (the MNIST / Fashion-MNIST container) read straight from their .gz with zlib, and the
// Fashion-MNIST dataset built on them. The parser trusts nothing in the file: magic, type code, rank,
// dimension products (checked against overflow and a cap), the exact payload size (one byte short or
// long is an error), and, for a dataset, matching image/label counts and labels below the class count.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <zlib.h>

#include "arclight/core/error.hpp"
#include "arclight/data/dataset.hpp"
#include "arclight/data/image_io.hpp"

namespace arclight::data {

// Inflates a gzip (or zlib) stream held in memory; concatenated gzip members are joined.
// throws: arclight::Error naming `name` on corrupt or truncated data, or output over max_out bytes.
inline std::vector<std::uint8_t> gunzip(const std::uint8_t* data, std::size_t size, std::size_t max_out,
                                        std::string_view name = "<memory>") {
  const std::string where = str_cat("gunzip: ", name);
  ARCLIGHT_CHECK(size > 0, where, "empty input, expected a gzip stream");
  // Inflate straight into `out`; the gzip trailer stores the uncompressed size mod 2^32, a good first
  // guess for its size.
  std::size_t guess = std::max<std::size_t>(size * 4, 1 << 16);
  if (size >= 18 && data[0] == 0x1F && data[1] == 0x8B) {
    const std::size_t isize = static_cast<std::size_t>(data[size - 4]) | (static_cast<std::size_t>(data[size - 3]) << 8) |
                              (static_cast<std::size_t>(data[size - 2]) << 16) |
                              (static_cast<std::size_t>(data[size - 1]) << 24);
    guess = std::max(guess, isize + 1);  // +1: reaching the end of the stream needs room to spare
  }
  std::vector<std::uint8_t> out(std::min(guess, max_out + 1));
  std::size_t produced = 0;
  z_stream zs{};
  ARCLIGHT_CHECK(inflateInit2(&zs, 15 + 32) == Z_OK, where, "inflateInit2 failed");  // +32: gzip or zlib header
  std::size_t in_pos = 0;
  bool finished = false;
  try {
    while (true) {
      if (zs.avail_in == 0 && in_pos < size) {
        const std::size_t n = std::min<std::size_t>(size - in_pos, UINT_MAX);
        zs.next_in = const_cast<Bytef*>(data + in_pos);
        zs.avail_in = static_cast<uInt>(n);
        in_pos += n;
      }
      if (produced == out.size()) {
        if (out.size() > max_out) fail(where, "inflated data exceeds the cap of ", max_out, " bytes");
        out.resize(std::min(out.size() * 2, max_out + 1));
      }
      const std::size_t room = std::min<std::size_t>(out.size() - produced, UINT_MAX);
      zs.next_out = out.data() + produced;
      zs.avail_out = static_cast<uInt>(room);
      const int rc = inflate(&zs, Z_NO_FLUSH);
      produced += room - zs.avail_out;
      if (produced > max_out) fail(where, "inflated data exceeds the cap of ", max_out, " bytes");
      if (rc == Z_STREAM_END) {
        finished = true;
        if (zs.avail_in == 0 && in_pos == size) break;
        // Another gzip member follows (RFC 1952 allows concatenation).
        ARCLIGHT_CHECK(inflateReset(&zs) == Z_OK, where, "inflateReset failed");
        finished = false;
        continue;
      }
      if (rc == Z_BUF_ERROR && zs.avail_in == 0 && in_pos == size && zs.avail_out != 0)
        fail(where, "truncated stream: input ended after ", size, " bytes before the end of the compressed data");
      if (rc != Z_OK && rc != Z_BUF_ERROR)
        fail(where, "corrupt compressed data (zlib error ", rc, ": ", zs.msg ? zs.msg : "no message", ")");
      if (rc == Z_OK && zs.avail_in == 0 && in_pos == size && zs.avail_out != 0)
        fail(where, "truncated stream: input ended after ", size, " bytes before the end of the compressed data");
    }
  } catch (...) {
    inflateEnd(&zs);
    throw;
  }
  inflateEnd(&zs);
  out.resize(produced);
  ARCLIGHT_CHECK(finished, where, "truncated stream");
  return out;
}

// One IDX array. Only unsigned-byte data (type code 0x08) is supported, as used by (Fashion-)MNIST.
struct IdxArray {
  std::uint8_t type_code = 0x08;
  std::vector<std::uint32_t> dims;
  std::vector<std::uint8_t> data;  // row-major, size == product(dims)
};

struct IdxLimits {
  std::size_t max_elements = std::size_t{1} << 32;  // 4 Gi elements
  int max_rank = 4;
};

inline const char* idx_type_name(std::uint8_t code) {
  switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return nullptr;
  }
}

// Parses an uncompressed IDX file held in memory.
// ensures: dims as stored (big-endian on disk), data.size() == product(dims).
// throws: arclight::Error naming `name` for a wrong magic, an unknown or unsupported type code, a rank of
// 0 or over limits.max_rank, a zero dimension, a dimension product that overflows or exceeds the cap, or
// a payload that is not exactly product(dims) bytes.
inline IdxArray parse_idx(const std::uint8_t* bytes, std::size_t size, std::string_view name = "<memory>",
                          const IdxLimits& limits = {}) {
  const std::string where = str_cat("parse_idx: ", name);
  ARCLIGHT_CHECK(size >= 4, where, "truncated header: ", size, " bytes, expected at least 4 (the magic number)");
  const std::uint32_t magic = (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) |
                              (std::uint32_t{bytes[2]} << 8) | std::uint32_t{bytes[3]};
  if (bytes[0] != 0 || bytes[1] != 0)
    fail(where, "wrong magic number 0x", std::hex, magic, std::dec,
         ", expected two zero bytes, a type code and a rank (e.g. 0x00000803)");
  IdxArray arr;
  arr.type_code = bytes[2];
  const char* tname = idx_type_name(arr.type_code);
  if (!tname) fail(where, "unknown type code 0x", std::hex, int{arr.type_code}, std::dec, " in magic 0x", std::hex,
                   magic, std::dec, ", expected 0x08 (unsigned byte)");
  if (arr.type_code != 0x08)
    fail(where, "type code 0x", std::hex, int{arr.type_code}, std::dec, " (", tname,
         ") is not supported, expected 0x08 (unsigned byte)");
  const int rank = bytes[3];
  ARCLIGHT_CHECK(rank >= 1 && rank <= limits.max_rank, where, "rank ", rank, ", expected 1..", limits.max_rank);
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(rank);
  ARCLIGHT_CHECK(size >= header, where, "truncated header: ", size, " bytes, expected ", header, " for rank ", rank);
  std::size_t count = 1;
  std::string dims_text;
  for (int d = 0; d < rank; ++d) {
    const std::uint8_t* p = bytes + 4 + 4 * d;
    const std::uint32_t v = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
                            std::uint32_t{p[3]};
    arr.dims.push_back(v);
    dims_text += (d ? "x" : "") + std::to_string(v);
  }
  for (int d = 0; d < rank; ++d) {
    ARCLIGHT_CHECK(arr.dims[d] > 0, where, "dimension ", d, " is 0 (dims ", dims_text, ")");
    if (__builtin_mul_overflow(count, static_cast<std::size_t>(arr.dims[d]), &count))
      fail(where, "dims ", dims_text, " overflow the element count");
  }
  ARCLIGHT_CHECK(count <= limits.max_elements, where, "dims ", dims_text, " hold ", count,
                 " elements, over the cap of ", limits.max_elements);
  const std::size_t payload = size - header;
  if (payload != count) {
    if (payload < count)
      fail(where, "payload is ", payload, " bytes, expected ", count, " for dims ", dims_text, " (", count - payload,
           " bytes short: truncated file)");
    fail(where, "payload is ", payload, " bytes, expected ", count, " for dims ", dims_text, " (", payload - count,
         " bytes of trailing data)");
  }
  arr.data.assign(bytes + header, bytes + size);
  return arr;
}

// Reads an IDX file, inflating it first when it starts with the gzip magic (1F 8B).
inline IdxArray read_idx(const std::filesystem::path& path, const IdxLimits& limits = {}) {
  const auto raw = read_file_bytes(path);
  if (raw.size() >= 2 && raw[0] == 0x1F && raw[1] == 0x8B) {
    const auto plain = gunzip(raw.data(), raw.size(), limits.max_elements + 4 + 4 * limits.max_rank + 1, path.string());
    return parse_idx(plain.data(), plain.size(), path.string(), limits);
  }
  return parse_idx(raw.data(), raw.size(), path.string(), limits);
}

// Builds an image dataset from an IDX image array (rank 3: N x rows x cols, grey) and an IDX label array
// (rank 1: N). throws: on rank mismatch, count mismatch, or a label >= class_names.size().
inline InMemoryDataset idx_dataset(IdxArray images, const IdxArray& labels, std::vector<std::string> class_names,
                                   std::string set_name) {
  const std::string where = str_cat("idx_dataset: ", set_name);
  ARCLIGHT_CHECK(images.dims.size() == 3, where, "image array has rank ", images.dims.size(),
                 ", expected 3 (count x rows x cols)");
  ARCLIGHT_CHECK(labels.dims.size() == 1, where, "label array has rank ", labels.dims.size(), ", expected 1");
  ARCLIGHT_CHECK(images.dims[0] == labels.dims[0], where, "image/label count mismatch: ", images.dims[0],
                 " images but ", labels.dims[0], " labels");
  ARCLIGHT_CHECK(images.dims[1] <= 65536 && images.dims[2] <= 65536, where, "image size ", images.dims[1], "x",
                 images.dims[2], " is too large");
  std::vector<std::int64_t> lab(labels.data.size());
  for (std::size_t i = 0; i < lab.size(); ++i) {
    lab[i] = labels.data[i];
    ARCLIGHT_CHECK(lab[i] < static_cast<std::int64_t>(class_names.size()), where, "label ", lab[i], " of sample ", i,
                   " is >= the number of classes (", class_names.size(), ")");
  }
  return InMemoryDataset(std::move(images.data), static_cast<int>(images.dims[1]), static_cast<int>(images.dims[2]),
                         1, std::move(lab), std::move(class_names), std::move(set_name));
}

inline std::vector<std::string> fashion_mnist_class_names() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

inline const char* fashion_mnist_default_dir() { return "/usr/share/datasets/fashion-mnist"; }

// Loads a Fashion-MNIST split ("train": 60000 images, "test": 10000) of 28x28 grey images from `dir`,
// which holds {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (Debian's dataset-fashion-mnist layout).
inline InMemoryDataset load_fashion_mnist(const std::filesystem::path& dir, std::string_view split) {
  ARCLIGHT_CHECK(split == "train" || split == "test", "load_fashion_mnist", "split '", split,
                 "', expected 'train' or 'test'");
  const std::string stem = split == "train" ? "train" : "t10k";
  const auto img_path = dir / (stem + "-images-idx3-ubyte.gz");
  const auto lab_path = dir / (stem + "-labels-idx1-ubyte.gz");
  ARCLIGHT_CHECK(std::filesystem::exists(img_path), "load_fashion_mnist", "missing file '", img_path.string(), "'");
  ARCLIGHT_CHECK(std::filesystem::exists(lab_path), "load_fashion_mnist", "missing file '", lab_path.string(), "'");
  return idx_dataset(read_idx(img_path), read_idx(lab_path), fashion_mnist_class_names(),
                     str_cat("fashion-mnist/", split));
}

}  // namespace arclight::data
