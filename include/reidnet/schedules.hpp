#pragma once
/// Learning-rate schedules and the loss warm-up of the baseline recipe.
/// Both are closed forms of (epoch, iteration), so a resumed run needs no scheduler state.
///
///     reidnet::StepSchedule schedule{/*step_size=*/40, /*gamma=*/0.1};
///     reidnet::set_learning_rates(*sgd, schedule.rates(base_rates, epoch));

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace reidnet {

namespace detail {
template <class Schedule>
std::vector<double> scheduled_rates(const Schedule& schedule, const std::vector<double>& base,
                                    int64_t epoch) {
  std::vector<double> rates;
  for (const double rate : base) rates.push_back(schedule.rate(rate, epoch));
  return rates;
}
}  // namespace detail

/// PyTorch's StepLR: base * gamma^(epoch / step_size), stepped once per epoch.
struct StepSchedule {
  int64_t step_size = 40;
  double gamma = 0.1;

  /// The baseline's StepLR: step at 2/3 of the epochs.
  static StepSchedule for_epochs(int64_t total_epochs) {
    return {std::max<int64_t>(1, total_epochs * 2 / 3), 0.1};
  }

  double rate(double base, int64_t epoch) const {
    TORCH_CHECK(step_size > 0, "StepSchedule::step_size must be positive, got ", step_size);
    return base * std::pow(gamma, static_cast<double>(epoch / step_size));
  }
  std::vector<double> rates(const std::vector<double>& base, int64_t epoch) const {
    return detail::scheduled_rates(*this, base, epoch);
  }
};

/// PyTorch's CosineAnnealingLR in closed form; the baseline uses eta_min = 0.01 * lr for
/// every group.
struct CosineSchedule {
  int64_t total_epochs = 60;
  double eta_min = 0.0005;

  double rate(double base, int64_t epoch) const {
    TORCH_CHECK(total_epochs > 0, "CosineSchedule::total_epochs must be positive");
    const double progress = static_cast<double>(epoch) / static_cast<double>(total_epochs);
    const double pi = std::acos(-1.0);
    return eta_min + (base - eta_min) * (1 + std::cos(pi * progress)) / 2;
  }
  std::vector<double> rates(const std::vector<double>& base, int64_t epoch) const {
    return detail::scheduled_rates(*this, base, epoch);
  }
};

/// The baseline's warm-up: during the first `warm_epochs` epochs the *loss* is multiplied
/// by a factor that starts at 0.1 and rises by 0.9 / warm_iterations per training
/// iteration (the first iteration already uses 0.1 + 0.9 / warm_iterations), capped at 1.
struct LossWarmup {
  int64_t warm_epochs = 0;
  /// round(training images / batch size) * warm_epochs, as the baseline computes it.
  int64_t warm_iterations = 1;

  static LossWarmup for_data(int64_t warm_epochs, int64_t train_images, int64_t batch_size) {
    const auto per_epoch = static_cast<int64_t>(
        std::nearbyint(static_cast<double>(train_images) / static_cast<double>(batch_size)));
    return {warm_epochs, std::max<int64_t>(1, per_epoch * warm_epochs)};
  }

  /// Factor for the training iteration `iteration` (0-based, counted from the start of
  /// training) that falls in `epoch`.
  double factor(int64_t epoch, int64_t iteration) const {
    if (epoch >= warm_epochs) return 1.0;
    return std::min(1.0, 0.1 + static_cast<double>(iteration + 1) * 0.9 /
                                   static_cast<double>(warm_iterations));
  }
};

}  // namespace reidnet
