#pragma once
/// ConvNeXt's building blocks (Liu et al. 2022), with timm's state_dict keys and numerics: the
/// LayerNorm over the channels of an NCHW map (timm's LayerNorm2d) and the ConvNeXt block.
///
///     reidnet::ConvNeXtBlock block(reidnet::ConvNeXtBlockOptions(128).drop_path(0.1));
///     torch::Tensor y = block(torch::randn({2, 128, 64, 32}));   // same shape
///
/// Block keys, in timm's order: gamma (the block's own parameter comes first), conv_dw, norm,
/// mlp.fc1, mlp.fc2.

#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/mlp.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <vector>

namespace reidnet {

/// LayerNorm over the channels of a (B, C, H, W) map, each position on its own. Keys:
/// weight, bias. eps 1e-6 is timm's (torch.nn.LayerNorm's default is 1e-5).
class LayerNorm2dImpl : public torch::nn::Cloneable<LayerNorm2dImpl> {
 public:
  explicit LayerNorm2dImpl(int64_t channels, double eps = 1e-6) : channels_(channels), eps_(eps) { reset(); }

  void reset() override {
    weight = register_parameter("weight", torch::ones({channels_}));
    bias = register_parameter("bias", torch::zeros({channels_}));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 4 && x.size(1) == channels_, "LayerNorm2d(", channels_,
                ") needs a (B, ", channels_, ", H, W) map, got ", x.sizes());
    // The same layer_norm call as timm's: over the last dimension of the channels-last view.
    return torch::layer_norm(x.permute({0, 2, 3, 1}), {channels_}, weight, bias, eps_)
        .permute({0, 3, 1, 2});
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::LayerNorm2d(" << channels_ << ", eps=" << eps_ << ")";
  }

  torch::Tensor weight, bias;

 private:
  int64_t channels_;
  double eps_;
};
TORCH_MODULE(LayerNorm2d);

struct ConvNeXtBlockOptions {
  /* implicit */ ConvNeXtBlockOptions(int64_t channels) : channels_(channels) {}

  TORCH_ARG(int64_t, channels);
  /// Of the depthwise conv (padded to keep the size).
  TORCH_ARG(int64_t, kernel_size) = 7;
  /// Hidden width of the MLP, in units of channels.
  TORCH_ARG(int64_t, mlp_ratio) = 4;
  /// Initial value of the layer scale `gamma`; nullopt leaves it out (no key).
  TORCH_ARG(std::optional<double>, layer_scale_init) = 1e-6;
  /// Stochastic depth of the residual branch while training.
  TORCH_ARG(double, drop_path) = 0.0;
};

/// x + drop_path(gamma * mlp(norm(conv_dw(x)))), the norm and MLP channels-last as in timm's
/// default (conv_mlp=False) block.
class ConvNeXtBlockImpl : public torch::nn::Cloneable<ConvNeXtBlockImpl> {
 public:
  explicit ConvNeXtBlockImpl(const ConvNeXtBlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto c = options.channels();
    TORCH_CHECK(options.kernel_size() % 2 == 1, "ConvNeXtBlock: the kernel size must be odd, got ",
                options.kernel_size());
    if (options.layer_scale_init()) {
      gamma = register_parameter("gamma", torch::full({c}, *options.layer_scale_init()));
    }
    conv_dw = register_module(
        "conv_dw", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, options.kernel_size())
                                         .padding(options.kernel_size() / 2)
                                         .groups(c)));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c}).eps(1e-6)));
    mlp = register_module("mlp", Mlp(c, options.mlp_ratio() * c));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto y = mlp(norm(conv_dw(x).permute({0, 2, 3, 1}))).permute({0, 3, 1, 2});
    if (gamma.defined()) y = y.mul(gamma.reshape({1, -1, 1, 1}));
    return drop_path(y, options.drop_path(), is_training()) + x;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::ConvNeXtBlock(" << options.channels() << ", drop_path=" << options.drop_path() << ")";
  }

  ConvNeXtBlockOptions options;
  torch::Tensor gamma;
  torch::nn::Conv2d conv_dw{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(ConvNeXtBlock);

}  // namespace reidnet
