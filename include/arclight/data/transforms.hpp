// The augmentations of the training pipeline, with albumentations (1.x) semantics, and the Pipeline that
// chains them. Each transform holds its parameters as a plain struct, applies itself with probability p
// (one uniform draw u < p first, as albumentations' BasicTransform, then its parameter draws), and takes
// every random number from an arclight::RandomStream keyed by (seed, epoch, sample index), so a sample's
// augmentation does not depend on which worker thread runs it or in what order. A pipeline is built in
// code or from a config string such as
//     "hflip(p=0.5) | jpeg(lo=99,hi=100) | ssr(shift=0.2,scale=0.2,rotate=10,p=0.7) | resize(h=224,w=224)"
// and `describe()` prints the same grammar back. The reference pipeline of METHOD.md §6 is the preset
// "reference". Normalisation (mean/std) is the final step done by to_tensor().
#pragma once

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/core/rng.hpp"
#include "arclight/data/image.hpp"
#include "arclight/data/image_io.hpp"
#include "arclight/data/image_ops.hpp"

namespace arclight::data {

// The random stream of one sample in one epoch. requires: epoch < 2^24, index < 2^40.
inline RandomStream augment_stream(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index) {
  ARCLIGHT_CHECK(epoch < (std::uint64_t{1} << 24) && index < (std::uint64_t{1} << 40), "augment_stream",
                 "epoch ", epoch, " / index ", index, " out of range (epoch < 2^24, index < 2^40)");
  return RandomStream(seed, (epoch << 40) | index);
}

namespace detail {
inline std::string fmt_num(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}
inline const char* interp_name(Interpolation i) {
  switch (i) {
    case Interpolation::nearest: return "nearest";
    case Interpolation::linear: return "linear";
    case Interpolation::area: return "area";
    default: return "auto";
  }
}
inline const char* border_name(BorderMode b) { return b == BorderMode::constant ? "constant" : "reflect101"; }
inline void check_prob(double p, const char* where) {
  ARCLIGHT_CHECK(p >= 0.0 && p <= 1.0, where, "probability p = ", p, ", expected [0, 1]");
}
// Python's int(round(x)) (round half to even).
inline long long py_round(double x) { return static_cast<long long>(std::nearbyint(x)); }
}  // namespace detail

// Base of all transforms: owns the probability.
class Transform {
 public:
  explicit Transform(double p) : p_(p) {}
  virtual ~Transform() = default;
  double p() const { return p_; }
  // Draws u ~ U[0, 1) and, when u < p, applies the transform (drawing its parameters from `rng`).
  // requires: a non-empty image. Replaces `img` (in place where the operation allows).
  void operator()(Image& img, RandomStream& rng) const {
    if (rng.uniform() < p_) apply(img, rng);
  }
  // Applies unconditionally (parameters still drawn from rng).
  virtual void apply(Image& img, RandomStream& rng) const = 0;
  // The config-string form, e.g. "hflip(p=0.5)"; parse_pipeline() reads it back.
  virtual std::string describe() const = 0;

 protected:
  double p_;
};

// cv2.flip(img, 1). Default p = 0.5.
class HorizontalFlip final : public Transform {
 public:
  explicit HorizontalFlip(double p = 0.5) : Transform(p) { detail::check_prob(p, "HorizontalFlip"); }
  void apply(Image& img, RandomStream&) const override { hflip_inplace(img); }
  std::string describe() const override { return str_cat("hflip(p=", detail::fmt_num(p_), ")"); }
};

// albumentations ImageCompression (JPEG): quality ~ randint(lo, hi) inclusive, then encode + decode.
class ImageCompression final : public Transform {
 public:
  ImageCompression(int quality_lo = 99, int quality_hi = 100, double p = 0.5)
      : Transform(p), lo_(quality_lo), hi_(quality_hi) {
    detail::check_prob(p, "ImageCompression");
    ARCLIGHT_CHECK(lo_ >= 1 && hi_ <= 100 && lo_ <= hi_, "ImageCompression", "quality range [", lo_, ", ", hi_,
                   "], expected 1 <= lo <= hi <= 100");
  }
  void apply(Image& img, RandomStream& rng) const override {
    const int q = static_cast<int>(rng.randint(lo_, hi_));
    const auto bytes = encode_jpeg(img, q);
    DecodeOptions opts;
    opts.channels = img.channels == 1 ? 1 : 3;
    img = decode_image(bytes, opts, "ImageCompression");
  }
  std::string describe() const override {
    return str_cat("jpeg(lo=", lo_, ",hi=", hi_, ",p=", detail::fmt_num(p_), ")");
  }
  int quality_lo() const { return lo_; }
  int quality_hi() const { return hi_; }

 private:
  int lo_, hi_;
};

// Where ShiftScaleRotate rotates about: albumentations 1.x uses (width/2, height/2); `pixel_centre` uses
// the geometric centre of the pixel grid ((width-1)/2, (height-1)/2), under which a 90 degree rotation
// of a square image is exactly np.rot90.
enum class WarpCentre { albumentations, pixel_centre };

// albumentations ShiftScaleRotate: angle ~ U(-rotate, rotate) degrees, scale ~ U(1 - scale, 1 + scale),
// dx ~ U(-shift_x, shift_x), dy ~ U(-shift_y, shift_y) (drawn in that order); the matrix is
// getRotationMatrix2D(centre, angle, scale) with dx*width, dy*height added to its translation, applied
// with warpAffine onto an image of the same size.
struct ShiftScaleRotateParams {
  double shift_x = 0.0625, shift_y = 0.0625, scale = 0.1, rotate = 45.0;
  Interpolation interpolation = Interpolation::linear;
  BorderMode border = BorderMode::reflect101;
  std::uint8_t value = 0;
  WarpCentre centre = WarpCentre::albumentations;
  double p = 0.5;
};

class ShiftScaleRotate final : public Transform {
 public:
  explicit ShiftScaleRotate(ShiftScaleRotateParams prm = {}) : Transform(prm.p), prm_(prm) {
    detail::check_prob(prm.p, "ShiftScaleRotate");
    ARCLIGHT_CHECK(prm.shift_x >= 0 && prm.shift_y >= 0 && prm.scale >= 0 && prm.scale < 1 && prm.rotate >= 0 &&
                       prm.rotate <= 360,
                   "ShiftScaleRotate", "limits shift ", prm.shift_x, "/", prm.shift_y, ", scale ", prm.scale,
                   ", rotate ", prm.rotate, ": expected shifts >= 0, 0 <= scale < 1, 0 <= rotate <= 360");
    ARCLIGHT_CHECK(prm.interpolation == Interpolation::linear || prm.interpolation == Interpolation::nearest,
                   "ShiftScaleRotate", "interpolation must be linear or nearest");
  }
  // The matrix for given draws (exposed for tests and for a deterministic warp).
  static Affine matrix(int height, int width, double angle, double scale, double dx, double dy, WarpCentre centre) {
    const double cx = centre == WarpCentre::albumentations ? width / 2.0 : (width - 1) / 2.0;
    const double cy = centre == WarpCentre::albumentations ? height / 2.0 : (height - 1) / 2.0;
    Affine m = rotation_matrix(cx, cy, angle, scale);
    m[2] += dx * width;
    m[5] += dy * height;
    return m;
  }
  // Applies fixed draws: angle (degrees), scale, dx, dy (fractions of width/height).
  Image warp(const Image& img, double angle, double scale, double dx, double dy) const {
    return warp_affine(img, matrix(img.height, img.width, angle, scale, dx, dy, prm_.centre), img.height, img.width,
                       prm_.interpolation, prm_.border, prm_.value);
  }
  void apply(Image& img, RandomStream& rng) const override {
    const double angle = rng.uniform(-prm_.rotate, prm_.rotate);
    const double scale = rng.uniform(1 - prm_.scale, 1 + prm_.scale);
    const double dx = rng.uniform(-prm_.shift_x, prm_.shift_x);
    const double dy = rng.uniform(-prm_.shift_y, prm_.shift_y);
    img = warp(img, angle, scale, dx, dy);
  }
  std::string describe() const override {
    using detail::fmt_num;
    return str_cat("ssr(shift_x=", fmt_num(prm_.shift_x), ",shift_y=", fmt_num(prm_.shift_y),
                   ",scale=", fmt_num(prm_.scale), ",rotate=", fmt_num(prm_.rotate),
                   ",interp=", detail::interp_name(prm_.interpolation), ",border=", detail::border_name(prm_.border),
                   ",value=", int{prm_.value},
                   ",centre=", prm_.centre == WarpCentre::albumentations ? "albumentations" : "pixel",
                   ",p=", fmt_num(p_), ")");
  }
  const ShiftScaleRotateParams& params() const { return prm_; }

 private:
  ShiftScaleRotateParams prm_;
};

// A hole as [x1, x2) x [y1, y2).
struct Hole {
  int x1, y1, x2, y2;
};

// albumentations Cutout: `num_holes` holes of a fixed size (hole_h x hole_w pixels, or fraction * side
// when `fraction` > 0, truncated like Python's int()). For each hole y ~ randint(0, H), x ~ randint(0, W)
// (inclusive, y drawn first); y1 = clip(y - hole_h // 2, 0, H), y2 = clip(y1 + hole_h, 0, H), and the
// same for x. So a hole is centred at the drawn pixel and clipped to the image at the bottom/right; at
// the top/left its start is clamped to 0 and it keeps its full size (albumentations' exact behaviour).
class Cutout final : public Transform {
 public:
  Cutout(int num_holes = 8, int hole_h = 8, int hole_w = 8, std::uint8_t fill = 0, double p = 0.5,
         double fraction = 0.0)
      : Transform(p), num_holes_(num_holes), hole_h_(hole_h), hole_w_(hole_w), fill_(fill), fraction_(fraction) {
    detail::check_prob(p, "Cutout");
    ARCLIGHT_CHECK(num_holes >= 0 && num_holes <= 1024, "Cutout", "num_holes = ", num_holes, ", expected 0..1024");
    ARCLIGHT_CHECK(fraction >= 0 && fraction <= 1, "Cutout", "fraction = ", fraction, ", expected [0, 1]");
    ARCLIGHT_CHECK(fraction > 0 || (hole_h > 0 && hole_w > 0), "Cutout", "hole size ", hole_h, "x", hole_w,
                   ", expected positive (or a fraction)");
  }
  // Holes for an image of the given size, drawn from rng (the parameter draws of apply()).
  std::vector<Hole> draw_holes(int height, int width, RandomStream& rng) const {
    const int hh = fraction_ > 0 ? static_cast<int>(fraction_ * height) : hole_h_;
    const int hw = fraction_ > 0 ? static_cast<int>(fraction_ * width) : hole_w_;
    std::vector<Hole> holes;
    for (int n = 0; n < num_holes_; ++n) {
      const int y = static_cast<int>(rng.randint(0, height));
      const int x = static_cast<int>(rng.randint(0, width));
      const int y1 = std::clamp(y - hh / 2, 0, height), y2 = std::clamp(y1 + hh, 0, height);
      const int x1 = std::clamp(x - hw / 2, 0, width), x2 = std::clamp(x1 + hw, 0, width);
      holes.push_back({x1, y1, x2, y2});
    }
    return holes;
  }
  void apply(Image& img, RandomStream& rng) const override {
    for (const Hole& h : draw_holes(img.height, img.width, rng)) fill_rect(img, h.x1, h.y1, h.x2, h.y2, fill_);
  }
  std::string describe() const override {
    if (fraction_ > 0)
      return str_cat("cutout(holes=", num_holes_, ",frac=", detail::fmt_num(fraction_), ",fill=", int{fill_},
                     ",p=", detail::fmt_num(p_), ")");
    return str_cat("cutout(holes=", num_holes_, ",h=", hole_h_, ",w=", hole_w_, ",fill=", int{fill_},
                   ",p=", detail::fmt_num(p_), ")");
  }

 private:
  int num_holes_, hole_h_, hole_w_;
  std::uint8_t fill_;
  double fraction_;
};

// albumentations CoarseDropout: n ~ randint(min_holes, max_holes) holes; each hole_h ~ randint(min_h,
// max_h) pixels (or int(H * U(min_h, max_h)) when `fractional`), hole_w likewise, then
// y1 ~ randint(0, H - hole_h), x1 ~ randint(0, W - hole_w): holes lie fully inside the image. A hole
// larger than the image is shrunk to it (albumentations would raise).
struct CoarseDropoutParams {
  int min_holes = 8, max_holes = 8;
  double min_height = 8, max_height = 8, min_width = 8, max_width = 8;
  bool fractional = false;
  std::uint8_t fill = 0;
  double p = 0.5;
};

class CoarseDropout final : public Transform {
 public:
  explicit CoarseDropout(CoarseDropoutParams prm = {}) : Transform(prm.p), prm_(prm) {
    detail::check_prob(prm.p, "CoarseDropout");
    ARCLIGHT_CHECK(prm.min_holes >= 0 && prm.min_holes <= prm.max_holes && prm.max_holes <= 1024, "CoarseDropout",
                   "holes [", prm.min_holes, ", ", prm.max_holes, "], expected 0 <= min <= max <= 1024");
    ARCLIGHT_CHECK(prm.min_height > 0 && prm.min_height <= prm.max_height && prm.min_width > 0 &&
                       prm.min_width <= prm.max_width,
                   "CoarseDropout", "sizes h [", prm.min_height, ", ", prm.max_height, "], w [", prm.min_width, ", ",
                   prm.max_width, "], expected 0 < min <= max");
    if (prm.fractional)
      ARCLIGHT_CHECK(prm.max_height <= 1 && prm.max_width <= 1, "CoarseDropout",
                     "fractional sizes must be <= 1, got ", prm.max_height, ", ", prm.max_width);
    else
      ARCLIGHT_CHECK(prm.min_height == std::floor(prm.min_height) && prm.max_height == std::floor(prm.max_height) &&
                         prm.min_width == std::floor(prm.min_width) && prm.max_width == std::floor(prm.max_width),
                     "CoarseDropout", "pixel sizes must be integers");
  }
  std::vector<Hole> draw_holes(int height, int width, RandomStream& rng) const {
    std::vector<Hole> holes;
    const int n = static_cast<int>(rng.randint(prm_.min_holes, prm_.max_holes));
    for (int k = 0; k < n; ++k) {
      int hh, hw;
      if (prm_.fractional) {
        hh = static_cast<int>(height * rng.uniform(prm_.min_height, prm_.max_height));
        hw = static_cast<int>(width * rng.uniform(prm_.min_width, prm_.max_width));
      } else {
        hh = static_cast<int>(rng.randint(static_cast<std::int64_t>(prm_.min_height), static_cast<std::int64_t>(prm_.max_height)));
        hw = static_cast<int>(rng.randint(static_cast<std::int64_t>(prm_.min_width), static_cast<std::int64_t>(prm_.max_width)));
      }
      hh = std::min(hh, height);
      hw = std::min(hw, width);
      const int y1 = static_cast<int>(rng.randint(0, height - hh));
      const int x1 = static_cast<int>(rng.randint(0, width - hw));
      holes.push_back({x1, y1, x1 + hw, y1 + hh});
    }
    return holes;
  }
  void apply(Image& img, RandomStream& rng) const override {
    for (const Hole& h : draw_holes(img.height, img.width, rng)) fill_rect(img, h.x1, h.y1, h.x2, h.y2, prm_.fill);
  }
  std::string describe() const override {
    using detail::fmt_num;
    return str_cat("coarse_dropout(min_holes=", prm_.min_holes, ",max_holes=", prm_.max_holes,
                   ",min_h=", fmt_num(prm_.min_height), ",max_h=", fmt_num(prm_.max_height),
                   ",min_w=", fmt_num(prm_.min_width), ",max_w=", fmt_num(prm_.max_width),
                   ",fractional=", prm_.fractional ? 1 : 0, ",fill=", int{prm_.fill}, ",p=", fmt_num(p_), ")");
  }

 private:
  CoarseDropoutParams prm_;
};

// albumentations Resize (p = 1 by default): resize() to height x width.
class Resize final : public Transform {
 public:
  Resize(int height, int width, Interpolation interp = Interpolation::automatic, double p = 1.0)
      : Transform(p), h_(height), w_(width), interp_(interp) {
    detail::check_prob(p, "Resize");
    ARCLIGHT_CHECK(height > 0 && width > 0 && height <= 65536 && width <= 65536, "Resize", "size ", height, "x",
                   width, ", expected 1..65536");
  }
  void apply(Image& img, RandomStream&) const override { img = resize(img, h_, w_, interp_); }
  std::string describe() const override {
    return str_cat("resize(h=", h_, ",w=", w_, ",interp=", detail::interp_name(interp_), ",p=", detail::fmt_num(p_), ")");
  }

 private:
  int h_, w_;
  Interpolation interp_;
};

// albumentations (= torchvision) RandomResizedCrop: up to 10 tries of area ~ U(scale) * H * W and
// log-aspect ~ U(log ratio), w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); the first
// that fits is placed at y ~ randint(0, H - h), x ~ randint(0, W - w); otherwise a centre crop clamped
// to the ratio range. The crop is resized (linear) to height x width.
struct RandomResizedCropParams {
  int height = 224, width = 224;
  double scale_lo = 0.08, scale_hi = 1.0;
  double ratio_lo = 3.0 / 4.0, ratio_hi = 4.0 / 3.0;
  Interpolation interpolation = Interpolation::linear;
  double p = 1.0;
};

class RandomResizedCrop final : public Transform {
 public:
  explicit RandomResizedCrop(RandomResizedCropParams prm = {}) : Transform(prm.p), prm_(prm) {
    detail::check_prob(prm.p, "RandomResizedCrop");
    ARCLIGHT_CHECK(prm.height > 0 && prm.width > 0 && prm.height <= 65536 && prm.width <= 65536,
                   "RandomResizedCrop", "size ", prm.height, "x", prm.width, ", expected 1..65536");
    ARCLIGHT_CHECK(prm.scale_lo > 0 && prm.scale_lo <= prm.scale_hi && prm.ratio_lo > 0 &&
                       prm.ratio_lo <= prm.ratio_hi,
                   "RandomResizedCrop", "scale [", prm.scale_lo, ", ", prm.scale_hi, "], ratio [", prm.ratio_lo, ", ",
                   prm.ratio_hi, "], expected 0 < lo <= hi");
  }
  // The crop rectangle {y, x, h, w} drawn for an H x W image.
  std::array<int, 4> draw_crop(int H, int W, RandomStream& rng) const {
    const double area = static_cast<double>(H) * W;
    const double lr0 = std::log(prm_.ratio_lo), lr1 = std::log(prm_.ratio_hi);
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target = rng.uniform(prm_.scale_lo, prm_.scale_hi) * area;
      const double aspect = std::exp(rng.uniform(lr0, lr1));
      const long long w = detail::py_round(std::sqrt(target * aspect));
      const long long h = detail::py_round(std::sqrt(target / aspect));
      if (w > 0 && w <= W && h > 0 && h <= H) {
        const int y = static_cast<int>(rng.randint(0, H - h));
        const int x = static_cast<int>(rng.randint(0, W - w));
        return {y, x, static_cast<int>(h), static_cast<int>(w)};
      }
    }
    const double in_ratio = static_cast<double>(W) / H;
    long long w = W, h = H;
    if (in_ratio < prm_.ratio_lo) h = detail::py_round(w / prm_.ratio_lo);
    else if (in_ratio > prm_.ratio_hi) w = detail::py_round(h * prm_.ratio_hi);
    h = std::clamp<long long>(h, 1, H);
    w = std::clamp<long long>(w, 1, W);
    return {static_cast<int>((H - h) / 2), static_cast<int>((W - w) / 2), static_cast<int>(h), static_cast<int>(w)};
  }
  void apply(Image& img, RandomStream& rng) const override {
    const auto c = draw_crop(img.height, img.width, rng);
    img = resize(crop(img, c[0], c[1], c[2], c[3]), prm_.height, prm_.width, prm_.interpolation);
  }
  std::string describe() const override {
    using detail::fmt_num;
    return str_cat("rrc(h=", prm_.height, ",w=", prm_.width, ",scale_lo=", fmt_num(prm_.scale_lo),
                   ",scale_hi=", fmt_num(prm_.scale_hi), ",ratio_lo=", fmt_num(prm_.ratio_lo),
                   ",ratio_hi=", fmt_num(prm_.ratio_hi), ",interp=", detail::interp_name(prm_.interpolation),
                   ",p=", fmt_num(p_), ")");
  }

 private:
  RandomResizedCropParams prm_;
};

// albumentations PadIfNeeded (p = 1): see pad_if_needed().
class PadIfNeeded final : public Transform {
 public:
  PadIfNeeded(int min_h, int min_w, BorderMode border = BorderMode::constant, std::uint8_t value = 0, double p = 1.0)
      : Transform(p), h_(min_h), w_(min_w), border_(border), value_(value) {
    detail::check_prob(p, "PadIfNeeded");
    ARCLIGHT_CHECK(min_h > 0 && min_w > 0 && min_h <= 65536 && min_w <= 65536, "PadIfNeeded", "size ", min_h, "x",
                   min_w, ", expected 1..65536");
  }
  void apply(Image& img, RandomStream&) const override { img = pad_if_needed(img, h_, w_, border_, value_); }
  std::string describe() const override {
    return str_cat("pad(h=", h_, ",w=", w_, ",border=", detail::border_name(border_), ",value=", int{value_},
                   ",p=", detail::fmt_num(p_), ")");
  }

 private:
  int h_, w_;
  BorderMode border_;
  std::uint8_t value_;
};

// Grey -> RGB by replication (p = 1).
class ToRGB final : public Transform {
 public:
  explicit ToRGB(double p = 1.0) : Transform(p) { detail::check_prob(p, "ToRGB"); }
  void apply(Image& img, RandomStream&) const override { img = grey_to_rgb(img); }
  std::string describe() const override { return str_cat("to_rgb(p=", detail::fmt_num(p_), ")"); }
};

// albumentations Normalize, applied by Pipeline::to_tensor: (x - mean * max_pixel) / (std * max_pixel).
struct NormalizeSpec {
  std::vector<float> mean{0.0f};
  std::vector<float> std_dev{1.0f};
  float max_pixel_value = 255.0f;
  static NormalizeSpec imagenet() { return {{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}, 255.0f}; }
};

class Pipeline {
 public:
  Pipeline() = default;

  Pipeline& add(std::shared_ptr<const Transform> t) {
    ARCLIGHT_CHECK(t != nullptr, "Pipeline::add", "null transform");
    steps_.push_back(std::move(t));
    return *this;
  }
  template <typename T, typename = std::enable_if_t<std::is_base_of_v<Transform, T>>>
  Pipeline& add(T t) {
    return add(std::make_shared<const T>(std::move(t)));
  }
  Pipeline& normalize(NormalizeSpec spec) {
    ARCLIGHT_CHECK(!spec.mean.empty() && spec.mean.size() == spec.std_dev.size() && spec.mean.size() <= 4,
                   "Pipeline::normalize", "mean has ", spec.mean.size(), " values and std ", spec.std_dev.size(),
                   ", expected the same count, 1..4");
    for (float s : spec.std_dev)
      ARCLIGHT_CHECK(s > 0 && std::isfinite(s), "Pipeline::normalize", "std value ", s, ", expected > 0");
    ARCLIGHT_CHECK(spec.max_pixel_value > 0, "Pipeline::normalize", "max_pixel_value ", spec.max_pixel_value);
    norm_ = std::move(spec);
    return *this;
  }

  // Runs every step on `img` with draws from `rng`, in order. In place.
  void apply(Image& img, RandomStream& rng) const {
    for (const auto& t : steps_) (*t)(img, rng);
  }
  // Runs the pipeline for sample `index` of `epoch` under `seed`: the same inputs give the same output
  // on any thread.
  Image apply(Image img, std::uint64_t seed, std::uint64_t epoch, std::uint64_t index) const {
    RandomStream rng = augment_stream(seed, epoch, index);
    apply(img, rng);
    return img;
  }
  // HWC uint8 -> normalised CHW float into `out` (C*H*W floats, overwritten).
  void to_tensor(const Image& img, float* out) const {
    to_chw_float(img, norm_.mean, norm_.std_dev, out, norm_.max_pixel_value);
  }

  const std::vector<std::shared_ptr<const Transform>>& steps() const { return steps_; }
  const NormalizeSpec& normalization() const { return norm_; }
  std::size_t size() const { return steps_.size(); }

  // The config string (parse_pipeline(describe()) rebuilds an equal pipeline).
  std::string describe() const {
    std::string s;
    for (const auto& t : steps_) s += (s.empty() ? "" : " | ") + t->describe();
    const bool default_norm = norm_.mean == std::vector<float>{0.0f} && norm_.std_dev == std::vector<float>{1.0f} &&
                              norm_.max_pixel_value == 255.0f;
    if (!default_norm) {
      auto list = [](const std::vector<float>& v) {
        std::string r;
        for (float x : v) r += (r.empty() ? "" : "/") + detail::fmt_num(x);
        return r;
      };
      s += str_cat(s.empty() ? "" : " | ", "normalize(mean=", list(norm_.mean), ",std=", list(norm_.std_dev),
                   ",max=", detail::fmt_num(norm_.max_pixel_value), ")");
    }
    return s.empty() ? std::string("none") : s;
  }

 private:
  std::vector<std::shared_ptr<const Transform>> steps_;
  NormalizeSpec norm_;
};

// ---- config strings --------------------------------------------------------------------------------
namespace detail {

// The key=value arguments of one step; every key must be consumed (unknown keys are an error).
class StepArgs {
 public:
  StepArgs(std::string step, std::map<std::string, std::string> kv) : step_(std::move(step)), kv_(std::move(kv)) {}

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  std::string str(const std::string& key, const std::string& def) {
    used_.insert(key);
    auto it = kv_.find(key);
    return it == kv_.end() ? def : it->second;
  }
  double num(const std::string& key, double def) {
    used_.insert(key);
    auto it = kv_.find(key);
    if (it == kv_.end()) return def;
    double v = 0;
    const auto& s = it->second;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    ARCLIGHT_CHECK(r.ec == std::errc() && r.ptr == s.data() + s.size() && std::isfinite(v), "parse_pipeline",
                   step_, ": ", key, "='", s, "' is not a number");
    return v;
  }
  int integer(const std::string& key, int def) {
    const double v = num(key, def);
    ARCLIGHT_CHECK(v == std::floor(v) && std::abs(v) < 1e9, "parse_pipeline", step_, ": ", key, "=", v,
                   " is not an integer");
    return static_cast<int>(v);
  }
  std::uint8_t byte(const std::string& key, int def) {
    const int v = integer(key, def);
    ARCLIGHT_CHECK(v >= 0 && v <= 255, "parse_pipeline", step_, ": ", key, "=", v, ", expected 0..255");
    return static_cast<std::uint8_t>(v);
  }
  std::vector<float> floats(const std::string& key, std::vector<float> def) {
    used_.insert(key);
    auto it = kv_.find(key);
    if (it == kv_.end()) return def;
    std::vector<float> out;
    std::string_view s = it->second;
    while (true) {
      const auto slash = s.find('/');
      const std::string_view part = s.substr(0, slash);
      float v = 0;
      auto r = std::from_chars(part.data(), part.data() + part.size(), v);
      ARCLIGHT_CHECK(!part.empty() && r.ec == std::errc() && r.ptr == part.data() + part.size(), "parse_pipeline",
                     step_, ": ", key, "='", it->second, "' is not a '/'-separated list of numbers");
      out.push_back(v);
      if (slash == std::string_view::npos) break;
      s.remove_prefix(slash + 1);
    }
    return out;
  }
  Interpolation interp(const std::string& key, Interpolation def) {
    const std::string v = str(key, interp_name(def));
    if (v == "nearest") return Interpolation::nearest;
    if (v == "linear" || v == "bilinear") return Interpolation::linear;
    if (v == "area") return Interpolation::area;
    if (v == "auto") return Interpolation::automatic;
    fail("parse_pipeline", step_, ": ", key, "='", v, "', expected nearest, linear, area or auto");
  }
  BorderMode border(const std::string& key, BorderMode def) {
    const std::string v = str(key, border_name(def));
    if (v == "constant") return BorderMode::constant;
    if (v == "reflect101" || v == "reflect_101") return BorderMode::reflect101;
    fail("parse_pipeline", step_, ": ", key, "='", v, "', expected constant or reflect101");
  }
  void finish() const {
    for (const auto& [k, v] : kv_)
      if (!used_.count(k)) {
        std::string known;
        for (const auto& u : used_) known += (known.empty() ? "" : ", ") + u;
        fail("parse_pipeline", step_, ": unknown argument '", k, "', expected one of: ", known);
      }
  }

 private:
  std::string step_;
  std::map<std::string, std::string> kv_;
  std::set<std::string> used_;
};

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace detail

Pipeline preset_pipeline(std::string_view name);

// Builds a pipeline from "step | step | ...", step = name or name(key=value, ...). Names (aliases):
//   hflip (horizontal_flip): p=0.5
//   jpeg (image_compression): lo=99, hi=100, p=0.5
//   ssr (shift_scale_rotate): shift=, shift_x=0.0625, shift_y=0.0625, scale=0.1, rotate=45, interp=linear,
//       border=reflect101, value=0, centre=albumentations|pixel, p=0.5
//   cutout: holes=8, h=8, w=8 | size= (both) | frac= (fraction of each side), fill=0, p=0.5
//   coarse_dropout: max_holes=8, min_holes=max_holes, max_h=8, min_h=max_h, max_w=8, min_w=max_w,
//       fractional=0, fill=0, p=0.5
//   resize: h, w (or size), interp=auto, p=1;  rrc (random_resized_crop): h, w (or size), scale_lo=0.08,
//       scale_hi=1, ratio_lo=0.75, ratio_hi=1.3333, interp=linear, p=1
//   pad (pad_if_needed): h, w (or size), border=constant, value=0, p=1;  to_rgb: p=1
//   normalize: mean=a/b/c, std=a/b/c, max=255, or preset=imagenet
//   a preset name ("reference", "reference_eval", "none") expands in place.
// throws: arclight::Error naming the step for an unknown name or argument, a bad value, or bad syntax.
inline Pipeline parse_pipeline(std::string_view config) {
  Pipeline out;
  config = detail::trim(config);
  if (config.empty()) return out;
  std::size_t pos = 0;
  while (pos <= config.size()) {
    const auto bar = config.find('|', pos);
    const std::string_view step_text =
        detail::trim(config.substr(pos, bar == std::string_view::npos ? std::string_view::npos : bar - pos));
    pos = bar == std::string_view::npos ? config.size() + 1 : bar + 1;
    ARCLIGHT_CHECK(!step_text.empty(), "parse_pipeline", "empty step in '", config, "'");
    std::string name;
    std::map<std::string, std::string> kv;
    const auto open = step_text.find('(');
    if (open == std::string_view::npos) {
      name = std::string(step_text);
    } else {
      ARCLIGHT_CHECK(step_text.back() == ')', "parse_pipeline", "step '", step_text, "': missing ')'");
      name = std::string(detail::trim(step_text.substr(0, open)));
      std::string_view args = step_text.substr(open + 1, step_text.size() - open - 2);
      while (!detail::trim(args).empty()) {
        const auto comma = args.find(',');
        const std::string_view item = detail::trim(args.substr(0, comma));
        const auto eq = item.find('=');
        ARCLIGHT_CHECK(eq != std::string_view::npos, "parse_pipeline", "step '", name, "': argument '", item,
                       "' is not key=value");
        const std::string key(detail::trim(item.substr(0, eq)));
        const std::string val(detail::trim(item.substr(eq + 1)));
        ARCLIGHT_CHECK(!key.empty() && !val.empty(), "parse_pipeline", "step '", name, "': argument '", item,
                       "' has an empty key or value");
        ARCLIGHT_CHECK(kv.emplace(key, val).second, "parse_pipeline", "step '", name, "': argument '", key,
                       "' given twice");
        if (comma == std::string_view::npos) break;
        args.remove_prefix(comma + 1);
      }
    }
    for (char c : name)
      ARCLIGHT_CHECK(std::isalnum(static_cast<unsigned char>(c)) || c == '_', "parse_pipeline", "bad step name '",
                     name, "'");
    detail::StepArgs a(name, kv);
    auto size_pair = [&](int& h, int& w) {
      const int s = a.integer("size", 0);
      h = a.integer("h", s);
      w = a.integer("w", s);
      ARCLIGHT_CHECK(h > 0 && w > 0, "parse_pipeline", name, ": needs h and w (or size)");
    };
    if (name == "hflip" || name == "horizontal_flip") {
      out.add(HorizontalFlip(a.num("p", 0.5)));
    } else if (name == "jpeg" || name == "image_compression") {
      const int lo = a.integer("lo", 99);
      out.add(ImageCompression(lo, a.integer("hi", std::max(lo, 100)), a.num("p", 0.5)));
    } else if (name == "ssr" || name == "shift_scale_rotate") {
      ShiftScaleRotateParams prm;
      const double shift = a.num("shift", prm.shift_x);
      prm.shift_x = a.num("shift_x", shift);
      prm.shift_y = a.num("shift_y", shift);
      prm.scale = a.num("scale", prm.scale);
      prm.rotate = a.num("rotate", prm.rotate);
      prm.interpolation = a.interp("interp", prm.interpolation);
      prm.border = a.border("border", prm.border);
      prm.value = a.byte("value", 0);
      const std::string centre = a.str("centre", "albumentations");
      ARCLIGHT_CHECK(centre == "albumentations" || centre == "pixel", "parse_pipeline", name, ": centre='", centre,
                     "', expected albumentations or pixel");
      prm.centre = centre == "pixel" ? WarpCentre::pixel_centre : WarpCentre::albumentations;
      prm.p = a.num("p", 0.5);
      out.add(ShiftScaleRotate(prm));
    } else if (name == "cutout") {
      const int holes = a.integer("holes", 8);
      const double frac = a.num("frac", 0.0);
      const int size = a.integer("size", 8);
      const int h = a.integer("h", size), w = a.integer("w", size);
      out.add(Cutout(holes, h, w, a.byte("fill", 0), a.num("p", 0.5), frac));
    } else if (name == "coarse_dropout") {
      CoarseDropoutParams prm;
      prm.max_holes = a.integer("max_holes", 8);
      prm.min_holes = a.integer("min_holes", prm.max_holes);
      prm.max_height = a.num("max_h", 8);
      prm.min_height = a.num("min_h", prm.max_height);
      prm.max_width = a.num("max_w", 8);
      prm.min_width = a.num("min_w", prm.max_width);
      prm.fractional = a.integer("fractional", 0) != 0;
      prm.fill = a.byte("fill", 0);
      prm.p = a.num("p", 0.5);
      out.add(CoarseDropout(prm));
    } else if (name == "resize") {
      int h, w;
      size_pair(h, w);
      out.add(Resize(h, w, a.interp("interp", Interpolation::automatic), a.num("p", 1.0)));
    } else if (name == "rrc" || name == "random_resized_crop") {
      RandomResizedCropParams prm;
      size_pair(prm.height, prm.width);
      prm.scale_lo = a.num("scale_lo", prm.scale_lo);
      prm.scale_hi = a.num("scale_hi", prm.scale_hi);
      prm.ratio_lo = a.num("ratio_lo", prm.ratio_lo);
      prm.ratio_hi = a.num("ratio_hi", prm.ratio_hi);
      prm.interpolation = a.interp("interp", prm.interpolation);
      prm.p = a.num("p", 1.0);
      out.add(RandomResizedCrop(prm));
    } else if (name == "pad" || name == "pad_if_needed") {
      int h, w;
      size_pair(h, w);
      out.add(PadIfNeeded(h, w, a.border("border", BorderMode::constant), a.byte("value", 0), a.num("p", 1.0)));
    } else if (name == "to_rgb") {
      out.add(ToRGB(a.num("p", 1.0)));
    } else if (name == "normalize") {
      const std::string preset = a.str("preset", "");
      NormalizeSpec spec;
      if (preset == "imagenet") spec = NormalizeSpec::imagenet();
      else ARCLIGHT_CHECK(preset.empty(), "parse_pipeline", "normalize: preset='", preset, "', expected imagenet");
      spec.mean = a.floats("mean", spec.mean);
      spec.std_dev = a.floats("std", spec.std_dev);
      spec.max_pixel_value = static_cast<float>(a.num("max", spec.max_pixel_value));
      out.normalize(spec);
    } else if (name == "reference" || name == "reference_eval" || name == "none") {
      ARCLIGHT_CHECK(kv.empty(), "parse_pipeline", "preset '", name, "' takes no arguments");
      const Pipeline pre = preset_pipeline(name);
      for (const auto& t : pre.steps()) out.add(t);
    } else {
      fail("parse_pipeline", "unknown step '", name,
           "', expected hflip, jpeg, ssr, cutout, coarse_dropout, resize, rrc, pad, to_rgb, normalize or a preset "
           "(reference, reference_eval, none)");
    }
    a.finish();
  }
  return out;
}

// Named pipelines:
//   "reference": METHOD.md §6, the seed's training augmentation in its order: HorizontalFlip(p=0.5) ->
//       ImageCompression(quality 99..100, albumentations' default p=0.5) -> ShiftScaleRotate(shift 0.2,
//       scale 0.2, rotate 10, linear, constant 0 border, p=0.7) -> Cutout(1 hole of 0.4 x side, fill 0,
//       p=0.5).
//   "reference_eval": ImageCompression(99..100, p=0.5) only.   "none": no step.
inline Pipeline preset_pipeline(std::string_view name) {
  Pipeline p;
  if (name == "reference") {
    p.add(HorizontalFlip(0.5));
    p.add(ImageCompression(99, 100, 0.5));
    ShiftScaleRotateParams ssr;
    ssr.shift_x = ssr.shift_y = 0.2;
    ssr.scale = 0.2;
    ssr.rotate = 10;
    ssr.interpolation = Interpolation::linear;
    ssr.border = BorderMode::constant;
    ssr.value = 0;
    ssr.p = 0.7;
    p.add(ShiftScaleRotate(ssr));
    p.add(Cutout(1, 0, 0, 0, 0.5, 0.4));
  } else if (name == "reference_eval") {
    p.add(ImageCompression(99, 100, 0.5));
  } else if (name != "none") {
    fail("preset_pipeline", "unknown preset '", name, "', expected reference, reference_eval or none");
  }
  return p;
}

}  // namespace arclight::data
