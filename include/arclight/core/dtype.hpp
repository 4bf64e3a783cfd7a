// Element types of tensors, their sizes and names, and the dispatch helpers that turn a runtime DType into
// a compile-time scalar type. f16/bf16 exist as storage types for CUDA mixed precision; CPU arithmetic
// runs on f32/f64 (floating) and i32/i64/u8 (integer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

#include "arclight/core/error.hpp"

namespace arclight {

enum class DType : std::uint8_t { f32, f64, i32, i64, u8, f16, bf16 };

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
    case DType::f16: return 2;
    case DType::bf16: return 2;
  }
  return 0;
}

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
  }
  return "?";
}

constexpr bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16; }
// Storage-only types: they can be stored and converted but CPU kernels do not compute in them.
constexpr bool is_storage_only(DType t) { return t == DType::f16 || t == DType::bf16; }

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<std::int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<std::int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<std::uint8_t> { static constexpr DType value = DType::u8; };
template <typename T> inline constexpr DType dtype_v = dtype_of<T>::value;

// dispatch_floating(t, "op", [&]<typename T>() { ... }) calls the lambda with T = float or double.
template <typename F>
decltype(auto) dispatch_floating(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    default: fail(op, "expected a floating dtype (f32 or f64), got ", dtype_name(t));
  }
}

// As dispatch_floating, plus the integer types i32, i64 and u8.
template <typename F>
decltype(auto) dispatch_all(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::i32: return f.template operator()<std::int32_t>();
    case DType::i64: return f.template operator()<std::int64_t>();
    case DType::u8: return f.template operator()<std::uint8_t>();
    default: fail(op, "dtype ", dtype_name(t), " is storage-only on the CPU; convert with to(f32) first");
  }
}

}  // namespace arclight
