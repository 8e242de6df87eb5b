#pragma once
/// `ft_net` of the Python Market-1501 baseline: torchvision's ResNet-50
/// followed by a ClassBlock. Its state_dict is the Python model's, key for key.
///
///     reidnet::FtNet net(reidnet::FtNetOptions(751).stride(1));
///     net->eval();
///     torch::Tensor feature = net->embed(images);   // (B, 512) test-time feature

#include <reidnet/class_block.hpp>
#include <reidnet/resnet.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>
#include <vector>

namespace reidnet {

struct FtNetOptions {
  /* implicit */ FtNetOptions(int64_t class_num = 751) : class_num_(class_num) {}

  /// Number of training identities (751 for Market-1501).
  TORCH_ARG(int64_t, class_num);
  TORCH_ARG(double, droprate) = 0.5;
  /// Stride of layer4's first block: 2 (torchvision) or 1 (a 16x8 map for 256x128 input).
  TORCH_ARG(int64_t, stride) = 2;
  /// Width of the ClassBlock bottleneck; 0 keeps 2048 (BatchNorm1d only).
  TORCH_ARG(int64_t, linear_num) = 512;
  /// Whether the Python module returns [logits, feature]; see `forward_outputs`.
  TORCH_ARG(bool, return_f) = false;
  /// Std of the classifier's normal init (0.001, as the baseline long used; its current code
  /// uses 0.0001).
  TORCH_ARG(double, classifier_std) = 0.001;
};

/// ResNet-50 backbone (`model`, with its unused ImageNet `fc` kept for key compatibility)
/// and the ReID head (`classifier`).
class FtNetImpl : public torch::nn::Cloneable<FtNetImpl> {
 public:
  explicit FtNetImpl(const FtNetOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    model = register_module("model", resnet50(ResNetOptions().last_stride(options.stride())));
    classifier = register_module(
        "classifier", ClassBlock(ClassBlockOptions(model->num_features(), options.class_num())
                                     .droprate(options.droprate())
                                     .linear(options.linear_num())
                                     .return_f(options.return_f()),
                                 KaimingHeadInit{}, ClassifierNormalInit{options.classifier_std()}));
  }

  /// Pooled backbone output (B, 2048); works for B = 1.
  torch::Tensor forward_features(const torch::Tensor& x) { return model->forward_features(x); }

  /// The test-time ReID feature: the ClassBlock's add_block output (B, linear_num or 2048).
  torch::Tensor embed(const torch::Tensor& x) { return classifier->embed(forward_features(x)); }

  /// Identity logits (B, class_num).
  torch::Tensor forward(const torch::Tensor& x) { return classifier->forward(forward_features(x)); }

  /// Logits and feature from one pass, for metric losses.
  LogitsAndFeature forward_with_feature(const torch::Tensor& x) {
    return classifier->forward_with_feature(forward_features(x));
  }

  /// What the Python module's forward returns: {logits}, or {logits, feature} with return_f.
  std::vector<torch::Tensor> forward_outputs(const torch::Tensor& x) {
    return classifier->forward_outputs(forward_features(x));
  }

  /// Width of the test-time feature.
  int64_t feature_dim() const { return classifier->feature_dim(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::FtNet(class_num=" << options.class_num()
           << ", stride=" << options.stride() << ", linear_num=" << options.linear_num()
           << ", droprate=" << options.droprate() << ")";
  }

  FtNetOptions options;
  ResNet<Bottleneck> model{nullptr};
  ClassBlock classifier{nullptr};
};
TORCH_MODULE(FtNet);

}  // namespace reidnet
