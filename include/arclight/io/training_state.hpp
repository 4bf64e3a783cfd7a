// Training checkpoints that resume exactly: everything a training loop needs to continue bit-identically,
// written as one crash-safe checkpoint directory (io/checkpoint.hpp: temp dir, fsync, rename, MANIFEST of
// SHA-256 hashes, `latest` pointer last, fallback to the previous checkpoint on corruption).
// Files of a training checkpoint:
//   model.safetensors      the module's state_dict (parameters + buffers such as BN running stats)
//   optimizer.safetensors  Optimizer::state_dict() tensors ("state.<k>.<buffer>", "state.<k>.step")
//   state.json             {"format", "version", "epoch", "step", "sample_index", "scheduler_step",
//                           "optimizer": {"name", "step", "lr"}, "rngs": {name: {"seed", "offset"}},
//                           "config": <any JSON object the trainer passes>}
// Exactness: tensors are stored as raw little-endian bytes; the lr as a 17-digit JSON number (round-trips a
// double); generators as (seed, offset) — a Philox Generator continues the same stream from that pair.
// Bit-identical resumption additionally needs a deterministic loop: the same thread count before and after
// (CPU kernels fix their reduction order per thread count) and every random draw taken from a Generator
// whose state is captured here (tests/resume/resume_trainer.cpp is the reference loop).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "arclight/core/rng.hpp"
#include "arclight/io/checkpoint.hpp"
#include "arclight/io/json.hpp"
#include "arclight/io/safetensors.hpp"
#include "arclight/models/state_dict.hpp"
#include "arclight/nn/module.hpp"
#include "arclight/optim/optimizer.hpp"

namespace arclight::io {

inline constexpr int kTrainingStateVersion = 1;
inline constexpr std::string_view kTrainingStateFormat = "arclight-training-state";

// The saved state of a Generator.
struct RngState {
  std::uint64_t seed = 0, offset = 0;
};

// The loop's counters and random streams (the tensors live in model/optimizer).
struct TrainingState {
  int version = kTrainingStateVersion;
  std::int64_t epoch = 0;           // epochs completed
  std::int64_t step = 0;            // optimizer steps completed
  std::int64_t sample_index = 0;    // samples consumed (position in the data stream)
  std::int64_t scheduler_step = 0;  // the value last passed to Scheduler::step_update / step_epoch
  std::map<std::string, RngState> rngs;
  json::Value config = json::Value::object();  // the run's configuration, stored verbatim

  // Records / restores a generator under `name`. restore_rng requires the name to be present (else
  // arclight::Error listing the saved names).
  void capture_rng(const std::string& name, const Generator& g) { rngs[name] = {g.seed(), g.offset()}; }
  void restore_rng(const std::string& name, Generator& g) const {
    auto it = rngs.find(name);
    if (it == rngs.end()) {
      std::string have;
      for (const auto& [n, r] : rngs) have += (have.empty() ? "" : ", ") + n;
      fail("io::TrainingState", "no RNG state named '", name, "' in the checkpoint (saved: ", have, ")");
    }
    g.set_state(it->second.seed, it->second.offset);
  }
};

namespace detail {

inline std::vector<std::uint8_t> serialize_optimizer_state(const optim::OptimizerState& s) {
  std::vector<Tensor> owners;
  std::vector<TensorBytes> views;
  for (const auto& [name, t] : s.tensors) {
    Tensor c = t.device().is_cuda() ? t.to(Device::cpu()) : arclight::detail::copy_contiguous(t.detach());
    owners.push_back(c);
    TensorBytes b;
    b.name = name;
    b.dtype = c.dtype();
    b.shape.assign(c.shape().begin(), c.shape().end());
    b.data = std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(c.raw_data()),
                                           static_cast<std::size_t>(c.numel()) * c.element_size());
    views.push_back(b);
  }
  return serialize_safetensors(views, {});
}

inline std::string state_to_json(const TrainingState& st, const optim::Optimizer& opt) {
  using json::Value;
  Value root = Value::object();
  root.set("format", Value::string_value(std::string(kTrainingStateFormat)));
  root.set("version", Value::integer(st.version));
  root.set("epoch", Value::integer(st.epoch));
  root.set("step", Value::integer(st.step));
  root.set("sample_index", Value::integer(st.sample_index));
  root.set("scheduler_step", Value::integer(st.scheduler_step));
  Value o = Value::object();
  o.set("name", Value::string_value(opt.name()));
  o.set("step", Value::integer(opt.step_count()));
  o.set("lr", Value::number(opt.lr()));
  root.set("optimizer", std::move(o));
  Value rngs = Value::object();
  for (const auto& [name, r] : st.rngs) {
    Value v = Value::object();
    v.set("seed", Value::unsigned_integer(r.seed));
    v.set("offset", Value::unsigned_integer(r.offset));
    rngs.set(name, std::move(v));
  }
  root.set("rngs", std::move(rngs));
  root.set("config", st.config);
  return json::dump(root);
}

inline const json::Value& member(const json::Value& v, std::string_view key, const char* where) {
  const json::Value* m = v.find(key);
  if (m == nullptr) fail(where, "state.json has no '", key, "'");
  return *m;
}
inline std::int64_t member_i64(const json::Value& v, std::string_view key, const char* where) {
  std::int64_t x = 0;
  if (json::to_i64(member(v, key, where), x) != json::IntStatus::ok || x < 0)
    fail(where, "state.json: '", key, "' must be a non-negative integer");
  return x;
}
inline std::uint64_t member_u64(const json::Value& v, std::string_view key, const char* where) {
  std::uint64_t x = 0;
  if (json::to_u64(member(v, key, where), x) != json::IntStatus::ok)
    fail(where, "state.json: '", key, "' must be an unsigned 64-bit integer");
  return x;
}

}  // namespace detail

// Saves model + optimizer + state as checkpoint `name` under `root` (io::save_checkpoint's protocol).
// requires: `name` a simple checkpoint name; st.config a JSON object. ensures: on return the checkpoint is
// durable and `latest` names it. Throws arclight::Error on I/O failure (previous checkpoints intact).
inline std::filesystem::path save_training_checkpoint(const std::filesystem::path& root, const std::string& name,
                                                      const nn::Module& model, const optim::Optimizer& opt,
                                                      const TrainingState& st,
                                                      const CheckpointSaveOptions& options = {}) {
  ARCLIGHT_CHECK(st.config.is_object(), "io::save_training_checkpoint", "config must be a JSON object, got ",
                 json::kind_name(st.config.kind));
  CheckpointFiles files;
  files["model.safetensors"] = models::serialize_state_dict(model);
  files["optimizer.safetensors"] = detail::serialize_optimizer_state(opt.state_dict());
  const std::string js = detail::state_to_json(st, opt);
  files["state.json"] = std::vector<std::uint8_t>(js.begin(), js.end());
  return save_checkpoint(root, name, files, options);
}

// Loads the newest valid checkpoint under `root` (io::load_checkpoint: hash-verified, with fallback) into
// `model` (strict: every key present, shapes and dtypes equal) and `opt` (same kind and parameter shapes),
// and returns its TrainingState. requires: a checkpoint written by save_training_checkpoint with a supported
// version. ensures: model and optimizer hold the saved bytes. Throws arclight::Error naming what is wrong
// (no valid checkpoint, unknown format/version, missing file, key mismatch, another optimizer kind).
inline TrainingState load_training_checkpoint(const std::filesystem::path& root, nn::Module& model,
                                              optim::Optimizer& opt, const CheckpointLoadOptions& options = {}) {
  const char* where = "io::load_training_checkpoint";
  const Checkpoint ck = load_checkpoint(root, options);
  auto file = [&](const std::string& n) -> const std::vector<std::uint8_t>& {
    auto it = ck.files.find(n);
    if (it == ck.files.end()) fail(where, "checkpoint '", ck.name, "' has no ", n);
    return it->second;
  };
  const auto& sj = file("state.json");
  const json::Value root_v = json::parse(std::string_view(reinterpret_cast<const char*>(sj.data()), sj.size()));
  const json::Value& fmt = detail::member(root_v, "format", where);
  if (!fmt.is_string() || fmt.text != kTrainingStateFormat)
    fail(where, "state.json format is '", fmt.text, "', expected '", kTrainingStateFormat, "'");
  TrainingState st;
  st.version = int(detail::member_i64(root_v, "version", where));
  if (st.version != kTrainingStateVersion)
    fail(where, "state.json version ", st.version, " is not supported (expected ", kTrainingStateVersion, ")");
  st.epoch = detail::member_i64(root_v, "epoch", where);
  st.step = detail::member_i64(root_v, "step", where);
  st.sample_index = detail::member_i64(root_v, "sample_index", where);
  st.scheduler_step = detail::member_i64(root_v, "scheduler_step", where);
  for (const auto& [n, v] : detail::member(root_v, "rngs", where).members)
    st.rngs[n] = {detail::member_u64(v, "seed", where), detail::member_u64(v, "offset", where)};
  st.config = detail::member(root_v, "config", where);

  const json::Value& o = detail::member(root_v, "optimizer", where);
  const json::Value& oname = detail::member(o, "name", where);
  if (oname.text != opt.name())
    fail(where, "the checkpoint's optimizer is '", oname.text, "', but the loop uses '", opt.name(), "'");
  optim::OptimizerState os;
  os.step = detail::member_i64(o, "step", where);
  if (!json::to_double(detail::member(o, "lr", where), os.lr)) fail(where, "state.json: optimizer.lr is not a number");

  // Model: strict load of the raw bytes (the file must outlive the copy; load_state_dict copies).
  const SafetensorsFile mf = SafetensorsFile::from_bytes(file("model.safetensors"), ck.name + "/model.safetensors");
  const models::LoadResult r = models::load_state_dict(model, std::span<const TensorBytes>(mf.tensors()));
  if (!r.clean()) fail(where, "model state does not match: ", r.summary());
  const SafetensorsFile of =
      SafetensorsFile::from_bytes(file("optimizer.safetensors"), ck.name + "/optimizer.safetensors");
  for (const auto& t : of.tensors()) os.tensors.emplace_back(t.name, models::detail::tensor_from_bytes(t));
  opt.load_state_dict(os);
  return st;
}

}  // namespace arclight::io
