#pragma once
// PIL's bicubic and bilinear resampling of 8-bit images (Pillow's libImaging/Resample.c),
// reproduced so that reidnet sees the pixels torchvision's Resize gives on PIL images:
// separable, horizontal pass then vertical pass, the filter (bicubic a = -0.5 with support 2, or
// the triangle with support 1) widened by the downscale factor (antialiasing), weights
// normalised in double then rounded to fixed point with 22 fraction bits, each pass rounded
// and clipped to uint8.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace reidnet::detail {

constexpr int kPilPrecisionBits = 32 - 8 - 2;

// The vertical pass multiplies uint8 by int32 weights, which x86-64's baseline SSE2 cannot
// vectorise; GCC builds an AVX2 clone too and picks it at load time where the CPU has it.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define REIDNET_DETAIL_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define REIDNET_DETAIL_AVX2_CLONE
#endif

/// PIL's resampling filters that reidnet's pipelines use.
enum class PilFilter { kBicubic, kBilinear };

inline double pil_bicubic_kernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

inline double pil_bilinear_kernel(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

/// For every output position: the first input index, the number of taps and the fixed-point
/// weights (kernel_size per output position, zero-padded).
struct ResampleCoefficients {
  int kernel_size = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

inline ResampleCoefficients pil_coefficients(PilFilter filter, int in_size, int out_size) {
  const bool bicubic = filter == PilFilter::kBicubic;
  const double kernel_support = bicubic ? 2.0 : 1.0;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = kernel_support * filter_scale;
  ResampleCoefficients c;
  c.kernel_size = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.kernel_size, 0);
  std::vector<double> k(c.kernel_size);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double inverse_scale = 1.0 / filter_scale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double at = (x + xmin - center + 0.5) * inverse_scale;
      k[x] = bicubic ? pil_bicubic_kernel(at) : pil_bilinear_kernel(at);
      total += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double w = total != 0.0 ? k[x] / total : k[x];
      const double fixed = w * (1 << kPilPrecisionBits);
      c.weights[static_cast<size_t>(xx) * c.kernel_size + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

inline uint8_t pil_clip8(int32_t value) {
  if (value >= (1 << kPilPrecisionBits << 8)) return 255;
  if (value <= 0) return 0;
  return static_cast<uint8_t>(value >> kPilPrecisionBits);
}

/// Horizontal pass over rows [row_begin, row_end) of an interleaved image of `Channels`
/// channels (a compile-time count, so that the sums stay in registers).
template <int Channels>
void pil_resample_horizontal_n(const uint8_t* in, int in_width, int row_begin, int row_end,
                               const ResampleCoefficients& c, int out_width, uint8_t* out) {
  constexpr int32_t half = 1 << (kPilPrecisionBits - 1);
  for (int y = row_begin; y < row_end; ++y) {
    const uint8_t* row = in + static_cast<size_t>(y) * in_width * Channels;
    uint8_t* out_row = out + static_cast<size_t>(y - row_begin) * out_width * Channels;
    for (int xx = 0; xx < out_width; ++xx) {
      const int32_t* k = &c.weights[static_cast<size_t>(xx) * c.kernel_size];
      const uint8_t* source = row + static_cast<size_t>(c.first[xx]) * Channels;
      const int taps = c.count[xx];
      int32_t sums[Channels];
      for (int ch = 0; ch < Channels; ++ch) sums[ch] = half;
      for (int x = 0; x < taps; ++x) {
        for (int ch = 0; ch < Channels; ++ch) sums[ch] += source[x * Channels + ch] * k[x];
      }
      for (int ch = 0; ch < Channels; ++ch) out_row[xx * Channels + ch] = pil_clip8(sums[ch]);
    }
  }
}

inline void pil_resample_horizontal(const uint8_t* in, int in_width, int channels, int row_begin,
                                    int row_end, const ResampleCoefficients& c, int out_width,
                                    uint8_t* out) {
  switch (channels) {
    case 1: return pil_resample_horizontal_n<1>(in, in_width, row_begin, row_end, c, out_width, out);
    case 2: return pil_resample_horizontal_n<2>(in, in_width, row_begin, row_end, c, out_width, out);
    case 3: return pil_resample_horizontal_n<3>(in, in_width, row_begin, row_end, c, out_width, out);
    default: return pil_resample_horizontal_n<4>(in, in_width, row_begin, row_end, c, out_width, out);
  }
}

/// Vertical pass; `c.first` is relative to `in`'s first row minus `row_offset`.
REIDNET_DETAIL_AVX2_CLONE inline void pil_resample_vertical(const uint8_t* in, int row_length, int row_offset,
                                  const ResampleCoefficients& c, int out_height, uint8_t* out) {
  constexpr int32_t half = 1 << (kPilPrecisionBits - 1);
  std::vector<int32_t> sums(row_length);
  for (int yy = 0; yy < out_height; ++yy) {
    std::fill(sums.begin(), sums.end(), half);
    const int32_t* k = &c.weights[static_cast<size_t>(yy) * c.kernel_size];
    for (int y = 0; y < c.count[yy]; ++y) {
      const uint8_t* row = in + static_cast<size_t>(c.first[yy] - row_offset + y) * row_length;
      const int32_t weight = k[y];
      for (int i = 0; i < row_length; ++i) sums[i] += row[i] * weight;
    }
    uint8_t* out_row = out + static_cast<size_t>(yy) * row_length;
    for (int i = 0; i < row_length; ++i) out_row[i] = pil_clip8(sums[i]);
  }
}

/// PIL's Image.resize(..., BICUBIC or BILINEAR) of an interleaved 8-bit image with 1 to 4
/// channels.
inline void pil_resize(PilFilter filter, const uint8_t* in, int in_height, int in_width, int channels,
                       uint8_t* out, int out_height, int out_width) {
  if (in_height == out_height && in_width == out_width) {
    std::copy(in, in + static_cast<size_t>(in_height) * in_width * channels, out);
    return;
  }
  const auto vertical = pil_coefficients(filter, in_height, out_height);
  if (in_width == out_width) {
    pil_resample_vertical(in, in_width * channels, 0, vertical, out_height, out);
    return;
  }
  const auto horizontal = pil_coefficients(filter, in_width, out_width);
  if (in_height == out_height) {
    pil_resample_horizontal(in, in_width, channels, 0, in_height, horizontal, out_width, out);
    return;
  }
  // Only the rows the vertical pass reads go through the horizontal pass, as in PIL.
  const int first_row = vertical.first.front();
  const int end_row = vertical.first.back() + vertical.count.back();
  std::vector<uint8_t> temporary(static_cast<size_t>(end_row - first_row) * out_width * channels);
  pil_resample_horizontal(in, in_width, channels, first_row, end_row, horizontal, out_width,
                          temporary.data());
  pil_resample_vertical(temporary.data(), out_width * channels, first_row, vertical, out_height,
                        out);
}

}  // namespace reidnet::detail

#undef REIDNET_DETAIL_AVX2_CLONE
