#pragma once
// What the styles of reidnet-toy-data share: colours, skin and hair tones, and the camera's
// development of a drawn scene (light, colour cast, sensor noise) into a uint8 picture.
#include "common/cairo_image.hpp"

#include <reidnet/data/detail/random.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

namespace reidnet::toy {

using reidnet::Rng;
using reidnet::detail::random_integer;
using reidnet::detail::uniform;

using Colour = std::array<float, 3>;  // RGB, 0 to 255

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

inline Colour random_skin(Rng& rng) {
  const std::array<Colour, 4> skins{{{224, 180, 150}, {190, 140, 105}, {140, 95, 65}, {95, 65, 45}}};
  return skins[random_integer(rng, 0, 4)];
}

inline Colour random_hair(Rng& rng) {
  const std::array<Colour, 4> hairs{{{20, 15, 10}, {90, 60, 30}, {200, 170, 90}, {130, 130, 130}}};
  return hairs[random_integer(rng, 0, 4)];
}

inline Colour shade(const Colour& colour, double factor) {
  return {static_cast<float>(colour[0] * factor), static_cast<float>(colour[1] * factor),
          static_cast<float>(colour[2] * factor)};
}

/// Light (`gain`), colour cast and sensor noise applied to a float [H, W, 3] scene: uint8.
inline torch::Tensor develop(const torch::Tensor& scene, double gain, const Colour& cast, Rng& rng) {
  const auto light = scene.contiguous();
  const float* in = light.data_ptr<float>();
  auto image = torch::empty(light.sizes(), torch::kUInt8);
  uint8_t* out = image.data_ptr<uint8_t>();
  for (int64_t i = 0; i < light.numel(); ++i) {
    const double noisy = in[i] * gain * cast[i % 3] + uniform(rng, -6, 6);
    out[i] = static_cast<uint8_t>(std::clamp(noisy, 0.0, 255.0));
  }
  return image;
}

}  // namespace reidnet::toy
