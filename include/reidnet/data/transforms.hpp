#pragma once
/// Image transforms that give the pixels torchvision gives on PIL images.
///
///     auto input = reidnet::eval_transform(reidnet::read_image(path), 256, 128);  // [3, 256, 128]
///
/// Images are uint8 [H, W, 3] RGB tensors (what read_image returns) until ToTensor; from then
/// on float [3, H, W]. Random transforms draw from a reidnet::Rng, so one seed gives one output.

#include <reidnet/data/detail/pil_resample.hpp>
#include <reidnet/data/detail/random.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>

namespace reidnet {

/// One value per RGB channel.
using ChannelValues = std::array<float, 3>;

/// ImageNet statistics, what the baseline normalises with.
constexpr ChannelValues kImageNetMean{0.485f, 0.456f, 0.406f};
constexpr ChannelValues kImageNetStd{0.229f, 0.224f, 0.225f};

/// ToTensor + Normalize: a level v of channel c becomes (v / max_pixel_value - mean[c]) / std[c]
/// in float32. torchvision's pipelines divide by 255 and take mean and std on 0..1 (the
/// baseline: ImageNet's; TransReID and CLIP-ReID: 0.5 and 0.5); fast-reid keeps 0..255 pixels
/// (max_pixel_value 1) with mean and std on 0..255.
struct Normalization {
  TORCH_ARG(ChannelValues, mean) = kImageNetMean;
  TORCH_ARG(ChannelValues, std) = kImageNetStd;
  TORCH_ARG(float, max_pixel_value) = 255.0f;
};

/// The resize filter: torchvision's Resize on PIL images, antialiased as PIL's. The baseline
/// resizes bicubically; torchreid (and so the OSNet files trackers ship) with Resize's default,
/// bilinear.
enum class Interpolation { kBicubic, kBilinear };

/// "bicubic" or "bilinear" (ModelConfig::interpolation's spellings); throws
/// std::invalid_argument naming the others.
inline Interpolation interpolation_from_name(const std::string& name) {
  if (name == "bicubic") return Interpolation::kBicubic;
  if (name == "bilinear") return Interpolation::kBilinear;
  throw std::invalid_argument("unknown interpolation '" + name + "'; the data pipeline resizes "
                              "as PIL's bicubic or bilinear");
}

namespace detail {

inline torch::Tensor checked_hwc_u8(const torch::Tensor& image, const char* what) {
  if (image.dim() != 3 || image.scalar_type() != torch::kUInt8 || image.size(2) < 1 ||
      image.size(2) > 4 || image.size(0) == 0 || image.size(1) == 0) {
    throw std::runtime_error(std::string(what) +
                             ": expected a non-empty uint8 [H, W, C] image with C in 1..4, got " +
                             c10::str(image.scalar_type(), " ", image.sizes()));
  }
  return image.cpu().contiguous();
}

inline void check_size(int64_t height, int64_t width, const char* what) {
  if (height <= 0 || width <= 0) {
    throw std::runtime_error(std::string(what) + ": the output size " + std::to_string(height) +
                             "x" + std::to_string(width) + " must be positive");
  }
}

/// PIL's ImageEnhance: Image.blend(degenerate, image, factor), truncated to uint8 in float
/// arithmetic (clipped when extrapolating) exactly as libImaging/Blend.c does it.
inline uint8_t pil_blend(uint8_t degenerate, uint8_t value, float factor) {
  const float blended =
      static_cast<float>(static_cast<int>(degenerate)) +
      factor * static_cast<float>(static_cast<int>(value) - static_cast<int>(degenerate));
  if (factor >= 0.0f && factor <= 1.0f) return static_cast<uint8_t>(blended);
  if (blended <= 0.0f) return 0;
  if (blended >= 255.0f) return 255;
  return static_cast<uint8_t>(blended);
}

/// PIL's RGB -> L conversion (ITU-R 601-2 luma in 16-bit fixed point, rounded).
inline uint8_t pil_luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
}

inline torch::Tensor checked_rgb_u8(const torch::Tensor& image, const char* what) {
  auto checked = checked_hwc_u8(image, what);
  if (checked.size(2) != 3) {
    throw std::runtime_error(std::string(what) + ": expected an RGB image (3 channels), got " +
                             c10::str(image.sizes()));
  }
  return checked;
}

/// A copy made with memcpy: torch's copy would start intra-op threads inside loader workers.
inline torch::Tensor copy_of(const torch::Tensor& contiguous) {
  auto copy = torch::empty(contiguous.sizes(), contiguous.options());
  std::memcpy(copy.data_ptr(), contiguous.data_ptr(), contiguous.nbytes());
  return copy;
}

/// The normalised value of every uint8 level, per channel: (v / max_pixel_value - mean) / std
/// in float32, exactly torchvision's ToTensor + Normalize arithmetic (and fast-reid's).
using NormalizeTable = std::array<std::array<float, 256>, 3>;
inline NormalizeTable normalize_table(const Normalization& normalization) {
  const auto& mean = normalization.mean();
  const auto& std = normalization.std();
  const float max_pixel_value = normalization.max_pixel_value();
  if (!(max_pixel_value > 0) || !std::isfinite(max_pixel_value)) {
    throw std::invalid_argument("Normalization: max_pixel_value must be positive and finite");
  }
  NormalizeTable table;
  for (int c = 0; c < 3; ++c) {
    if (!(std[c] > 0) || !std::isfinite(std[c]) || !std::isfinite(mean[c])) {
      throw std::invalid_argument("Normalization: every std must be positive and finite, every "
                                  "mean finite");
    }
    for (int v = 0; v < 256; ++v) {
      table[c][v] = (static_cast<float>(v) / max_pixel_value - mean[c]) / std[c];
    }
  }
  return table;
}

/// out[c, y, x] = normalised in[y + top, x + left] (zero outside the picture), read right to
/// left when `mirror`: Pad + RandomCrop + RandomHorizontalFlip + ToTensor + Normalize in one pass.
inline torch::Tensor window_to_normalized_tensor(const torch::Tensor& rgb, int64_t top, int64_t left,
                                                 int64_t height, int64_t width, bool mirror,
                                                 const NormalizeTable& table) {
  const int64_t in_height = rgb.size(0), in_width = rgb.size(1), plane = height * width;
  const uint8_t* in = rgb.data_ptr<uint8_t>();
  auto output = torch::empty({3, height, width}, torch::kFloat32);
  float* out = output.data_ptr<float>();
  for (int64_t y = 0; y < height; ++y) {
    const int64_t source_y = y + top;
    const bool row_inside = source_y >= 0 && source_y < in_height;
    for (int64_t x = 0; x < width; ++x) {
      const int64_t source_x = (mirror ? width - 1 - x : x) + left;
      const int64_t at = y * width + x;
      if (row_inside && source_x >= 0 && source_x < in_width) {
        const uint8_t* pixel = in + (source_y * in_width + source_x) * 3;
        for (int c = 0; c < 3; ++c) out[c * plane + at] = table[c][pixel[c]];
      } else {
        for (int c = 0; c < 3; ++c) out[c * plane + at] = table[c][0];
      }
    }
  }
  return output;
}

}  // namespace detail

/// torchvision's Resize((height, width), interpolation) on a PIL image: PIL's antialiased
/// bicubic or bilinear.
inline torch::Tensor resize(const torch::Tensor& image, int64_t height, int64_t width,
                            Interpolation interpolation = Interpolation::kBicubic) {
  const auto input = detail::checked_hwc_u8(image, "resize");
  detail::check_size(height, width, "resize");
  auto output = torch::empty({height, width, input.size(2)}, torch::kUInt8);
  const auto filter = interpolation == Interpolation::kBilinear ? detail::PilFilter::kBilinear
                                                                : detail::PilFilter::kBicubic;
  detail::pil_resize(filter, input.data_ptr<uint8_t>(), static_cast<int>(input.size(0)),
                             static_cast<int>(input.size(1)), static_cast<int>(input.size(2)),
                             output.data_ptr<uint8_t>(), static_cast<int>(height),
                             static_cast<int>(width));
  return output;
}

/// The window [top, top + height) x [left, left + width); parts outside the image are zero,
/// as PIL's crop gives.
inline torch::Tensor crop(const torch::Tensor& image, int64_t top, int64_t left, int64_t height,
                          int64_t width) {
  const auto input = detail::checked_hwc_u8(image, "crop");
  detail::check_size(height, width, "crop");
  auto output = torch::zeros({height, width, input.size(2)}, torch::kUInt8);
  const int64_t y0 = std::max<int64_t>(top, 0), y1 = std::min(top + height, input.size(0));
  const int64_t x0 = std::max<int64_t>(left, 0), x1 = std::min(left + width, input.size(1));
  if (y0 < y1 && x0 < x1) {
    output.narrow(0, y0 - top, y1 - y0)
        .narrow(1, x0 - left, x1 - x0)
        .copy_(input.narrow(0, y0, y1 - y0).narrow(1, x0, x1 - x0));
  }
  return output;
}

/// torchvision's Pad(padding) with zeros, on all four sides.
inline torch::Tensor pad(const torch::Tensor& image, int64_t padding) {
  const auto input = detail::checked_hwc_u8(image, "pad");
  if (padding < 0) throw std::runtime_error("pad: padding must be >= 0");
  return crop(input, -padding, -padding, input.size(0) + 2 * padding, input.size(1) + 2 * padding);
}

/// Mirrors left-right.
inline torch::Tensor horizontal_flip(const torch::Tensor& image) {
  return detail::checked_hwc_u8(image, "horizontal_flip").flip({1}).contiguous();
}

namespace detail {

/// Image.blend(constant grey `level`, image, factor).
inline torch::Tensor blend_with_level(const torch::Tensor& rgb, uint8_t level, double factor) {
  auto output = copy_of(rgb);
  uint8_t* pixels = output.data_ptr<uint8_t>();
  for (int64_t i = 0; i < output.numel(); ++i) {
    pixels[i] = pil_blend(level, pixels[i], static_cast<float>(factor));
  }
  return output;
}

}  // namespace detail

/// torchvision's adjust_brightness on PIL (ImageEnhance.Brightness): blend with black.
inline torch::Tensor adjust_brightness(const torch::Tensor& image, double factor) {
  return detail::blend_with_level(detail::checked_rgb_u8(image, "adjust_brightness"), 0, factor);
}

/// torchvision's adjust_contrast on PIL (ImageEnhance.Contrast): blend with the rounded mean
/// grey level.
inline torch::Tensor adjust_contrast(const torch::Tensor& image, double factor) {
  const auto input = detail::checked_rgb_u8(image, "adjust_contrast");
  const uint8_t* pixels = input.data_ptr<uint8_t>();
  const int64_t count = input.size(0) * input.size(1);
  int64_t total = 0;
  for (int64_t p = 0; p < count; ++p) total += detail::pil_luma(pixels + 3 * p);
  const auto mean = static_cast<uint8_t>(static_cast<int>(static_cast<double>(total) / count + 0.5));
  return detail::blend_with_level(input, mean, factor);
}

/// torchvision's adjust_saturation on PIL (ImageEnhance.Color): blend with the grey image.
inline torch::Tensor adjust_saturation(const torch::Tensor& image, double factor) {
  const auto input = detail::checked_rgb_u8(image, "adjust_saturation");
  auto output = detail::copy_of(input);
  uint8_t* pixels = output.data_ptr<uint8_t>();
  const int64_t count = output.size(0) * output.size(1);
  for (int64_t p = 0; p < count; ++p) {
    uint8_t* rgb = pixels + 3 * p;
    const uint8_t grey = detail::pil_luma(rgb);
    for (int c = 0; c < 3; ++c) rgb[c] = detail::pil_blend(grey, rgb[c], static_cast<float>(factor));
  }
  return output;
}

/// torchvision's ColorJitter(brightness, contrast, saturation): each factor uniform in
/// [max(0, 1 - x), 1 + x], applied in a random order; x = 0 skips that adjustment.
inline torch::Tensor color_jitter(const torch::Tensor& image, double brightness, double contrast,
                                  double saturation, Rng& rng) {
  std::array<int, 3> order{0, 1, 2};
  detail::shuffle(order, rng);
  const std::array<double, 3> amounts{brightness, contrast, saturation};
  auto output = image;
  for (int which : order) {
    const double amount = amounts[which];
    if (amount <= 0) continue;
    const double factor = detail::uniform(rng, std::max(0.0, 1.0 - amount), 1.0 + amount);
    if (which == 0) output = adjust_brightness(output, factor);
    if (which == 1) output = adjust_contrast(output, factor);
    if (which == 2) output = adjust_saturation(output, factor);
  }
  return output;
}

/// ToTensor then Normalize: uint8 [H, W, 3] -> float [3, H, W], (x / 255 - mean) / std in
/// float32 by default, exactly torchvision's arithmetic.
inline torch::Tensor to_normalized_tensor(const torch::Tensor& image,
                                          const Normalization& normalization = {}) {
  const auto input = detail::checked_rgb_u8(image, "to_normalized_tensor");
  return detail::window_to_normalized_tensor(input, 0, 0, input.size(0), input.size(1), false,
                                             detail::normalize_table(normalization));
}

/// Where RandomErasing erases: rows [top, top + height), columns [left, left + width).
struct ErasedBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

/// torchvision's RandomErasing.get_params: area fraction uniform in `scale`, aspect ratio
/// log-uniform in `ratio`, up to 10 attempts; nothing (an empty box) if none fits.
inline ErasedBox random_erasing_box(int64_t image_height, int64_t image_width, Rng& rng,
                                    std::array<double, 2> scale = {0.02, 0.4},
                                    std::array<double, 2> ratio = {0.3, 1 / 0.3}) {
  const double area = static_cast<double>(image_height * image_width);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double erase_area = area * detail::uniform(rng, scale[0], scale[1]);
    const double aspect = std::exp(detail::uniform(rng, std::log(ratio[0]), std::log(ratio[1])));
    const auto h = static_cast<int64_t>(std::round(std::sqrt(erase_area * aspect)));
    const auto w = static_cast<int64_t>(std::round(std::sqrt(erase_area / aspect)));
    if (!(h < image_height && w < image_width)) continue;
    return {detail::random_integer(rng, 0, image_height - h + 1),
            detail::random_integer(rng, 0, image_width - w + 1), h, w};
  }
  return {};
}

/// RandomErasing(p, value 0) on a float [C, H, W] tensor, in place; returns the box erased
/// (empty when the coin said no or no box fitted).
inline ErasedBox random_erasing_(torch::Tensor& tensor, double probability, Rng& rng) {
  if (detail::uniform01(rng) >= probability) return {};
  const auto box = random_erasing_box(tensor.size(-2), tensor.size(-1), rng);
  if (box.height > 0 && box.width > 0) {
    if (tensor.is_contiguous() && tensor.scalar_type() == torch::kFloat32 && tensor.is_cpu()) {
      float* data = tensor.data_ptr<float>();
      const int64_t height = tensor.size(-2), width = tensor.size(-1);
      for (int64_t plane = 0; plane < tensor.numel() / (height * width); ++plane) {
        for (int64_t y = box.top; y < box.top + box.height; ++y) {
          std::fill_n(data + (plane * height + y) * width + box.left, box.width, 0.0f);
        }
      }
    } else {
      tensor.narrow(-2, box.top, box.height).narrow(-1, box.left, box.width).zero_();
    }
  }
  return box;
}

/// The test-time pipeline: Resize (bicubic by default) -> ToTensor -> Normalize (ImageNet's by
/// default).
inline torch::Tensor eval_transform(const torch::Tensor& image, int64_t height, int64_t width,
                                    const Normalization& normalization = {},
                                    Interpolation interpolation = Interpolation::kBicubic) {
  return to_normalized_tensor(resize(image, height, width, interpolation), normalization);
}

/// The baseline's training recipe.
///
///     auto options = reidnet::TrainTransformOptions().erasing_probability(0.5);
struct TrainTransformOptions {
  TORCH_ARG(int64_t, height) = 256;
  TORCH_ARG(int64_t, width) = 128;
  /// Zero padding before the random crop back to height x width; 0 skips both.
  TORCH_ARG(int64_t, padding) = 10;
  TORCH_ARG(bool, horizontal_flip) = true;
  /// ColorJitter(x, x, x) first, on the decoded picture; 0 = off (the baseline's default).
  TORCH_ARG(double, color_jitter) = 0.0;
  /// RandomErasing probability, after Normalize; 0 = off.
  TORCH_ARG(double, erasing_probability) = 0.0;
  TORCH_ARG(Normalization, normalization) = {};
  TORCH_ARG(Interpolation, interpolation) = Interpolation::kBicubic;
};

/// [ColorJitter] -> Resize -> Pad -> RandomCrop -> RandomHorizontalFlip -> ToTensor ->
/// Normalize -> [RandomErasing]; float [3, height, width].
inline torch::Tensor train_transform(const torch::Tensor& image,
                                     const TrainTransformOptions& options, Rng& rng) {
  detail::check_size(options.height(), options.width(), "train_transform");
  auto picture = detail::checked_rgb_u8(image, "train_transform");
  if (options.color_jitter() > 0) {
    const double x = options.color_jitter();
    picture = color_jitter(picture, x, x, x, rng);
  }
  picture = resize(picture, options.height(), options.width(), options.interpolation());
  // Pad then RandomCrop back to the same size == a window shifted by -padding..padding.
  int64_t top = 0, left = 0;
  if (options.padding() > 0) {
    top = detail::random_integer(rng, 0, 2 * options.padding() + 1) - options.padding();
    left = detail::random_integer(rng, 0, 2 * options.padding() + 1) - options.padding();
  }
  const bool mirror = options.horizontal_flip() && detail::uniform01(rng) < 0.5;
  // 768 values: a table per picture costs nothing beside its resize.
  auto tensor = detail::window_to_normalized_tensor(picture, top, left, options.height(),
                                                    options.width(), mirror,
                                                    detail::normalize_table(options.normalization()));
  if (options.erasing_probability() > 0) random_erasing_(tensor, options.erasing_probability(), rng);
  return tensor;
}

/// What the loader applies to each decoded picture: uint8 [H, W, 3] -> float [3, H, W].
using Transform = std::function<torch::Tensor(const torch::Tensor& image, Rng& rng)>;

/// The eval pipeline as a loader transform.
inline Transform make_eval_transform(int64_t height, int64_t width,
                                     const Normalization& normalization = {},
                                     Interpolation interpolation = Interpolation::kBicubic) {
  detail::check_size(height, width, "make_eval_transform");
  detail::normalize_table(normalization);  // bad values throw here, not in a loader thread
  return [height, width, normalization, interpolation](const torch::Tensor& image, Rng&) {
    return eval_transform(image, height, width, normalization, interpolation);
  };
}

/// The training pipeline as a loader transform.
inline Transform make_train_transform(const TrainTransformOptions& options) {
  detail::check_size(options.height(), options.width(), "make_train_transform");
  detail::normalize_table(options.normalization());
  return [options](const torch::Tensor& image, Rng& rng) {
    return train_transform(image, options, rng);
  };
}

}  // namespace reidnet
