#pragma once
// The "street" style of reidnet-toy-data, drawn with cairo: articulated pedestrians that walk
// (arms and legs swing), are seen from the front, the back or either side, and are partly
// hidden by posts, cars and passers-by, in front of street scenes whose clutter changes from
// picture to picture. A camera fixes the palette of its scene, its light, colour cast,
// resolution (blur) and how far away people are, so the background tells which camera took a
// picture but not who is in it: a model has to look at the person.
#include "common.hpp"

#include <cairo.h>

#include <array>
#include <cmath>

namespace reidnet::toy::street {

/// What makes a person recognisable across cameras.
struct Identity {
  Colour top, top_detail, bottom, shoes, skin, hair, hat, bag;
  int pattern = 0;      // 0 plain, 1 horizontal stripes, 2 vertical stripes, 3 two-tone, 4 chest band
  int bottom_kind = 0;  // 0 trousers, 1 shorts, 2 skirt
  int hair_kind = 0;    // 0 short, 1 long, 2 none
  int bag_kind = 0;     // 0 none, 1 backpack, 2 shoulder bag, 3 hand bag
  bool short_sleeves = false, has_hat = false;
  double build = 1.0, stature = 1.0;
};

inline Identity random_identity(Rng& rng) {
  Identity id;
  id.top = random_colour(rng);
  id.top_detail = random_colour(rng);
  id.bottom = random_colour(rng);
  id.shoes = random_colour(rng);
  id.skin = random_skin(rng);
  id.hair = random_hair(rng);
  id.hat = random_colour(rng);
  id.bag = random_colour(rng);
  id.pattern = static_cast<int>(random_integer(rng, 0, 5));
  id.bottom_kind = static_cast<int>(random_integer(rng, 0, 6)) / 2 % 3;
  id.hair_kind = uniform(rng, 0, 1) < 0.1 ? 2 : static_cast<int>(random_integer(rng, 0, 2));
  id.bag_kind = static_cast<int>(random_integer(rng, 0, 4));
  id.short_sleeves = uniform(rng, 0, 1) < 0.4;
  id.has_hat = uniform(rng, 0, 1) < 0.25;
  id.build = uniform(rng, 0.85, 1.2);
  id.stature = uniform(rng, 0.88, 1.0);
  return id;
}

/// What a camera does to every picture it takes.
struct Camera {
  Colour wall, ground, trim, foliage;
  double horizon = 0.55;   // where the wall meets the ground, as a fraction of the height
  double distance = 0.85;  // person height as a fraction of the picture height
  double resolution = 1.0; // 1: sharp; lower: drawn smaller and scaled up (blur)
  double gain = 1.0;
  Colour cast{1, 1, 1};
  double occlusion = 0.25;  // chance of something in front of the person
};

inline Camera random_camera(Rng& rng) {
  Camera camera;
  camera.wall = random_colour(rng);
  camera.ground = shade(random_colour(rng), 0.7);
  camera.trim = random_colour(rng);
  camera.foliage = {static_cast<float>(uniform(rng, 20, 90)), static_cast<float>(uniform(rng, 90, 170)),
                    static_cast<float>(uniform(rng, 20, 80))};
  camera.horizon = uniform(rng, 0.45, 0.7);
  camera.distance = uniform(rng, 0.72, 0.92);
  camera.resolution = uniform(rng, 0.45, 1.0);
  camera.gain = uniform(rng, 0.7, 1.2);
  for (auto& c : camera.cast) c = static_cast<float>(uniform(rng, 0.85, 1.15));
  camera.occlusion = uniform(rng, 0.1, 0.35);
  return camera;
}

namespace detail {

using examples::CairoPtr;
using examples::SurfacePtr;

inline void set_colour(cairo_t* cr, const Colour& c) {
  cairo_set_source_rgb(cr, c[0] / 255.0, c[1] / 255.0, c[2] / 255.0);
}

/// A limb from (x, y) at `angle` (radians from straight down), as a round-capped stroke.
inline void limb(cairo_t* cr, double x, double y, double length, double angle, double width,
                 const Colour& colour) {
  set_colour(cr, colour);
  cairo_set_line_width(cr, width);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
  cairo_move_to(cr, x, y);
  cairo_line_to(cr, x + length * std::sin(angle), y + length * std::cos(angle));
  cairo_stroke(cr);
}

inline void ellipse(cairo_t* cr, double cx, double cy, double rx, double ry) {
  cairo_save(cr);
  cairo_translate(cr, cx, cy);
  cairo_scale(cr, rx, ry);
  cairo_arc(cr, 0, 0, 1, 0, 2 * M_PI);
  cairo_restore(cr);
}

/// Draws `id` with its feet at (0, 0) and its head at (0, -1) in the current user space:
/// `view` 0 front, 1 back, 2 facing left, 3 facing right; `phase` the walking cycle.
inline void draw_person(cairo_t* cr, const Identity& id, int view, double phase) {
  const double b = id.build;
  const bool side = view >= 2, back = view == 1;
  const double facing = view == 2 ? -1 : 1;
  const double swing = std::sin(phase) * (side ? 0.45 : 0.18);
  const double half_torso = (side ? 0.085 : 0.13) * b, hip_y = -0.48, shoulder_y = -0.8;
  const double leg_w = 0.075 * b, arm_w = 0.055 * std::sqrt(b);
  auto legs = [&] {
    for (const int which : {-1, 1}) {
      const double hx = side ? which * 0.01 : which * 0.055 * b;
      const double angle = which * swing;
      const double ex = hx + 0.44 * std::sin(angle), ey = hip_y + 0.44 * std::cos(angle);
      limb(cr, hx, hip_y, 0.44, angle, leg_w, id.bottom_kind == 1 ? id.skin : id.bottom);
      if (id.bottom_kind == 1) limb(cr, hx, hip_y, 0.16, angle, leg_w * 1.15, id.bottom);
      set_colour(cr, id.shoes);
      ellipse(cr, ex + (side ? facing * 0.03 : 0), ey, side ? 0.06 : 0.045, 0.03);
      cairo_fill(cr);
    }
    if (id.bottom_kind == 2) {  // skirt
      set_colour(cr, id.bottom);
      cairo_move_to(cr, -half_torso, hip_y - 0.03);
      cairo_line_to(cr, half_torso, hip_y - 0.03);
      cairo_line_to(cr, half_torso * 1.5, hip_y + 0.2);
      cairo_line_to(cr, -half_torso * 1.5, hip_y + 0.2);
      cairo_close_path(cr);
      cairo_fill(cr);
    }
  };
  auto arm = [&](int which) {
    const double sx = side ? 0 : which * (half_torso + arm_w * 0.3);
    const double angle = -which * swing * (side ? 1.0 : 0.6) + (side ? 0 : which * 0.08);
    limb(cr, sx, shoulder_y, 0.32, angle, arm_w, id.short_sleeves ? id.skin : id.top);
    if (id.short_sleeves) limb(cr, sx, shoulder_y, 0.1, angle, arm_w * 1.2, id.top);
    if (id.bag_kind == 3 && which == 1) {  // hand bag at the end of the right arm
      set_colour(cr, id.bag);
      cairo_rectangle(cr, sx + 0.32 * std::sin(angle) - 0.05, shoulder_y + 0.32 * std::cos(angle), 0.1, 0.12);
      cairo_fill(cr);
    }
  };
  auto backpack = [&] {
    set_colour(cr, id.bag);
    if (back) {
      cairo_rectangle(cr, -half_torso * 0.8, shoulder_y + 0.02, half_torso * 1.6, 0.26);
    } else if (side) {
      cairo_rectangle(cr, -facing * (half_torso + 0.07), shoulder_y + 0.02, 0.08, 0.26);
    }
    cairo_fill(cr);
  };
  auto torso = [&] {
    cairo_save(cr);
    cairo_rectangle(cr, -half_torso, shoulder_y - 0.03, 2 * half_torso, hip_y - shoulder_y + 0.06);
    cairo_clip(cr);
    set_colour(cr, id.top);
    cairo_paint(cr);
    set_colour(cr, id.top_detail);
    switch (id.pattern) {
      case 1:
        for (double y = shoulder_y; y < hip_y; y += 0.07) cairo_rectangle(cr, -1, y, 2, 0.035);
        break;
      case 2:
        for (double x = -half_torso; x < half_torso; x += 0.06) cairo_rectangle(cr, x, -1, 0.03, 1);
        break;
      case 3:
        cairo_rectangle(cr, -1, (shoulder_y + hip_y) / 2, 2, 1);
        break;
      case 4:
        cairo_rectangle(cr, -1, shoulder_y + 0.08, 2, 0.07);
        break;
      default:
        break;
    }
    cairo_fill(cr);
    cairo_restore(cr);
    if (id.bag_kind == 2 || (id.bag_kind == 1 && !back && !side)) {  // straps
      cairo_set_source_rgb(cr, id.bag[0] / 400.0, id.bag[1] / 400.0, id.bag[2] / 400.0);
      cairo_set_line_width(cr, 0.025);
      if (id.bag_kind == 2) {
        cairo_move_to(cr, -half_torso, shoulder_y);
        cairo_line_to(cr, half_torso, hip_y);
      } else {
        for (const int which : {-1, 1}) {
          cairo_move_to(cr, which * half_torso * 0.6, shoulder_y);
          cairo_line_to(cr, which * half_torso * 0.7, hip_y + 0.05);
        }
      }
      cairo_stroke(cr);
    }
    if (id.bag_kind == 2) {
      set_colour(cr, id.bag);
      cairo_rectangle(cr, half_torso - 0.05, hip_y - 0.06, 0.13, 0.12);
      cairo_fill(cr);
    }
  };
  auto head = [&] {
    const double hy = -0.915, rx = 0.05, ry = 0.065;
    set_colour(cr, id.skin);
    cairo_rectangle(cr, -0.022, hy + 0.04, 0.044, 0.06);  // neck
    cairo_fill(cr);
    ellipse(cr, side ? facing * 0.008 : 0, hy, rx, ry);
    cairo_fill(cr);
    if (id.hair_kind != 2) {
      set_colour(cr, id.hair);
      if (back) {
        ellipse(cr, 0, hy, rx * 1.08, ry * 1.05);
      } else {
        cairo_save(cr);
        cairo_rectangle(cr, -1, -2, 2, hy - ry * 0.2 + 2);
        if (side) cairo_rectangle(cr, -facing * 1.0, hy - ry, facing * 0.995, 2 * ry);
        cairo_clip(cr);
        ellipse(cr, 0, hy, rx * 1.08, ry * 1.08);
        cairo_restore(cr);
      }
      cairo_fill(cr);
      if (id.hair_kind == 1 && !side) {  // long hair down to the shoulders
        cairo_rectangle(cr, -rx * 1.05, hy, 2 * rx * 1.05, back ? 0.17 : 0.1);
        if (!back) cairo_rectangle(cr, -rx * 0.6, hy - ry * 0.2, 1.2 * rx, 0.1);
        cairo_fill_rule_t rule = cairo_get_fill_rule(cr);
        cairo_set_fill_rule(cr, CAIRO_FILL_RULE_EVEN_ODD);
        cairo_fill(cr);
        cairo_set_fill_rule(cr, rule);
      }
    }
    if (id.has_hat) {
      set_colour(cr, id.hat);
      cairo_rectangle(cr, -rx * 1.1, hy - ry * 1.25, 2.2 * rx, ry * 0.8);
      cairo_fill(cr);
      cairo_rectangle(cr, side ? std::min(0.0, facing) * rx * 1.8 : -rx * 1.4, hy - ry * 0.55,
                      side ? rx * 1.8 : rx * 2.8, ry * 0.22);
      cairo_fill(cr);
    }
  };
  cairo_save(cr);
  // Back to front: what is behind the body first.
  if (id.bag_kind == 1 && side) backpack();
  legs();
  if (side) arm(-1);
  if (!side) {
    arm(-1);
    arm(1);
  }
  torso();
  if (id.bag_kind == 1 && back) backpack();
  head();
  if (side) arm(1);
  cairo_restore(cr);
}

}  // namespace detail

/// The scene behind the people: wall and ground in the camera's colours, with doors,
/// windows, trees and posts placed anew for every picture (drawn from `rng`).
inline void draw_background(cairo_t* cr, const Camera& camera, double w, double h, Rng& rng) {
  const double horizon = camera.horizon * h;
  detail::set_colour(cr, camera.wall);
  cairo_rectangle(cr, 0, 0, w, horizon);
  cairo_fill(cr);
  detail::set_colour(cr, camera.ground);
  cairo_rectangle(cr, 0, horizon, w, h - horizon);
  cairo_fill(cr);
  // Paving lines converge towards a vanishing point, which moves with the viewpoint.
  const double vanish = uniform(rng, -0.5, 1.5) * w;
  cairo_set_source_rgba(cr, 0, 0, 0, 0.18);
  cairo_set_line_width(cr, 1);
  for (int i = -3; i <= 6; ++i) {
    cairo_move_to(cr, vanish, horizon);
    cairo_line_to(cr, i * w / 3.0, h);
  }
  cairo_stroke(cr);
  const int things = static_cast<int>(random_integer(rng, 1, 4));
  for (int i = 0; i < things; ++i) {
    const double x = uniform(rng, -0.2, 1.0) * w, width = uniform(rng, 0.15, 0.45) * w;
    switch (random_integer(rng, 0, 4)) {
      case 0:  // a window or shop sign
        detail::set_colour(cr, shade(camera.trim, uniform(rng, 0.6, 1.1)));
        cairo_rectangle(cr, x, uniform(rng, 0.05, 0.3) * horizon, width, uniform(rng, 0.2, 0.4) * horizon);
        cairo_fill(cr);
        break;
      case 1:  // a door down to the ground
        detail::set_colour(cr, shade(camera.trim, 0.5));
        cairo_rectangle(cr, x, uniform(rng, 0.35, 0.55) * horizon, width * 0.6, horizon);
        cairo_fill(cr);
        break;
      case 2: {  // a tree
        detail::set_colour(cr, {90, 60, 35});
        cairo_rectangle(cr, x + width * 0.45, horizon * 0.4, width * 0.12, horizon * 0.65);
        cairo_fill(cr);
        detail::set_colour(cr, shade(camera.foliage, uniform(rng, 0.8, 1.2)));
        detail::ellipse(cr, x + width * 0.5, horizon * 0.35, width * 0.6, horizon * 0.3);
        cairo_fill(cr);
        break;
      }
      default:  // a post
        detail::set_colour(cr, shade(camera.trim, 0.35));
        cairo_rectangle(cr, x, 0, std::max(2.0, w * 0.05), horizon * 1.05);
        cairo_fill(cr);
    }
  }
}

/// Draws `id` standing with its feet at (`x`, `feet`), `size` pixels from feet to the top of
/// the head: `view` 0 front, 1 back, 2 facing left, 3 facing right; `phase` the walking cycle.
inline void draw_person_at(cairo_t* cr, const Identity& id, double x, double feet, double size,
                           int view, double phase) {
  cairo_save(cr);
  cairo_translate(cr, x, feet);
  cairo_scale(cr, size, size);
  detail::draw_person(cr, id, view, phase);
  cairo_restore(cr);
}

/// Something between the camera and the person: a post, the top of a car, or a passer-by.
inline void draw_occluder(cairo_t* cr, const Camera& camera, double w, double h, Rng& rng) {
  switch (random_integer(rng, 0, 3)) {
    case 0: {
      detail::set_colour(cr, shade(camera.trim, 0.3));
      const double x = uniform(rng, 0.1, 0.8) * w;
      cairo_rectangle(cr, x, 0, uniform(rng, 0.08, 0.18) * w, h);
      cairo_fill(cr);
      break;
    }
    case 1: {
      detail::set_colour(cr, random_colour(rng));
      const double top = uniform(rng, 0.62, 0.8) * h;
      cairo_rectangle(cr, -0.1 * w, top, 1.2 * w, h - top);
      cairo_fill(cr);
      cairo_set_source_rgba(cr, 0.8, 0.9, 1.0, 0.6);
      cairo_rectangle(cr, -0.1 * w, top, 1.2 * w, 0.05 * h);
      cairo_fill(cr);
      break;
    }
    default: {
      Rng passer_rng(rng());
      const auto passer = random_identity(passer_rng);
      const double x = (uniform(rng, 0, 1) < 0.5 ? -0.3 : 1.3) * w;
      draw_person_at(cr, passer, x, h * 1.05, h * 0.95, static_cast<int>(random_integer(rng, 0, 4)),
                     uniform(rng, 0, 6.3));
    }
  }
}

/// One picture of `id` (or, for junk, a badly placed box) by `camera`: uint8 [H, W, 3].
inline torch::Tensor take_picture(const Identity& id, const Camera& camera, int height,
                                  int width, bool junk, Rng& rng) {
  using detail::CairoPtr;
  using detail::SurfacePtr;
  // Drawn at the camera's resolution, then scaled up: a low-resolution camera blurs.
  const int small_h = std::max(8, static_cast<int>(std::lround(height * camera.resolution)));
  const int small_w = std::max(4, static_cast<int>(std::lround(width * camera.resolution)));
  SurfacePtr small(cairo_image_surface_create(CAIRO_FORMAT_RGB24, small_w, small_h),
                   cairo_surface_destroy);
  {
    CairoPtr cr(cairo_create(small.get()), cairo_destroy);
    cairo_scale(cr.get(), static_cast<double>(small_w) / width, static_cast<double>(small_h) / height);
    draw_background(cr.get(), camera, width, height, rng);
    const double size = height * camera.distance * id.stature * uniform(rng, 0.93, 1.05);
    double cx = width * uniform(rng, 0.42, 0.58), feet = height * uniform(rng, 0.95, 1.0);
    if (junk) {  // a detector's miss: mostly background, a fragment of a person
      cx += width * (uniform(rng, 0, 1) < 0.5 ? -0.6 : 0.6);
      feet += height * uniform(rng, 0.2, 0.5);
    }
    draw_person_at(cr.get(), id, cx, feet, size, static_cast<int>(random_integer(rng, 0, 4)),
                   uniform(rng, 0, 6.3));
    if (uniform(rng, 0, 1) < camera.occlusion) draw_occluder(cr.get(), camera, width, height, rng);
  }
  SurfacePtr full(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height), cairo_surface_destroy);
  {
    CairoPtr cr(cairo_create(full.get()), cairo_destroy);
    cairo_scale(cr.get(), static_cast<double>(width) / small_w, static_cast<double>(height) / small_h);
    cairo_set_source_surface(cr.get(), small.get(), 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr.get()), CAIRO_FILTER_BILINEAR);
    cairo_pattern_set_extend(cairo_get_source(cr.get()), CAIRO_EXTEND_PAD);
    cairo_paint(cr.get());
  }
  return develop(examples::pixels_of(full.get()).to(torch::kFloat), camera.gain * uniform(rng, 0.9, 1.1), camera.cast, rng);
}

}  // namespace reidnet::toy::street
