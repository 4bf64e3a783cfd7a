// Loading and saving a module's weights by name (parameters and buffers, BN running statistics included)
// from/to safetensors — the bridge between arclight models and timm/PyTorch checkpoints (docs/WEIGHTS.md).
//
// load_state_dict matches file tensors to the module's state_dict() keys (timm names), optionally through
// a key map (e.g. torchvision_efficientnet_key for torchvision's EfficientNet), and copies them in place
// into the module's tensors, converting the element type (F16/BF16/F32/F64 into f32/f64 tensors, integer
// into integer tensors). Strict mode (PyTorch's strict=True) first checks everything — missing keys,
// unexpected keys, shape/dtype mismatches, two file keys mapped to one name — and throws one arclight::Error
// listing them all without modifying the module; non-strict mode loads every key that matches and returns
// the lists. save_state_dict writes every parameter and buffer under its name (atomically, io/safetensors.hpp).
#pragma once

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/io/safetensors.hpp"
#include "arclight/nn/module.hpp"

namespace arclight::models {

// A key present on both sides whose shape or dtype cannot be loaded.
struct KeyMismatch {
  std::string name;      // the module's key
  std::string expected;  // e.g. "f32 [32, 3, 3, 3]"
  std::string found;     // e.g. "F32 [16, 3, 3, 3]" (or "I64 []" for a float tensor)
};

struct LoadResult {
  std::vector<std::string> loaded;      // module keys that were written
  std::vector<std::string> missing;     // module keys with no tensor in the file
  std::vector<std::string> unexpected;  // file keys (after mapping) the module does not have, or mapped twice
  std::vector<KeyMismatch> mismatched;  // keys on both sides that cannot be loaded
  bool clean() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  // "N missing: a, b, ...; M unexpected: ...; K mismatched: name (expected ..., found ...)" (lists clipped).
  std::string summary(std::size_t max_items = 12) const {
    auto list = [&](const std::vector<std::string>& v) {
      std::string s;
      for (std::size_t i = 0; i < v.size() && i < max_items; ++i) s += (i ? ", " : "") + v[i];
      if (v.size() > max_items) s += str_cat(", ... (", v.size() - max_items, " more)");
      return s;
    };
    std::vector<std::string> mm;
    for (const auto& m : mismatched) mm.push_back(m.name + " (expected " + m.expected + ", found " + m.found + ")");
    std::string out;
    if (!missing.empty()) out += str_cat(missing.size(), " missing: ", list(missing));
    if (!unexpected.empty()) out += str_cat(out.empty() ? "" : "; ", unexpected.size(), " unexpected: ", list(unexpected));
    if (!mismatched.empty()) out += str_cat(out.empty() ? "" : "; ", mismatched.size(), " mismatched: ", list(mm));
    return out.empty() ? "all keys matched" : out;
  }
};

// Maps a file key to a module key; nullopt drops the file key (it is then neither loaded nor unexpected).
using KeyMap = std::function<std::optional<std::string>(const std::string&)>;

struct LoadOptions {
  bool strict = true;
  KeyMap key_map;  // empty: identity
};

namespace detail {

inline std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((man & 0x400u) == 0) {
        man <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_to_float(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// A CPU tensor holding the file tensor's values (f16/bf16 widened to f32; the others as stored).
inline Tensor tensor_from_bytes(const io::TensorBytes& t) {
  Shape shape(t.shape.begin(), t.shape.end());
  if (t.dtype == DType::f16 || t.dtype == DType::bf16) {
    Tensor out = empty(shape, DType::f32);
    float* p = out.data_ptr<float>();
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      std::uint16_t h;
      std::memcpy(&h, t.data.data() + 2 * i, 2);
      p[i] = t.dtype == DType::f16 ? half_to_float(h) : bf16_to_float(h);
    }
    return out;
  }
  Tensor out = empty(shape, t.dtype);
  if (!t.data.empty()) std::memcpy(out.raw_data(), t.data.data(), t.data.size());
  return out;
}

}  // namespace detail

namespace detail {
// The loader behind the public overloads; source_name (may be empty) names the file in errors.
inline LoadResult load_state_dict_impl(nn::Module& m, std::span<const io::TensorBytes> tensors, const LoadOptions& opt,
                                       const std::string& source_name) {
  LoadResult r;
  std::map<std::string, Tensor> targets;
  std::vector<std::string> order;
  for (auto& [name, t] : m.state_dict()) {
    targets.emplace(name, t);
    order.push_back(name);
  }
  std::map<std::string, const io::TensorBytes*> source;
  for (const auto& t : tensors) {
    std::optional<std::string> key = opt.key_map ? opt.key_map(t.name) : std::optional<std::string>(t.name);
    if (!key) continue;
    if (!targets.count(*key)) {
      r.unexpected.push_back(t.name == *key ? t.name : t.name + " -> " + *key);
      continue;
    }
    if (!source.emplace(*key, &t).second)
      r.unexpected.push_back(t.name + " -> " + *key + " (a second file tensor for the same key)");
  }
  std::vector<std::pair<Tensor, const io::TensorBytes*>> plan;
  for (const auto& name : order) {
    auto it = source.find(name);
    if (it == source.end()) {
      r.missing.push_back(name);
      continue;
    }
    const Tensor& dst = targets.at(name);
    const io::TensorBytes& src = *it->second;
    const bool same_shape = Shape(src.shape.begin(), src.shape.end()) == dst.shape();
    const bool dtype_ok = is_floating(dst.dtype()) == is_floating(src.dtype);
    if (!same_shape || !dtype_ok) {
      r.mismatched.push_back({name, str_cat(dtype_name(dst.dtype()), " ", detail::shape_text(dst.shape())),
                              str_cat(io::safetensors_dtype_name(src.dtype), " ", detail::shape_text(src.shape))});
      continue;
    }
    plan.emplace_back(dst, &src);
  }
  if (opt.strict && !r.clean())
    fail("load_state_dict", source_name.empty() ? "" : "'" + source_name + "': ", "strict load failed, module left unchanged: ",
         r.summary());
  NoGradGuard ng;
  for (auto& [dst, src] : plan) {
    Tensor d = dst;
    ops::copy_(d, detail::tensor_from_bytes(*src));
  }
  for (const auto& name : order)
    if (source.count(name)) {
      bool ok = true;
      for (const auto& mm : r.mismatched) ok = ok && mm.name != name;
      if (ok) r.loaded.push_back(name);
    }
  return r;
}
}  // namespace detail

// Loads `tensors` into m's parameters and buffers by name.
// requires: none beyond valid TensorBytes (as a SafetensorsFile yields).
// ensures (strict): every module key loaded and every file key used, else arclight::Error
//   "load_state_dict: ..." listing missing / unexpected / mismatched keys, with m unchanged.
// ensures (non-strict): every key present on both sides with a compatible shape/dtype is copied in place;
//   the rest are reported in the result. Never records autograd history.
inline LoadResult load_state_dict(nn::Module& m, std::span<const io::TensorBytes> tensors, const LoadOptions& opt = {}) {
  return detail::load_state_dict_impl(m, tensors, opt, "");
}

// As above, for an opened file (errors name it).
inline LoadResult load_state_dict(nn::Module& m, const io::SafetensorsFile& file, const LoadOptions& opt = {}) {
  return detail::load_state_dict_impl(m, std::span<const io::TensorBytes>(file.tensors()), opt, file.source());
}

// Opens (memory-mapped, validated) and loads a safetensors file. Errors name the file.
inline LoadResult load_state_dict(nn::Module& m, const std::filesystem::path& path, const LoadOptions& opt = {}) {
  const io::SafetensorsFile f = io::SafetensorsFile::open(path);
  return load_state_dict(m, f, opt);
}

namespace detail {
// Contiguous copies of every state tensor with TensorBytes views into them (the copies own the bytes).
struct StateBytes {
  std::vector<Tensor> owners;
  std::vector<io::TensorBytes> views;
};
inline StateBytes state_bytes(const nn::Module& m) {
  StateBytes s;
  const auto sd = m.state_dict();
  s.owners.reserve(sd.size());
  for (const auto& [name, t] : sd) {
    // Device tensors are copied to the host (Tensor::to gives a contiguous copy).
    Tensor c = t.device().is_cuda() ? t.to(Device::cpu()) : t.is_contiguous() ? t.detach() : ops::contiguous(t.detach());
    s.owners.push_back(c);
    io::TensorBytes b;
    b.name = name;
    b.dtype = c.dtype();
    b.shape.assign(c.shape().begin(), c.shape().end());
    b.data = std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(c.raw_data()),
                                           static_cast<std::size_t>(c.numel()) * c.element_size());
    s.views.push_back(b);
  }
  return s;
}
}  // namespace detail

// The module's state (parameters + buffers) as a safetensors image in memory.
inline std::vector<std::uint8_t> serialize_state_dict(const nn::Module& m, const io::SafetensorsMetadata& metadata = {}) {
  const auto s = detail::state_bytes(m);
  return io::serialize_safetensors(s.views, metadata);
}

// Writes the module's state to `path` atomically (complete new file or unchanged; io::save_safetensors).
inline void save_state_dict(const nn::Module& m, const std::filesystem::path& path,
                            const io::SafetensorsMetadata& metadata = {}) {
  const auto s = detail::state_bytes(m);
  io::save_safetensors(path, s.views, metadata);
}

// torchvision's EfficientNet (B0 stage table) key → timm key, e.g.
//   features.0.0.weight → conv_stem.weight          features.0.1.* → bn1.*
//   features.2.1.block.0.0.weight → blocks.1.1.conv_pw.weight  (IR: expand, dw, SE, project)
//   features.1.0.block.2.1.* → blocks.0.0.bn2.*               (stage 1 is depthwise-separable: dw, SE, project)
//   features.s.j.block.k.fc1/fc2 → se.conv_reduce / se.conv_expand
//   features.8.0 → conv_head, features.8.1 → bn2, classifier.1 → classifier.
// Returns nullopt for keys it does not recognise (they are then dropped, so use strict loading to catch a
// model that is not a torchvision EfficientNet: its keys would all be missing).
inline std::optional<std::string> torchvision_efficientnet_key(const std::string& key) {
  auto split = [](const std::string& s) {
    std::vector<std::string> parts;
    std::size_t b = 0;
    for (std::size_t e; (e = s.find('.', b)) != std::string::npos; b = e + 1) parts.push_back(s.substr(b, e - b));
    parts.push_back(s.substr(b));
    return parts;
  };
  auto is_int = [](const std::string& s) {
    return !s.empty() && s.size() < 6 && s.find_first_not_of("0123456789") == std::string::npos;
  };
  const auto p = split(key);
  auto tail = [&](std::size_t from) {
    std::string t;
    for (std::size_t i = from; i < p.size(); ++i) t += "." + p[i];
    return t;
  };
  if (p.size() >= 3 && p[0] == "classifier" && p[1] == "1") return "classifier" + tail(2);
  if (p.size() < 4 || p[0] != "features" || !is_int(p[1])) return std::nullopt;
  const int s = std::stoi(p[1]);
  if (s == 0 || s == 8) {
    if (p[2] == "0") return (s == 0 ? "conv_stem" : "conv_head") + tail(3);
    if (p[2] == "1") return (s == 0 ? "bn1" : "bn2") + tail(3);
    return std::nullopt;
  }
  if (p.size() < 6 || !is_int(p[2]) || p[3] != "block" || !is_int(p[4])) return std::nullopt;
  const std::string pre = "blocks." + std::to_string(s - 1) + "." + p[2] + ".";
  const int k = std::stoi(p[4]);
  const bool ds = s == 1;  // B0's first stage has expansion 1: no expand conv
  const int se_index = ds ? 1 : 2;
  if (k == se_index) {
    if (p[5] == "fc1") return pre + "se.conv_reduce" + tail(6);
    if (p[5] == "fc2") return pre + "se.conv_expand" + tail(6);
    return std::nullopt;
  }
  static const char* ds_names[][2] = {{"conv_dw", "bn1"}, {nullptr, nullptr}, {"conv_pw", "bn2"}};
  static const char* ir_names[][2] = {{"conv_pw", "bn1"}, {"conv_dw", "bn2"}, {nullptr, nullptr}, {"conv_pwl", "bn3"}};
  const std::string& layer = p.at(5);  // "0" = the conv, "1" = its norm
  if (k < 0 || k > (ds ? 2 : 3) || (layer != "0" && layer != "1")) return std::nullopt;
  const int which = layer == "0" ? 0 : 1;
  const char* name = ds ? ds_names[k][which] : ir_names[k][which];
  if (!name) return std::nullopt;
  return pre + name + tail(6);
}

}  // namespace arclight::models
