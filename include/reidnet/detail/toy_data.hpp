#pragma once
// The synthetic pedestrians of reidnet-toy-data (examples/toy_data.cpp), here so that the tests
// can check the data set's promises: Market-1501 layout and names, test ids disjoint from
// training ids, a same-id match on another camera for every query, determinism per seed.

#include <reidnet/detail/file_io.hpp>
#include <reidnet/detail/random.hpp>
#include <reidnet/image.hpp>

#include <fmt/core.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet::detail::toy {

namespace fs = std::filesystem;
using reidnet::Rng;
using reidnet::detail::random_integer;
using reidnet::detail::uniform;


using Colour = std::array<float, 3>;

inline Colour random_colour(Rng& rng) {
  // Saturated or dark/light colours, as clothes are: a random hue at a random value.
  const double hue = uniform(rng, 0, 6), value = uniform(rng, 0.25, 1.0), saturation = uniform(rng, 0.2, 1.0);
  const int sector = static_cast<int>(hue) % 6;
  const double f = hue - std::floor(hue);
  const double p = value * (1 - saturation), q = value * (1 - saturation * f),
               t = value * (1 - saturation * (1 - f));
  const std::array<std::array<double, 3>, 6> rgb{{{value, t, p}, {q, value, p}, {p, value, t},
                                                  {p, q, value}, {t, p, value}, {value, p, q}}};
  return {static_cast<float>(255 * rgb[sector][0]), static_cast<float>(255 * rgb[sector][1]),
          static_cast<float>(255 * rgb[sector][2])};
}

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
  const std::array<Colour, 4> skins{{{224, 180, 150}, {190, 140, 105}, {140, 95, 65}, {95, 65, 45}}};
  id.skin = skins[random_integer(rng, 0, 4)];
  const std::array<Colour, 4> hairs{{{20, 15, 10}, {90, 60, 30}, {200, 170, 90}, {130, 130, 130}}};
  id.hair = hairs[random_integer(rng, 0, 4)];
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
  /// Lighting, colour cast, box blur and sensor noise, then uint8 [H, W, 3].
  torch::Tensor develop(const Camera& camera, double extra_gain, Rng& rng) const {
    std::vector<float> light(pixels_.size());
    for (size_t i = 0; i < pixels_.size(); ++i) {
      light[i] = static_cast<float>(pixels_[i] * camera.gain * extra_gain * camera.cast[i % 3]);
    }
    const auto blurred = blur(blur(light, camera.blur, true), camera.blur, false);
    auto image = torch::empty({height_, width_, 3}, torch::kUInt8);
    uint8_t* out = image.data_ptr<uint8_t>();
    for (size_t i = 0; i < blurred.size(); ++i) {
      const double noisy = blurred[i] + uniform(rng, -6, 6);
      out[i] = static_cast<uint8_t>(std::clamp(noisy, 0.0, 255.0));
    }
    return image;
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

inline Colour shade(const Colour& colour, double factor) {
  return {static_cast<float>(colour[0] * factor), static_cast<float>(colour[1] * factor),
          static_cast<float>(colour[2] * factor)};
}

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

/// The knobs of reidnet-toy-data.
struct ToyDataOptions {
  int ids = 32, test_ids = -1, images_per_id = 8, cameras = 6, distractors = 24, junk = 12;
  int height = 128, width = 64, quality = 90;
  uint64_t seed = 0;
};

/// Market-1501's naming: 0002_c1s1_000451_01.jpg; junk is -1_c...
inline std::string market_name(int64_t person_id, int camera, int frame) {
  const std::string id = person_id < 0 ? "-1" : fmt::format("{:04d}", person_id);
  return fmt::format("{}_c{}s1_{:06d}_01.jpg", id, camera, frame);
}

struct Counts {
  int train = 0, query = 0, gallery = 0;
};

inline Counts write_toy_dataset(const ToyDataOptions& s, const fs::path& root) {
  const int test_ids = s.test_ids < 0 ? s.ids : s.test_ids;
  if (s.ids < 1 || test_ids < 1 || s.ids + test_ids > 9999 || s.images_per_id < 4 || s.cameras < 2) {
    throw std::runtime_error("the toy data set needs 1 <= ids, test ids with ids + test ids <= 9999 "
                             "(4-digit Market ids), at least 4 pictures per id and 2 cameras");
  }
  for (const char* split : {"bounding_box_train", "query", "bounding_box_test"}) {
    fs::create_directories(root / split);
  }
  Rng rng = reidnet::sample_rng(s.seed, 0, 0);
  std::vector<Camera> cameras;
  for (int c = 0; c < s.cameras; ++c) cameras.push_back(random_camera(rng));
  // Person ids: distinct numbers in 1..9999, the first ones for training, the rest for test.
  std::vector<int64_t> numbers;
  for (int64_t n = 1; n <= 9999; ++n) numbers.push_back(n);
  reidnet::detail::shuffle(numbers, rng);
  std::vector<int64_t> train_ids(numbers.begin(), numbers.begin() + s.ids);
  std::vector<int64_t> test_id_numbers(numbers.begin() + s.ids, numbers.begin() + s.ids + test_ids);
  std::sort(train_ids.begin(), train_ids.end());
  std::sort(test_id_numbers.begin(), test_id_numbers.end());

  int frame = 0;
  Counts counts;
  const auto save = [&](const char* split, int64_t person_id, const Identity& id, int camera,
                        bool junk) {
    Rng picture_rng = reidnet::sample_rng(s.seed, 1, ++frame);
    const auto image = take_picture(id, cameras[camera - 1], s.height, s.width, junk, picture_rng);
    reidnet::write_jpeg((root / split / market_name(person_id, camera, frame)).string(), image,
                        s.quality);
  };
  // Each person is seen by 2 to 4 cameras.
  const auto cameras_of = [&](Rng& r) {
    std::vector<int> all;
    for (int c = 1; c <= s.cameras; ++c) all.push_back(c);
    reidnet::detail::shuffle(all, r);
    all.resize(std::min<size_t>(all.size(), static_cast<size_t>(random_integer(r, 2, 5))));
    return all;
  };
  for (int64_t person : train_ids) {
    const auto id = random_identity(rng);
    const auto seen_by = cameras_of(rng);
    for (int i = 0; i < s.images_per_id; ++i) {
      save("bounding_box_train", person, id, seen_by[i % seen_by.size()], false);
      ++counts.train;
    }
  }
  for (int64_t person : test_id_numbers) {
    const auto id = random_identity(rng);
    const auto seen_by = cameras_of(rng);
    // One or two queries on distinct cameras; the gallery cycles over every camera that saw
    // the person, so each query has a match on another camera.
    const int queries = uniform(rng, 0, 1) < 0.5 ? 1 : 2;
    for (int q = 0; q < queries; ++q) {
      save("query", person, id, seen_by[q], false);
      ++counts.query;
    }
    for (int i = 0; i < s.images_per_id; ++i) {
      save("bounding_box_test", person, id, seen_by[i % seen_by.size()], false);
      ++counts.gallery;
    }
  }
  for (int i = 0; i < s.distractors; ++i) {  // people who are in no query
    save("bounding_box_test", 0, random_identity(rng), static_cast<int>(random_integer(rng, 1, s.cameras + 1)), false);
    ++counts.gallery;
  }
  for (int i = 0; i < s.junk; ++i) {
    save("bounding_box_test", -1, random_identity(rng), static_cast<int>(random_integer(rng, 1, s.cameras + 1)), true);
    ++counts.gallery;
  }
  return counts;
}


/// Writes the data set into `out` through write_folder_atomically (a temporary sibling folder
/// renamed at the end), so that `out` is either complete or absent. Throws std::runtime_error
/// on failure.
inline Counts create_toy_dataset(const ToyDataOptions& options, const std::string& out) {
  const fs::path target(out);
  try {
    if (!target.parent_path().empty()) fs::create_directories(target.parent_path());
    return write_folder_atomically(
        out, [&](const fs::path& folder) { return write_toy_dataset(options, folder); });
  } catch (const std::exception& failure) {
    throw std::runtime_error("cannot write the toy data set to " + out + ": " + failure.what());
  }
}

}  // namespace reidnet::detail::toy
