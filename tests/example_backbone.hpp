#pragma once
// A backbone added the way a user adds one: this header and the registry line at its end.
// Two strided 3x3 convs; small enough to train in a test.
#include <reidnet/models/backbones/backbone.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace example {

class TinyNetImpl : public torch::nn::Cloneable<TinyNetImpl>, public reidnet::Backbone {
 public:
  explicit TinyNetImpl(const reidnet::BackboneArgs& args_ = {}) : args(args_) { reset(); }

  void reset() override {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 16, 3).stride(2).padding(1)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(16));
    conv2 = register_module(
        "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).stride(args.last_stride()).padding(1)));
  }

  torch::Tensor forward_features(const torch::Tensor& images) override {
    return conv2(bn1(conv1(images)).relu()).relu();
  }
  int64_t num_features() const override { return 32; }
  std::vector<int64_t> feature_strides() const override { return {2, 2 * args.last_stride()}; }

  reidnet::BackboneArgs args;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
};

inline const bool kTinyNetRegistered = reidnet::register_backbone(
    "tiny_net", {[](const reidnet::BackboneArgs& args) { return reidnet::AnyBackbone(std::make_shared<TinyNetImpl>(args)); }, {}, "two convs (a test)"});

}  // namespace example
