// Tests of arclight/data/image_ops.hpp and transforms.hpp: exact geometry of flip / ShiftScaleRotate /
// Cutout / CoarseDropout / resize / RandomResizedCrop, JPEG compression error, normalisation into a
// CHW float buffer, pipeline determinism, and the config-string grammar with its errors.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "arclight/data/transforms.hpp"
#include "test_util.hpp"

namespace ad = arclight::data;
using ad::testing::pattern_image;

namespace {

ad::Image from_rows(const std::vector<std::vector<int>>& rows) {
  ad::Image img(static_cast<int>(rows.size()), static_cast<int>(rows[0].size()), 1);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) img.at(y, x, 0) = static_cast<std::uint8_t>(rows[y][x]);
  return img;
}

// np.rot90 (counter-clockwise): out[i][j] = in[j][n-1-i].
ad::Image rot90_ccw(const ad::Image& in) {
  ad::Image out(in.width, in.height, in.channels);
  for (int i = 0; i < out.height; ++i)
    for (int j = 0; j < out.width; ++j)
      for (int k = 0; k < in.channels; ++k) out.at(i, j, k) = in.at(j, in.width - 1 - i, k);
  return out;
}

int max_diff(const ad::Image& a, const ad::Image& b) {
  EXPECT_EQ(a.pixels.size(), b.pixels.size());
  int m = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) m = std::max(m, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  return m;
}

ad::ShiftScaleRotateParams ssr_params(ad::BorderMode border, ad::WarpCentre centre) {
  ad::ShiftScaleRotateParams p;
  p.border = border;
  p.centre = centre;
  p.value = 0;
  p.p = 1.0;
  return p;
}

}  // namespace

TEST(Flip, KnownImageIsMirroredExactly) {
  ad::Image img = from_rows({{1, 2, 3}, {4, 5, 6}});
  ad::hflip_inplace(img);
  EXPECT_EQ(img, from_rows({{3, 2, 1}, {6, 5, 4}}));
  // RGB: pixels move, channel order inside a pixel stays.
  ad::Image rgb(1, 2, 3);
  rgb.pixels = {10, 11, 12, 20, 21, 22};
  ad::hflip_inplace(rgb);
  EXPECT_EQ(rgb.pixels, (std::vector<std::uint8_t>{20, 21, 22, 10, 11, 12}));
  // Through the transform: p = 1 always flips, p = 0 never; flipping twice is the identity.
  const ad::Image src = pattern_image(7, 9, 3);
  ad::Image a = src;
  arclight::RandomStream rng(1, 2);
  ad::HorizontalFlip(1.0)(a, rng);
  EXPECT_NE(a, src);
  EXPECT_EQ(a.at(3, 0, 1), src.at(3, 8, 1));
  ad::HorizontalFlip(1.0)(a, rng);
  EXPECT_EQ(a, src);
  ad::HorizontalFlip(0.0)(a, rng);
  EXPECT_EQ(a, src);
}

TEST(ShiftScaleRotate, MatrixFollowsGetRotationMatrix2D) {
  // getRotationMatrix2D((w/2, h/2), 30, 1.1) for w = 40, h = 20, plus dx*w, dy*h.
  const auto m = ad::ShiftScaleRotate::matrix(20, 40, 30.0, 1.1, 0.1, -0.05, ad::WarpCentre::albumentations);
  const double a = 1.1 * std::cos(M_PI / 6), b = 1.1 * std::sin(M_PI / 6);
  EXPECT_NEAR(m[0], a, 1e-12);
  EXPECT_NEAR(m[1], b, 1e-12);
  EXPECT_NEAR(m[2], (1 - a) * 20 - b * 10 + 4.0, 1e-12);
  EXPECT_NEAR(m[3], -b, 1e-12);
  EXPECT_NEAR(m[4], a, 1e-12);
  EXPECT_NEAR(m[5], b * 20 + (1 - a) * 10 - 1.0, 1e-12);
  const auto inv = ad::invert_affine(m);
  // m(inv(p)) == p
  const double x = 3.5, y = -7.25;
  const double ux = inv[0] * x + inv[1] * y + inv[2], uy = inv[3] * x + inv[4] * y + inv[5];
  EXPECT_NEAR(m[0] * ux + m[1] * uy + m[2], x, 1e-12);
  EXPECT_NEAR(m[3] * ux + m[4] * uy + m[5], y, 1e-12);
}

TEST(ShiftScaleRotate, ZeroShiftScaleRotateIsTheIdentity) {
  for (auto border : {ad::BorderMode::constant, ad::BorderMode::reflect101})
    for (auto centre : {ad::WarpCentre::albumentations, ad::WarpCentre::pixel_centre})
      for (int c : {1, 3}) {
        const ad::Image img = pattern_image(13, 17, c, 5);
        const ad::ShiftScaleRotate ssr(ssr_params(border, centre));
        EXPECT_EQ(ssr.warp(img, 0.0, 1.0, 0.0, 0.0), img);
        // Through apply(): limits of zero draw angle 0, scale 1, shift 0.
        ad::ShiftScaleRotateParams p = ssr_params(border, centre);
        p.shift_x = p.shift_y = p.scale = p.rotate = 0;
        ad::Image out = img;
        arclight::RandomStream rng(3, 4);
        ad::ShiftScaleRotate{p}(out, rng);
        EXPECT_EQ(out, img);
      }
}

TEST(ShiftScaleRotate, Rotation90OfASquareIsTransposePlusFlip) {
  const ad::Image img = pattern_image(16, 16, 3, 8);
  const ad::Image expected = rot90_ccw(img);
  // About the pixel-grid centre the rotation is exact (up to cos(90°) ~ 6e-17 in the weights).
  const ad::ShiftScaleRotate exact(ssr_params(ad::BorderMode::constant, ad::WarpCentre::pixel_centre));
  EXPECT_LE(max_diff(exact.warp(img, 90.0, 1.0, 0, 0), expected), 1);
  // -90 degrees is the clockwise rotation: rot90 three times.
  EXPECT_LE(max_diff(exact.warp(img, -90.0, 1.0, 0, 0), rot90_ccw(rot90_ccw(expected))), 1);
  // albumentations rotates about (w/2, h/2), half a pixel off the grid centre: the same rotation moved
  // down one row, with row 0 read from outside the image (the constant border).
  const ad::ShiftScaleRotate albu(ssr_params(ad::BorderMode::constant, ad::WarpCentre::albumentations));
  const ad::Image out = albu.warp(img, 90.0, 1.0, 0, 0);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x)
      for (int k = 0; k < 3; ++k) {
        const int want = y == 0 ? 0 : expected.at(y - 1, x, k);
        ASSERT_LE(std::abs(int(out.at(y, x, k)) - want), 1) << y << "," << x << "," << k;
      }
}

TEST(ShiftScaleRotate, ShiftMovesPixelsAndBordersFill) {
  const ad::Image img = pattern_image(6, 8, 1, 2);
  ad::ShiftScaleRotate cst(ssr_params(ad::BorderMode::constant, ad::WarpCentre::albumentations));
  // dx = 0.25 of width 8 = 2 pixels right.
  const ad::Image out = cst.warp(img, 0, 1.0, 0.25, 0);
  for (int y = 0; y < 6; ++y)
    for (int x = 0; x < 8; ++x) ASSERT_EQ(out.at(y, x, 0), x < 2 ? 0 : img.at(y, x - 2, 0)) << y << "," << x;
  // reflect-101: column -1 reads column 1, column -2 reads column 2.
  ad::ShiftScaleRotate refl(ssr_params(ad::BorderMode::reflect101, ad::WarpCentre::albumentations));
  const ad::Image r = refl.warp(img, 0, 1.0, 0.25, 0);
  for (int y = 0; y < 6; ++y) {
    EXPECT_EQ(r.at(y, 1, 0), img.at(y, 1, 0));
    EXPECT_EQ(r.at(y, 0, 0), img.at(y, 2, 0));
  }
  // Constant value other than 0, and a shift up by dy = -0.5 of height 6 = 3 rows.
  ad::ShiftScaleRotateParams p = ssr_params(ad::BorderMode::constant, ad::WarpCentre::albumentations);
  p.value = 77;
  const ad::Image up = ad::ShiftScaleRotate(p).warp(img, 0, 1.0, 0, -0.5);
  for (int x = 0; x < 8; ++x) {
    EXPECT_EQ(up.at(0, x, 0), img.at(3, x, 0));
    EXPECT_EQ(up.at(5, x, 0), 77);
  }
  EXPECT_EQ(ad::detail::reflect101(-1, 5), 1);
  EXPECT_EQ(ad::detail::reflect101(5, 5), 3);
  EXPECT_EQ(ad::detail::reflect101(-9, 5), 1);
  EXPECT_EQ(ad::detail::reflect101(7, 1), 0);
}

TEST(ShiftScaleRotate, SubPixelShiftUsesOpenCvFixedPoint) {
  // A shift of 0.3 px right: output x samples source x - 0.3. OpenCV quantises the source coordinate to
  // 1/32 pixel: round((1 - 0.3) * 1024) = 717 (+16 rounding delta) >> 5 = 22 -> weights 10/32 and 22/32,
  // so output 1 = (0 * 10 + 64 * 22) / 32 = 44 exactly (float bilinear would give 44.8 -> 45).
  const ad::Image row = from_rows({{0, 64, 128, 192}});
  const ad::ShiftScaleRotate ssr(ssr_params(ad::BorderMode::reflect101, ad::WarpCentre::albumentations));
  const ad::Image out = ssr.warp(row, 0, 1.0, 0.3 / 4, 0);
  EXPECT_EQ(out.at(0, 1, 0), 44);
  EXPECT_EQ(out.at(0, 2, 0), 108);  // (64 * 10 + 128 * 22) / 32
  EXPECT_EQ(out.at(0, 3, 0), 172);
  // Output 0 samples -0.3: taps -1 (reflects to 1: 64) and 0 (0): (64 * 10 + 0 * 22) / 32 = 20.
  EXPECT_EQ(out.at(0, 0, 0), 20);
}

TEST(ShiftScaleRotate, ScaleTwoMagnifiesAboutTheCentre) {
  // Linear ramp: value = 10 * x. Scaling by 2 about x = w/2 = 8 maps source x to 2 (x - 8) + 8, so output
  // x reads source (x + 8) / 2, i.e. value 5 (x + 8), exact for a linear ramp under bilinear sampling.
  ad::Image ramp(4, 16, 1);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 16; ++x) ramp.at(y, x, 0) = static_cast<std::uint8_t>(10 * x);
  const ad::ShiftScaleRotate ssr(ssr_params(ad::BorderMode::reflect101, ad::WarpCentre::albumentations));
  const ad::Image out = ssr.warp(ramp, 0, 2.0, 0, 0);
  for (int x = 0; x < 14; ++x) EXPECT_NEAR(out.at(1, x, 0), 5.0 * (x + 8), 0.51) << x;
}

TEST(ShiftScaleRotate, DrawsStayWithinTheLimits) {
  // A bright dot in the middle of a 41x41 image; with rotate/scale zero and shift 0.1, it must land
  // within +-4 pixels of the centre, and the shifts must vary over samples.
  ad::ShiftScaleRotateParams p = ssr_params(ad::BorderMode::constant, ad::WarpCentre::pixel_centre);
  p.rotate = 0;
  p.scale = 0;
  p.shift_x = p.shift_y = 0.1;
  p.interpolation = ad::Interpolation::nearest;
  const ad::ShiftScaleRotate ssr(p);
  ad::Image dot(41, 41, 1);
  dot.at(20, 20, 0) = 255;
  std::set<std::pair<int, int>> positions;
  for (std::uint64_t i = 0; i < 200; ++i) {
    ad::Image im = dot;
    auto rng = ad::augment_stream(7, 0, i);
    ssr(im, rng);
    int fy = -1, fx = -1;
    for (int y = 0; y < 41; ++y)
      for (int x = 0; x < 41; ++x)
        if (im.at(y, x, 0) == 255) fy = y, fx = x;
    ASSERT_GE(fy, 0);
    EXPECT_LE(std::abs(fx - 20), 4);
    EXPECT_LE(std::abs(fy - 20), 4);
    positions.insert({fy, fx});
  }
  EXPECT_GT(positions.size(), 40u);
}

TEST(Cutout, HolePositionSizeAndClippingFollowAlbumentations) {
  const int H = 20, W = 30, S = 8;
  const ad::Cutout cut(3, S, S, 0, 1.0);
  int clipped_bottom_right = 0, shifted_top_left = 0, interior = 0;
  for (std::uint64_t s = 0; s < 300; ++s) {
    arclight::RandomStream r1(s, 1), r2(s, 1);
    const auto holes = cut.draw_holes(H, W, r1);
    ASSERT_EQ(holes.size(), 3u);
    for (const auto& h : holes) {
      // The spec, step by step: y ~ randint(0, H), x ~ randint(0, W), inclusive.
      const int y = static_cast<int>(r2.randint(0, H)), x = static_cast<int>(r2.randint(0, W));
      ASSERT_GE(y, 0);
      ASSERT_LE(y, H);
      const int y1 = std::max(0, y - S / 2), x1 = std::max(0, x - S / 2);
      EXPECT_EQ(h.y1, y1);
      EXPECT_EQ(h.x1, x1);
      EXPECT_EQ(h.y2, std::min(H, y1 + S));
      EXPECT_EQ(h.x2, std::min(W, x1 + S));
      if (y1 + S > H) ++clipped_bottom_right;
      else if (y - S / 2 < 0) ++shifted_top_left;
      else ++interior;
      EXPECT_LE(h.y2 - h.y1, S);
      EXPECT_LE(h.x2 - h.x1, S);
    }
  }
  EXPECT_GT(clipped_bottom_right, 0);
  EXPECT_GT(shifted_top_left, 0);
  EXPECT_GT(interior, 0);
  // Applied: exactly the union of the holes becomes the fill value, nothing else changes.
  ad::Image img(H, W, 3, 200);
  arclight::RandomStream ra(99, 5), rb(99, 5);
  ad::Cutout(2, S, S, 17, 1.0)(img, ra);
  (void)rb.uniform();  // the probability draw
  const auto holes = ad::Cutout(2, S, S, 17, 1.0).draw_holes(H, W, rb);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      bool in = false;
      for (const auto& h : holes) in |= x >= h.x1 && x < h.x2 && y >= h.y1 && y < h.y2;
      for (int k = 0; k < 3; ++k) ASSERT_EQ(img.at(y, x, k), in ? 17 : 200) << y << "," << x;
    }
  // Fraction of the side: 0.4 * 20 = 8 rows, 0.4 * 30 = 12 columns for an interior hole.
  const ad::Cutout frac(1, 0, 0, 0, 1.0, 0.4);
  bool saw_full = false;
  for (std::uint64_t s = 0; s < 50; ++s) {
    arclight::RandomStream r(s, 3);
    const auto h = frac.draw_holes(H, W, r)[0];
    if (h.y2 - h.y1 == 8 && h.x2 - h.x1 == 12) saw_full = true;
    EXPECT_LE(h.y2 - h.y1, 8);
    EXPECT_LE(h.x2 - h.x1, 12);
  }
  EXPECT_TRUE(saw_full);
  // fill_rect clips out-of-range rectangles.
  ad::Image small(4, 4, 1, 9);
  ad::fill_rect(small, -3, 2, 2, 10, 0);
  int zeros = 0;
  for (auto v : small.pixels) zeros += v == 0;
  EXPECT_EQ(zeros, 4);
  EXPECT_EQ(small.at(3, 1, 0), 0);
  EXPECT_EQ(small.at(1, 1, 0), 9);
}

TEST(CoarseDropout, HolesLieInsideWithDrawnSizes) {
  ad::CoarseDropoutParams p;
  p.min_holes = 1;
  p.max_holes = 4;
  p.min_height = 2;
  p.max_height = 5;
  p.min_width = 3;
  p.max_width = 6;
  p.p = 1;
  const ad::CoarseDropout cd(p);
  std::set<std::size_t> counts;
  std::set<int> heights;
  for (std::uint64_t s = 0; s < 200; ++s) {
    arclight::RandomStream r(s, 0);
    const auto holes = cd.draw_holes(10, 12, r);
    counts.insert(holes.size());
    for (const auto& h : holes) {
      EXPECT_GE(h.y1, 0);
      EXPECT_GE(h.x1, 0);
      EXPECT_LE(h.y2, 10);
      EXPECT_LE(h.x2, 12);
      EXPECT_GE(h.y2 - h.y1, 2);
      EXPECT_LE(h.y2 - h.y1, 5);
      EXPECT_GE(h.x2 - h.x1, 3);
      EXPECT_LE(h.x2 - h.x1, 6);
      heights.insert(h.y2 - h.y1);
    }
  }
  EXPECT_EQ(counts, (std::set<std::size_t>{1, 2, 3, 4}));
  EXPECT_EQ(heights, (std::set<int>{2, 3, 4, 5}));
  p.fractional = true;
  p.min_height = p.min_width = 0.1;
  p.max_height = p.max_width = 0.2;
  const ad::CoarseDropout frac(p);
  arclight::RandomStream r(1, 1);
  for (const auto& h : frac.draw_holes(100, 50, r)) {
    EXPECT_GE(h.y2 - h.y1, 10);
    EXPECT_LE(h.y2 - h.y1, 20);
    EXPECT_GE(h.x2 - h.x1, 5);
    EXPECT_LE(h.x2 - h.x1, 10);
  }
  p.max_height = 2;  // fractional sizes above 1
  EXPECT_ERROR_WITH(ad::CoarseDropout{p}, "fractional sizes must be <= 1");
}

TEST(Resize, BilinearMatchesOpenCvConventions) {
  const ad::Image src = from_rows({{0, 100}, {200, 40}});
  const ad::Image up = ad::resize(src, 4, 4, ad::Interpolation::linear);
  // cv2.resize(src, (4, 4), interpolation=INTER_LINEAR): sample x = (X + 0.5) / 2 - 0.5, edges clamped.
  const std::vector<double> wx = {0, 0.25, 0.75, 1};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      const double top = 0 + wx[x] * 100, bot = 200 + wx[x] * (40 - 200);
      EXPECT_NEAR(up.at(y, x, 0), top + wx[y] * (bot - top), 0.5001) << y << "," << x;
    }
  EXPECT_EQ(up.at(0, 1, 0), 25);
  // Same size is a copy; a 3-channel image keeps its channels.
  const ad::Image rgb = pattern_image(5, 6, 3);
  EXPECT_EQ(ad::resize(rgb, 5, 6), rgb);
  EXPECT_EQ(ad::resize(rgb, 10, 3).channels, 3);
}

TEST(Resize, AreaDownscaleAveragesBlocks) {
  const ad::Image src = pattern_image(8, 12, 3, 4);
  const ad::Image down = ad::resize(src, 2, 3, ad::Interpolation::automatic);  // 4x4 blocks
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int k = 0; k < 3; ++k) {
        double s = 0;
        for (int dy = 0; dy < 4; ++dy)
          for (int dx = 0; dx < 4; ++dx) s += src.at(4 * y + dy, 4 * x + dx, k);
        EXPECT_NEAR(down.at(y, x, k), s / 16, 0.5001);
      }
  // Non-integer factor 3 -> 2: output 0 covers source [0, 1.5): (a + 0.5 b) / 1.5.
  const ad::Image row = from_rows({{30, 90, 150}});
  const ad::Image two = ad::resize(row, 1, 2, ad::Interpolation::area);
  EXPECT_NEAR(two.at(0, 0, 0), (30 + 0.5 * 90) / 1.5, 0.5001);
  EXPECT_NEAR(two.at(0, 1, 0), (0.5 * 90 + 150) / 1.5, 0.5001);
  EXPECT_ERROR_WITH(ad::resize(src, 0, 3), "resize", "output size 0x3");
}

TEST(RandomResizedCrop, CropsInsideAndResizes) {
  const ad::Image img = pattern_image(30, 40, 3, 6);
  ad::RandomResizedCropParams p;
  p.height = 16;
  p.width = 12;
  const ad::RandomResizedCrop rrc(p);
  std::set<int> sizes;
  for (std::uint64_t s = 0; s < 100; ++s) {
    arclight::RandomStream r(s, 0);
    const auto c = rrc.draw_crop(30, 40, r);
    EXPECT_GE(c[0], 0);
    EXPECT_GE(c[1], 0);
    EXPECT_LE(c[0] + c[2], 30);
    EXPECT_LE(c[1] + c[3], 40);
    const double area = double(c[2]) * c[3] / (30.0 * 40.0);
    EXPECT_GE(area, 0.08 * 0.8);
    sizes.insert(c[2]);
    ad::Image out = img;
    arclight::RandomStream r2(s, 0);
    rrc(out, r2);
    EXPECT_EQ(out.height, 16);
    EXPECT_EQ(out.width, 12);
  }
  EXPECT_GT(sizes.size(), 10u);
  // Full-image scale and the image's own aspect: the crop is the whole image.
  p.scale_lo = p.scale_hi = 1.0;
  p.ratio_lo = p.ratio_hi = 40.0 / 30.0;
  arclight::RandomStream r(1, 1);
  const auto c = ad::RandomResizedCrop(p).draw_crop(30, 40, r);
  EXPECT_EQ(c, (std::array<int, 4>{0, 0, 30, 40}));
  // Impossible ratio: the fallback centre crop clamps to the ratio range.
  p.scale_lo = p.scale_hi = 1.0;
  p.ratio_lo = p.ratio_hi = 0.5;  // w/h = 0.5 on a 30x40 image: h = 30, w = round(30 * 0.5) = 15 ...
  arclight::RandomStream r3(2, 2);
  const auto fb = ad::RandomResizedCrop(p).draw_crop(30, 40, r3);
  EXPECT_EQ(fb[2], 30);
  EXPECT_EQ(fb[3], 15);
  EXPECT_EQ(fb[1], (40 - 15) / 2);
}

TEST(ImageCompression, QualityRangeAndErrorBound) {
  const ad::Image img = pattern_image(32, 32, 3, 2, true);
  ad::Image out = img;
  arclight::RandomStream rng(1, 1);
  ad::ImageCompression(100, 100, 1.0)(out, rng);
  EXPECT_NE(out, img);  // it did go through JPEG
  EXPECT_LE(max_diff(out, img), 8);
  ad::Image grey = pattern_image(16, 16, 1, 2, true);
  ad::ImageCompression(99, 100, 1.0)(grey, rng);
  EXPECT_EQ(grey.channels, 1);
  EXPECT_ERROR_WITH(ad::ImageCompression(50, 20), "quality range [50, 20]");
  EXPECT_ERROR_WITH(ad::ImageCompression(0, 20), "1 <= lo <= hi <= 100");
}

TEST(ToTensor, NormalizesIntoChwWithoutAccumulating) {
  ad::Image img(2, 3, 3);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int k = 0; k < 3; ++k) img.at(y, x, k) = static_cast<std::uint8_t>(40 * k + 10 * y + x + 1);
  std::vector<float> out(18, std::nanf(""));
  const std::vector<float> mean = {0.5f, 0.25f, 0.0f}, sd = {0.5f, 0.25f, 2.0f};
  ad::to_chw_float(img, mean, sd, out.data());
  for (int k = 0; k < 3; ++k)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x) {
        const double v = img.at(y, x, k);
        EXPECT_NEAR(out[static_cast<std::size_t>((k * 2 + y) * 3 + x)], (v - mean[k] * 255.0) / (sd[k] * 255.0), 1e-6);
      }
  ad::Pipeline p;
  p.normalize(ad::NormalizeSpec::imagenet());
  std::vector<float> o2(18, 1e30f);
  p.to_tensor(img, o2.data());
  EXPECT_NEAR(o2[0], (1 / 255.0 - 0.485) / 0.229, 1e-5);
  EXPECT_ERROR_WITH(ad::to_chw_float(img, {0.f, 0.f}, {1.f, 1.f}, out.data()), "mean has 2 values, expected 1 or 3");
  EXPECT_ERROR_WITH(ad::to_chw_float(img, {0.f}, {0.f}, out.data()), "expected finite std > 0");
}

TEST(Pipeline, SameKeySameOutputDifferentKeysDiffer) {
  const ad::Pipeline ref = ad::preset_pipeline("reference");
  ASSERT_EQ(ref.size(), 4u);
  const ad::Image img = pattern_image(32, 32, 3, 1);
  std::set<std::string> distinct;  // pixel buffers as strings
  for (std::uint64_t i = 0; i < 16; ++i) {
    const ad::Image a = ref.apply(img, 5, 2, i);
    const ad::Image b = ref.apply(img, 5, 2, i);
    EXPECT_EQ(a, b);
    EXPECT_EQ(a.height, 32);
    distinct.insert(std::string(a.pixels.begin(), a.pixels.end()));
  }
  EXPECT_GT(distinct.size(), 10u);
  EXPECT_NE(ref.apply(img, 5, 2, 3), ref.apply(img, 5, 3, 3));  // another epoch, another draw
  EXPECT_NE(ref.apply(img, 5, 2, 3), ref.apply(img, 6, 2, 3));  // another seed
}

TEST(Pipeline, ConfigStringsRoundTripAndReportErrors) {
  const ad::Pipeline ref = ad::parse_pipeline("reference");
  EXPECT_EQ(ref.describe(),
            "hflip(p=0.5) | jpeg(lo=99,hi=100,p=0.5) | ssr(shift_x=0.2,shift_y=0.2,scale=0.2,rotate=10,interp=linear,"
            "border=constant,value=0,centre=albumentations,p=0.7) | cutout(holes=1,frac=0.4,fill=0,p=0.5)");
  const std::string cfg =
      "to_rgb | pad(size=32) | rrc(h=24,w=20,scale_lo=0.5) | resize(h=16,w=16,interp=area) | "
      "coarse_dropout(max_holes=3,min_holes=1,max_h=4,max_w=4,p=0.25) | cutout(holes=2,h=3,w=5) | "
      "ssr(shift=0.1,rotate=15,border=reflect101,centre=pixel) | normalize(preset=imagenet)";
  const ad::Pipeline p = ad::parse_pipeline(cfg);
  EXPECT_EQ(p.size(), 7u);
  EXPECT_EQ(ad::parse_pipeline(p.describe()).describe(), p.describe());
  EXPECT_EQ(p.normalization().mean.size(), 3u);
  const ad::Image out = p.apply(pattern_image(28, 28, 1, 1), 1, 0, 0);
  EXPECT_EQ(out.channels, 3);
  EXPECT_EQ(out.height, 16);
  EXPECT_EQ(ad::parse_pipeline("").size(), 0u);
  EXPECT_EQ(ad::parse_pipeline("none").describe(), "none");
  EXPECT_EQ(ad::parse_pipeline("reference | resize(size=64)").size(), 5u);

  EXPECT_ERROR_WITH(ad::parse_pipeline("hflip | blur(k=3)"), "unknown step 'blur'");
  EXPECT_ERROR_WITH(ad::parse_pipeline("hflip(q=1)"), "hflip: unknown argument 'q'", "expected one of: p");
  EXPECT_ERROR_WITH(ad::parse_pipeline("hflip(p=1.5)"), "probability p = 1.5");
  EXPECT_ERROR_WITH(ad::parse_pipeline("jpeg(lo=abc)"), "lo='abc' is not a number");
  EXPECT_ERROR_WITH(ad::parse_pipeline("resize(h=10)"), "needs h and w");
  EXPECT_ERROR_WITH(ad::parse_pipeline("hflip ||"), "empty step");
  EXPECT_ERROR_WITH(ad::parse_pipeline("ssr(border=wrap)"), "border='wrap'");
  EXPECT_ERROR_WITH(ad::parse_pipeline("cutout(holes=1"), "missing ')'");
  EXPECT_ERROR_WITH(ad::parse_pipeline("hflip(p=0.5,p=0.2)"), "given twice");
  EXPECT_ERROR_WITH(ad::parse_pipeline("normalize(mean=1/2,std=1)"), "mean has 2 values and std 1");
  EXPECT_ERROR_WITH(ad::preset_pipeline("fancy"), "unknown preset 'fancy'");
  EXPECT_ERROR_WITH(ad::augment_stream(0, 1u << 24, 0), "epoch 16777216");
}
