#pragma once
/// timm's two-layer MLP (`timm.layers.Mlp` without dropout), the feed-forward half of ConvNeXt,
/// Swin and ViT blocks alike.
///
///     reidnet::Mlp mlp(768, 3072);
///     torch::Tensor y = mlp(tokens);   // (..., 768) -> (..., 768)

#include <torch/nn/cloneable.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <ostream>

namespace reidnet {

/// Linear, GELU, Linear (timm's Mlp without dropout). Keys: fc1, fc2.
class MlpImpl : public torch::nn::Cloneable<MlpImpl> {
 public:
  MlpImpl(int64_t in_features, int64_t hidden_features, std::optional<int64_t> out_features = std::nullopt)
      : in_(in_features), hidden_(hidden_features), out_(out_features.value_or(in_features)) {
    reset();
  }

  void reset() override {
    fc1 = register_module("fc1", torch::nn::Linear(in_, hidden_));
    fc2 = register_module("fc2", torch::nn::Linear(hidden_, out_));
  }

  /// Works on the last dimension of `x`, as torch::nn::Linear does.
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::gelu(fc1(x))); }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::Mlp(" << in_ << " -> " << hidden_ << " -> " << out_ << ")";
  }

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  int64_t in_, hidden_, out_;
};
TORCH_MODULE(Mlp);

}  // namespace reidnet
