// Pooling and reshaping layers (no parameters), torch.nn semantics: AvgPool2d (kernel, stride, padding,
// ceil_mode, count_include_pad — NFNet's DownsampleAvg is AvgPool2d(2, 2, 0, true, false)), MaxPool2d,
// AdaptiveAvgPool2d(1) (global average pooling to [N, C, 1, 1]) and Flatten(start_dim = 1, end_dim = −1).
// They forward through ops/pooling.hpp and ops/view.hpp.
#pragma once

#include "arclight/nn/module.hpp"
#include "arclight/ops/pooling.hpp"

namespace arclight::nn {

// AvgPool2d: square windows. stride <= 0 means "= kernel_size" (torch's stride=None).
class AvgPool2d : public Module {
 public:
  // requires: kernel_size >= 1, 0 <= padding <= kernel_size / 2 (checked here and per input by the op).
  explicit AvgPool2d(std::int64_t kernel_size, std::int64_t stride = -1, std::int64_t padding = 0,
                     bool ceil_mode = false, bool count_include_pad = true)
      : Module("AvgPool2d"),
        kernel_(kernel_size),
        stride_(stride),
        padding_(padding),
        ceil_mode_(ceil_mode),
        count_include_pad_(count_include_pad) {
    ARCLIGHT_CHECK(kernel_size >= 1 && padding >= 0 && 2 * padding <= kernel_size, "nn::AvgPool2d",
                   "expected kernel_size >= 1 and 0 <= padding <= kernel_size / 2, got kernel_size ", kernel_size,
                   ", padding ", padding);
  }
  // requires: x [N, C, H, W]. ensures: ops::avg_pool2d(x, ...).
  Tensor forward(const Tensor& x) override {
    return ops::avg_pool2d(x, kernel_, stride_, padding_, ceil_mode_, count_include_pad_);
  }

 private:
  std::int64_t kernel_, stride_, padding_;
  bool ceil_mode_, count_include_pad_;
};

// MaxPool2d: square windows, dilation 1. stride <= 0 means "= kernel_size".
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(std::int64_t kernel_size, std::int64_t stride = -1, std::int64_t padding = 0,
                     bool ceil_mode = false)
      : Module("MaxPool2d"), kernel_(kernel_size), stride_(stride), padding_(padding), ceil_mode_(ceil_mode) {
    ARCLIGHT_CHECK(kernel_size >= 1 && padding >= 0 && 2 * padding <= kernel_size, "nn::MaxPool2d",
                   "expected kernel_size >= 1 and 0 <= padding <= kernel_size / 2, got kernel_size ", kernel_size,
                   ", padding ", padding);
  }
  Tensor forward(const Tensor& x) override { return ops::max_pool2d(x, kernel_, stride_, padding_, ceil_mode_); }

 private:
  std::int64_t kernel_, stride_, padding_;
  bool ceil_mode_;
};

// AdaptiveAvgPool2d: only output size 1 ([N, C, H, W] -> [N, C, 1, 1]) is supported.
class AdaptiveAvgPool2d : public Module {
 public:
  // requires: output_size == 1.
  explicit AdaptiveAvgPool2d(std::int64_t output_size = 1) : Module("AdaptiveAvgPool2d") {
    ARCLIGHT_CHECK(output_size == 1, "nn::AdaptiveAvgPool2d",
                   "only output size 1 (global average pooling) is supported, got ", output_size);
  }
  Tensor forward(const Tensor& x) override { return ops::global_avg_pool(x); }
};

// Flatten: merges dims [start_dim, end_dim] (torch.nn.Flatten; default [N, C, H, W] -> [N, C·H·W]). A view when
// the strides allow.
class Flatten : public Module {
 public:
  explicit Flatten(std::int64_t start_dim = 1, std::int64_t end_dim = -1)
      : Module("Flatten"), start_(start_dim), end_(end_dim) {}
  Tensor forward(const Tensor& x) override { return ops::flatten(x, start_, end_); }

 private:
  std::int64_t start_, end_;
};

}  // namespace arclight::nn
