#pragma once
/// Learning-rate schedules, the strong baseline's linear learning-rate warm-up and the
/// baseline's loss warm-up. All are closed forms of (epoch, iteration), so a resumed run needs
/// no scheduler state.
///
///     reidnet::MultiStepSchedule schedule{/*milestones=*/{40, 70}, /*gamma=*/0.1};
///     const auto epoch_rates = schedule.rates(base_rates, epoch);
///     reidnet::LinearWarmup warmup{/*iterations=*/10 * batches_per_epoch, /*start_factor=*/0.1};
///     // every iteration (0-based, counted from the start of training):
///     reidnet::set_learning_rates(*adam, warmup.rates(epoch_rates, iteration));

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
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

/// PyTorch's MultiStepLR: base * gamma^(the number of milestones at or below epoch), stepped
/// once per epoch. `milestones` ascend.
struct MultiStepSchedule {
  std::vector<int64_t> milestones;
  double gamma = 0.1;

  double rate(double base, int64_t epoch) const {
    TORCH_CHECK(std::is_sorted(milestones.begin(), milestones.end()),
                "MultiStepSchedule::milestones must ascend");
    const auto passed = std::distance(
        milestones.begin(), std::upper_bound(milestones.begin(), milestones.end(), epoch));
    return base * std::pow(gamma, static_cast<double>(passed));
  }
  std::vector<double> rates(const std::vector<double>& base, int64_t epoch) const {
    return detail::scheduled_rates(*this, base, epoch);
  }
};

/// A linear warm-up of the learning rate over the first `iterations` training iterations, as
/// fast-reid's WarmupLR ("linear") and PyTorch's LinearLR(start_factor, total_iters=iterations)
/// stepped per iteration: the factor is start_factor at iteration 0 and rises linearly to 1 at
/// `iterations`. It multiplies the rates of the epoch's schedule.
struct LinearWarmup {
  int64_t iterations = 0;
  double start_factor = 0.1;

  double factor(int64_t iteration) const {
    if (iteration >= iterations) return 1.0;
    const double progress = static_cast<double>(iteration) / static_cast<double>(iterations);
    return start_factor * (1 - progress) + progress;
  }
  double rate(double base, int64_t iteration) const { return base * factor(iteration); }
  std::vector<double> rates(const std::vector<double>& base, int64_t iteration) const {
    return detail::scheduled_rates(*this, base, iteration);
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
