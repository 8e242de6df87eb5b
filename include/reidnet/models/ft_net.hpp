#pragma once
/// `ft_net` of the Python Market-1501 baseline: torchvision's ResNet-50 followed by a
/// ClassBlock. Its state_dict is the Python model's, key for key. FtNet is the ReidModel of a
/// ResNet-50 backbone registered as `model` and a ClassBlock head registered as `classifier`;
/// it adds the Python module's own interface (`logits`, `forward_outputs`).
///
///     reidnet::FtNet net(reidnet::FtNetOptions(751).last_stride(1));
///     net->eval();
///     torch::Tensor feature = net->embed(images);   // (B, 512) test-time feature

#include <reidnet/models/heads/class_block.hpp>
#include <reidnet/models/reid_model.hpp>
#include <reidnet/models/backbones/resnet.hpp>

#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <vector>

namespace reidnet {

struct FtNetOptions {
  /* implicit */ FtNetOptions(int64_t class_num = 751) : class_num_(class_num) {}

  /// Number of training identities (751 for Market-1501).
  TORCH_ARG(int64_t, class_num);
  TORCH_ARG(double, droprate) = 0.5;
  /// Stride of layer4's first block: 2 (torchvision) or 1 (a 16x8 map for 256x128 input).
  TORCH_ARG(int64_t, last_stride) = 2;
  /// Width of the ClassBlock bottleneck; 0 keeps 2048 (BatchNorm1d only).
  TORCH_ARG(int64_t, linear_num) = 512;
  /// Whether the Python module returns [logits, feature]; see `forward_outputs`.
  TORCH_ARG(bool, return_f) = false;
  /// Std of the classifier's normal init (0.001, as the baseline long used; its current code
  /// uses 0.0001).
  TORCH_ARG(double, classifier_std) = 0.001;
  /// IBN-Net's resnet50_ibn_a as the backbone (the baseline's `--ibn`).
  TORCH_ARG(bool, ibn) = false;
  /// How the ClassBlock pools layer4's map.
  TORCH_ARG(GlobalPoolOptions, pool) = GlobalPoolOptions();

 public:
  /// The baseline's name for last_stride (its `--stride` and opts.yaml key); kept so that
  /// code written against earlier reidnet versions compiles.
  FtNetOptions& stride(int64_t value) { return last_stride(value); }
  int64_t stride() const { return last_stride(); }
};

/// ResNet-50 backbone (`model`, with its unused ImageNet `fc` kept for key compatibility)
/// and the ReID head (`classifier`).
class FtNetImpl : public ReidModelImpl {
 public:
  explicit FtNetImpl(const FtNetOptions& options_ = {})
      : ReidModelImpl(make_backbone(options_), make_head(options_)),
        options(options_),
        model(backbone().as<ResNetImpl<Bottleneck>>()),
        classifier(head().as<ClassBlockImpl<>>()) {
    set_factory([options = options_] { return std::make_shared<FtNetImpl>(options); });
  }

  // forward (ReidOutput) and forward_features (the unpooled map) are ReidModel's.

  /// Pooled backbone output (B, 2048); works for B = 1.
  torch::Tensor pooled_features(const torch::Tensor& x) {
    return classifier->pool(model->forward_features(x));
  }

  /// Identity logits (B, class_num): what the Python module's forward returns.
  torch::Tensor logits(const torch::Tensor& x) { return classifier->forward(pooled_features(x)); }

  /// Logits and feature from one pass, for metric losses.
  LogitsAndFeature forward_with_feature(const torch::Tensor& x) {
    return classifier->forward_with_feature(pooled_features(x));
  }

  /// What the Python module's forward returns: {logits}, or {logits, feature} with return_f.
  std::vector<torch::Tensor> forward_outputs(const torch::Tensor& x) {
    return classifier->forward_outputs(pooled_features(x));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::FtNet(class_num=" << options.class_num()
           << ", last_stride=" << options.last_stride() << ", linear_num=" << options.linear_num()
           << ", droprate=" << options.droprate() << (options.ibn() ? ", ibn" : "") << ")";
  }

  FtNetOptions options;
  ResNet<Bottleneck> model;
  ClassBlock classifier;

 private:
  static AnyBackbone make_backbone(const FtNetOptions& options) {
    return resnet50(ResNetOptions().last_stride(options.last_stride()).ibn_a(options.ibn())).ptr();
  }
  static AnyHead make_head(const FtNetOptions& options) {
    return ClassBlock(ClassBlockOptions(2048, options.class_num())
                          .droprate(options.droprate())
                          .linear_num(options.linear_num())
                          .return_f(options.return_f())
                          .pool(options.pool()),
                      KaimingHeadInit{}, ClassifierNormalInit{options.classifier_std()})
        .ptr();
  }
};
TORCH_MODULE(FtNet);

}  // namespace reidnet
