#pragma once
/// What a model's config asks of the data pipeline, as timm's resolve_data_config reads a
/// model's: its normalisation and its resize filter.
///
///     const auto& config = net->config();
///     auto eval = reidnet::make_eval_transform(256, 128, reidnet::normalization_of(config),
///                                              reidnet::interpolation_of(config));
///     auto train = reidnet::make_train_transform(reidnet::TrainTransformOptions()
///                                                    .normalization(reidnet::normalization_of(config))
///                                                    .interpolation(reidnet::interpolation_of(config)));

#include <reidnet/data/transforms.hpp>
#include <reidnet/models/reid_model.hpp>

#include <fmt/format.h>

#include <array>
#include <string>
#include <stdexcept>
#include <vector>

namespace reidnet {

/// The resize filter a model was trained with; throws std::invalid_argument for one the
/// pipeline does not have.
inline Interpolation interpolation_of(const ModelConfig& config) {
  try {
    return interpolation_from_name(config.interpolation());
  } catch (const std::invalid_argument& error) {
    throw std::invalid_argument(std::string("the model's config asks for ") + error.what());
  }
}

/// The normalisation a model was trained with. Throws std::invalid_argument, naming the field,
/// when the config asks for what the pipeline cannot give: not three means and stds.
inline Normalization normalization_of(const ModelConfig& config) {
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
