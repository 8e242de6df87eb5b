#pragma once
/// The features a test run exchanges: query and gallery features with each picture's person
/// id and camera, as the baseline's pytorch_result.mat and reidnet-test's features.pth hold
/// them, and the check every reader applies. Plain tensors: the file formats live in
/// reidnet/io/mat_file.hpp (needs matio) and reidnet/io/checkpoint.hpp.

#include <reidnet/core/errors.hpp>

#include <torch/types.h>

#include <fmt/format.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace reidnet {

/// What the baseline's test.py saves in pytorch_result.mat: L2-normalised features, one row per
/// picture, and each picture's person id and camera.
struct RetrievalFeatures {
  torch::Tensor query_f, query_label, query_cam;        // (Q, D) float32; (Q) int64; (Q) int64
  torch::Tensor gallery_f, gallery_label, gallery_cam;  // (G, D) float32; (G) int64; (G) int64
};

/// The names that errors give the six tensors of RetrievalFeatures (query_f, query_label,
/// query_cam, gallery_f, gallery_label, gallery_cam), and what they call one.
struct RetrievalFeatureNames {
  const char* kind;
  std::array<const char*, 6> names;
};
/// reidnet-test's features.pth.
inline const RetrievalFeatureNames kFeaturesFileNames{"tensor", {"qf", "ql", "qc", "gf", "gl", "gc"}};
/// The baseline's pytorch_result.mat.
inline const RetrievalFeatureNames kPytorchResultNames{
    "array", {"query_f", "query_label", "query_cam", "gallery_f", "gallery_label", "gallery_cam"}};

/// Checks features read from the file `path` and returns them as the library uses them:
/// query_f and gallery_f 2-D floating-point matrices with the same number (at least 1) of
/// columns and finite values, as float32; labels and cameras 1-D (or one row) of integers (or
/// of floating-point whole numbers), one per feature row, as int64 vectors. Throws
/// reidnet::InputError naming the file and the tensor (by `names`) at fault.
inline RetrievalFeatures check_retrieval_features(const RetrievalFeatures& features,
                                                  const std::string& path,
                                                  const RetrievalFeatureNames& names = kFeaturesFileNames) {
  const auto fail = [&](size_t index, const std::string& problem) {
    return InputError(fmt::format("{}: {} '{}' {}", path, names.kind, names.names[index], problem));
  };
  const auto describe = [](const torch::Tensor& tensor) {
    return fmt::format("{} of {}", c10::str(tensor.sizes()), c10::toString(tensor.scalar_type()));
  };
  const auto features_of = [&](const torch::Tensor& tensor, size_t index) {
    if (!tensor.defined()) throw fail(index, "is missing");
    if (tensor.dim() != 2 || !tensor.is_floating_point()) {
      throw fail(index, fmt::format("is {}; expected a 2-D floating-point matrix (pictures x "
                                    "feature dimensions)", describe(tensor)));
    }
    if (tensor.size(1) < 1) throw fail(index, fmt::format("is {}: no feature columns", describe(tensor)));
    const auto values = tensor.to(torch::kCPU);
    constexpr int64_t kRowsAtOnce = 1 << 14;  // the finiteness check's temporary stays small
    for (int64_t row = 0; row < values.size(0); row += kRowsAtOnce) {
      if (!torch::isfinite(values.slice(0, row, row + kRowsAtOnce)).all().item<bool>()) {
        throw fail(index, "holds NaN or infinite values");
      }
    }
    return values.to(torch::kFloat32).contiguous();
  };
  const auto labels_of = [&](const torch::Tensor& tensor, size_t index, int64_t rows, size_t rows_of) {
    if (!tensor.defined()) throw fail(index, "is missing");
    if (!(tensor.dim() == 1 || (tensor.dim() == 2 && tensor.size(0) == 1)) ||
        tensor.scalar_type() == torch::kBool || tensor.is_complex()) {
      throw fail(index, fmt::format("is {}; expected a 1-D vector (or one row) of integers",
                                    describe(tensor)));
    }
    const auto flat = tensor.to(torch::kCPU).reshape({-1});
    if (flat.is_floating_point() &&
        (!torch::isfinite(flat).all().item<bool>() || !torch::equal(flat.round(), flat))) {
      throw fail(index, "holds values that are not whole numbers");
    }
    if (flat.numel() != rows) {
      throw fail(index, fmt::format("has {} values for the {} rows of {} '{}'", flat.numel(), rows,
                                    names.kind, names.names[rows_of]));
    }
    return flat.to(torch::kInt64);
  };
  RetrievalFeatures checked;
  checked.query_f = features_of(features.query_f, 0);
  checked.gallery_f = features_of(features.gallery_f, 3);
  if (checked.query_f.size(1) != checked.gallery_f.size(1)) {
    throw fail(0, fmt::format("has {} columns and {} '{}' {}; expected features of one dimension",
                              checked.query_f.size(1), names.kind, names.names[3],
                              checked.gallery_f.size(1)));
  }
  checked.query_label = labels_of(features.query_label, 1, checked.query_f.size(0), 0);
  checked.query_cam = labels_of(features.query_cam, 2, checked.query_f.size(0), 0);
  checked.gallery_label = labels_of(features.gallery_label, 4, checked.gallery_f.size(0), 3);
  checked.gallery_cam = labels_of(features.gallery_cam, 5, checked.gallery_f.size(0), 3);
  return checked;
}

}  // namespace reidnet
