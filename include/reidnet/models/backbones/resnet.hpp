#pragma once
/// torchvision's ResNet (v1.5), templated over the residual block, with the same
/// state_dict keys, order and shapes as `torchvision.models.resnetXX()`; with `ibn_a`, IBN-Net's
/// `resnet50_ibn_a`. A ResNet is a reidnet::Backbone: `forward_features` is the unpooled map.
///
///     auto net = reidnet::resnet50(reidnet::ResNetOptions().class_num(10));
///     torch::Tensor logits = net(torch::randn({2, 3, 224, 224}));
///     torch::Tensor map = net->forward_features(images);   // (B, 2048, H/32, W/32)

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/residual_blocks.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <vector>

namespace reidnet {

/// Options of `ResNet<Block>`. The factories (`resnet50()`, ...) set `layers`.
struct ResNetOptions {
  /// Blocks per stage (layer1..layer4), e.g. {3, 4, 6, 3} for ResNet-50.
  TORCH_ARG(std::vector<int64_t>, layers) = {2, 2, 2, 2};
  /// Width of the ImageNet classifier `fc` (torchvision's num_classes); 0 leaves `fc` out.
  TORCH_ARG(int64_t, class_num) = 1000;
  /// Zero the last BatchNorm weight of every block (torchvision's zero_init_residual).
  TORCH_ARG(bool, zero_init_residual) = false;
  /// Stride of the first block of layer4; 1 doubles the final map (16x8 for 256x128 input).
  TORCH_ARG(int64_t, last_stride) = 2;
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(int64_t, width_per_group) = 64;
  /// IBN-Net's IBN-a: the bn1 of every block of layer1..layer3 is an Ibn (Bottleneck only).
  TORCH_ARG(bool, ibn_a) = false;
};

/// ResNet over `Block` (`BasicBlock` or `Bottleneck`), initialised by the `Init` policy.
/// Keys: conv1, bn1, layer1..layer4, fc - registered in torchvision's order.
template <class Block, class Init = TorchvisionInit>
class ResNetImpl : public torch::nn::Cloneable<ResNetImpl<Block, Init>>,
                   public Backbone,
                   public DeclaresConvBatchNormPairs,
                   public DescribesResidualTrunk {
 public:
  using BlockImpl = typename Block::Impl;

  explicit ResNetImpl(const ResNetOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    TORCH_CHECK(options.layers().size() == 4, "ResNetOptions::layers needs 4 stage depths, got ",
                options.layers().size());
    TORCH_CHECK(options.last_stride() == 1 || options.last_stride() == 2,
                "ResNetOptions::last_stride must be 1 or 2, got ", options.last_stride());
    inplanes_ = 64;
    conv1 = this->register_module(
        "conv1", torch::nn::Conv2d(
                     torch::nn::Conv2dOptions(3, 64, 7).stride(2).padding(3).bias(false)));
    bn1 = this->register_module("bn1", BatchNorm2d(64));
    TORCH_CHECK(options.class_num() >= 0, "ResNetOptions::class_num must be >= 0 (0 = no fc), got ",
                options.class_num());
    const std::array<int64_t, 4> strides{1, 2, 2, options.last_stride()};
    for (size_t stage = 0; stage < 4; ++stage) {
      layers_[stage] = this->register_module(
          "layer" + std::to_string(stage + 1),
          make_stage(int64_t{64} << stage, options.layers()[stage], strides[stage],
                     /*ibn=*/options.ibn_a() && stage < 3));
    }
    fc = nullptr;
    if (options.class_num() > 0) {
      fc = this->register_module("fc", torch::nn::Linear(num_features(), options.class_num()));
    }
    apply_init(*this, Init{});
    if (options.zero_init_residual()) zero_last_norms();
  }

  /// Channels of the feature map (2048 for Bottleneck, 512 for BasicBlock).
  int64_t num_features() const override { return 512 * BlockImpl::expansion; }

  std::vector<int64_t> feature_strides() const override {
    return {4, 8, 16, 16 * options.last_stride()};
  }

  /// The stem's; the blocks declare theirs.
  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override { return {{"conv1", "bn1"}}; }

  /// The trunk as inference's fused plan runs it (IBN-a's halves included).
  std::optional<ResidualTrunkView> residual_trunk() const override {
    ResidualTrunkView view{{conv1.get(), bn1.get()}, {}, num_features()};
    for (const auto& layer : layers_) {
      for (size_t i = 0; i < layer->size(); ++i) {
        auto block = layer->template at<BlockImpl>(i).residual_view();
        if (!block) return std::nullopt;
        view.blocks.push_back(std::move(*block));
      }
    }
    return view;
  }

  /// conv1, bn1 and ReLU (the 3x3 max pool follows in forward_features).
  torch::Tensor forward_stem(const torch::Tensor& x) { return bn1(conv1(x)).relu_(); }

  /// The unpooled map (B, num_features, H/32, W/32) of the stem and layer1..layer4.
  torch::Tensor forward_features(const torch::Tensor& x) override {
    auto out = max_pool(forward_stem(x));
    for (auto& layer : layers_) out = layer->forward(out);
    return out;
  }

  /// The stem's 3x3 max pool (stride 2, padding 1).
  static torch::Tensor max_pool(const torch::Tensor& x) {
    return torch::max_pool2d(x, /*kernel_size=*/3, /*stride=*/2, /*padding=*/1);
  }

  /// torchvision's head on a feature map: global average pool, then `fc` (ImageNet logits);
  /// with `pre_logits`, the pooled (B, num_features) feature.
  torch::Tensor forward_head(const torch::Tensor& map, bool pre_logits = false) {
    auto pooled = torch::flatten(torch::adaptive_avg_pool2d(map, {1, 1}), 1);
    if (pre_logits) return pooled;
    TORCH_CHECK(fc, "ResNet built with class_num 0 has no fc; use forward_head(map, true)");
    return fc(pooled);
  }

  /// ImageNet logits (B, class_num).
  torch::Tensor forward(const torch::Tensor& x) { return forward_head(forward_features(x)); }

  /// Replaces `fc` by a freshly initialised Linear with `class_num` outputs.
  void reset_classifier(int64_t class_num) {
    TORCH_CHECK(class_num > 0 && fc, "reset_classifier needs a ResNet with an fc and class_num > 0");
    options.class_num(class_num);
    fc = this->replace_module("fc", torch::nn::Linear(num_features(), class_num));
  }

  /// layer1..layer4 by 1-based index, as in torchvision (`layer(4)` is `model.layer4`).
  torch::nn::Sequential& layer(size_t index) {
    TORCH_CHECK(index >= 1 && index <= 4, "ResNet has layer1..layer4, got layer", index);
    return layers_[index - 1];
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::ResNet(layers=[" << options.layers()[0] << ", " << options.layers()[1]
           << ", " << options.layers()[2] << ", " << options.layers()[3]
           << "], class_num=" << options.class_num()
           << ", last_stride=" << options.last_stride() << ")";
  }

  ResNetOptions options;
  torch::nn::Conv2d conv1{nullptr};
  BatchNorm2d bn1{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  torch::nn::Sequential make_stage(int64_t planes, int64_t blocks, int64_t stride, bool ibn) {
    torch::nn::Sequential stage;
    for (int64_t i = 0; i < blocks; ++i) {
      stage->push_back(Block(ResidualBlockOptions(inplanes_, planes)
                                 .stride(i == 0 ? stride : 1)
                                 .groups(options.groups())
                                 .base_width(options.width_per_group())
                                 .ibn(ibn)));
      inplanes_ = planes * BlockImpl::expansion;
    }
    return stage;
  }

  void zero_last_norms() {
    torch::NoGradGuard no_grad;
    for (auto& layer : layers_) {
      for (size_t i = 0; i < layer->size(); ++i) {
        layer->template at<BlockImpl>(i).last_norm()->weight.zero_();
      }
    }
  }

  int64_t inplanes_ = 64;
  std::array<torch::nn::Sequential, 4> layers_{nullptr, nullptr, nullptr, nullptr};
};

/// Holder for `ResNetImpl` (TORCH_MODULE cannot take a template id).
template <class Block, class Init = TorchvisionInit>
class ResNet : public torch::nn::ModuleHolder<ResNetImpl<Block, Init>> {
 public:
  using torch::nn::ModuleHolder<ResNetImpl<Block, Init>>::ModuleHolder;
  using Impl = ResNetImpl<Block, Init>;
};

namespace detail {
template <class Block>
ResNet<Block> make_resnet(ResNetOptions options, std::vector<int64_t> layers) {
  return ResNet<Block>(options.layers(std::move(layers)));
}
}  // namespace detail

/// torchvision's resnetXX; `options.layers` is overwritten with the variant's depths.
inline ResNet<BasicBlock> resnet18(ResNetOptions options = {}) {
  return detail::make_resnet<BasicBlock>(std::move(options), {2, 2, 2, 2});
}
inline ResNet<BasicBlock> resnet34(ResNetOptions options = {}) {
  return detail::make_resnet<BasicBlock>(std::move(options), {3, 4, 6, 3});
}
inline ResNet<Bottleneck> resnet50(ResNetOptions options = {}) {
  return detail::make_resnet<Bottleneck>(std::move(options), {3, 4, 6, 3});
}
inline ResNet<Bottleneck> resnet101(ResNetOptions options = {}) {
  return detail::make_resnet<Bottleneck>(std::move(options), {3, 4, 23, 3});
}
inline ResNet<Bottleneck> resnet152(ResNetOptions options = {}) {
  return detail::make_resnet<Bottleneck>(std::move(options), {3, 8, 36, 3});
}
/// IBN-Net's resnet50_ibn_a: its published ImageNet weights load with their own keys.
inline ResNet<Bottleneck> resnet50_ibn_a(ResNetOptions options = {}) {
  return resnet50(std::move(options).ibn_a(true));
}

namespace detail {
template <class Factory>
BackboneEntry resnet_entry(Factory factory, std::string description) {
  BackboneEntry entry;
  entry.create = [factory](const BackboneArgs& args) {
    return AnyBackbone(factory(ResNetOptions()
                                   .last_stride(args.last_stride())
                                   .class_num(args.keep_classifier() ? 1000 : 0))
                           .ptr());
  };
  entry.description = std::move(description);
  return entry;
}
inline bool register_resnets() {
  register_backbone("resnet18", resnet_entry(resnet18, "torchvision resnet18 (512-d)"));
  register_backbone("resnet34", resnet_entry(resnet34, "torchvision resnet34 (512-d)"));
  register_backbone("resnet50", resnet_entry(resnet50, "torchvision resnet50 (2048-d)"));
  register_backbone("resnet101", resnet_entry(resnet101, "torchvision resnet101 (2048-d)"));
  register_backbone("resnet152", resnet_entry(resnet152, "torchvision resnet152 (2048-d)"));
  auto ibn = resnet_entry(resnet50_ibn_a, "IBN-Net resnet50_ibn_a (2048-d, IBN-a)");
  ibn.switch_key = "ibn";  // the baseline's --ibn
  ibn.switch_flags = "--ibn";
  register_backbone("resnet50_ibn_a", std::move(ibn));
  return true;
}
}  // namespace detail

inline const bool kResNetsRegistered = detail::register_resnets();

}  // namespace reidnet
