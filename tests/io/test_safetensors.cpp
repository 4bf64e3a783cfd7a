// safetensors reader/writer: round trips of every dtype (incl. empty tensors, 0-d scalars, metadata),
// byte-exact agreement with the reference crate's serialisation tests, alignment of written tensors,
// and one bad-input case per rule the reference implementation enforces, each checking the message.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "arclight/io/safetensors.hpp"
#include "io_test_util.hpp"

namespace {

using arclight::DType;
using arclight::Error;
using namespace arclight::io;
using arclight::io::testing::bytes_of;
using arclight::io::testing::ScratchDir;

// A file image: 8-byte LE length of `header`, the header, then `data_bytes` bytes of a ramp.
std::vector<std::uint8_t> make_file(std::string_view header, std::size_t data_bytes = 0, std::uint64_t n_override = 0,
                                    bool use_override = false) {
  const std::uint64_t n = use_override ? n_override : header.size();
  std::vector<std::uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::uint8_t>(i * 7 + 1));
  return out;
}

// The error message of parsing `bytes` named "bad.safetensors" (or "<no error>").
std::string error_of(std::vector<std::uint8_t> bytes) {
  try {
    SafetensorsFile::from_bytes(std::move(bytes), "bad.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_ERROR_HAS(bytes, ...)                                                   \
  do {                                                                                 \
    const std::string msg_ = error_of(bytes);                                          \
    EXPECT_NE(msg_.find("io::safetensors: 'bad.safetensors'"), std::string::npos) << msg_; \
    for (const char* part_ : {__VA_ARGS__}) EXPECT_NE(msg_.find(part_), std::string::npos) << "missing '" << part_ << "' in: " << msg_; \
  } while (0)

// Deterministic non-trivial bytes (never all zero) for tensor payloads.
std::vector<std::uint8_t> payload(std::size_t n, std::uint32_t seed) {
  std::vector<std::uint8_t> v(n);
  std::uint32_t x = seed * 2654435761u + 12345u;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::uint8_t>(x >> 24);
  }
  return v;
}

struct Owned {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;
};

std::vector<Owned> every_dtype_tensors() {
  std::vector<Owned> out;
  const DType all[] = {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8, DType::f16, DType::bf16};
  std::uint32_t seed = 1;
  for (DType t : all) {
    const std::string base = std::string("layer.") + dtype_name(t);
    auto add = [&](const std::string& suffix, std::vector<std::int64_t> shape) {
      std::int64_t n = 1;
      for (auto d : shape) n *= d;
      out.push_back({base + suffix, t, shape, payload(static_cast<std::size_t>(n) * dtype_size(t), seed++)});
    };
    add(".weight", {3, 5, 2});
    add(".bias", {7});
    add(".scalar", {});      // 0-d
    add(".empty", {4, 0});   // zero elements
  }
  return out;
}

std::vector<TensorBytes> views_of(const std::vector<Owned>& owned) {
  std::vector<TensorBytes> v;
  for (const auto& o : owned) v.push_back({o.name, o.dtype, o.shape, o.data});
  return v;
}

void expect_same_tensors(const SafetensorsFile& f, const std::vector<Owned>& expected) {
  ASSERT_EQ(f.size(), expected.size());
  for (const auto& o : expected) {
    const TensorBytes* t = f.find(o.name);
    ASSERT_NE(t, nullptr) << o.name;
    EXPECT_EQ(t->dtype, o.dtype) << o.name;
    EXPECT_EQ(t->shape, o.shape) << o.name;
    ASSERT_EQ(t->data.size(), o.data.size()) << o.name;
    EXPECT_TRUE(std::equal(t->data.begin(), t->data.end(), o.data.begin())) << o.name;
    // The writer's order makes every tensor aligned to its element size in memory.
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t->data.data()) % dtype_size(o.dtype), 0u) << o.name;
  }
}

TEST(Safetensors, RoundTripEveryDtypeInMemory) {
  const auto owned = every_dtype_tensors();
  const auto views = views_of(owned);
  const SafetensorsMetadata meta = {{"format", "pt"}, {"arclight", "weights \"v1\"\n"}, {"ünïcode", "✓"}};
  auto bytes = serialize_safetensors(views, meta);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  const auto f = SafetensorsFile::from_bytes(std::move(bytes), "mem");
  expect_same_tensors(f, owned);
  EXPECT_EQ(f.metadata(), meta);
  EXPECT_FALSE(f.is_memory_mapped());
  EXPECT_EQ(f.data_offset(), 8 + n);
  // Offset order: descending dtype rank in the reference's order (I64, F64, F32, I32, BF16, F16, U8), then name.
  const auto& ts = f.tensors();
  EXPECT_EQ(ts.front().dtype, DType::i64);
  EXPECT_EQ(ts.back().dtype, DType::u8);
  for (std::size_t i = 1; i < ts.size(); ++i) {
    EXPECT_GE(ts[i].data.data(), ts[i - 1].data.data() + ts[i - 1].data.size());
    if (ts[i].dtype == ts[i - 1].dtype) {
      EXPECT_LT(ts[i - 1].name, ts[i].name);
    }
  }
  EXPECT_EQ(f.at("layer.f32.scalar").numel(), 1);
  EXPECT_EQ(f.at("layer.f32.scalar").data.size(), 4u);
  EXPECT_EQ(f.at("layer.u8.empty").data.size(), 0u);
}

TEST(Safetensors, RoundTripThroughFileMappedAndRead) {
  ScratchDir dir;
  const auto owned = every_dtype_tensors();
  const auto path = dir / "model.safetensors";
  save_safetensors(path, views_of(owned), {{"step", "12"}});
  const auto mapped = SafetensorsFile::open(path);
  EXPECT_TRUE(mapped.is_memory_mapped());
  expect_same_tensors(mapped, owned);
  EXPECT_EQ(mapped.metadata().at("step"), "12");
  auto read = SafetensorsFile::open(path, ReadMode::read);
  EXPECT_FALSE(read.is_memory_mapped());
  expect_same_tensors(read, owned);
  // Moving keeps the views valid (storage is owned through a stable pointer).
  SafetensorsFile moved = std::move(read);
  expect_same_tensors(moved, owned);
  // The file is exactly what serialize_safetensors produces.
  EXPECT_EQ(read_file(path), serialize_safetensors(views_of(owned), {{"step", "12"}}));
  EXPECT_EQ(mapped.source(), path.string());
}

TEST(Safetensors, NoTensorsAndNoMetadata) {
  const auto bytes = serialize_safetensors({}, {});
  // Byte-identical to the reference crate's test_empty: N = 8, "{}" + 6 spaces.
  EXPECT_EQ(bytes, make_file("{}      "));
  const auto f = SafetensorsFile::from_bytes(bytes);
  EXPECT_EQ(f.size(), 0u);
  EXPECT_TRUE(f.metadata().empty());
}

TEST(Safetensors, WriterMatchesReferenceCrateBytes) {
  // The reference crate's test_empty with metadata {"framework": "pt"}: N = 40.
  EXPECT_EQ(serialize_safetensors({}, {{"framework", "pt"}}), make_file("{\"__metadata__\":{\"framework\":\"pt\"}}     "));
  // test_serialization_forced_alignement: F32 [1,1,2,3] named attn0, header padded to 72 bytes.
  const float values[6] = {0.f, 1.f, 2.f, 3.f, 4.f, 5.f};
  std::vector<std::uint8_t> data(sizeof values);
  std::memcpy(data.data(), values, sizeof values);
  const std::vector<TensorBytes> one = {{"attn0", DType::f32, {1, 1, 2, 3}, data}};
  auto expected = make_file("{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ");
  expected.insert(expected.end(), data.begin(), data.end());
  EXPECT_EQ(expected[0], 72);
  EXPECT_EQ(serialize_safetensors(one), expected);
}

TEST(Safetensors, ReadsReferenceCrateVectors) {
  // test_deserialization: I32 [2,2] with 16 zero bytes.
  auto bytes = make_file("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}");
  bytes.resize(bytes.size() + 16, 0);
  const auto f = SafetensorsFile::from_bytes(bytes);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f.at("test").shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(f.at("test").dtype, DType::i32);
  // test_whitespace_padded_header: "{}" followed by CR, space, tab, LF.
  EXPECT_EQ(SafetensorsFile::from_bytes(make_file("{}\r \t\n")).size(), 0u);
  // test_zero_sized_tensor / test_empty_shapes_allowed.
  EXPECT_EQ(SafetensorsFile::from_bytes(make_file("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,0],\"data_offsets\":[0, 0]}}"))
                .at("test").data.size(), 0u);
  const auto scalar = SafetensorsFile::from_bytes(make_file("{\"test\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4));
  EXPECT_TRUE(scalar.at("test").shape.empty());
  EXPECT_EQ(scalar.at("test").data[0], 1);  // first ramp byte
}

TEST(Safetensors, ReadsTensorsListedOutOfOffsetOrder) {
  // Older writers list tensors by name; the reader sorts by offsets like the reference.
  const auto f = SafetensorsFile::from_bytes(make_file(
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[4,7]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"extra\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[7,7],\"ignored_field\":[1,{\"x\":2}]}}",
      7));
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "b");
  EXPECT_EQ(f.at("a").data[0], static_cast<std::uint8_t>(4 * 7 + 1));
  EXPECT_EQ(f.at("b").data[0], 1);
  EXPECT_EQ(f.find("nope"), nullptr);
  try {
    (void)f.at("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor named 'nope'"), std::string::npos) << e.what();
  }
}

// ---- bad input: one case per rule, mirroring the reference crate's tests --------------------------

TEST(SafetensorsBadInput, EmptyAndTooShortFiles) {
  EXPECT_ERROR_HAS({}, "file is empty (0 bytes)");
  EXPECT_ERROR_HAS((std::vector<std::uint8_t>{0x3c, 0, 0}), "file is 3 bytes, shorter than the 8-byte header length");
}

TEST(SafetensorsBadInput, HeaderLengthPastTheFile) {
  // The reference's test_invalid_header_length: N = 60 with nothing after the prefix.
  EXPECT_ERROR_HAS(make_file("", 0, 60, true), "header length 60 bytes runs past the end of the file (8 bytes");
  EXPECT_ERROR_HAS(make_file("{}", 0, 3, true), "header length 3 bytes runs past the end of the file");
  // Exactly at the limit but past the end is a length error, not a size error.
  EXPECT_ERROR_HAS(make_file("{}", 0, 100'000'000, true), "runs past the end of the file");
}

TEST(SafetensorsBadInput, HeaderLargerThan100MB) {
  EXPECT_ERROR_HAS(make_file("{}", 0, 100'000'001, true), "header length 100000001 bytes exceeds the limit of 100000000");
  // The reference's test_header_too_large prefix "<\0\0\0\0\xff\xff\xff".
  EXPECT_ERROR_HAS(make_file("{}", 0, 0xFFFFFF000000003Cull, true), "exceeds the limit");
  EXPECT_ERROR_HAS(make_file("{}", 0, ~0ull, true), "header length 18446744073709551615 bytes exceeds");
}

TEST(SafetensorsBadInput, NonUtf8Header) {
  EXPECT_ERROR_HAS(make_file("\xff"), "header is not valid UTF-8 (byte 0xFF at header offset 0)");
  EXPECT_ERROR_HAS(make_file("{\"a\xC0\xAF\":1}"), "not valid UTF-8 (byte 0xC0 at header offset 3)");
}

TEST(SafetensorsBadInput, InvalidJson) {
  EXPECT_ERROR_HAS(make_file("{"), "header is not valid JSON", "expected a string key");
  EXPECT_ERROR_HAS(make_file("{\"a\":{\"dtype\":\"F32\",}}"), "header is not valid JSON");
  EXPECT_ERROR_HAS(make_file("{} trailing"), "header is not valid JSON", "trailing characters");
}

TEST(SafetensorsBadInput, HeaderNotAnObject) {
  EXPECT_ERROR_HAS(make_file("[]      "), "header is a JSON array, expected a JSON object");
  EXPECT_ERROR_HAS(make_file("\"weights\""), "header is a JSON string");
  EXPECT_ERROR_HAS(make_file("{\"t\":[1,2]}"), "tensor 't': entry is a JSON array, expected an object");
}

TEST(SafetensorsBadInput, OverlappingOffsets) {
  EXPECT_ERROR_HAS(make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                             "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24),
                   "tensor 'b': data_offsets [8, 24] overlap the previous tensor 'a', which ends at 16");
  // The reference's test_json_attack: ten tensors all claiming [0, 16].
  std::string h = "{";
  for (int i = 0; i < 10; ++i)
    h += (i ? "," : "") + std::string("\"weight_") + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}";
  h += "}";
  EXPECT_ERROR_HAS(make_file(h, 16), "data_offsets [0, 16] overlap the previous tensor");
}

TEST(SafetensorsBadInput, GapBetweenTensors) {
  EXPECT_ERROR_HAS(make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                             "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[20,36]}}", 36),
                   "tensor 'b': data_offsets [20, 36] leave a gap of 4 bytes after tensor 'a' (expected begin = 16)");
  EXPECT_ERROR_HAS(make_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6),
                   "leave a gap of 2 bytes after the start of the data section (expected begin = 0)");
}

TEST(SafetensorsBadInput, OffsetsOutOfBounds) {
  // The reference's second test_metadata_incomplete_buffer case: 2 data bytes missing.
  EXPECT_ERROR_HAS(make_file("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 14),
                   "tensor 'test': data_offsets [0, 16] run past the end of the data section (14 bytes)");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[16,0]}}", 16),
                   "data_offsets [16, 0] end before they begin");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}"),
                   "data_offsets entry 18446744073709551616 does not fit 64 bits");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}"), "data_offsets entry -1 is negative");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1),
                   "\"data_offsets\" must be an array of exactly two integers [begin, end], got an array of 3");
}

TEST(SafetensorsBadInput, OffsetsNotMatchingShape) {
  // The reference's test_invalid_info.
  EXPECT_ERROR_HAS(make_file("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0, 4]}}", 4),
                   "tensor 'test': data_offsets [0, 4] hold 4 bytes, but shape [2, 2] of I32 needs 16 bytes");
  EXPECT_ERROR_HAS(make_file("{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,4]}}", 4),
                   "hold 4 bytes, but shape [] of F64 needs 8 bytes");
}

TEST(SafetensorsBadInput, ShapeProductsOverflowing64Bits) {
  // Element count 2^32 · 2^32 = 2^64.
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", 16),
                   "tensor 't': the element count of shape [4294967296, 4294967296] overflows 64 bits");
  // The reference's second test_validation_overflow case: count fits, count × 4 bytes does not.
  EXPECT_ERROR_HAS(make_file("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,9223372036854775807],\"data_offsets\":[0,16]}}", 16),
                   "the byte size of shape [2, 9223372036854775807] × 4 bytes (I32) overflows 64 bits");
  // The first case (a dimension of 2^64 - 2) does not even fit arclight's int64 shapes.
  EXPECT_ERROR_HAS(make_file("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,18446744073709551614],\"data_offsets\":[0,16]}}", 16),
                   "shape dimension 18446744073709551614 exceeds the int64 range");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],\"data_offsets\":[0,0]}}"),
                   "shape dimension 99999999999999999999 does not fit 64 bits");
}

TEST(SafetensorsBadInput, TrailingBytesAfterData) {
  // The reference's test_metadata_incomplete_buffer: polyglot bytes after the data.
  auto bytes = make_file("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16);
  const std::string junk = "extra_bogus_data_for_polyglot_file";
  bytes.insert(bytes.end(), junk.begin(), junk.end());
  EXPECT_ERROR_HAS(bytes, "34 trailing bytes after the tensor data (the data section is 50 bytes, the tensors end at 16)");
  EXPECT_ERROR_HAS(make_file("{}", 1), "1 trailing bytes after the tensor data");
}

TEST(SafetensorsBadInput, DuplicateKeys) {
  EXPECT_ERROR_HAS(make_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                             "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2),
                   "header is not valid JSON", "duplicate key \"a\"");
  EXPECT_ERROR_HAS(make_file("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
                   "duplicate key \"dtype\"");
}

TEST(SafetensorsBadInput, UnknownOrUnsupportedDtype) {
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
                   "tensor 't': dtype \"F8_E4M3\" is not supported by arclight (expected one of F32, F64, I32, I64, U8, F16, BF16)");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"float32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                   "tensor 't': unknown dtype \"float32\" (expected one of");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "\"dtype\" is a JSON number, expected a string");
}

TEST(SafetensorsBadInput, NegativeOrNonIntegerDims) {
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[2,-2],\"data_offsets\":[0,0]}}"),
                   "tensor 't': shape [2, -2] has a negative dimension -2");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[2.5],\"data_offsets\":[0,0]}}"), "non-integer dimension 2.5");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,0]}}"), "non-integer dimension string");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":3,\"data_offsets\":[0,0]}}"), "\"shape\" is a JSON number");
}

TEST(SafetensorsBadInput, MissingFieldsAndBadMetadata) {
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1), "tensor 't': missing field \"dtype\"");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1), "missing field \"shape\"");
  EXPECT_ERROR_HAS(make_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1), "missing field \"data_offsets\"");
  EXPECT_ERROR_HAS(make_file("{\"__metadata__\":{\"epoch\":3}}"),
                   "\"__metadata__\" value for key \"epoch\" is a JSON number, expected a string");
  EXPECT_ERROR_HAS(make_file("{\"__metadata__\":[\"x\"]}"), "\"__metadata__\" is a JSON array");
}

TEST(SafetensorsBadInput, MissingFileNamesThePath) {
  ScratchDir dir;
  for (ReadMode mode : {ReadMode::mmap, ReadMode::read}) {
    try {
      SafetensorsFile::open(dir / "absent.safetensors", mode);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("absent.safetensors"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
    }
  }
  // An empty file on disk cannot be mapped: the reader falls back to reading and reports the format error.
  write_file_atomic(dir / "empty.safetensors", std::string_view(""));
  try {
    SafetensorsFile::open(dir / "empty.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("file is empty"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsWriter, RejectsInvalidTensors) {
  const std::vector<std::uint8_t> four(4, 9);
  auto msg = [](std::vector<TensorBytes> ts) {
    try {
      serialize_safetensors(ts);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  EXPECT_NE(msg({{"w", DType::f32, {2}, four}}).find("tensor 'w': has 4 bytes of data, but shape [2] of F32 needs 2 × 4 bytes"),
            std::string::npos);
  EXPECT_NE(msg({{"w", DType::u8, {4}, four}, {"w", DType::u8, {4}, four}}).find("duplicate tensor name 'w'"), std::string::npos);
  EXPECT_NE(msg({{"w", DType::u8, {-4}, four}}).find("negative dimension"), std::string::npos);
  EXPECT_NE(msg({{"__metadata__", DType::u8, {4}, four}}).find("reserved"), std::string::npos);
  EXPECT_EQ(msg({{"", DType::u8, {4}, four}}), "<no error>");  // legal, as in the reference
  EXPECT_EQ(msg({{"w", DType::u8, {4}, four}}), "<no error>");
}

}  // namespace
