// A small, strict JSON reader and writer for arclight's own file formats (the safetensors header, the
// checkpoint MANIFEST, state.json). It exists because the core headers may not depend on nlohmann-json
// (DESIGN §6), and because a header parser that sees untrusted bytes must be strict and bounded:
// RFC 8259 grammar only (no comments, no trailing commas, no NaN), UTF-8 validated, lone surrogates
// rejected, duplicate object keys rejected, nesting depth capped, no recursion deeper than the cap.
// Numbers keep their literal text so 64-bit integers (tensor offsets) are never rounded through a double.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "arclight/core/error.hpp"

namespace arclight::io::json {

enum class Kind : std::uint8_t { null, boolean, number, string, array, object };

constexpr const char* kind_name(Kind k) {
  switch (k) {
    case Kind::null: return "null";
    case Kind::boolean: return "boolean";
    case Kind::number: return "number";
    case Kind::string: return "string";
    case Kind::array: return "array";
    case Kind::object: return "object";
  }
  return "?";
}

// A parsed JSON value. `text` holds the decoded contents of a string or the literal of a number;
// objects keep their members in document order (keys are unique: the parser rejects duplicates).
// Member functions are defined after the class: Value is recursive, and its containers of Value may
// only be instantiated once Value is complete (clang enforces this).
struct Value {
  Kind kind = Kind::null;
  bool boolean = false;
  std::string text;
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value>> members;

  Value();
  Value(const Value&);
  Value(Value&&) noexcept;
  Value& operator=(const Value&);
  Value& operator=(Value&&) noexcept;
  ~Value();

  bool is_null() const { return kind == Kind::null; }
  bool is_number() const { return kind == Kind::number; }
  bool is_string() const { return kind == Kind::string; }
  bool is_array() const { return kind == Kind::array; }
  bool is_object() const { return kind == Kind::object; }

  // Object member lookup; nullptr when absent or when this is not an object.
  const Value* find(std::string_view key) const;

  // Builders for writers.
  static Value string_value(std::string s);
  static Value integer(std::int64_t x);
  static Value unsigned_integer(std::uint64_t x);
  // requires: x finite (JSON has no NaN/Inf). Printed with 17 significant digits so it round-trips.
  static Value number(double x);
  static Value boolean_value(bool b);
  static Value array();
  static Value object();
  // Appends a member (object) — the caller keeps keys unique; dump() does not check.
  Value& set(std::string key, Value v);
  // Appends an item (array).
  Value& push(Value v);
};

inline Value::Value() = default;
inline Value::Value(const Value&) = default;
inline Value::Value(Value&&) noexcept = default;
inline Value& Value::operator=(const Value&) = default;
inline Value& Value::operator=(Value&&) noexcept = default;
inline Value::~Value() = default;

inline const Value* Value::find(std::string_view key) const {
  if (kind != Kind::object) return nullptr;
  for (const auto& [k, v] : members)
    if (k == key) return &v;
  return nullptr;
}
inline Value Value::string_value(std::string s) {
  Value v;
  v.kind = Kind::string;
  v.text = std::move(s);
  return v;
}
inline Value Value::integer(std::int64_t x) {
  Value v;
  v.kind = Kind::number;
  v.text = std::to_string(x);
  return v;
}
inline Value Value::unsigned_integer(std::uint64_t x) {
  Value v;
  v.kind = Kind::number;
  v.text = std::to_string(x);
  return v;
}
inline Value Value::number(double x) {
  if (!std::isfinite(x)) fail("io::json", "cannot write the non-finite number ", x, " (JSON has no NaN/Inf)");
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  Value v;
  v.kind = Kind::number;
  v.text = buf;
  return v;
}
inline Value Value::boolean_value(bool b) {
  Value v;
  v.kind = Kind::boolean;
  v.boolean = b;
  return v;
}
inline Value Value::array() {
  Value v;
  v.kind = Kind::array;
  return v;
}
inline Value Value::object() {
  Value v;
  v.kind = Kind::object;
  return v;
}
inline Value& Value::set(std::string key, Value v) {
  members.emplace_back(std::move(key), std::move(v));
  return *this;
}
inline Value& Value::push(Value v) {
  items.push_back(std::move(v));
  return *this;
}

// Checks that `s` is well-formed UTF-8 (no overlong forms, no surrogates U+D800..U+DFFF, nothing above
// U+10FFFF, no truncated sequences). ensures: on false, *bad_offset (if given) is the offset of the
// first byte of the offending sequence.
inline bool is_valid_utf8(std::string_view s, std::size_t* bad_offset = nullptr) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Unicode Table 3-7)
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c == 0xE0) {
      len = 3, lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      len = 3;
    } else if (c == 0xED) {
      len = 3, hi = 0x9F;  // excludes the surrogates
    } else if (c == 0xF0) {
      len = 4, lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      len = 4;
    } else if (c == 0xF4) {
      len = 4, hi = 0x8F;  // nothing above U+10FFFF
    } else {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    if (n - i < len || p[i + 1] < lo || p[i + 1] > hi) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    for (std::size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) {
        if (bad_offset) *bad_offset = i;
        return false;
      }
    }
    i += len;
  }
  return true;
}

// Outcome of reading a number literal as an integer.
enum class IntStatus : std::uint8_t { ok, not_a_number, not_an_integer, negative, overflow };

// Reads an integer literal (no fraction, no exponent) as uint64. requires: v is any value.
inline IntStatus to_u64(const Value& v, std::uint64_t& out) {
  if (v.kind != Kind::number) return IntStatus::not_a_number;
  const std::string& t = v.text;
  if (t.find_first_of(".eE") != std::string::npos) return IntStatus::not_an_integer;
  if (!t.empty() && t[0] == '-') {
    // "-0" is zero; anything else below zero is negative.
    return t.find_first_not_of("-0") == std::string::npos ? (out = 0, IntStatus::ok) : IntStatus::negative;
  }
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
  if (ec == std::errc::result_out_of_range) return IntStatus::overflow;
  if (ec != std::errc() || ptr != t.data() + t.size()) return IntStatus::not_an_integer;
  return IntStatus::ok;
}

// Reads an integer literal as int64 (may be negative).
inline IntStatus to_i64(const Value& v, std::int64_t& out) {
  if (v.kind != Kind::number) return IntStatus::not_a_number;
  const std::string& t = v.text;
  if (t.find_first_of(".eE") != std::string::npos) return IntStatus::not_an_integer;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
  if (ec == std::errc::result_out_of_range) return IntStatus::overflow;
  if (ec != std::errc() || ptr != t.data() + t.size()) return IntStatus::not_an_integer;
  return IntStatus::ok;
}

// Reads any number literal as a double (rounded to nearest).
inline bool to_double(const Value& v, double& out) {
  if (v.kind != Kind::number) return false;
  auto [ptr, ec] = std::from_chars(v.text.data(), v.text.data() + v.text.size(), out);
  return ec == std::errc() || ec == std::errc::result_out_of_range;
}

namespace detail {

class Parser {
 public:
  Parser(std::string_view text, std::size_t max_depth) : s_(text), max_depth_(max_depth) {}

  Value parse_document() {
    skip_ws();
    Value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) error("unexpected trailing characters after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail("io::json", what, " at byte ", pos_);
  }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  bool consume_literal(std::string_view lit) {
    if (s_.substr(pos_, lit.size()) != lit) return false;
    pos_ += lit.size();
    return true;
  }

  Value parse_value(std::size_t depth) {
    if (pos_ >= s_.size()) error("unexpected end of input, expected a value");
    const char c = s_[pos_];
    Value v;
    if (c == '{' || c == '[') {
      if (depth >= max_depth_) error(str_cat("nesting deeper than ", max_depth_, " levels"));
      return c == '{' ? parse_object(depth + 1) : parse_array(depth + 1);
    }
    if (c == '"') {
      v.kind = Kind::string;
      v.text = parse_string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Kind::number;
      v.text = parse_number();
      return v;
    }
    if (consume_literal("true")) {
      v.kind = Kind::boolean;
      v.boolean = true;
      return v;
    }
    if (consume_literal("false")) {
      v.kind = Kind::boolean;
      return v;
    }
    if (consume_literal("null")) return v;
    error(str_cat("unexpected character '", printable(c), "', expected a value"));
  }

  static std::string printable(char c) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7F) return std::string(1, c);
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02X", u);
    return buf;
  }

  Value parse_object(std::size_t depth) {
    Value v;
    v.kind = Kind::object;
    ++pos_;  // '{'
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return v;
    }
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') error("expected a string key in object");
      std::string key = parse_string();
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':') error("expected ':' after object key");
      ++pos_;
      skip_ws();
      Value member = parse_value(depth);
      v.members.emplace_back(std::move(key), std::move(member));
      skip_ws();
      if (pos_ >= s_.size()) error("unexpected end of input inside an object");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == '}') {
        ++pos_;
        break;
      }
      error("expected ',' or '}' in object");
    }
    check_unique_keys(v);
    return v;
  }

  // Sorting indices is O(n log n), so a 100 MB header with a million keys stays fast.
  void check_unique_keys(const Value& v) const {
    if (v.members.size() < 2) return;
    std::vector<std::size_t> order(v.members.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return v.members[a].first < v.members[b].first; });
    for (std::size_t i = 1; i < order.size(); ++i) {
      if (v.members[order[i]].first == v.members[order[i - 1]].first)
        fail("io::json", "duplicate key \"", v.members[order[i]].first, "\" in object ending at byte ", pos_);
    }
  }

  Value parse_array(std::size_t depth) {
    Value v;
    v.kind = Kind::array;
    ++pos_;  // '['
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return v;
    }
    for (;;) {
      skip_ws();
      v.items.push_back(parse_value(depth));
      skip_ws();
      if (pos_ >= s_.size()) error("unexpected end of input inside an array");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == ']') {
        ++pos_;
        break;
      }
      error("expected ',' or ']' in array");
    }
    return v;
  }

  std::string parse_number() {
    const std::size_t start = pos_;
    auto digit = [&] { return pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9'; };
    if (s_[pos_] == '-') ++pos_;
    if (!digit()) error("invalid number: expected a digit");
    if (s_[pos_] == '0') {
      ++pos_;
      if (digit()) error("invalid number: leading zero");
    } else {
      while (digit()) ++pos_;
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (!digit()) error("invalid number: expected a digit after '.'");
      while (digit()) ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (!digit()) error("invalid number: expected a digit in the exponent");
      while (digit()) ++pos_;
    }
    return std::string(s_.substr(start, pos_ - start));
  }

  unsigned parse_hex4() {
    if (s_.size() - pos_ < 4) error("truncated \\u escape");
    unsigned x = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_++];
      x <<= 4;
      if (c >= '0' && c <= '9') x |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') x |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') x |= unsigned(c - 'A' + 10);
      else error("invalid hex digit in \\u escape");
    }
    return x;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    const std::size_t start = pos_;
    for (;;) {
      if (pos_ >= s_.size()) error("unterminated string");
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        break;
      }
      if (c < 0x20) error("unescaped control character in string");
      if (c != '\\') {
        out += char(c);
        ++pos_;
        continue;
      }
      ++pos_;
      if (pos_ >= s_.size()) error("unterminated escape in string");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = parse_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) error("lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.size() - pos_ < 2 || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
              error("lone high surrogate in \\u escape");
            pos_ += 2;
            const unsigned lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: error(str_cat("invalid escape '\\", printable(e), "' in string"));
      }
    }
    // Raw bytes were copied as-is; the input must be valid UTF-8 (escapes produce valid UTF-8 by construction).
    std::size_t bad = 0;
    if (!is_valid_utf8(out, &bad)) {
      pos_ = start;
      error("string is not valid UTF-8");
    }
    return out;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  std::size_t max_depth_;
};

inline void dump_string(std::string& out, std::string_view s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

inline void dump_into(std::string& out, const Value& v) {
  switch (v.kind) {
    case Kind::null: out += "null"; break;
    case Kind::boolean: out += v.boolean ? "true" : "false"; break;
    case Kind::number: out += v.text; break;
    case Kind::string: dump_string(out, v.text); break;
    case Kind::array:
      out += '[';
      for (std::size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ',';
        dump_into(out, v.items[i]);
      }
      out += ']';
      break;
    case Kind::object:
      out += '{';
      for (std::size_t i = 0; i < v.members.size(); ++i) {
        if (i) out += ',';
        dump_string(out, v.members[i].first);
        out += ':';
        dump_into(out, v.members[i].second);
      }
      out += '}';
      break;
  }
}

}  // namespace detail

// Default nesting cap: far above what arclight's formats use, far below what could exhaust the stack.
inline constexpr std::size_t kDefaultMaxDepth = 64;

// Parses one JSON document (surrounding whitespace allowed).
// requires: nothing of `text` (it may be arbitrary bytes).
// ensures: returns the value, or throws arclight::Error "io::json: <what> at byte <offset>".
inline Value parse(std::string_view text, std::size_t max_depth = kDefaultMaxDepth) {
  return detail::Parser(text, max_depth).parse_document();
}

// JSON string literal for `s` (quotes included). requires: s is valid UTF-8.
inline std::string quote(std::string_view s) {
  std::string out;
  detail::dump_string(out, s);
  return out;
}

// Compact serialisation (no whitespace), members in stored order.
inline std::string dump(const Value& v) {
  std::string out;
  detail::dump_into(out, v);
  return out;
}

}  // namespace arclight::io::json
