#pragma once
/// The model inputs of detection boxes in a frame: each box clamped to the frame, cut out,
/// resized to the model's input size and normalised as the model's config asks, on the CPU or
/// on the device the model runs on.
///
///     auto crops = reidnet::crop_boxes(frame, boxes, model->config());  // frame: uint8 [H, W, 3]
///     // crops.images: (valid boxes, 3, height, width) float; crops.valid: which boxes they are
///
/// Boxes are (N, 4) x, y, w, h in pixels, as MOTChallenge's det.txt writes them. A box covers
/// the pixel columns floor(x) .. floor(x + w) - 1 and rows floor(y) .. floor(y + h) - 1 (what
/// deep_sort's and BoxMOT's astype(int) give for boxes inside the frame), clamped to the frame.
/// A box with a coordinate that is not finite, or that covers no pixel of the frame once
/// clamped (zero or negative size, wholly outside), is rejected: it has no crop, and
/// `rejected` says which box and why. Nothing throws for a box.
///
/// The resize (CropResize):
/// - kConfig (default): the resize trackers feed such a model. A config with "bilinear"
///   (torchreid's OSNets, the models BoxMOT ships) gets OpenCV's INTER_LINEAR, what BoxMOT's
///   ReID backends do to each crop (cv2.resize); "bicubic" (the Python baseline's families,
///   fast-reid's BoT) gets PIL's bicubic, the baseline's test-time Resize.
/// - kPil: always the data pipeline's PIL filter of the config (what reidnet-test and
///   torchreid's own FeatureExtractor give on pictures).
/// - kOpenCV: always OpenCV's INTER_LINEAR.
/// Both are bit-exact to their library (the PIL path is transforms.hpp's resize; OpenCV's is
/// opencv_linear_resize), on the CPU and on the device alike.
///
/// On a CUDA device the frame is uploaded once; each crop is a view of it, resized there with
/// the same fixed-point arithmetic in int64 tensor ops (so the pixels equal the CPU path's) and
/// normalised through the same per-level table: no per-crop copy to or from the host.

#include <reidnet/data/detail/pil_resample.hpp>
#include <reidnet/data/model_input.hpp>
#include <reidnet/data/opencv_resize.hpp>
#include <reidnet/data/transforms.hpp>
#include <reidnet/models/reid_model.hpp>

#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

/// Which resize a crop gets (see the top of this header).
enum class CropResize { kConfig, kPil, kOpenCV };

/// Why a box has no crop.
enum class BoxProblem {
  kNotFinite,     // x, y, w or h is NaN or infinite
  kEmpty,         // no pixel: zero or negative width or height (after rounding to pixels)
  kOutsideFrame,  // wholly outside the frame
};

inline const char* box_problem_name(BoxProblem problem) {
  switch (problem) {
    case BoxProblem::kNotFinite: return "not finite";
    case BoxProblem::kEmpty: return "empty";
    case BoxProblem::kOutsideFrame: return "outside the frame";
  }
  return "?";
}

/// A box that has no crop: its index in the boxes given, and why.
struct RejectedBox {
  int64_t index = 0;
  BoxProblem problem = BoxProblem::kEmpty;
};

/// The pixels a box covers once clamped: rows [top, bottom), columns [left, right).
struct PixelBox {
  int64_t top = 0, left = 0, bottom = 0, right = 0;
};

/// The models' inputs of the boxes that have pixels.
struct BoxCrops {
  /// (valid boxes, 3, height, width) float32, normalised, in box order, on the device asked.
  torch::Tensor images;
  /// (N,) bool on the CPU: which boxes have a crop (row k of images is the k-th true entry).
  torch::Tensor valid;
  /// The pixels each box covers (empty for a rejected box).
  std::vector<PixelBox> pixels;
  std::vector<RejectedBox> rejected;
};

struct CropOptions {
  TORCH_ARG(CropResize, resize) = CropResize::kConfig;
  /// Where the crops are cut and resized (and `images` lives): the model's device.
  TORCH_ARG(torch::Device, device) = torch::Device(torch::kCPU);
};

namespace detail {

/// How a crop is resized: a PIL filter, or OpenCV's INTER_LINEAR.
struct CropResampling {
  bool opencv = false;
  PilFilter filter = PilFilter::kBicubic;
};

inline CropResampling crop_resampling(const ModelConfig& config, CropResize resize) {
  const auto interpolation = interpolation_of(config);
  const bool opencv = resize == CropResize::kOpenCV ||
                      (resize == CropResize::kConfig && interpolation == Interpolation::kBilinear);
  return {opencv, interpolation == Interpolation::kBilinear ? PilFilter::kBilinear : PilFilter::kBicubic};
}

/// The pixels of box (x, y, w, h) in a frame of `height` x `width`, or the reason it has none.
inline bool clamp_box(const double* box, int64_t height, int64_t width, PixelBox& pixels,
                      BoxProblem& problem) {
  const double x = box[0], y = box[1], w = box[2], h = box[3];
  if (!std::isfinite(x) || !std::isfinite(y) || !std::isfinite(w) || !std::isfinite(h)) {
    problem = BoxProblem::kNotFinite;
    return false;
  }
  if (x >= width || y >= height || x + w <= 0 || y + h <= 0) {
    problem = w > 0 && h > 0 ? BoxProblem::kOutsideFrame : BoxProblem::kEmpty;
    return false;
  }
  const auto edge = [](double value, int64_t limit) {
    return static_cast<int64_t>(std::clamp(std::floor(value), 0.0, static_cast<double>(limit)));
  };
  const PixelBox clamped{edge(y, height), edge(x, width), edge(y + h, height), edge(x + w, width)};
  if (clamped.bottom <= clamped.top || clamped.right <= clamped.left) {
    problem = BoxProblem::kEmpty;
    return false;
  }
  pixels = clamped;
  return true;
}

/// Sums of taps along `dim` of an int64 tensor: out[..., i, ...] = sum_k x[..., index[i, k], ...]
/// * weight[i, k]; index and weight (out, K) int64 on x's device.
inline torch::Tensor tap_sums(const torch::Tensor& x, int64_t dim, const torch::Tensor& index,
                              const torch::Tensor& weight) {
  const auto moved = x.movedim(dim, -1);
  auto shape = moved.sizes().vec();
  shape.back() = index.size(0);
  shape.push_back(index.size(1));
  const auto gathered = moved.index_select(-1, index.flatten()).view(shape);
  return (gathered * weight).sum(-1).movedim(-1, dim);
}

/// PIL's taps of one axis as (out, K) index and weight tensors.
inline std::pair<torch::Tensor, torch::Tensor> pil_taps(PilFilter filter, int64_t in_size,
                                                        int64_t out_size, torch::Device device) {
  const auto c = pil_coefficients(filter, static_cast<int>(in_size), static_cast<int>(out_size));
  const auto first = torch::tensor(std::vector<int64_t>(c.first.begin(), c.first.end()), torch::kLong);
  const auto index = (first.unsqueeze(1) + torch::arange(c.kernel_size, torch::kLong).unsqueeze(0))
                         .clamp_max(in_size - 1);
  const auto weight = torch::tensor(std::vector<int64_t>(c.weights.begin(), c.weights.end()), torch::kLong)
                          .view({out_size, c.kernel_size});
  return {index.to(device), weight.to(device)};
}

/// PIL's rounding of a pass: (sum + half) >> 22, clipped to 0..255.
inline torch::Tensor pil_round(const torch::Tensor& sums) {
  return torch::div(sums + (int64_t{1} << (kPilPrecisionBits - 1)), int64_t{1} << kPilPrecisionBits,
                    "floor")
      .clamp(0, 255);
}

inline std::pair<torch::Tensor, torch::Tensor> opencv_taps(int64_t in_size, int64_t out_size,
                                                           bool columns, torch::Device device) {
  const auto t = opencv_linear_taps(static_cast<int>(in_size), static_cast<int>(out_size), columns);
  const auto column = [](const std::vector<int>& values) {
    return torch::tensor(std::vector<int64_t>(values.begin(), values.end()), torch::kLong);
  };
  const auto index = torch::stack({column(t.index0), column(t.index1)}, 1);
  const auto weight = torch::stack({torch::tensor(std::vector<int64_t>(t.weight0.begin(), t.weight0.end())),
                                    torch::tensor(std::vector<int64_t>(t.weight1.begin(), t.weight1.end()))}, 1);
  return {index.to(device), weight.to(device)};
}

/// Resizes a uint8 [h, w, 3] region (a view of a frame on any device) with tensor ops, pixel
/// for pixel as the CPU's PIL or OpenCV code; returns int64 [3, height, width] levels.
inline torch::Tensor resize_region_with_tensor_ops(const torch::Tensor& region, int64_t height,
                                                   int64_t width, const CropResampling& resampling) {
  const auto device = region.device();
  auto x = region.permute({2, 0, 1}).to(torch::kLong);  // [3, h, w]
  const int64_t in_height = x.size(1), in_width = x.size(2);
  if (in_height == height && in_width == width) return x;
  if (!resampling.opencv) {
    // PIL skips the pass of an axis whose size does not change; such a pass is the identity.
    if (in_width != width) {
      const auto [index, weight] = pil_taps(resampling.filter, in_width, width, device);
      x = pil_round(tap_sums(x, 2, index, weight));
    }
    if (in_height != height) {
      const auto [index, weight] = pil_taps(resampling.filter, in_height, height, device);
      x = pil_round(tap_sums(x, 1, index, weight));
    }
    return x;
  }
  if (opencv_halves(in_height, in_width, height, width)) {
    const auto sums = x.reshape({3, height, 2, width, 2}).sum({2, 4});
    return torch::div(sums + 2, 4, "floor");
  }
  const auto [column_index, column_weight] = opencv_taps(in_width, width, true, device);
  const auto horizontal = tap_sums(x, 2, column_index, column_weight);  // exact sums
  // Not a structured binding: C++17 lambdas cannot capture one (clang refuses it).
  const auto row_taps = opencv_taps(in_height, height, false, device);
  const auto& row_index = row_taps.first;
  const auto& row_weight = row_taps.second;
  const auto part = [&](int64_t k) {
    const auto rows = horizontal.index_select(1, row_index.select(1, k));
    const auto weight = row_weight.select(1, k).view({1, height, 1});
    return torch::div(weight * torch::div(rows, 16, "floor"), 65536, "floor");
  };
  return torch::div(part(0) + part(1) + 2, 4, "floor").clamp(0, 255);
}

/// The normalisation table (see transforms.hpp) as a [3, 256] tensor on `device`.
inline torch::Tensor normalize_table_tensor(const Normalization& normalization, torch::Device device) {
  const auto table = normalize_table(normalization);
  auto values = torch::empty({3, 256}, torch::kFloat32);
  for (int c = 0; c < 3; ++c) std::copy(table[c].begin(), table[c].end(), values[c].data_ptr<float>());
  return values.to(device);
}

/// The crops cut and resized with tensor ops on the frame's device (CUDA's path; on the CPU
/// it gives the same pixels as the CPU path, which the tests check).
inline torch::Tensor crop_with_tensor_ops(const torch::Tensor& frame, const std::vector<PixelBox>& boxes,
                                          const ModelConfig& config, const CropResampling& resampling) {
  const auto table = normalize_table_tensor(normalization_of(config), frame.device());
  std::vector<torch::Tensor> crops;
  crops.reserve(boxes.size());
  for (const auto& box : boxes) {
    const auto region = frame.slice(0, box.top, box.bottom).slice(1, box.left, box.right);
    const auto levels = resize_region_with_tensor_ops(region, config.height(), config.width(), resampling);
    crops.push_back(table.gather(1, levels.reshape({3, -1})).view({3, config.height(), config.width()}));
  }
  if (crops.empty()) {
    return torch::empty({0, 3, config.height(), config.width()},
                        torch::TensorOptions().dtype(torch::kFloat32).device(frame.device()));
  }
  return torch::stack(crops);
}

}  // namespace detail

/// The normalised model inputs of `boxes` ((N, 4) x, y, w, h, any float dtype) in `frame`
/// (uint8 [H, W, 3] RGB, as read_image returns), at the config's input size, with its
/// normalisation and the resize `options.resize()` picks. Throws std::invalid_argument for a
/// frame or boxes of the wrong shape or type; never for a box's values (see `rejected`).
inline BoxCrops crop_boxes(const torch::Tensor& frame, const torch::Tensor& boxes,
                           const ModelConfig& config, const CropOptions& options = {}) {
  if (!frame.defined() || frame.dim() != 3 || frame.size(2) != 3 || frame.scalar_type() != torch::kUInt8 ||
      frame.size(0) == 0 || frame.size(1) == 0) {
    throw std::invalid_argument("crop_boxes: expected a uint8 [H, W, 3] RGB frame, got " +
                                (frame.defined() ? c10::str(frame.scalar_type(), " ", frame.sizes())
                                                 : std::string("none")));
  }
  if (!boxes.defined() || boxes.dim() != 2 || boxes.size(1) != 4 || !boxes.is_floating_point()) {
    throw std::invalid_argument("crop_boxes: expected (N, 4) floating-point boxes x, y, w, h, got " +
                                (boxes.defined() ? c10::str(boxes.scalar_type(), " ", boxes.sizes())
                                                 : std::string("none")));
  }
  detail::check_size(config.height(), config.width(), "crop_boxes");
  const auto resampling = detail::crop_resampling(config, options.resize());
  const auto normalization = normalization_of(config);
  // In double, as Python computes x + w: a float32 sum can round across a pixel edge.
  const auto values = boxes.to(torch::kCPU, torch::kFloat64).contiguous();
  const int64_t count = values.size(0);
  BoxCrops crops;
  crops.valid = torch::zeros({count}, torch::kBool);
  auto* valid = crops.valid.data_ptr<bool>();
  crops.pixels.resize(static_cast<size_t>(count));
  std::vector<PixelBox> kept;
  for (int64_t i = 0; i < count; ++i) {
    BoxProblem problem{};
    if (detail::clamp_box(values.data_ptr<double>() + 4 * i, frame.size(0), frame.size(1),
                          crops.pixels[i], problem)) {
      valid[i] = true;
      kept.push_back(crops.pixels[i]);
    } else {
      crops.rejected.push_back({i, problem});
    }
  }
  if (options.device().is_cuda()) {
    crops.images = detail::crop_with_tensor_ops(frame.to(options.device()), kept, config, resampling);
    return crops;
  }
  const auto picture = frame.cpu();
  std::vector<torch::Tensor> images;
  images.reserve(kept.size());
  for (const auto& box : kept) {
    const auto region = picture.slice(0, box.top, box.bottom).slice(1, box.left, box.right);
    const auto resized = resampling.opencv
                             ? opencv_linear_resize(region, config.height(), config.width())
                             : resize(region, config.height(), config.width(),
                                      resampling.filter == detail::PilFilter::kBilinear
                                          ? Interpolation::kBilinear
                                          : Interpolation::kBicubic);
    images.push_back(to_normalized_tensor(resized, normalization));
  }
  crops.images = images.empty() ? torch::empty({0, 3, config.height(), config.width()}, torch::kFloat32)
                                : torch::stack(images);
  return crops;
}

}  // namespace reidnet
