#pragma once
/// Dynamic loss scaling for float16 training (what Python's torch.amp.GradScaler and the
/// baseline's apex amp do): fp16 gradients of small losses underflow to zero, so the loss is
/// multiplied by a large scale before backward, the gradients are divided by it before the
/// step, and a step whose gradients hold inf or NaN is skipped while the scale backs off.
///
///     reidnet::GradScaler scaler(reidnet::GradScalerOptions().enabled(use_fp16));
///     scaler.scale(loss).backward();
///     scaler.step(*optimizer);   // unscales, then steps unless a gradient is not finite
///     scaler.update();           // halves the scale after an overflow, doubles it when stable

#include <ATen/ATen.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace reidnet {

/// The defaults are Python's GradScaler's.
struct GradScalerOptions {
  TORCH_ARG(double, init_scale) = 65536.0;
  TORCH_ARG(double, growth_factor) = 2.0;
  TORCH_ARG(double, backoff_factor) = 0.5;
  /// Consecutive finite steps after which the scale grows.
  TORCH_ARG(int64_t, growth_interval) = 2000;
  /// Disabled, every call passes through (bf16 and fp32 need no scaling).
  TORCH_ARG(bool, enabled) = true;
};

/// The part of a GradScaler that a resumed run must restore.
struct GradScalerState {
  double scale = 65536.0;
  int64_t growth_tracker = 0;
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {}) : options_(std::move(options)) {
    TORCH_CHECK(options_.init_scale() > 0 && options_.growth_factor() > 1 &&
                    options_.backoff_factor() > 0 && options_.backoff_factor() < 1 &&
                    options_.growth_interval() > 0,
                "GradScalerOptions: need init_scale > 0, growth_factor > 1, 0 < backoff_factor "
                "< 1 and growth_interval > 0");
    state_.scale = options_.init_scale();
  }

  bool is_enabled() const { return options_.enabled(); }

  /// `loss` times the current scale (unchanged when disabled).
  torch::Tensor scale(const torch::Tensor& loss) const {
    return options_.enabled() ? loss * state_.scale : loss;
  }

  /// Divides every gradient of `optimizer` by the scale and records whether any is not finite.
  /// Call it before clipping or reading gradients; `step` calls it when it was not called.
  void unscale(torch::optim::Optimizer& optimizer) {
    if (!options_.enabled() || unscaled_) return;
    found_inf_ = false;
    std::vector<at::Tensor> cuda_grads;
    for (auto& group : optimizer.param_groups()) {
      for (auto& parameter : group.params()) {
        auto& grad = parameter.mutable_grad();
        if (!grad.defined()) continue;
        TORCH_CHECK(grad.scalar_type() == at::kFloat,
                    "GradScaler: gradients must be float32 (parameters stay float32 under "
                    "autocast), got ", grad.scalar_type());
        if (grad.is_cuda()) {
          cuda_grads.push_back(grad);
        } else {
          found_inf_ = found_inf_ || !grad.isfinite().all().item<bool>();
          grad.mul_(1.0 / state_.scale);
        }
      }
    }
    if (!cuda_grads.empty()) {
      // One fused kernel over all gradients, as Python does on CUDA.
      const auto options = at::TensorOptions().dtype(at::kFloat).device(cuda_grads.front().device());
      auto found_inf = at::zeros({1}, options);
      const auto inv_scale = at::full({1}, 1.0 / state_.scale, options);
      at::_amp_foreach_non_finite_check_and_unscale_(cuda_grads, found_inf, inv_scale);
      found_inf_ = found_inf_ || found_inf.item<float>() != 0.0f;
    }
    unscaled_ = true;
  }

  /// Unscales (if not done yet) and steps, unless a gradient was inf or NaN. Returns whether
  /// the optimizer stepped.
  bool step(torch::optim::Optimizer& optimizer) {
    if (!options_.enabled()) {
      optimizer.step();
      return true;
    }
    unscale(optimizer);
    if (found_inf_) return false;
    optimizer.step();
    return true;
  }

  /// Adjusts the scale for the next iteration (Python's `_amp_update_scale_` rule).
  void update() {
    if (!options_.enabled()) return;
    if (found_inf_) {
      state_.scale *= options_.backoff_factor();
      state_.growth_tracker = 0;
    } else if (++state_.growth_tracker == options_.growth_interval()) {
      const double grown = state_.scale * options_.growth_factor();
      if (std::isfinite(grown)) state_.scale = grown;
      state_.growth_tracker = 0;
    }
    unscaled_ = false;
    found_inf_ = false;
  }

  double current_scale() const { return state_.scale; }
  /// Whether the last `unscale` found an inf or NaN gradient.
  bool found_inf() const { return found_inf_; }

  const GradScalerState& state() const { return state_; }
  void load_state(const GradScalerState& state) {
    TORCH_CHECK(state.scale > 0 && state.growth_tracker >= 0,
                "GradScaler::load_state: scale must be > 0 and growth_tracker >= 0, got ",
                state.scale, " and ", state.growth_tracker);
    state_ = state;
  }

 private:
  GradScalerOptions options_;
  GradScalerState state_;
  bool unscaled_ = false;
  bool found_inf_ = false;
};

}  // namespace reidnet
