// train_step: the CPU training-throughput benchmark of the retrieval model, run side by side with
// bench/torch_train_step.py (the same model in PyTorch). Model: a backbone's features (efficientnet_b0 by
// default, 3-channel input) → GeM(p=3) → Linear(features→512) → BatchNorm1d → ArcMargin(s=30, m=0.5) →
// label-smoothing CE (ε=0.1), AdamW, random inputs and labels. Prints one line:
//   train_images_per_s=<x> embed_images_per_s=<y> peak_rss_mb=<z>
// train = forward + backward + optimizer step + zero_grad; embed = eval-mode forward without gradients (the
// L2-normalised embedding). Warm-up steps are excluded from both timings. With ARCLIGHT_PROFILE=1 (or
// --profile) the op profiler's table (time per op type, forward and backward) goes to stderr.
// --device cuda runs the same step on the GPU (Module::to, device tensors; each step ends with loss.item(), which
// waits for the GPU, as the PyTorch script does); --amp bf16 adds cuda::AutocastScope(bf16) around forward and
// backward (convolutions and GEMMs in bfloat16, float32 master weights, GeM and the loss in float32), the
// counterpart of torch.autocast(dtype=torch.bfloat16); --amp fp16 uses cuda::AutocastScope(f16) and a
// cuda::GradScaler (loss scaled before backward, gradients unscaled and checked, steps with inf/NaN skipped), the
// counterpart of torch.autocast(dtype=torch.float16) + torch.cuda.amp.GradScaler. The skipped steps are reported.
//
//   build/bench/train_step --img 32 --batch 128 --threads 2 --steps 20 --classes 10
//   train_step --device cuda --img 224 --batch 128 --steps 20 --classes 1000 [--amp bf16|fp16]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <arclight/arclight.hpp>
#include <arclight/core/profiler.hpp>
#include <arclight/cuda/grad_scaler.hpp>
#include <arclight/cuda/runtime.hpp>
#include <arclight/models/embedding_net.hpp>
#include <arclight/optim/adamw.hpp>
#include <cmath>
#include <algorithm>

namespace {

struct Args {
  std::string model = "efficientnet_b0";
  std::int64_t img = 32, batch = 128, classes = 10, steps = 20, warmup = 3, embed_steps = 0;
  int threads = 2;
  bool profile = false;
  std::string device = "cpu";  // cpu | cuda
  std::string amp = "off";     // off | bf16 | fp16 (cuda only)
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "train_step: %s\nusage: train_step [--model NAME] [--img N] [--batch N] [--threads N] [--steps N]\n"
               "                  [--warmup N] [--embed-steps N] [--classes N] [--profile]\n"
               "                  [--device cpu|cuda] [--amp off|bf16|fp16]\n",
               why);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--profile") {
      a.profile = true;
      continue;
    }
    if (i + 1 >= argc) usage(("missing value after " + k).c_str());
    const char* v = argv[++i];
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    const bool numeric = end != v && *end == '\0';
    if (k == "--model") {
      a.model = v;
      continue;
    }
    if (k == "--device") {
      a.device = v;
      if (a.device != "cpu" && a.device != "cuda") usage("--device expects cpu or cuda");
      continue;
    }
    if (k == "--amp") {
      a.amp = v;
      if (a.amp != "off" && a.amp != "bf16" && a.amp != "fp16") usage("--amp expects off, bf16 or fp16");
      continue;
    }
    if (!numeric || n < 0) usage((k + " expects a non-negative integer, got '" + v + "'").c_str());
    if (k == "--img") a.img = n;
    else if (k == "--batch") a.batch = n;
    else if (k == "--threads") a.threads = static_cast<int>(n);
    else if (k == "--steps") a.steps = n;
    else if (k == "--warmup") a.warmup = n;
    else if (k == "--embed-steps") a.embed_steps = n;
    else if (k == "--classes") a.classes = n;
    else usage(("unknown option " + k).c_str());
  }
  if (a.img < 8 || a.batch < 2 || a.steps < 1 || a.classes < 2 || a.threads < 1)
    usage("need --img >= 8, --batch >= 2, --steps >= 1, --classes >= 2, --threads >= 1");
  if (a.embed_steps == 0) a.embed_steps = a.steps;
  if (a.amp != "off" && a.device != "cuda") usage("--amp bf16 / fp16 need --device cuda");
  return a;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace arclight;
  const Args a = parse(argc, argv);
  set_num_threads(a.threads);
  try {
    Generator gen(1);
    models::EmbeddingNetConfig cfg;
    cfg.backbone = a.model;
    cfg.backbone_options.generator = &gen;
    cfg.embedding_dim = 512;
    cfg.prelu = false;  // the model: Linear → BatchNorm1d → ArcMargin
    cfg.num_classes = a.classes;
    cfg.margin.scale = 30.0;
    cfg.margin.margin = 0.5;
    models::EmbeddingNet net(cfg);
    const Device dev = a.device == "cuda" ? Device::cuda(0) : Device::cpu();
    if (dev.is_cuda()) {
      std::fprintf(stderr, "train_step: %s\n", cuda::backend_description().c_str());
      net.to(dev);  // before the optimizer, which keeps its state beside the parameters
    }
    optim::AdamWOptions opt;
    opt.lr = 1e-3;
    opt.weight_decay = 1e-2;
    optim::AdamW adamw(optim::param_groups(net, opt.weight_decay), opt);
    ops::CrossEntropyConfig ce;
    ce.label_smoothing = 0.1;

    Tensor x = randn({a.batch, 3, a.img, a.img}, DType::f32, gen).to(dev);
    Tensor y = randint(0, a.classes, {a.batch}, DType::i64, gen).to(dev);
    const DType amp = a.amp == "bf16" ? DType::bf16 : a.amp == "fp16" ? DType::f16 : DType::f32;
    // fp16 needs loss scaling; otherwise the scaler is disabled and step() is exactly adamw.step().
    cuda::GradScalerConfig scaler_cfg;
    scaler_cfg.enabled = amp == DType::f16;
    cuda::GradScaler scaler(scaler_cfg);

    auto train_step = [&] {
      Tensor loss;
      {
        cuda::AutocastScope autocast(amp);
        loss = net.loss(x, y, ce);
        scaler.scale_loss(loss).backward();
      }
      scaler.step(adamw);
      adamw.zero_grad();
      return loss.item();
    };
    net.train();
    for (std::int64_t i = 0; i < a.warmup; ++i) train_step();
    // On the GPU the profile is device time: each op waits for the device before and after (serialising the two,
    // so the images/s of a --profile run are not representative).
    if (a.profile) profiler::enable(true), cuda::profile_device_time(dev.is_cuda());
    auto t0 = std::chrono::steady_clock::now();
    double last_loss = 0;
    for (std::int64_t i = 0; i < a.steps; ++i) last_loss = train_step();
    const double train_s = seconds_since(t0);
    if (a.profile) {
      profiler::enable(false);
      std::fprintf(stderr, "-- train: %lld steps of batch %lld at %lld px%s --\n%s", static_cast<long long>(a.steps),
                   static_cast<long long>(a.batch), static_cast<long long>(a.img),
                   dev.is_cuda() ? ", device time per op" : "", profiler::report(25).c_str());
      profiler::reset();
    }
    if (!std::isfinite(last_loss)) {
      std::fprintf(stderr, "train_step: the loss became %g\n", last_loss);
      return 1;
    }

    cuda::AutocastScope embed_autocast(amp);
    for (std::int64_t i = 0; i < std::min<std::int64_t>(a.warmup, 2); ++i) (void)net.embed(x);
    if (a.profile) profiler::enable(true);
    t0 = std::chrono::steady_clock::now();
    double checksum = 0;
    for (std::int64_t i = 0; i < a.embed_steps; ++i) checksum += ops::sum(net.embed(x)).item();
    const double embed_s = seconds_since(t0);
    if (a.profile) {
      profiler::enable(false);
      cuda::profile_device_time(false);
      std::fprintf(stderr, "-- embed --\n%s", profiler::report(10).c_str());
    }
    if (!std::isfinite(checksum)) {
      std::fprintf(stderr, "train_step: the embedding is not finite\n");
      return 1;
    }

    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("train_images_per_s=%.1f embed_images_per_s=%.1f peak_rss_mb=%.1f\n",
                static_cast<double>(a.steps * a.batch) / train_s, static_cast<double>(a.embed_steps * a.batch) / embed_s,
                static_cast<double>(ru.ru_maxrss) / 1024.0);
    std::fprintf(stderr, "train_step: %s, img %lld, batch %lld, %s%s, %d threads, final loss %.4f\n", a.model.c_str(),
                 static_cast<long long>(a.img), static_cast<long long>(a.batch), a.device.c_str(),
                 a.amp == "bf16" ? " (bf16 autocast)" : a.amp == "fp16" ? " (fp16 autocast + loss scaling)" : "",
                 a.threads, last_loss);
    if (scaler.enabled())
      std::fprintf(stderr, "train_step: loss scale %g, %lld of %lld steps skipped (inf/NaN gradients)\n",
                   scaler.scale(), static_cast<long long>(scaler.skipped_steps()),
                   static_cast<long long>(a.warmup + a.steps));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
