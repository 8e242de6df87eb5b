#pragma once
// The "blocks" style of reidnet-toy-data: box-shaped pedestrians standing still in front of a
// camera's fixed backdrop (sky, ground, one texture), each identity with its clothes, build,
// hair and bag. Simpler than the street style, and different from it in drawing, cameras and
// people, so a model trained on one can be checked on the other.
#include "common.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

namespace reidnet::toy::blocks {


/// What makes a person recognisable across cameras.
struct Identity {
  Colour shirt, shirt_detail, trousers, shoes, skin, hair, hat, bag;
  int pattern = 0;  // 0 plain, 1 horizontal stripes, 2 vertical stripes, 3 checks, 4 open jacket
  bool short_sleeves = false, shorts = false, has_hat = false;
  int bag_kind = 0;  // 0 none, 1 backpack, 2 shoulder bag
  int bag_side = 1;  // +1 right, -1 left (as seen from the front)
  double build = 1.0, stature = 1.0;
};

inline Identity random_identity(Rng& rng) {
  Identity id;
  id.shirt = random_colour(rng);
  id.shirt_detail = random_colour(rng);
  id.trousers = random_colour(rng);
  id.shoes = random_colour(rng);
  id.skin = random_skin(rng);
  id.hair = random_hair(rng);
  id.hat = random_colour(rng);
  id.bag = random_colour(rng);
  id.pattern = static_cast<int>(random_integer(rng, 0, 5));
  id.short_sleeves = uniform(rng, 0, 1) < 0.4;
  id.shorts = uniform(rng, 0, 1) < 0.25;
  id.has_hat = uniform(rng, 0, 1) < 0.3;
  id.bag_kind = static_cast<int>(random_integer(rng, 0, 3));
  id.bag_side = uniform(rng, 0, 1) < 0.5 ? -1 : 1;
  id.build = uniform(rng, 0.8, 1.25);
  id.stature = uniform(rng, 0.86, 1.0);
  return id;
}

/// What a camera does to every picture it takes.
struct Camera {
  Colour sky, ground, texture;
  int texture_kind = 0;  // 0 none, 1 tiles, 2 vertical posts, 3 noise
  double horizon = 0.6, gain = 1.0, scale = 0.9, shift = 0.0;
  Colour cast{1, 1, 1};
  int blur = 0;
  bool mirrored = false;  // seen from the other side: left and right swap
};

inline Camera random_camera(Rng& rng) {
  Camera camera;
  camera.sky = random_colour(rng);
  camera.ground = random_colour(rng);
  camera.texture = random_colour(rng);
  camera.texture_kind = static_cast<int>(random_integer(rng, 0, 4));
  camera.horizon = uniform(rng, 0.45, 0.75);
  camera.gain = uniform(rng, 0.65, 1.25);
  for (auto& c : camera.cast) c = static_cast<float>(uniform(rng, 0.85, 1.15));
  camera.blur = static_cast<int>(random_integer(rng, 0, 3));
  camera.scale = uniform(rng, 0.72, 0.95);
  camera.shift = uniform(rng, -0.08, 0.08);
  camera.mirrored = uniform(rng, 0, 1) < 0.5;
  return camera;
}

/// A float RGB picture to draw on.
class Canvas {
 public:
  Canvas(int height, int width) : height_(height), width_(width), pixels_(height * width * 3, 0.f) {}

  void set(int y, int x, const Colour& colour) {
    if (y < 0 || y >= height_ || x < 0 || x >= width_) return;
    std::copy(colour.begin(), colour.end(), &pixels_[(y * width_ + x) * 3]);
  }
  /// Axis-aligned box [x0, x1) x [y0, y1) in pixels; `paint(y, x)` picks the colour.
  template <typename Paint>
  void fill_box(double x0, double y0, double x1, double y1, Paint paint) {
    for (int y = std::max(0, (int)std::lround(y0)); y < std::min(height_, (int)std::lround(y1)); ++y) {
      for (int x = std::max(0, (int)std::lround(x0)); x < std::min(width_, (int)std::lround(x1)); ++x) {
        set(y, x, paint(y, x));
      }
    }
  }
  void fill_box(double x0, double y0, double x1, double y1, const Colour& colour) {
    fill_box(x0, y0, x1, y1, [&](int, int) { return colour; });
  }
  void fill_ellipse(double cx, double cy, double rx, double ry, const Colour& colour,
                    double only_above = 1e9) {
    for (int y = (int)std::floor(cy - ry); y <= (int)std::ceil(cy + ry); ++y) {
      for (int x = (int)std::floor(cx - rx); x <= (int)std::ceil(cx + rx); ++x) {
        const double dx = (x + 0.5 - cx) / rx, dy = (y + 0.5 - cy) / ry;
        if (dx * dx + dy * dy <= 1 && y < only_above) set(y, x, colour);
      }
    }
  }
  /// Box blur, then the camera's development: uint8 [H, W, 3].
  torch::Tensor develop(const Camera& camera, double extra_gain, Rng& rng) const {
    const auto blurred = blur(blur(pixels_, camera.blur, true), camera.blur, false);
    const auto scene = torch::from_blob(const_cast<float*>(blurred.data()), {height_, width_, 3}, torch::kFloat);
    return toy::develop(scene, camera.gain * extra_gain, camera.cast, rng);
  }
  int height() const { return height_; }
  int width() const { return width_; }

 private:
  std::vector<float> blur(const std::vector<float>& in, int radius, bool horizontal) const {
    if (radius == 0) return in;
    std::vector<float> out(in.size());
    for (int y = 0; y < height_; ++y) {
      for (int x = 0; x < width_; ++x) {
        for (int c = 0; c < 3; ++c) {
          float sum = 0;
          for (int d = -radius; d <= radius; ++d) {
            const int yy = horizontal ? y : std::clamp(y + d, 0, height_ - 1);
            const int xx = horizontal ? std::clamp(x + d, 0, width_ - 1) : x;
            sum += in[(yy * width_ + xx) * 3 + c];
          }
          out[(y * width_ + x) * 3 + c] = sum / (2 * radius + 1);
        }
      }
    }
    return out;
  }
  int height_, width_;
  std::vector<float> pixels_;
};


inline void draw_background(Canvas& canvas, const Camera& camera, Rng& rng) {
  const int h = canvas.height(), w = canvas.width();
  const double horizon = camera.horizon * h;
  const double phase = uniform(rng, 0, 16);
  canvas.fill_box(0, 0, w, h, [&](int y, int x) {
    if (y >= horizon) return shade(camera.ground, 0.8 + 0.3 * (y - horizon) / (h - horizon));
    const double wave = 0.5 + 0.5 * std::sin((x + phase) * 0.35);
    switch (camera.texture_kind) {
      case 1: return ((x / 8 + y / 8) % 2) ? camera.texture : camera.sky;
      case 2: return (static_cast<int>(x + phase) % 16 < 3) ? camera.texture : camera.sky;
      case 3: return shade(camera.sky, 0.85 + 0.25 * wave);
      default: return shade(camera.sky, 0.9 + 0.2 * y / horizon);
    }
  });
}

/// Draws `id` standing on the ground, its feet at `bottom`, `size` pixels tall, centred at `cx`;
/// `side` = -1 mirrors the left-right details; `stride` opens the legs (walking).
inline void draw_person(Canvas& canvas, const Identity& id, double cx, double bottom, double size,
                 int side, double stride) {
  const double top = bottom - size;
  const auto at = [&](double fraction) { return top + fraction * size; };
  const double half_torso = 0.14 * size * id.build;
  const double arm = 0.055 * size * std::sqrt(id.build);
  const double leg = 0.085 * size * id.build;
  // Backpack behind the shoulders: only its sides show, on both edges, widest on one side.
  if (id.bag_kind == 1) {
    const double bx = cx + side * id.bag_side * half_torso * 0.6;
    canvas.fill_box(bx - half_torso * 0.9, at(0.18), bx + half_torso * 0.9, at(0.48), id.bag);
  }
  // Legs (two boxes, apart by the stride), trousers or shorts, shoes.
  for (int which : {-1, 1}) {
    const double lx = cx + which * (leg * 0.6 + stride * size * 0.04);
    canvas.fill_box(lx - leg / 2, at(0.52), lx + leg / 2, at(0.95), [&](int y, int) {
      return (id.shorts && y > at(0.68)) ? id.skin : id.trousers;
    });
    canvas.fill_box(lx - leg / 2 - 1, at(0.95), lx + leg / 2 + 1, bottom, id.shoes);
  }
  // Arms beside the torso.
  for (int which : {-1, 1}) {
    const double ax = cx + which * (half_torso + arm / 2);
    canvas.fill_box(ax - arm / 2, at(0.18), ax + arm / 2, at(0.50), [&](int y, int) {
      return (id.short_sleeves && y > at(0.30)) ? id.skin : id.shirt;
    });
  }
  // Torso with the identity's pattern.
  canvas.fill_box(cx - half_torso, at(0.16), cx + half_torso, at(0.54), [&](int y, int x) {
    const double u = (x + 0.5 - cx) * side, v = y - at(0.16);
    switch (id.pattern) {
      case 1: return (static_cast<int>(v / std::max(2.0, size * 0.04)) % 2) ? id.shirt_detail : id.shirt;
      case 2: return (static_cast<int>((u + half_torso) / std::max(2.0, size * 0.035)) % 2) ? id.shirt_detail : id.shirt;
      case 3: return ((static_cast<int>(v / std::max(2.0, size * 0.05)) +
                       static_cast<int>((u + half_torso) / std::max(2.0, size * 0.05))) % 2) ? id.shirt_detail : id.shirt;
      case 4: return std::abs(u) < half_torso * 0.3 ? id.shirt_detail : id.shirt;
      default: return id.shirt;
    }
  });
  // Shoulder bag: a strap across the torso and the bag at the hip.
  if (id.bag_kind == 2) {
    const double hip = cx + side * id.bag_side * (half_torso + 1);
    for (double t = 0; t <= 1; t += 0.02) {
      const double x = cx - side * id.bag_side * half_torso * (1 - 2 * t);
      const double y = at(0.17) + t * (at(0.47) - at(0.17));
      canvas.fill_box(x - 1, y - 1, x + 1, y + 1, shade(id.bag, 0.7));
    }
    canvas.fill_box(hip - 0.09 * size, at(0.44), hip + 0.05 * size, at(0.58), id.bag);
  }
  // Head, hair, hat.
  const double head_y = at(0.085), head_ry = 0.065 * size, head_rx = 0.05 * size;
  canvas.fill_box(cx - head_rx * 0.45, at(0.13), cx + head_rx * 0.45, at(0.17), id.skin);  // neck
  canvas.fill_ellipse(cx, head_y, head_rx, head_ry, id.skin);
  canvas.fill_ellipse(cx, head_y, head_rx * 1.05, head_ry * 1.05, id.hair, head_y - head_ry * 0.25);
  if (id.has_hat) {
    canvas.fill_box(cx - head_rx * 1.1, head_y - head_ry * 1.2, cx + head_rx * 1.1, head_y - head_ry * 0.3, id.hat);
    canvas.fill_box(cx - head_rx * 1.5, head_y - head_ry * 0.45, cx + head_rx * 1.5, head_y - head_ry * 0.2, shade(id.hat, 0.8));
  }
}

/// One picture of `id` (or, for junk, a badly placed box) by `camera`.
inline torch::Tensor take_picture(const Identity& id, const Camera& camera, int height, int width,
                           bool junk, Rng& rng) {
  Canvas canvas(height, width);
  draw_background(canvas, camera, rng);
  const double size = height * camera.scale * id.stature * uniform(rng, 0.94, 1.04);
  double cx = width * (0.5 + camera.shift + uniform(rng, -0.05, 0.05));
  double bottom = height * uniform(rng, 0.96, 1.0);
  if (junk) {  // a detector's miss: mostly background, a fragment of a person
    cx += width * (uniform(rng, 0, 1) < 0.5 ? -0.55 : 0.55);
    bottom += height * uniform(rng, 0.2, 0.5);
  }
  const int side = (camera.mirrored ? -1 : 1) * (uniform(rng, 0, 1) < 0.15 ? -1 : 1);
  draw_person(canvas, id, cx, bottom, size, side, uniform(rng, -1, 1));
  return canvas.develop(camera, uniform(rng, 0.92, 1.08), rng);
}

}  // namespace reidnet::toy::blocks
