#pragma once
/// The baseline's optimiser: SGD with Nesterov momentum and two parameter
/// groups, the pretrained backbone at a fraction of the head's learning rate; and the strong
/// baseline's, Adam or AdamW, whose steps equal Python's bit for bit.
///
///     auto sgd = reidnet::make_sgd(*net, reidnet::SgdRecipe().lr(0.05));
///     // sgd->param_groups()[0] is the backbone (0.005), [1] the head (0.05)
///     auto adam = reidnet::make_adam(*net, reidnet::AdamRecipe().lr(3.5e-4));

#include <reidnet/models/reid_model.hpp>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace reidnet {

struct SgdRecipe {
  /// Learning rate of the head; the backbone gets lr * backbone_lr_ratio.
  TORCH_ARG(double, lr) = 0.05;
  /// 0.1 when fine-tuning pretrained weights; 1.0 when training from scratch.
  TORCH_ARG(double, backbone_lr_ratio) = 0.1;
  TORCH_ARG(double, weight_decay) = 5e-4;
  TORCH_ARG(double, momentum) = 0.9;
  TORCH_ARG(bool, nesterov) = true;
};

namespace detail {
/// The key of a parameter's state in torch::optim::Optimizer: the TensorImpl address, as a
/// string in LibTorch 1.x and as a pointer in 2.x.
template <class Key>
Key optimizer_state_key(const at::Tensor& parameter) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;  // how LibTorch 1.x spells it (c10::guts::to_string)
    key << parameter.unsafeGetTensorImpl();
    return key.str();
  } else {
    return parameter.unsafeGetTensorImpl();
  }
}

/// The loss of an optimiser step's closure, computed with gradients on as Python's step does;
/// undefined without a closure.
inline torch::Tensor closure_loss(const torch::optim::Optimizer::LossClosure& closure) {
  if (!closure) return {};
  at::AutoGradMode enable_grad(true);
  return closure();
}
}  // namespace detail

/// torch::optim::SGD whose update runs as multi-tensor (`_foreach_`) kernels, as Python's SGD
/// does by default on CUDA: a handful of launches per step instead of about five per
/// parameter, which leave a GPU idle at small batches. (On the CPU the per-parameter loop is
/// faster: it keeps each update in cache.) The arithmetic, the state (momentum buffers) and
/// the saved checkpoints are torch::optim::SGD's.
class ForeachSGD : public torch::optim::SGD {
 public:
  using torch::optim::SGD::SGD;

  torch::Tensor step(LossClosure closure = nullptr) override {
    torch::NoGradGuard no_grad;
    const auto loss = detail::closure_loss(closure);
    using Key = typename std::decay_t<decltype(state_)>::key_type;
    for (auto& group : param_groups()) {
      const auto& options = static_cast<const torch::optim::SGDOptions&>(group.options());
      std::vector<at::Tensor> parameters, gradients;
      for (auto& parameter : group.params()) {
        if (!parameter.grad().defined()) continue;
        parameters.push_back(parameter);
        gradients.push_back(parameter.grad());
      }
      if (parameters.empty()) continue;
      // d_p = grad + weight_decay * p (a new list: the gradients stay as backward left them)
      auto steps = options.weight_decay() != 0
                       ? at::_foreach_add(gradients, parameters, options.weight_decay())
                       : gradients;
      if (options.momentum() != 0) {
        std::vector<at::Tensor> buffers(parameters.size()), old_buffers, old_steps;
        for (size_t i = 0; i < parameters.size(); ++i) {
          const auto key = detail::optimizer_state_key<Key>(parameters[i]);
          auto found = state_.find(key);
          if (found == state_.end()) {  // first step: the buffer starts as d_p
            auto state = std::make_unique<torch::optim::SGDParamState>();
            state->momentum_buffer(steps[i].clone().detach());
            buffers[i] = state->momentum_buffer();
            state_[key] = std::move(state);
          } else {
            buffers[i] = static_cast<torch::optim::SGDParamState&>(*found->second).momentum_buffer();
            old_buffers.push_back(buffers[i]);
            old_steps.push_back(steps[i]);
          }
        }
        if (!old_buffers.empty()) {  // buf = momentum * buf + (1 - dampening) * d_p
          at::_foreach_mul_(old_buffers, options.momentum());
          at::_foreach_add_(old_buffers, old_steps, 1 - options.dampening());
        }
        steps = options.nesterov() ? at::_foreach_add(steps, buffers, options.momentum()) : buffers;
      }
      at::_foreach_add_(parameters, steps, -options.lr());
    }
    return loss;
  }
};

/// SGD with group 0 = backbone (lr * backbone_lr_ratio) and group 1 = head (lr), the groups a
/// ReidModel declares. Call it once the model is on its device: on CUDA it returns a ForeachSGD.
inline std::unique_ptr<torch::optim::SGD> make_sgd(ParameterGroups groups, const SgdRecipe& recipe = {}) {
  TORCH_CHECK(!groups.head.empty(), "make_sgd: the head group has no parameters");
  const bool on_cuda = groups.head.front().is_cuda();
  auto sgd_options = [&](double lr) {
    return torch::optim::SGDOptions(lr)
        .momentum(recipe.momentum())
        .nesterov(recipe.nesterov())
        .weight_decay(recipe.weight_decay());
  };
  auto group_options = [&](double lr) {
    return std::make_unique<torch::optim::SGDOptions>(sgd_options(lr));
  };
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  param_groups.emplace_back(std::move(groups.backbone),
                            group_options(recipe.lr() * recipe.backbone_lr_ratio()));
  param_groups.emplace_back(std::move(groups.head), group_options(recipe.lr()));
  if (on_cuda) return std::make_unique<ForeachSGD>(std::move(param_groups), sgd_options(recipe.lr()));
  return std::make_unique<torch::optim::SGD>(std::move(param_groups), sgd_options(recipe.lr()));
}

inline std::unique_ptr<torch::optim::SGD> make_sgd(const ReidModelImpl& model,
                                                   const SgdRecipe& recipe = {}) {
  return make_sgd(model.parameter_groups(), recipe);
}

/// Drops every parameter's gradient (Python's `zero_grad(set_to_none=True)`): backward then
/// writes fresh gradients instead of adding to zeroed ones, saving a pass over the weights.
inline void clear_gradients(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& parameter : group.params()) parameter.mutable_grad().reset();
  }
}

/// Learning rate of each param group, in order (any optimiser: SGD, Adam, ...).
inline std::vector<double> learning_rates(const torch::optim::Optimizer& optimizer) {
  std::vector<double> rates;
  for (const auto& group : optimizer.param_groups()) rates.push_back(group.options().get_lr());
  return rates;
}

/// Sets the learning rate of each param group, in order.
inline void set_learning_rates(torch::optim::Optimizer& optimizer, const std::vector<double>& rates) {
  auto& groups = optimizer.param_groups();
  TORCH_CHECK(rates.size() == groups.size(), "set_learning_rates: ", rates.size(),
              " rates for ", groups.size(), " param groups");
  for (size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(rates[i]);
}

/// The strong baseline's optimiser (fast-reid's bag of tricks): Adam, with L2 weight decay
/// added to the gradient as torch.optim.Adam does, or AdamW's decoupled weight decay.
struct AdamRecipe {
  /// Learning rate of the head; the backbone gets lr * backbone_lr_ratio.
  TORCH_ARG(double, lr) = 3.5e-4;
  TORCH_ARG(double, backbone_lr_ratio) = 1.0;
  TORCH_ARG(double, weight_decay) = 5e-4;
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  TORCH_ARG(double, eps) = 1e-8;
  /// AdamW: the weights shrink by lr * weight_decay each step instead.
  TORCH_ARG(bool, decoupled_weight_decay) = false;
};

/// torch.optim.Adam, or torch.optim.AdamW with `decoupled_weight_decay`, with Python's
/// single-tensor step (its default on the CPU) op for op, so that its steps equal Python's
/// bit for bit. The options (AdamOptions) and the state (AdamParamState: step, exp_avg,
/// exp_avg_sq, max_exp_avg_sq) are torch::optim::Adam's.
class Adam : public torch::optim::Adam {
 public:
  Adam(std::vector<torch::optim::OptimizerParamGroup> groups, torch::optim::AdamOptions defaults,
       bool decoupled_weight_decay = false)
      : torch::optim::Adam(std::move(groups), std::move(defaults)),
        decoupled_weight_decay_(decoupled_weight_decay) {}

  bool decoupled_weight_decay() const { return decoupled_weight_decay_; }

  torch::Tensor step(LossClosure closure = nullptr) override {
    torch::NoGradGuard no_grad;
    const auto loss = detail::closure_loss(closure);
    using Key = typename std::decay_t<decltype(state_)>::key_type;
    for (auto& group : param_groups()) {
      const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
      const auto [beta1, beta2] = options.betas();
      for (auto& parameter : group.params()) {
        if (!parameter.grad().defined()) continue;
        const auto key = detail::optimizer_state_key<Key>(parameter);
        if (state_.find(key) == state_.end()) {
          auto fresh = std::make_unique<torch::optim::AdamParamState>();
          fresh->exp_avg(torch::zeros_like(parameter, at::MemoryFormat::Preserve));
          fresh->exp_avg_sq(torch::zeros_like(parameter, at::MemoryFormat::Preserve));
          if (options.amsgrad()) fresh->max_exp_avg_sq(torch::zeros_like(parameter, at::MemoryFormat::Preserve));
          state_[key] = std::move(fresh);
        }
        auto& state = static_cast<torch::optim::AdamParamState&>(*state_.at(key));
        state.step(state.step() + 1);
        auto gradient = parameter.grad();
        if (decoupled_weight_decay_) {
          parameter.mul_(1 - options.lr() * options.weight_decay());
        } else if (options.weight_decay() != 0) {
          gradient = gradient.add(parameter, options.weight_decay());
        }
        // Python moves the first moment with lerp_ since 2.1, with mul_ and add_ before: the
        // same value, rounded differently.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
        state.exp_avg().lerp_(gradient, 1 - beta1);
#else
        state.exp_avg().mul_(beta1).add_(gradient, 1 - beta1);
#endif
        state.exp_avg_sq().mul_(beta2).addcmul_(gradient, gradient, 1 - beta2);
        const auto step = static_cast<double>(state.step());
        const double step_size = options.lr() / (1 - std::pow(beta1, step));
        const double bias_correction2_sqrt = std::sqrt(1 - std::pow(beta2, step));
        auto second_moment = state.exp_avg_sq();
        if (options.amsgrad()) {
          at::maximum_out(state.max_exp_avg_sq(), state.max_exp_avg_sq(), second_moment);
          second_moment = state.max_exp_avg_sq();
        }
        const auto denominator = (second_moment.sqrt() / bias_correction2_sqrt).add_(options.eps());
        parameter.addcdiv_(state.exp_avg(), denominator, -step_size);
      }
    }
    return loss;
  }

 private:
  bool decoupled_weight_decay_ = false;
};

/// Adam (or AdamW) with group 0 = backbone (lr * backbone_lr_ratio) and group 1 = head (lr),
/// the groups a ReidModel declares.
inline std::unique_ptr<Adam> make_adam(ParameterGroups groups, const AdamRecipe& recipe = {}) {
  TORCH_CHECK(!groups.head.empty(), "make_adam: the head group has no parameters");
  auto adam_options = [&](double lr) {
    return torch::optim::AdamOptions(lr)
        .betas({recipe.beta1(), recipe.beta2()})
        .eps(recipe.eps())
        .weight_decay(recipe.weight_decay());
  };
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  param_groups.emplace_back(std::move(groups.backbone), std::make_unique<torch::optim::AdamOptions>(
                                                            adam_options(recipe.lr() * recipe.backbone_lr_ratio())));
  param_groups.emplace_back(std::move(groups.head),
                            std::make_unique<torch::optim::AdamOptions>(adam_options(recipe.lr())));
  return std::make_unique<Adam>(std::move(param_groups), adam_options(recipe.lr()),
                                recipe.decoupled_weight_decay());
}

inline std::unique_ptr<Adam> make_adam(const ReidModelImpl& model, const AdamRecipe& recipe = {}) {
  return make_adam(model.parameter_groups(), recipe);
}

}  // namespace reidnet
