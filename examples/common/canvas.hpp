#pragma once
// A small RGB canvas for the example programs' pictures (training curves, ranked lists):
// filled rectangles, lines, borders, pasted images and a 3x5 bitmap font for labels.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace reidnet::examples {

struct Color {
  uint8_t r, g, b;
};
inline constexpr Color kWhite{255, 255, 255}, kBlack{0, 0, 0}, kGrey{200, 200, 200},
    kBlue{31, 119, 180}, kRed{214, 39, 40}, kGreen{44, 160, 44};

/// uint8 [H, W, 3] image with drawing primitives; coordinates outside are clipped.
class Canvas {
 public:
  Canvas(int64_t height, int64_t width, Color background = kWhite)
      : pixels_(torch::empty({height, width, 3}, torch::kUInt8)) {
    fill_rect(0, 0, height, width, background);
  }

  int64_t height() const { return pixels_.size(0); }
  int64_t width() const { return pixels_.size(1); }
  const torch::Tensor& pixels() const { return pixels_; }

  void set(int64_t y, int64_t x, Color c) {
    if (y < 0 || x < 0 || y >= height() || x >= width()) return;
    auto* p = pixels_.data_ptr<uint8_t>() + (y * width() + x) * 3;
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }

  void fill_rect(int64_t top, int64_t left, int64_t h, int64_t w, Color c) {
    for (int64_t y = top; y < top + h; ++y)
      for (int64_t x = left; x < left + w; ++x) set(y, x, c);
  }

  /// A border of `thickness` pixels drawn inside the rectangle.
  void border(int64_t top, int64_t left, int64_t h, int64_t w, int64_t thickness, Color c) {
    fill_rect(top, left, thickness, w, c);
    fill_rect(top + h - thickness, left, thickness, w, c);
    fill_rect(top, left, h, thickness, c);
    fill_rect(top, left + w - thickness, h, thickness, c);
  }

  /// Bresenham line with a square pen of `thickness` pixels.
  void line(int64_t y0, int64_t x0, int64_t y1, int64_t x1, Color c, int64_t thickness = 1) {
    const int64_t dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int64_t sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int64_t error = dx + dy;
    while (true) {
      fill_rect(y0 - thickness / 2, x0 - thickness / 2, thickness, thickness, c);
      if (x0 == x1 && y0 == y1) break;
      const int64_t twice = 2 * error;
      if (twice >= dy) error += dy, x0 += sx;
      if (twice <= dx) error += dx, y0 += sy;
    }
  }

  /// Copies a uint8 [h, w, 3] image with its top-left corner at (top, left).
  void paste(const torch::Tensor& image, int64_t top, int64_t left) {
    const auto source = image.contiguous();
    const auto* p = source.data_ptr<uint8_t>();
    for (int64_t y = 0; y < source.size(0); ++y)
      for (int64_t x = 0; x < source.size(1); ++x) {
        const auto* q = p + (y * source.size(1) + x) * 3;
        set(top + y, left + x, {q[0], q[1], q[2]});
      }
  }

  /// Upper-case text in a 3x5 font, each font pixel drawn as `scale` x `scale`.
  void text(int64_t top, int64_t left, const std::string& label, Color c, int64_t scale = 2) {
    for (const char ch : label) {
      const auto& rows = glyph(ch);
      for (int64_t row = 0; row < 5; ++row)
        for (int64_t col = 0; col < 3; ++col)
          if (rows[row] & (4 >> col)) fill_rect(top + row * scale, left + col * scale, scale, scale, c);
      left += 4 * scale;
    }
  }

  static int64_t text_width(const std::string& label, int64_t scale = 2) {
    return static_cast<int64_t>(label.size()) * 4 * scale;
  }

 private:
  // 3x5 glyphs, one 3-bit row mask per line (bit 2 = left column).
  static const std::array<uint8_t, 5>& glyph(char ch) {
    static const std::string order = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:/%@_#() ";
    static const std::array<std::array<uint8_t, 5>, 48> glyphs{{
        {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
        {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 2, 2}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7},
        {2, 5, 7, 5, 5}, {6, 5, 6, 5, 6}, {3, 4, 4, 4, 3}, {6, 5, 5, 5, 6}, {7, 4, 6, 4, 7},
        {7, 4, 6, 4, 4}, {3, 4, 5, 5, 3}, {5, 5, 7, 5, 5}, {7, 2, 2, 2, 7}, {1, 1, 1, 5, 2},
        {5, 5, 6, 5, 5}, {4, 4, 4, 4, 7}, {5, 7, 7, 5, 5}, {6, 5, 5, 5, 5}, {2, 5, 5, 5, 2},
        {6, 5, 6, 4, 4}, {2, 5, 5, 6, 3}, {6, 5, 6, 5, 5}, {3, 4, 2, 1, 6}, {7, 2, 2, 2, 2},
        {5, 5, 5, 5, 7}, {5, 5, 5, 5, 2}, {5, 5, 7, 7, 5}, {5, 5, 2, 5, 5}, {5, 5, 2, 2, 2},
        {7, 1, 2, 4, 7}, {0, 0, 0, 0, 2}, {0, 0, 7, 0, 0}, {0, 2, 0, 2, 0}, {1, 1, 2, 4, 4},
        {5, 1, 2, 4, 5}, {2, 5, 7, 4, 3}, {0, 0, 0, 0, 7}, {5, 7, 5, 7, 5}, {1, 2, 2, 2, 1},
        {4, 2, 2, 2, 4}, {0, 0, 0, 0, 0}, {7, 7, 7, 7, 7}}};
    const auto found = order.find(static_cast<char>(std::toupper(static_cast<unsigned char>(ch))));
    return glyphs[found == std::string::npos ? glyphs.size() - 1 : found];
  }

  torch::Tensor pixels_;
};

}  // namespace reidnet::examples
