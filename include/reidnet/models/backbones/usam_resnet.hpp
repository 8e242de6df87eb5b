#pragma once
/// The Python Market-1501 baseline's `ft_net(usam=True)` backbone: a ResNet with USAM
/// attention after the stem's ReLU (usam_1, before the max pool) and after layer1 (usam_2).
///
///     reidnet::UsamResNet backbone(reidnet::ResNetOptions().layers({3, 4, 6, 3}));  // ResNet-50
///     torch::Tensor map = backbone->forward_features(images);   // (B, 2048, H/32, W/32)
///
/// Children: model (the ResNet, keys model.*), usam_1, usam_2.

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/backbones/resnet.hpp>
#include <reidnet/models/layers/usam.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <vector>

namespace reidnet {

class UsamResNetImpl : public torch::nn::Cloneable<UsamResNetImpl>, public Backbone {
 public:
  /// A Bottleneck ResNet built from `options` (ResNetOptions' default depths are ResNet-18's:
  /// set layers, e.g. {3, 4, 6, 3} for ResNet-50).
  explicit UsamResNetImpl(const ResNetOptions& options_) : options(options_) { reset(); }

  void reset() override {
    model = register_module("model", ResNet<Bottleneck>(options));
    usam_1 = register_module("usam_1", Usam());
    usam_2 = register_module("usam_2", Usam());
  }

  torch::Tensor forward_features(const torch::Tensor& images) override {
    auto x = ResNet<Bottleneck>::Impl::max_pool(usam_1(model->forward_stem(images)));
    x = usam_2(model->layer(1)->forward(x));
    for (size_t stage = 2; stage <= 4; ++stage) x = model->layer(stage)->forward(x);
    return x;
  }

  int64_t num_features() const override { return model->num_features(); }
  std::vector<int64_t> feature_strides() const override { return model->feature_strides(); }

  void pretty_print(std::ostream& stream) const override { stream << "reidnet::UsamResNet"; }

  ResNetOptions options;
  ResNet<Bottleneck> model{nullptr};
  Usam usam_1{nullptr}, usam_2{nullptr};
};
TORCH_MODULE(UsamResNet);

}  // namespace reidnet
