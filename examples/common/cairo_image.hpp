#pragma once
// Pictures between LibTorch and cairo: uint8 [H, W, 3] tensors to and from cairo RGB24 image
// surfaces, with owning handles for cairo's objects.
#include <cairo.h>
#include <torch/torch.h>

#include <cstdint>
#include <memory>

namespace reidnet::examples {

using SurfacePtr = std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)>;
using CairoPtr = std::unique_ptr<cairo_t, decltype(&cairo_destroy)>;

/// A uint8 [H, W, 3] picture as a cairo surface.
inline SurfacePtr surface_of(const torch::Tensor& rgb) {
  const int h = static_cast<int>(rgb.size(0)), w = static_cast<int>(rgb.size(1));
  SurfacePtr surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h), cairo_surface_destroy);
  cairo_surface_flush(surface.get());
  unsigned char* data = cairo_image_surface_get_data(surface.get());
  const int stride = cairo_image_surface_get_stride(surface.get());
  const auto pixels = rgb.contiguous();
  const uint8_t* in = pixels.data_ptr<uint8_t>();
  for (int y = 0; y < h; ++y) {
    auto* row = reinterpret_cast<uint32_t*>(data + y * stride);
    for (int x = 0; x < w; ++x, in += 3) row[x] = (uint32_t{in[0]} << 16) | (uint32_t{in[1]} << 8) | in[2];
  }
  cairo_surface_mark_dirty(surface.get());
  return surface;
}

/// A cairo RGB24 surface as uint8 [H, W, 3].
inline torch::Tensor pixels_of(cairo_surface_t* surface) {
  cairo_surface_flush(surface);
  const int h = cairo_image_surface_get_height(surface), w = cairo_image_surface_get_width(surface);
  const int stride = cairo_image_surface_get_stride(surface);
  const unsigned char* data = cairo_image_surface_get_data(surface);
  auto rgb = torch::empty({h, w, 3}, torch::kUInt8);
  uint8_t* out = rgb.data_ptr<uint8_t>();
  for (int y = 0; y < h; ++y) {
    const auto* row = reinterpret_cast<const uint32_t*>(data + y * stride);
    for (int x = 0; x < w; ++x, out += 3) {
      out[0] = (row[x] >> 16) & 0xff, out[1] = (row[x] >> 8) & 0xff, out[2] = row[x] & 0xff;
    }
  }
  return rgb;
}

}  // namespace reidnet::examples
