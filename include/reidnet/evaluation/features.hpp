#pragma once
/// Test-time ReID features as the Python baseline extracts them: in eval
/// mode, f(image) + f(horizontally flipped image), optionally summed over several scales, then
/// L2-normalised (a part model's parts each to norm 1/sqrt(parts) first, as the baseline does
/// for PCB). Batches come from any iterable: tensors [B, 3, H, W] (already normalised) or
/// structs with an `images` tensor (or a torch::data::Example's `data`).
///
///     auto features = reidnet::extract_features(net, loader,   // net: FtNet; [N, 512] CPU
///                                               reidnet::FeatureOptions().device(torch::kCUDA));

#include <reidnet/core/autocast.hpp>
#include <reidnet/inference/inference.hpp>
#include <reidnet/evaluation/detail/ranking.hpp>

#include <torch/arg.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace reidnet {

/// How `extract_features` runs the model.
struct FeatureOptions {
  /// Where to run; the model is moved there. Default: where the model's parameters are.
  TORCH_ARG(std::optional<torch::Device>, device) = std::nullopt;
  /// The baseline's `--ms` values: for each s the batch is resized by the factor sqrt(s)
  /// (bicubic, align_corners=false, on the normalised batch) and the features are summed.
  /// Each scale resizes the original batch.
  TORCH_ARG(std::vector<double>, scales) = std::vector<double>{1.0};
  /// Add the features of the horizontally flipped images (the baseline always does).
  TORCH_ARG(bool, flip) = true;
  /// Compute precision: kFloat32, kBFloat16 or kFloat16.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
  /// With a reduced dtype: autocast (true), or feed inputs of that dtype to a model whose
  /// parameters the caller already converted with `model->to(dtype)` (false).
  TORCH_ARG(bool, autocast) = true;
  /// L2-normalise each feature (what the evaluation protocol expects).
  TORCH_ARG(bool, normalize) = true;
  /// Run the model through `optimize_for_inference` (for FtNet and ResNet: folded BatchNorm,
  /// fused and prepacked convs; weights pre-cast to `dtype`) instead of the module itself.
  TORCH_ARG(bool, optimize) = true;
  /// The residual trunk's convs in int8 with these ranges (InferenceOptions::int8); needs
  /// `optimize` and dtype float32.
  TORCH_ARG(std::shared_ptr<const Int8Calibration>, int8) = nullptr;
};

namespace detail {

template <class T, class = void>
struct has_images_member : std::false_type {};
template <class T>
struct has_images_member<T, std::void_t<decltype(std::declval<const T&>().images)>>
    : std::true_type {};
template <class T, class = void>
struct has_data_member : std::false_type {};
template <class T>
struct has_data_member<T, std::void_t<decltype(std::declval<const T&>().data)>> : std::true_type {};
template <class T>
inline constexpr bool always_false = false;
template <class T, class = void>
struct has_embedding_parts : std::false_type {};
template <class T>
struct has_embedding_parts<T, std::void_t<decltype(std::declval<T&>()->embedding_parts())>>
    : std::true_type {};
template <class T, class = void>
struct has_embedding_parts_member : std::false_type {};
template <class T>
struct has_embedding_parts_member<T, std::void_t<decltype(std::declval<T&>().embedding_parts())>>
    : std::true_type {};

/// How many parts a model's embedding concatenates (1 unless the model says otherwise).
template <class Model>
int64_t embedding_parts(Model& model) {
  if constexpr (has_embedding_parts<Model>::value) {
    return model->embedding_parts();
  } else if constexpr (has_embedding_parts_member<Model>::value) {
    return model.embedding_parts();
  } else {
    return 1;
  }
}

/// Each of `parts` channel-major parts of `features` (B, C * parts) divided by its norm times
/// sqrt(parts), as the baseline tests PCB: every part then weighs the same.
inline torch::Tensor normalize_parts(const torch::Tensor& features, int64_t parts) {
  const auto grouped = features.view({features.size(0), -1, parts});
  const auto norms = grouped.norm(2, {1}, /*keepdim=*/true) * std::sqrt(static_cast<double>(parts));
  return (grouped / norms.clamp_min(1e-12)).view({features.size(0), -1});
}
// Models `optimize_for_inference` accepts.
template <class T, class = void>
struct has_inference_path : std::false_type {};
template <class T>
struct has_inference_path<T, std::void_t<decltype(optimize_for_inference(std::declval<T&>()))>>
    : std::true_type {};
// Module holders (reidnet::FtNet, ...) have `->parameters()`; optimised models do not.
template <class T, class = void>
struct is_module_holder : std::false_type {};
template <class T>
struct is_module_holder<T, std::void_t<decltype(std::declval<T&>()->parameters())>>
    : std::true_type {};

/// The image tensor of a batch: the batch itself, its `images`, or its `data`.
template <class Batch>
const torch::Tensor& batch_images(const Batch& batch) {
  if constexpr (std::is_convertible_v<const Batch&, const torch::Tensor&>) {
    return batch;
  } else if constexpr (has_images_member<Batch>::value) {
    return batch.images;
  } else if constexpr (has_data_member<Batch>::value) {
    return batch.data;
  } else {
    static_assert(always_false<Batch>,
                  "extract_features: a batch must be a torch::Tensor or have an `images` (or "
                  "`data`) tensor member");
  }
}

// Puts a module holder in eval mode for a scope and restores its previous mode.
template <class Model>
class EvalModeScope {
 public:
  explicit EvalModeScope(Model& model) : model_(model), was_training_(model->is_training()) {
    model_->eval();
  }
  ~EvalModeScope() { model_->train(was_training_); }
  EvalModeScope(const EvalModeScope&) = delete;
  EvalModeScope& operator=(const EvalModeScope&) = delete;

 private:
  Model& model_;
  bool was_training_;
};

inline void check_feature_options(const FeatureOptions& options) {
  if (options.scales().empty()) {
    throw std::runtime_error("extract_features: FeatureOptions::scales is empty; use {1.0}");
  }
  for (const auto scale : options.scales()) {
    if (!(scale > 0.0) || !std::isfinite(scale)) {
      throw std::runtime_error(
          fmt::format("extract_features: every scale must be a positive number, got {}", scale));
    }
  }
  const auto dtype = options.dtype();
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16 && dtype != torch::kFloat16) {
    throw std::runtime_error(fmt::format(
        "extract_features: FeatureOptions::dtype must be Float, BFloat16 or Half, got {}",
        c10::toString(dtype)));
  }
}

}  // namespace detail

/// Features [N, D] (float32, CPU) of every image of `batches`, in order. `model` is either a
/// module holder with `embed(images)` (e.g. reidnet::FtNet), run in eval mode without
/// gradients and left in the training mode it had, or an inference-ready model from
/// `optimize_for_inference`, which already fixes its device and dtype.
template <class Model, class Batches>
torch::Tensor extract_features(Model& model, Batches&& batches,
                               const FeatureOptions& options = {}) {
  detail::check_feature_options(options);
  torch::NoGradGuard no_grad;
  namespace F = torch::nn::functional;
  std::function<torch::Tensor(const torch::Tensor&)> embed;
  torch::Device device(torch::kCPU);
  auto input_dtype = torch::kFloat32;
  // Only a module holder has a training mode to set and restore.
  std::optional<std::conditional_t<detail::is_module_holder<Model>::value,
                                   detail::EvalModeScope<Model>, bool>> eval_mode;
  if constexpr (detail::has_inference_path<Model>::value) {
    if (options.optimize()) {
      const auto parameters = model->parameters();
      const auto where = options.device().value_or(
          parameters.empty() ? torch::Device(torch::kCPU) : parameters.front().device());
      auto fast = optimize_for_inference(
          model, InferenceOptions().device(where).dtype(options.dtype()).int8(options.int8()));
      return extract_features(fast, std::forward<Batches>(batches), options);
    }
  }
  if (options.int8() && detail::is_module_holder<Model>::value) {
    throw ConfigError("extract_features: FeatureOptions::int8 runs on the inference fast path "
                      "(FeatureOptions::optimize)");
  }
  if constexpr (detail::is_module_holder<Model>::value) {
    const auto parameters = model->parameters();
    device = parameters.empty() ? torch::Device(torch::kCPU) : parameters.front().device();
    if (options.device() && *options.device() != device) {
      device = *options.device();
      model->to(device);
    }
    const bool reduced = options.dtype() != torch::kFloat32;
    const bool use_autocast = reduced && options.autocast();
    input_dtype = reduced && !use_autocast ? options.dtype() : torch::kFloat32;
    if (!use_autocast && !parameters.empty() && parameters.front().scalar_type() != input_dtype) {
      throw std::runtime_error(fmt::format(
          "extract_features: inputs of dtype {} need a model whose parameters are {} (they are "
          "{}); convert it with model->to(dtype) or use FeatureOptions::autocast(true)",
          c10::toString(input_dtype), c10::toString(input_dtype),
          c10::toString(parameters.front().scalar_type())));
    }
    eval_mode.emplace(model);
    embed = [&model, device, use_autocast, dtype = options.dtype()](const torch::Tensor& images) {
      if (!use_autocast) return model->embed(images).to(torch::kFloat);
      AutocastGuard autocast(device, dtype);
      return model->embed(images).to(torch::kFloat);
    };
  } else {
    device = model.device();
    embed = [&model](const torch::Tensor& images) { return model.embed(images).to(torch::kFloat); };
  }

  const int64_t parts = detail::embedding_parts(model);
  std::vector<torch::Tensor> features;
  int64_t seen = 0;
  for (auto&& batch : batches) {
    const torch::Tensor& images = detail::batch_images(batch);
    if (!images.defined() || images.dim() != 4 || images.size(1) != 3 ||
        !c10::isFloatingType(images.scalar_type())) {
      throw std::runtime_error(fmt::format(
          "extract_features: batch {} (images {}..) must be a floating tensor [B, 3, H, W], got "
          "{} {}",
          features.size(), seen, images.defined() ? c10::toString(images.scalar_type()) : "none",
          images.defined() ? detail::shape_of(images) : ""));
    }
    const auto x = images.to(device, input_dtype);
    torch::Tensor sum;
    for (const bool flipped : {false, true}) {
      if (flipped && !options.flip()) break;
      const auto view = flipped ? x.flip({3}) : x;
      for (const auto scale : options.scales()) {
        const auto factor = std::sqrt(scale);
        const auto input =
            scale == 1.0
                ? view
                : F::interpolate(view, F::InterpolateFuncOptions()
                                           .scale_factor(std::vector<double>{factor, factor})
                                           .mode(torch::kBicubic)
                                           .align_corners(false));
        const auto feature = embed(input);
        sum = sum.defined() ? sum + feature : feature;
      }
    }
    if (options.normalize()) {
      if (parts > 1) sum = detail::normalize_parts(sum, parts);
      sum = sum / sum.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
    }
    features.push_back(sum.to(torch::kCPU));
    seen += images.size(0);
  }
  if (features.empty()) {
    throw std::runtime_error("extract_features: the batch source yielded no batches");
  }
  return torch::cat(features);
}

}  // namespace reidnet
