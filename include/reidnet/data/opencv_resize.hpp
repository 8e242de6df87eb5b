#pragma once
/// OpenCV's cv::resize(..., INTER_LINEAR) of 8-bit images, pixel for pixel: what trackers
/// (BoxMOT, deep_sort's OpenCV pipelines) do to each detection crop before a ReID model.
/// It differs from the data pipeline's bilinear `resize` (PIL's, see transforms.hpp), which
/// widens its triangle filter when it shrinks (antialiasing); OpenCV's always reads the two
/// nearest pixels, so a downscaled crop keeps more aliasing.
///
///     auto crop = reidnet::opencv_linear_resize(frame_region, 256, 128);   // uint8 [256, 128, 3]
///
/// OpenCV's arithmetic for 8-bit images (imgproc/src/resize.cpp, no IPP): the source position
/// of output pixel d is (d + 0.5) * scale - 0.5 in float, with scale = 1 / (out / in) in double;
/// its two weights are (1 - f, f) rounded to 11-bit fixed point; the horizontal pass keeps the
/// exact integer sums, the vertical pass combines two rows as
/// ((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16) rounded with (+2) >> 2. Edges: a column
/// position before the first or past the last pixel takes that pixel alone; rows take the
/// clamped neighbours with the unclamped weights. An exact halving in both directions is
/// OpenCV's INTER_AREA (the 2x2 mean, (sum + 2) >> 2), as cv::resize switches to it.

#include <reidnet/data/transforms.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace reidnet {

namespace detail {

inline constexpr int kOpenCvCoefficientBits = 11;  // INTER_RESIZE_COEF_BITS

/// Two taps per output position along one axis: source indices (clamped to the image) and
/// 11-bit fixed-point weights.
struct OpenCvLinearTaps {
  std::vector<int> index0, index1;
  std::vector<int32_t> weight0, weight1;
};

/// The taps of one axis. `columns`: the horizontal pass's edge rule (the position itself is
/// clamped, with weights 1 and 0); otherwise the vertical pass's (rows clamped, weights kept).
inline OpenCvLinearTaps opencv_linear_taps(int in_size, int out_size, bool columns) {
  const double scale = 1.0 / (static_cast<double>(out_size) / in_size);
  constexpr float kOne = 1 << kOpenCvCoefficientBits;
  OpenCvLinearTaps taps;
  for (int d = 0; d < out_size; ++d) {
    float f = static_cast<float>((d + 0.5) * scale - 0.5);
    int s = static_cast<int>(std::floor(f));
    f -= static_cast<float>(s);
    if (columns && s < 0) f = 0, s = 0;
    if (columns && s >= in_size - 1) f = 0, s = in_size - 1;
    // saturate_cast<short>(float): rounded to nearest, ties to even (lrintf).
    taps.weight0.push_back(static_cast<int32_t>(std::lrint((1.0f - f) * kOne)));
    taps.weight1.push_back(static_cast<int32_t>(std::lrint(f * kOne)));
    taps.index0.push_back(std::clamp(s, 0, in_size - 1));
    taps.index1.push_back(std::clamp(s + 1, 0, in_size - 1));
  }
  return taps;
}

/// The vertical pass's combination of two horizontal sums.
inline uint8_t opencv_linear_combine(int32_t sum0, int32_t weight0, int32_t sum1, int32_t weight1) {
  const int32_t value = ((weight0 * (sum0 >> 4)) >> 16) + ((weight1 * (sum1 >> 4)) >> 16);
  return static_cast<uint8_t>(std::clamp((value + 2) >> 2, 0, 255));
}

/// Whether cv::resize takes INTER_AREA's 2x2 mean for this INTER_LINEAR resize.
inline bool opencv_halves(int64_t in_height, int64_t in_width, int64_t out_height, int64_t out_width) {
  return in_height == 2 * out_height && in_width == 2 * out_width;
}

}  // namespace detail

/// cv::resize(image, (width, height), interpolation=cv::INTER_LINEAR) of a uint8 [H, W, C]
/// image (C in 1..4), bit-exact.
inline torch::Tensor opencv_linear_resize(const torch::Tensor& image, int64_t height, int64_t width) {
  const auto input = detail::checked_hwc_u8(image, "opencv_linear_resize");
  detail::check_size(height, width, "opencv_linear_resize");
  const int64_t in_height = input.size(0), in_width = input.size(1), channels = input.size(2);
  if (in_height == height && in_width == width) return input.clone();
  auto output = torch::empty({height, width, channels}, torch::kUInt8);
  const uint8_t* in = input.data_ptr<uint8_t>();
  uint8_t* out = output.data_ptr<uint8_t>();
  if (detail::opencv_halves(in_height, in_width, height, width)) {
    const int64_t row = in_width * channels;
    for (int64_t y = 0; y < height; ++y) {
      for (int64_t x = 0; x < width; ++x) {
        for (int64_t c = 0; c < channels; ++c) {
          const uint8_t* p = in + 2 * y * row + 2 * x * channels + c;
          out[(y * width + x) * channels + c] =
              static_cast<uint8_t>((p[0] + p[channels] + p[row] + p[row + channels] + 2) >> 2);
        }
      }
    }
    return output;
  }
  const auto horizontal = detail::opencv_linear_taps(static_cast<int>(in_width), static_cast<int>(width), true);
  const auto vertical = detail::opencv_linear_taps(static_cast<int>(in_height), static_cast<int>(height), false);
  // Horizontal sums of every source row (OpenCV keeps a ring of two; the crops are small).
  const int64_t row_length = width * channels;
  std::vector<int32_t> sums(static_cast<size_t>(in_height * row_length));
  for (int64_t y = 0; y < in_height; ++y) {
    const uint8_t* source = in + y * in_width * channels;
    int32_t* target = sums.data() + y * row_length;
    for (int64_t x = 0; x < width; ++x) {
      const uint8_t* left = source + horizontal.index0[x] * channels;
      const uint8_t* right = source + horizontal.index1[x] * channels;
      for (int64_t c = 0; c < channels; ++c) {
        target[x * channels + c] = left[c] * horizontal.weight0[x] + right[c] * horizontal.weight1[x];
      }
    }
  }
  for (int64_t y = 0; y < height; ++y) {
    const int32_t* top = sums.data() + vertical.index0[y] * row_length;
    const int32_t* bottom = sums.data() + vertical.index1[y] * row_length;
    uint8_t* target = out + y * row_length;
    for (int64_t i = 0; i < row_length; ++i) {
      target[i] = detail::opencv_linear_combine(top[i], vertical.weight0[y], bottom[i], vertical.weight1[y]);
    }
  }
  return output;
}

}  // namespace reidnet
