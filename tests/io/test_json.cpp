// The strict JSON reader behind the safetensors header and checkpoint MANIFEST: what it accepts, what it
// rejects (with which message), and that dump() output parses back to the same value.
#include <gtest/gtest.h>

#include <string>

#include "arclight/io/json.hpp"

namespace {

namespace json = arclight::io::json;
using arclight::Error;

std::string parse_error(std::string_view text) {
  try {
    json::parse(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Json, ParsesNestedDocument) {
  const auto v = json::parse(R"( {"a": [1, -2.5e3, true, false, null], "b": {"c": "x\ty\u00e9\ud83d\ude00"}} )");
  ASSERT_TRUE(v.is_object());
  ASSERT_EQ(v.members.size(), 2u);
  const auto* a = v.find("a");
  ASSERT_TRUE(a && a->is_array());
  ASSERT_EQ(a->items.size(), 5u);
  EXPECT_EQ(a->items[0].text, "1");
  double d = 0;
  ASSERT_TRUE(json::to_double(a->items[1], d));
  EXPECT_EQ(d, -2500.0);
  EXPECT_TRUE(a->items[2].boolean);
  EXPECT_EQ(a->items[3].kind, json::Kind::boolean);
  EXPECT_FALSE(a->items[3].boolean);
  EXPECT_TRUE(a->items[4].is_null());
  const auto* c = v.find("b")->find("c");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->text, "x\ty\xC3\xA9\xF0\x9F\x98\x80");  // é and U+1F600 as UTF-8
  EXPECT_EQ(v.find("missing"), nullptr);
}

TEST(Json, IntegersKeepFull64BitPrecision) {
  const auto v = json::parse("[18446744073709551615, 18446744073709551616, -3, 2.0, 1e3, -0, 9007199254740993]");
  std::uint64_t u = 0;
  ASSERT_EQ(json::to_u64(v.items[0], u), json::IntStatus::ok);
  EXPECT_EQ(u, 18446744073709551615ull);
  EXPECT_EQ(json::to_u64(v.items[1], u), json::IntStatus::overflow);
  EXPECT_EQ(json::to_u64(v.items[2], u), json::IntStatus::negative);
  std::int64_t i = 0;
  ASSERT_EQ(json::to_i64(v.items[2], i), json::IntStatus::ok);
  EXPECT_EQ(i, -3);
  EXPECT_EQ(json::to_u64(v.items[3], u), json::IntStatus::not_an_integer);
  EXPECT_EQ(json::to_u64(v.items[4], u), json::IntStatus::not_an_integer);
  u = 7;
  ASSERT_EQ(json::to_u64(v.items[5], u), json::IntStatus::ok);
  EXPECT_EQ(u, 0u);
  ASSERT_EQ(json::to_u64(v.items[6], u), json::IntStatus::ok);
  EXPECT_EQ(u, 9007199254740993ull);  // 2^53 + 1: would be rounded through a double
}

TEST(Json, RejectsMalformedInputWithReason) {
  EXPECT_NE(parse_error("").find("unexpected end of input"), std::string::npos);
  EXPECT_NE(parse_error("{").find("expected a string key"), std::string::npos);
  EXPECT_NE(parse_error("[1,]").find("unexpected character ']'"), std::string::npos);
  EXPECT_NE(parse_error("{\"a\":1,}").find("expected a string key"), std::string::npos);
  EXPECT_NE(parse_error("[01]").find("leading zero"), std::string::npos);
  EXPECT_NE(parse_error("[1.]").find("digit after '.'"), std::string::npos);
  EXPECT_NE(parse_error("[NaN]").find("unexpected character 'N'"), std::string::npos);
  EXPECT_NE(parse_error("\"a\nb\"").find("control character"), std::string::npos);
  EXPECT_NE(parse_error("\"\\x\"").find("invalid escape"), std::string::npos);
  EXPECT_NE(parse_error("\"\\ud800\"").find("lone high surrogate"), std::string::npos);
  EXPECT_NE(parse_error("\"\\udc00\"").find("lone low surrogate"), std::string::npos);
  EXPECT_NE(parse_error("{} x").find("trailing characters"), std::string::npos);
  EXPECT_NE(parse_error("// c\n{}").find("unexpected character '/'"), std::string::npos);
  EXPECT_NE(parse_error("{\"k\":1,\"j\":2,\"k\":3}").find("duplicate key \"k\""), std::string::npos);
  EXPECT_NE(parse_error("\"\xFF\"").find("not valid UTF-8"), std::string::npos);
  // Messages carry the component and the byte offset.
  EXPECT_NE(parse_error("[1, x]").find("io::json: "), std::string::npos);
  EXPECT_NE(parse_error("[1, x]").find("at byte 4"), std::string::npos);
}

TEST(Json, NestingIsCapped) {
  const std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_NO_THROW(json::parse(ok));
  const std::string deep = std::string(65, '[') + std::string(65, ']');
  EXPECT_NE(parse_error(deep).find("nesting deeper than 64"), std::string::npos);
  const std::string very_deep(1'000'000, '[');  // must fail fast, not overflow the stack
  EXPECT_NE(parse_error(very_deep).find("nesting deeper"), std::string::npos);
}

TEST(Json, Utf8Validator) {
  std::size_t bad = 99;
  EXPECT_TRUE(json::is_valid_utf8("plain ascii"));
  EXPECT_TRUE(json::is_valid_utf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF"));  // é € 😀 U+10FFFF
  EXPECT_FALSE(json::is_valid_utf8("ab\xC0\xAF", &bad));  // overlong '/'
  EXPECT_EQ(bad, 2u);
  EXPECT_FALSE(json::is_valid_utf8("\xE0\x80\xAF"));      // overlong 3-byte
  EXPECT_FALSE(json::is_valid_utf8("\xED\xA0\x80"));      // UTF-16 surrogate D800
  EXPECT_FALSE(json::is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(json::is_valid_utf8("\xF5\x80\x80\x80"));
  EXPECT_FALSE(json::is_valid_utf8("x\xE2\x82", &bad));   // truncated
  EXPECT_EQ(bad, 1u);
  EXPECT_FALSE(json::is_valid_utf8("\x80"));              // lone continuation byte
}

TEST(Json, DumpParsesBackToTheSameValue) {
  auto v = json::Value::object();
  v.set("name", json::Value::string_value("quote\" backslash\\ nl\n ctl\x01 é"));
  v.set("i", json::Value::integer(-42));
  v.set("u", json::Value::unsigned_integer(18446744073709551615ull));
  v.set("d", json::Value::number(0.1));
  auto arr = json::Value::array();
  arr.push(json::Value::boolean_value(true)).push(json::Value());
  v.set("a", std::move(arr));
  const std::string text = json::dump(v);
  const auto back = json::parse(text);
  EXPECT_EQ(json::dump(back), text);
  EXPECT_EQ(back.find("name")->text, "quote\" backslash\\ nl\n ctl\x01 é");
  double d = 0;
  ASSERT_TRUE(json::to_double(*back.find("d"), d));
  EXPECT_EQ(d, 0.1);  // 17 significant digits round-trip exactly
  EXPECT_THROW(json::Value::number(std::numeric_limits<double>::quiet_NaN()), Error);
}

}  // namespace
