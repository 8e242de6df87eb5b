#pragma once
/// Weight-initialisation policies as tag types.
///
/// A policy is a small value type with `void operator()(torch::nn::Module&) const` that
/// initialises the layers it knows about in a module tree, the way the Python baseline's
/// `net.apply(weights_init_xxx)` does. Modules take policies as template parameters, so a
/// user swaps a policy by naming another type:
///
///     reidnet::apply_init(*model->classifier, reidnet::ClassifierNormalInit{0.0001});

#include <reidnet/models/layers/batch_norm.hpp>

#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

namespace reidnet {

/// While one lives on its thread, apply_init and truncated_normal_ leave tensors as LibTorch
/// made them: for a model built only to have every weight replaced by a strict load
/// (load_trained_model), where initialising is wasted work. A transformer spends seconds there,
/// most of it in the truncated normal's erfinv.
///
///     { reidnet::NoInitGuard no_init; model = reidnet::create_model(name, args); }
///     reidnet::load_state_dict(*model, path);  // strict: every weight replaced
class NoInitGuard {
 public:
  NoInitGuard() { ++depth(); }
  ~NoInitGuard() { --depth(); }
  NoInitGuard(const NoInitGuard&) = delete;
  NoInitGuard& operator=(const NoInitGuard&) = delete;

  static bool active() { return depth() > 0; }

 private:
  static int& depth() {
    thread_local int guards = 0;
    return guards;
  }
};

namespace detail {

// Calls `visit` with `root` and every module below it. (Module::modules(true) needs a
// shared_ptr to the root, which a module initialising itself in its constructor lacks.)
template <class Visit>
void for_each_module(torch::nn::Module& root, Visit&& visit) {
  visit(root);
  for (const auto& module : root.modules(/*include_self=*/false)) visit(*module);
}

// Calls `visit` with every Conv1d/2d/3d weight (and bias, possibly undefined) in `root`.
template <class Visit>
void for_each_conv(torch::nn::Module& root, Visit&& visit) {
  for_each_module(root, [&](torch::nn::Module& module) {
    if (auto* conv = module.as<torch::nn::Conv1d>()) visit(conv->weight, conv->bias);
    if (auto* conv = module.as<torch::nn::Conv2d>()) visit(conv->weight, conv->bias);
    if (auto* conv = module.as<torch::nn::Conv3d>()) visit(conv->weight, conv->bias);
  });
}

template <class Visit>
void for_each_linear(torch::nn::Module& root, Visit&& visit) {
  for_each_module(root, [&](torch::nn::Module& module) {
    if (auto* linear = module.as<torch::nn::Linear>()) visit(linear->weight, linear->bias);
  });
}

// Affine BatchNorm layers, reidnet's and torch::nn's (a user's own backbone may have those);
// `is_1d` tells BatchNorm1d apart, which the Kaiming head policy treats differently from
// BatchNorm2d (as the Python baseline's class-name test does).
template <class Visit>
void for_each_batchnorm(torch::nn::Module& root, Visit&& visit) {
  const auto visit_affine = [&](auto* bn, bool is_1d) {
    if (bn != nullptr && bn->options.affine()) visit(bn->weight, bn->bias, is_1d);
  };
  for_each_module(root, [&](torch::nn::Module& module) {
    visit_affine(module.as<BatchNorm1d>(), /*is_1d=*/true);
    visit_affine(module.as<BatchNorm2d>(), /*is_1d=*/false);
    visit_affine(module.as<torch::nn::BatchNorm1d>(), /*is_1d=*/true);
    visit_affine(module.as<torch::nn::BatchNorm2d>(), /*is_1d=*/false);
  });
}

inline void zero_if_defined(torch::Tensor& bias) {
  if (bias.defined()) torch::nn::init::zeros_(bias);
}

}  // namespace detail

/// The baseline's `weights_init_kaiming` for the ReID head: convs Kaiming-normal (fan_in),
/// Linear Kaiming-normal (fan_out), BatchNorm1d weight ~ N(1, 0.02); every bias 0.
struct KaimingHeadInit {
  void operator()(torch::nn::Module& root) const {
    torch::NoGradGuard no_grad;
    detail::for_each_conv(root, [](torch::Tensor& weight, torch::Tensor& bias) {
      torch::nn::init::kaiming_normal_(weight, 0.0, torch::kFanIn, torch::kReLU);
      detail::zero_if_defined(bias);
    });
    detail::for_each_linear(root, [](torch::Tensor& weight, torch::Tensor& bias) {
      torch::nn::init::kaiming_normal_(weight, 0.0, torch::kFanOut, torch::kReLU);
      detail::zero_if_defined(bias);
    });
    detail::for_each_batchnorm(root, [](torch::Tensor& weight, torch::Tensor& bias, bool is_1d) {
      if (!is_1d) return;
      torch::nn::init::normal_(weight, 1.0, 0.02);
      torch::nn::init::zeros_(bias);
    });
  }
};

/// The baseline's `weights_init_classifier`: Linear weight ~ N(0, std), bias 0.
/// The seed document uses std 0.001; upstream moved to 0.0001 in 2025.
struct ClassifierNormalInit {
  double std = 0.001;

  void operator()(torch::nn::Module& root) const {
    torch::NoGradGuard no_grad;
    detail::for_each_linear(root, [this](torch::Tensor& weight, torch::Tensor& bias) {
      torch::nn::init::normal_(weight, 0.0, std);
      detail::zero_if_defined(bias);
    });
  }
};

/// torchvision's ResNet init: convs Kaiming-normal (fan_out, relu), BatchNorm weight 1 and
/// bias 0. Linear layers keep PyTorch's default init, as in torchvision.
struct TorchvisionInit {
  void operator()(torch::nn::Module& root) const {
    torch::NoGradGuard no_grad;
    detail::for_each_conv(root, [](torch::Tensor& weight, torch::Tensor& bias) {
      torch::nn::init::kaiming_normal_(weight, 0.0, torch::kFanOut, torch::kReLU);
      detail::zero_if_defined(bias);
    });
    detail::for_each_batchnorm(root, [](torch::Tensor& weight, torch::Tensor& bias, bool) {
      torch::nn::init::ones_(weight);
      torch::nn::init::zeros_(bias);
    });
  }
};

/// timm's init of its ConvNeXt and vision transformers: conv and Linear weights from a normal of
/// mean 0 and this std, truncated to [-2, 2] (timm's trunc_normal_, by inverse transform), every
/// bias 0. Norm layers keep their construction (weight 1, bias 0).
/// Fills `tensor` from N(0, std^2) truncated to [-2, 2] (absolute bounds, as timm's
/// trunc_normal_), by inverse-transform sampling.
inline void truncated_normal_(torch::Tensor& tensor, double std) {
  if (NoInitGuard::active()) return;
  torch::NoGradGuard no_grad;
  const auto cdf = [std](double bound) { return 0.5 * (1 + std::erf(bound / std / std::sqrt(2.0))); };
  tensor.uniform_(2 * cdf(-2.0) - 1, 2 * cdf(2.0) - 1).erfinv_().mul_(std * std::sqrt(2.0)).clamp_(-2.0, 2.0);
}

struct TruncatedNormalInit {
  double std = 0.02;

  void operator()(torch::nn::Module& root) const {
    torch::NoGradGuard no_grad;
    const auto init = [this](torch::Tensor& weight, torch::Tensor& bias) {
      truncated_normal_(weight, std);
      detail::zero_if_defined(bias);
    };
    detail::for_each_conv(root, init);
    detail::for_each_linear(root, init);
  }
};

/// Leaves LibTorch's default initialisation untouched (useful before loading weights).
struct NoInit {
  void operator()(torch::nn::Module&) const {}
};

/// Applies `policy` to every layer of `root` that the policy knows about.
template <class Policy>
void apply_init(torch::nn::Module& root, const Policy& policy = Policy{}) {
  if (NoInitGuard::active()) return;
  policy(root);
}

}  // namespace reidnet
