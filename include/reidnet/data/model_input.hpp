#pragma once
/// What a model's config asks of the data pipeline, as timm's resolve_data_config reads a
/// model's: its normalisation (and the resize filter, which must be the pipeline's bicubic).
///
///     const auto normalization = reidnet::normalization_of(net->config());
///     auto eval = reidnet::make_eval_transform(256, 128, normalization);
///     auto train = reidnet::make_train_transform(
///         reidnet::TrainTransformOptions().normalization(normalization));

#include <reidnet/data/transforms.hpp>
#include <reidnet/models/reid_model.hpp>

#include <fmt/format.h>

#include <array>
#include <stdexcept>
#include <vector>

namespace reidnet {

/// The normalisation a model was trained with. Throws std::invalid_argument, naming the field,
/// when the config asks for what the pipeline cannot give: not three means and stds, or a
/// resize filter other than bicubic.
inline Normalization normalization_of(const ModelConfig& config) {
  if (config.interpolation() != "bicubic") {
    throw std::invalid_argument(fmt::format(
        "the model's config asks for '{}' resizing; the data pipeline resizes as PIL's bicubic",
        config.interpolation()));
  }
  const auto three = [](const std::vector<double>& values, const char* name) {
    if (values.size() != 3) {
      throw std::invalid_argument(fmt::format("the model's config has {} {} values; expected "
                                              "one per RGB channel", values.size(), name));
    }
    return ChannelValues{static_cast<float>(values[0]), static_cast<float>(values[1]),
                         static_cast<float>(values[2])};
  };
  auto normalization = Normalization()
                           .mean(three(config.mean(), "mean"))
                           .std(three(config.std(), "std"))
                           .max_pixel_value(static_cast<float>(config.max_pixel_value()));
  detail::normalize_table(normalization);  // positive, finite
  return normalization;
}

}  // namespace reidnet
