// safetensors reader and writer (https://github.com/huggingface/safetensors), the open weight format
// arclight loads timm/PyTorch weights from and saves models and optimizer state in. Tensor-independent:
// entries are (name, DType, int64 shape, byte span); the Tensor adapters live with the Tensor core.
//
// Layout: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
//   {"__metadata__": {str: str}?, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// then the data section; offsets are relative to the start of the data section.
//
// The reader validates exactly what the reference implementation (the Rust `safetensors` crate,
// SafeTensors::read_metadata + Metadata::validate) validates, with checked 64-bit arithmetic:
// N ≤ 100,000,000 and 8 + N ≤ file size; the header is UTF-8 and a well-formed JSON object (our own strict
// parser, io/json.hpp: no duplicate keys); every tensor entry has dtype/shape/data_offsets of the right
// types (unknown extra fields are ignored, as serde does); tensors sorted by (begin, end) are contiguous
// from 0 with no gap or overlap; end - begin == product(shape) × dtype size with overflow checks; the data
// section is exactly as long as the last end (trailing bytes are an error). Two deliberate differences:
// dimensions must fit int64 (our shape type), and dtypes arclight has no DType for (BOOL, I8, U16, F8_*,
// ...) are rejected with a message saying so. Every failure is an arclight::Error naming the file, the
// tensor (if any), what was found and what was expected; no input makes the reader read out of bounds.
//
// The writer orders tensors as the reference writer does (descending dtype rank in the reference's
// enum order — I64, F64, F32, I32, BF16, F16, U8 — then by name), which puts every tensor at an offset that
// is a multiple of its element size; with the header padded by spaces to a multiple of 8 and the data
// section starting at 8 + N, every tensor is aligned within the file and within a mapping of it.
// Files on disk are written atomically (io/atomic_file.hpp).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "arclight/core/dtype.hpp"
#include "arclight/core/error.hpp"
#include "arclight/io/atomic_file.hpp"
#include "arclight/io/json.hpp"

namespace arclight::io {

// The reference implementation's header size cap (MAX_HEADER_SIZE = 100_000_000 bytes).
inline constexpr std::uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// safetensors dtype string for an arclight DType ("F32", "BF16", ...).
constexpr const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
  }
  return "?";
}

// DType for a safetensors dtype string; nullopt for anything arclight has no DType for.
inline std::optional<DType> parse_safetensors_dtype(std::string_view s) {
  if (s == "F32") return DType::f32;
  if (s == "F64") return DType::f64;
  if (s == "I32") return DType::i32;
  if (s == "I64") return DType::i64;
  if (s == "U8") return DType::u8;
  if (s == "F16") return DType::f16;
  if (s == "BF16") return DType::bf16;
  return std::nullopt;
}

// One tensor of a safetensors file: a view, never an owner. In a reader the span points into the
// reader's storage (valid while the SafetensorsFile lives); in a writer it points at the caller's data.
// Bytes are little-endian, row-major (C order), like every safetensors file.
struct TensorBytes {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;  // empty = 0-d scalar (one element)
  std::span<const std::uint8_t> data;

  // Number of elements (1 for a scalar). requires: a validated shape (non-negative, no overflow).
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

using SafetensorsMetadata = std::map<std::string, std::string>;

// A validated header: tensors in file (offset) order, with spans into the parsed buffer.
struct SafetensorsContents {
  std::vector<TensorBytes> tensors;
  SafetensorsMetadata metadata;
  std::uint64_t header_bytes = 0;  // N
  std::uint64_t data_offset = 0;   // 8 + N: where the data section starts in the file
};

namespace detail {

// Known safetensors dtypes arclight has no DType for (named in the error so the user knows why).
inline bool is_foreign_safetensors_dtype(std::string_view s) {
  static constexpr std::string_view known[] = {"BOOL", "I8",  "I16", "U16",     "U32",     "U64",     "F8_E5M2",
                                               "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};
  return std::find(std::begin(known), std::end(known), s) != std::end(known);
}

inline constexpr const char* kSupportedDtypes = "F32, F64, I32, I64, U8, F16, BF16";

// Rank in the reference crate's Dtype enum (declaration order); its writer sorts by descending rank.
constexpr int reference_dtype_rank(DType t) {
  switch (t) {
    case DType::u8: return 1;
    case DType::f16: return 7;
    case DType::bf16: return 8;
    case DType::i32: return 9;
    case DType::f32: return 11;
    case DType::f64: return 12;
    case DType::i64: return 13;
  }
  return 0;
}

inline bool checked_mul_u64(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  return !__builtin_mul_overflow(a, b, &out);
}

template <typename T>
std::string join_dims(const std::vector<T>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

inline std::string shape_literal(const json::Value& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.items.size(); ++i) {
    if (i) s += ", ";
    s += shape.items[i].is_number() ? shape.items[i].text : std::string(json::kind_name(shape.items[i].kind));
  }
  return s + "]";
}

// Shortens untrusted strings quoted in messages.
inline std::string clip(std::string_view s) {
  return s.size() <= 80 ? std::string(s) : std::string(s.substr(0, 77)) + "...";
}

struct RawEntry {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin, end;
};

inline RawEntry parse_tensor_entry(const std::string& src, const std::string& name, const json::Value& v) {
  const std::string who = str_cat("'", src, "': tensor '", clip(name), "'");
  if (!v.is_object())
    fail("io::safetensors", who, ": entry is a JSON ", json::kind_name(v.kind),
         ", expected an object with \"dtype\", \"shape\" and \"data_offsets\"");
  const json::Value* dt = v.find("dtype");
  const json::Value* sh = v.find("shape");
  const json::Value* off = v.find("data_offsets");
  if (!dt) fail("io::safetensors", who, ": missing field \"dtype\"");
  if (!sh) fail("io::safetensors", who, ": missing field \"shape\"");
  if (!off) fail("io::safetensors", who, ": missing field \"data_offsets\"");
  if (!dt->is_string())
    fail("io::safetensors", who, ": \"dtype\" is a JSON ", json::kind_name(dt->kind), ", expected a string");
  RawEntry e;
  e.name = name;
  if (auto d = parse_safetensors_dtype(dt->text)) {
    e.dtype = *d;
  } else if (is_foreign_safetensors_dtype(dt->text)) {
    fail("io::safetensors", who, ": dtype \"", dt->text, "\" is not supported by arclight (expected one of ",
         kSupportedDtypes, ")");
  } else {
    fail("io::safetensors", who, ": unknown dtype \"", clip(dt->text), "\" (expected one of ", kSupportedDtypes,
         ")");
  }
  if (!sh->is_array())
    fail("io::safetensors", who, ": \"shape\" is a JSON ", json::kind_name(sh->kind),
         ", expected an array of non-negative integers");
  for (const auto& d : sh->items) {
    std::uint64_t x = 0;
    switch (json::to_u64(d, x)) {
      case json::IntStatus::ok: break;
      case json::IntStatus::negative:
        fail("io::safetensors", who, ": shape ", clip(shape_literal(*sh)), " has a negative dimension ", d.text,
             ", expected non-negative integers");
      case json::IntStatus::overflow:
        fail("io::safetensors", who, ": shape dimension ", clip(d.text), " does not fit 64 bits");
      default:
        fail("io::safetensors", who, ": shape ", clip(shape_literal(*sh)), " has a non-integer dimension ",
             d.is_number() ? clip(d.text) : std::string(json::kind_name(d.kind)), ", expected non-negative integers");
    }
    if (x > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail("io::safetensors", who, ": shape dimension ", x, " exceeds the int64 range of arclight shapes");
    e.shape.push_back(static_cast<std::int64_t>(x));
  }
  if (!off->is_array() || off->items.size() != 2)
    fail("io::safetensors", who, ": \"data_offsets\" must be an array of exactly two integers [begin, end], got ",
         off->is_array() ? str_cat("an array of ", off->items.size()) : std::string("a JSON ") + json::kind_name(off->kind));
  std::uint64_t be[2];
  for (int k = 0; k < 2; ++k) {
    const auto st = json::to_u64(off->items[k], be[k]);
    if (st == json::IntStatus::negative)
      fail("io::safetensors", who, ": data_offsets entry ", off->items[k].text, " is negative");
    if (st == json::IntStatus::overflow)
      fail("io::safetensors", who, ": data_offsets entry ", clip(off->items[k].text), " does not fit 64 bits");
    if (st != json::IntStatus::ok)
      fail("io::safetensors", who, ": data_offsets entry is not a non-negative integer");
  }
  e.begin = be[0];
  e.end = be[1];
  return e;
}

}  // namespace detail

// Validates a complete safetensors image (the whole file's bytes) and returns views into it.
// requires: nothing of `file` (any bytes). `source` names the file in error messages.
// ensures: every returned span lies inside `file` and has size numel × dtype_size; tensors are in offset
// order. Throws arclight::Error "io::safetensors: '<source>': ..." on any violation (see file comment).
inline SafetensorsContents parse_safetensors(std::span<const std::uint8_t> file, const std::string& source) {
  const char* where = "io::safetensors";
  const std::uint64_t size = file.size();
  if (size == 0) fail(where, "'", source, "': file is empty (0 bytes), expected at least the 8-byte header length");
  if (size < 8)
    fail(where, "'", source, "': file is ", size, " bytes, shorter than the 8-byte header length prefix");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[static_cast<std::size_t>(i)];
  if (n > kSafetensorsMaxHeaderBytes)
    fail(where, "'", source, "': header length ", n, " bytes exceeds the limit of ", kSafetensorsMaxHeaderBytes,
         " bytes");
  if (n > size - 8)
    fail(where, "'", source, "': header length ", n, " bytes runs past the end of the file (", size,
         " bytes, so at most ", size - 8, " header bytes)");
  const std::string_view header(reinterpret_cast<const char*>(file.data()) + 8, static_cast<std::size_t>(n));
  std::size_t bad = 0;
  if (!json::is_valid_utf8(header, &bad)) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned>(static_cast<unsigned char>(header[bad])));
    fail(where, "'", source, "': header is not valid UTF-8 (byte ", hex, " at header offset ", bad, ")");
  }
  json::Value root;
  try {
    root = json::parse(header, 8);  // safetensors headers nest 3 deep; 8 leaves room and bounds the work
  } catch (const Error& e) {
    fail(where, "'", source, "': header is not valid JSON: ", e.what());
  }
  if (!root.is_object()) fail(where, "'", source, "': header is a JSON ", json::kind_name(root.kind), ", expected a JSON object");

  SafetensorsContents out;
  out.header_bytes = n;
  out.data_offset = 8 + n;
  std::vector<detail::RawEntry> entries;
  entries.reserve(root.members.size());
  for (const auto& [key, value] : root.members) {
    if (key == "__metadata__") {
      if (!value.is_object())
        fail(where, "'", source, "': \"__metadata__\" is a JSON ", json::kind_name(value.kind),
             ", expected an object of string values");
      for (const auto& [mk, mv] : value.members) {
        if (!mv.is_string())
          fail(where, "'", source, "': \"__metadata__\" value for key \"", detail::clip(mk), "\" is a JSON ",
               json::kind_name(mv.kind), ", expected a string");
        out.metadata.emplace(mk, mv.text);
      }
      continue;
    }
    entries.push_back(detail::parse_tensor_entry(source, key, value));
  }

  // The reference sorts by (begin, end) before validating: files from older writers are in name order.
  std::sort(entries.begin(), entries.end(), [](const detail::RawEntry& a, const detail::RawEntry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  const std::uint64_t data_len = size - 8 - n;
  std::uint64_t expected = 0;
  const std::string* previous = nullptr;
  for (const auto& e : entries) {
    const std::string who = str_cat("'", source, "': tensor '", detail::clip(e.name), "'");
    const std::string offs = str_cat("data_offsets [", e.begin, ", ", e.end, "]");
    if (e.end < e.begin) fail(where, who, ": ", offs, " end before they begin");
    if (e.begin < expected)
      fail(where, who, ": ", offs, " overlap the previous tensor '", detail::clip(*previous), "', which ends at ",
           expected, " (expected begin = ", expected, ")");
    if (e.begin > expected)
      fail(where, who, ": ", offs, " leave a gap of ", e.begin - expected, " bytes after ",
           previous ? str_cat("tensor '", detail::clip(*previous), "'") : std::string("the start of the data section"),
           " (expected begin = ", expected, ")");
    std::uint64_t numel = 1;
    for (auto d : e.shape)
      if (!detail::checked_mul_u64(numel, static_cast<std::uint64_t>(d), numel))
        fail(where, who, ": the element count of shape ", detail::join_dims(e.shape), " overflows 64 bits");
    std::uint64_t nbytes = 0;
    if (!detail::checked_mul_u64(numel, dtype_size(e.dtype), nbytes))
      fail(where, who, ": the byte size of shape ", detail::join_dims(e.shape), " × ", dtype_size(e.dtype),
           " bytes (", safetensors_dtype_name(e.dtype), ") overflows 64 bits");
    if (e.end - e.begin != nbytes)
      fail(where, who, ": ", offs, " hold ", e.end - e.begin, " bytes, but shape ", detail::join_dims(e.shape),
           " of ", safetensors_dtype_name(e.dtype), " needs ", nbytes, " bytes");
    if (e.end > data_len)
      fail(where, who, ": ", offs, " run past the end of the data section (", data_len,
           " bytes): the file is truncated or the offsets are out of bounds");
    expected = e.end;
    previous = &e.name;
  }
  if (expected != data_len)
    fail(where, "'", source, "': ", data_len - expected, " trailing bytes after the tensor data (the data section is ",
         data_len, " bytes, the tensors end at ", expected, ")");

  out.tensors.reserve(entries.size());
  const std::uint8_t* data = file.data() + out.data_offset;
  for (auto& e : entries) {
    TensorBytes t;
    t.name = std::move(e.name);
    t.dtype = e.dtype;
    t.shape = std::move(e.shape);
    t.data = std::span<const std::uint8_t>(data + e.begin, static_cast<std::size_t>(e.end - e.begin));
    out.tensors.push_back(std::move(t));
  }
  return out;
}

// How SafetensorsFile::open gets the bytes.
enum class ReadMode : std::uint8_t {
  mmap,  // read-only private mapping; falls back to `read` if the file cannot be mapped
  read,  // read the whole file into memory
};

// An opened, validated safetensors file. Movable, not copyable; the spans of tensors() stay valid for
// the lifetime of this object (moves included). A mapped file must not be truncated by another process
// while it is open (the reads would fault), as with any mmap-based reader.
class SafetensorsFile {
 public:
  // Opens and validates `path`. ensures: throws arclight::Error naming the file on any failure.
  static SafetensorsFile open(const std::filesystem::path& path, ReadMode mode = ReadMode::mmap) {
    SafetensorsFile f;
    f.source_ = path.string();
    f.storage_ = std::make_unique<Storage>();
    if (mode == ReadMode::mmap) {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) fail("io::safetensors", "cannot open '", f.source_, "': ", detail::errno_text(errno));
      struct stat st {};
      if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
          f.storage_->map = p;
          f.storage_->map_size = static_cast<std::size_t>(st.st_size);
        }
      }
      ::close(fd);
    }
    if (!f.storage_->map) f.storage_->bytes = read_file(path);
    f.contents_ = parse_safetensors(f.storage_->view(), f.source_);
    f.build_index();
    return f;
  }

  // Validates an in-memory image and takes ownership of it. `source` names it in error messages.
  static SafetensorsFile from_bytes(std::vector<std::uint8_t> bytes, std::string source = "<memory>") {
    SafetensorsFile f;
    f.source_ = std::move(source);
    f.storage_ = std::make_unique<Storage>();
    f.storage_->bytes = std::move(bytes);
    f.contents_ = parse_safetensors(f.storage_->view(), f.source_);
    f.build_index();
    return f;
  }

  // Tensors in file (offset) order.
  const std::vector<TensorBytes>& tensors() const { return contents_.tensors; }
  std::size_t size() const { return contents_.tensors.size(); }
  const SafetensorsMetadata& metadata() const { return contents_.metadata; }
  const std::string& source() const { return source_; }
  bool is_memory_mapped() const { return storage_ && storage_->map != nullptr; }
  std::uint64_t data_offset() const { return contents_.data_offset; }

  bool contains(std::string_view name) const { return find(name) != nullptr; }

  // The tensor called `name`, or nullptr.
  const TensorBytes* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &contents_.tensors[it->second];
  }

  // The tensor called `name`; throws arclight::Error naming the file when absent.
  const TensorBytes& at(std::string_view name) const {
    if (const auto* t = find(name)) return *t;
    fail("io::safetensors", "'", source_, "': no tensor named '", name, "' (the file holds ", size(), " tensors)");
  }

 private:
  struct Storage {
    void* map = nullptr;
    std::size_t map_size = 0;
    std::vector<std::uint8_t> bytes;
    std::span<const std::uint8_t> view() const {
      return map ? std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(map), map_size)
                 : std::span<const std::uint8_t>(bytes);
    }
    Storage() = default;
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    ~Storage() {
      if (map) ::munmap(map, map_size);
    }
  };

  void build_index() {
    index_.reserve(contents_.tensors.size());
    for (std::size_t i = 0; i < contents_.tensors.size(); ++i) index_.emplace(contents_.tensors[i].name, i);
  }

  std::unique_ptr<Storage> storage_;
  SafetensorsContents contents_;
  std::unordered_map<std::string, std::size_t> index_;
  std::string source_;
};

// The planned file: header (padded) and the order tensors are written in.
struct SafetensorsLayout {
  std::string header;               // JSON padded with spaces to a multiple of 8 bytes
  std::vector<std::size_t> order;   // indices into the input, in data order
  std::uint64_t data_bytes = 0;
};

// Validates the tensors to write and plans the file (see the file comment for the order).
// requires: unique UTF-8 names (the empty name is legal, as in the reference) other than "__metadata__"; non-negative dims; data.size() ==
// numel × dtype_size; metadata keys and values UTF-8. Throws arclight::Error otherwise.
inline SafetensorsLayout plan_safetensors(std::span<const TensorBytes> tensors, const SafetensorsMetadata& metadata) {
  const char* where = "io::save_safetensors";
  SafetensorsLayout layout;
  layout.order.resize(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) layout.order[i] = i;
  std::sort(layout.order.begin(), layout.order.end(), [&](std::size_t a, std::size_t b) {
    const int ra = detail::reference_dtype_rank(tensors[a].dtype), rb = detail::reference_dtype_rank(tensors[b].dtype);
    if (ra != rb) return ra > rb;
    return tensors[a].name < tensors[b].name;
  });
  for (std::size_t k = 1; k < layout.order.size(); ++k)
    if (tensors[layout.order[k]].name == tensors[layout.order[k - 1]].name)
      fail(where, "duplicate tensor name '", tensors[layout.order[k]].name, "'");

  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata) {
      if (!json::is_valid_utf8(k) || !json::is_valid_utf8(v))
        fail(where, "metadata key or value for '", detail::clip(k), "' is not valid UTF-8");
      if (h.back() != '{') h += ',';
      h += json::quote(k) + ":" + json::quote(v);
    }
    h += "}";
    first = false;
  }
  std::uint64_t offset = 0;
  for (std::size_t idx : layout.order) {
    const TensorBytes& t = tensors[idx];
    if (t.name == "__metadata__") fail(where, "'__metadata__' is reserved and cannot name a tensor");
    if (!json::is_valid_utf8(t.name)) fail(where, "tensor name '", detail::clip(t.name), "' is not valid UTF-8");
    std::uint64_t numel = 1;
    for (auto d : t.shape) {
      if (d < 0) fail(where, "tensor '", t.name, "': shape ", detail::join_dims(t.shape), " has a negative dimension");
      if (!detail::checked_mul_u64(numel, static_cast<std::uint64_t>(d), numel))
        fail(where, "tensor '", t.name, "': the element count of shape ", detail::join_dims(t.shape), " overflows 64 bits");
    }
    std::uint64_t nbytes = 0;
    if (!detail::checked_mul_u64(numel, dtype_size(t.dtype), nbytes) || nbytes != t.data.size())
      fail(where, "tensor '", t.name, "': has ", t.data.size(), " bytes of data, but shape ", detail::join_dims(t.shape),
           " of ", safetensors_dtype_name(t.dtype), " needs ", numel, " × ", dtype_size(t.dtype), " bytes");
    if (!first) h += ',';
    first = false;
    h += json::quote(t.name) + ":{\"dtype\":\"" + safetensors_dtype_name(t.dtype) + "\",\"shape\":[";
    for (std::size_t k = 0; k < t.shape.size(); ++k) h += (k ? "," : "") + std::to_string(t.shape[k]);
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  if (h.size() > kSafetensorsMaxHeaderBytes)
    fail(where, "the header would be ", h.size(), " bytes, above the format's limit of ", kSafetensorsMaxHeaderBytes);
  layout.header = std::move(h);
  layout.data_bytes = offset;
  return layout;
}

namespace detail {
inline void le64(std::uint64_t x, std::uint8_t out[8]) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(x >> (8 * i));
}
}  // namespace detail

// The complete file image in memory. Same contract as plan_safetensors.
inline std::vector<std::uint8_t> serialize_safetensors(std::span<const TensorBytes> tensors,
                                                       const SafetensorsMetadata& metadata = {}) {
  const SafetensorsLayout layout = plan_safetensors(tensors, metadata);
  // Sized once and filled by position (the plan has checked every tensor's byte count against its shape).
  std::vector<std::uint8_t> out(8 + layout.header.size() + static_cast<std::size_t>(layout.data_bytes));
  detail::le64(layout.header.size(), out.data());
  std::size_t at = 8;
  auto put = [&](const void* src, std::size_t bytes) {
    ARCLIGHT_CHECK(bytes <= out.size() - at, "serialize_safetensors", "tensor bytes exceed the planned ",
                   layout.data_bytes, "-byte data section");
    if (bytes) std::memcpy(out.data() + at, src, bytes);
    at += bytes;
  };
  put(layout.header.data(), layout.header.size());
  for (std::size_t idx : layout.order) put(tensors[idx].data.data(), tensors[idx].data.size());
  ARCLIGHT_CHECK(at == out.size(), "serialize_safetensors", "tensor bytes (", at - 8 - layout.header.size(),
                 ") fall short of the planned ", layout.data_bytes, "-byte data section");
  return out;
}

// Writes a safetensors file atomically (temp file in the same directory, fsync, rename, fsync dir),
// streaming the tensor data (no second copy of the weights in memory). Same contract as plan_safetensors;
// ensures: `path` holds the complete new file, or throws and `path` is unchanged.
inline void save_safetensors(const std::filesystem::path& path, std::span<const TensorBytes> tensors,
                             const SafetensorsMetadata& metadata = {}) {
  const SafetensorsLayout layout = plan_safetensors(tensors, metadata);
  AtomicFileWriter w(path);
  std::uint8_t n[8];
  detail::le64(layout.header.size(), n);
  w.write(n, 8);
  w.write(layout.header);
  for (std::size_t idx : layout.order) w.write(tensors[idx].data);
  w.commit();
}

}  // namespace arclight::io
