// The reference training loop of the exact-resume test (test_resume.cpp runs it as separate processes).
// A small EmbeddingNet (EfficientNet-B0 stage table scaled to width 0.25 / depth 0.34, small-input stem,
// 1 input channel, 16 px, drop-path 0.2) with the fused ArcMargin + label-smoothing loss, AdamW over the
// default weight-decay groups, a per-step warm-up + cosine Scheduler, the GeM clamp hook, input dropout
// (p 0.1) from its own Generator, and synthetic data (images and labels) drawn from a seeded Generator.
// Three generators drive the run: "model" (init + drop-path masks), "data", "dropout"; all are checkpointed.
//
//   resume_trainer --ckpt DIR --total N [--stop-at K] [--resume] [--skip-rng-restore] [--threads T] --out FILE
//     runs from step 0 (or from the checkpoint under DIR with --resume) up to step K (default N) of an N-step
//     schedule; with --stop-at K < N it saves a training checkpoint at step K; finally writes the model's and
//     the optimizer's serialized state (safetensors bytes, model then optimizer) to FILE.
//   --skip-rng-restore: resume without restoring the generators (the negative control: must NOT match).
// Exit status 0 on success; errors are printed to stderr with status 1.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <string>

#include "arclight/io/training_state.hpp"
#include "arclight/models/embedding_net.hpp"
#include "arclight/nn/gem.hpp"
#include "arclight/ops/dropout.hpp"
#include "arclight/optim/adamw.hpp"
#include "arclight/optim/schedule.hpp"

using namespace arclight;

namespace {

constexpr std::int64_t kBatch = 8, kClasses = 6, kPixels = 16;

struct Args {
  std::string ckpt, out;
  std::int64_t total = 0, stop_at = -1;
  bool resume = false, skip_rng = false;
  int threads = 2;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) fail("resume_trainer", "missing value after ", k);
      return argv[++i];
    };
    if (k == "--ckpt") a.ckpt = next();
    else if (k == "--out") a.out = next();
    else if (k == "--total") a.total = std::stoll(next());
    else if (k == "--stop-at") a.stop_at = std::stoll(next());
    else if (k == "--threads") a.threads = std::stoi(next());
    else if (k == "--resume") a.resume = true;
    else if (k == "--skip-rng-restore") a.skip_rng = true;
    else fail("resume_trainer", "unknown argument '", k, "'");
  }
  ARCLIGHT_CHECK(!a.ckpt.empty() && !a.out.empty() && a.total >= 2, "resume_trainer",
                 "expected --ckpt DIR --out FILE --total N (N >= 2)");
  if (a.stop_at < 0) a.stop_at = a.total;
  return a;
}

int run(const Args& a) {
  set_num_threads(a.threads);
  Generator model_gen(1234), data_gen(99), drop_gen(4321);

  models::EfficientNetConfig ecfg = *models::efficientnet_config("efficientnet_b0");
  ecfg.width_mult = 0.25;
  ecfg.depth_mult = 0.34;  // one block per stage except ceil(3·0.34) = ceil(4·0.34) = 2
  models::ModelOptions mo;
  mo.num_classes = 0;
  mo.in_chans = 1;
  mo.small_input = true;
  mo.drop_path_rate = 0.2;
  mo.generator = &model_gen;
  auto backbone = std::make_shared<models::EfficientNet>(models::decode_efficientnet(ecfg, mo), mo);
  models::EmbeddingNetConfig ncfg;
  ncfg.backbone_options = mo;
  ncfg.embedding_dim = 32;
  ncfg.num_classes = kClasses;
  ncfg.margin.scale = 16.0;
  ncfg.margin.margin = 0.3;
  models::EmbeddingNet net(ncfg, backbone);
  net.train();

  optim::AdamWOptions ao;
  ao.lr = 2e-3;
  ao.weight_decay = 1e-2;
  optim::AdamW opt(optim::param_groups(net, ao.weight_decay), ao);
  opt.add_post_step_hook([&] { nn::clamp_gem_p_(net); });
  optim::Scheduler sched(opt, optim::cosine_schedule(ao.lr, double(a.total), double(a.total) / 4.0, 1e-4, 1e-5),
                         optim::ScheduleUnit::kStep);
  ops::CrossEntropyConfig ce;
  ce.label_smoothing = 0.1;

  io::TrainingState st;
  if (a.resume) {
    st = io::load_training_checkpoint(a.ckpt, net, opt, {nullptr});
    const io::json::Value* total = st.config.find("total_steps");
    std::int64_t saved_total = 0;
    ARCLIGHT_CHECK(total && io::json::to_i64(*total, saved_total) == io::json::IntStatus::ok && saved_total == a.total,
                   "resume_trainer", "the checkpoint was written for another schedule length");
    if (!a.skip_rng) {
      st.restore_rng("model", model_gen);
      st.restore_rng("data", data_gen);
      st.restore_rng("dropout", drop_gen);
    }
    sched.step_update(st.scheduler_step);
  } else {
    st.config.set("backbone", io::json::Value::string_value("efficientnet_b0 w0.25 d0.34 small_input"));
    st.config.set("total_steps", io::json::Value::integer(a.total));
    st.config.set("batch", io::json::Value::integer(kBatch));
    st.config.set("threads", io::json::Value::integer(a.threads));
  }

  for (std::int64_t step = st.step; step < a.stop_at; ++step) {
    Tensor x = randn({kBatch, 1, kPixels, kPixels}, DType::f32, data_gen);
    Tensor y = randint(0, kClasses, {kBatch}, DType::i64, data_gen);
    x = ops::dropout(x, 0.1, true, drop_gen);
    Tensor loss = net.loss(x, y, ce);
    ARCLIGHT_CHECK(std::isfinite(loss.item()), "resume_trainer", "non-finite loss at step ", step);
    opt.zero_grad();
    loss.backward();
    opt.step();
    st.step = step + 1;
    st.sample_index += kBatch;
    st.scheduler_step = st.step;
    sched.step_update(st.scheduler_step);
  }

  if (a.stop_at < a.total) {
    st.capture_rng("model", model_gen);
    st.capture_rng("data", data_gen);
    st.capture_rng("dropout", drop_gen);
    io::save_training_checkpoint(a.ckpt, "step-" + std::to_string(st.step), net, opt, st);
  }
  const auto model_bytes = models::serialize_state_dict(net);
  const auto opt_bytes = io::detail::serialize_optimizer_state(opt.state_dict());
  std::ofstream out(a.out, std::ios::binary | std::ios::trunc);
  const std::uint64_t n1 = model_bytes.size();
  out.write(reinterpret_cast<const char*>(&n1), sizeof n1);
  out.write(reinterpret_cast<const char*>(model_bytes.data()), std::streamsize(model_bytes.size()));
  out.write(reinterpret_cast<const char*>(opt_bytes.data()), std::streamsize(opt_bytes.size()));
  ARCLIGHT_CHECK(out.good(), "resume_trainer", "cannot write '", a.out, "'");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "resume_trainer: " << e.what() << "\n";
    return 1;
  }
}
