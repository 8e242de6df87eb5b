#pragma once
/// torchvision's DenseNet-BC, with the same state_dict keys, order and shapes as
/// `torchvision.models.densenet121()`, as a reidnet backbone (registered as "densenet121").
///
///     auto net = reidnet::densenet121(reidnet::DenseNetOptions().last_stride(1));
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 256, 128}));
///     // map: (2, 1024, 15, 7); with last_stride 2 it would be (2, 1024, 8, 4)
///     torch::Tensor logits = net(torch::randn({2, 3, 224, 224}));  // (2, 1000)
///
/// `forward_features` returns the map right after `features.norm5`, without torchvision's final
/// ReLU: the Python baseline's ft_net_dense pools `model.features(x)` directly, so its DenseNet
/// feature is never rectified.

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/init.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <c10/util/Exception.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <regex>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

/// Options of `DenseLayer`: BN-ReLU-Conv1x1 (bn_size * growth_rate) then BN-ReLU-Conv3x3.
struct DenseLayerOptions {
  DenseLayerOptions(int64_t num_input_features, int64_t growth_rate, int64_t bn_size)
      : num_input_features_(num_input_features), growth_rate_(growth_rate), bn_size_(bn_size) {}

  /// Channels of the concatenation of all earlier maps of the block.
  TORCH_ARG(int64_t, num_input_features);
  /// Channels the layer adds.
  TORCH_ARG(int64_t, growth_rate);
  /// Width of the 1x1 bottleneck, in units of growth_rate.
  TORCH_ARG(int64_t, bn_size);
  /// Dropout on the new channels while training; 0 in every torchvision DenseNet.
  TORCH_ARG(double, drop_rate) = 0.0;
};

/// torchvision's `_DenseLayer`. Keys: norm1, conv1, norm2, conv2.
class DenseLayerImpl : public torch::nn::Cloneable<DenseLayerImpl> {
 public:
  explicit DenseLayerImpl(const DenseLayerOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const int64_t width = options.bn_size() * options.growth_rate();
    norm1 = register_module("norm1", BatchNorm2d(options.num_input_features()));
    relu1 = register_module("relu1", torch::nn::ReLU(torch::nn::ReLUOptions(/*inplace=*/true)));
    conv1 = register_module(
        "conv1", torch::nn::Conv2d(
                     torch::nn::Conv2dOptions(options.num_input_features(), width, 1).bias(false)));
    norm2 = register_module("norm2", BatchNorm2d(width));
    relu2 = register_module("relu2", torch::nn::ReLU(torch::nn::ReLUOptions(/*inplace=*/true)));
    conv2 = register_module(
        "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(width, options.growth_rate(), 3)
                                       .padding(1)
                                       .bias(false)));
  }

  /// The growth_rate new channels computed from all earlier maps of the block (concatenated
  /// here, as torchvision's bn_function does).
  torch::Tensor forward(torch::TensorList inputs) {
    // A single input needs no concatenation (torch.cat would only copy it).
    auto out = inputs.size() == 1 ? inputs[0] : torch::cat(inputs, 1);
    // The in-place ReLUs act on the BatchNorm outputs, never on the block's stored maps.
    out = conv1(relu1(norm1(out)));
    out = conv2(relu2(norm2(out)));
    if (options.drop_rate() > 0) out = torch::dropout(out, options.drop_rate(), is_training());
    return out;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::DenseLayer(num_input_features=" << options.num_input_features()
           << ", growth_rate=" << options.growth_rate() << ", bn_size=" << options.bn_size()
           << ")";
  }

  DenseLayerOptions options;
  BatchNorm2d norm1{nullptr}, norm2{nullptr};
  torch::nn::ReLU relu1{nullptr}, relu2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
};
TORCH_MODULE(DenseLayer);

/// Options of `DenseBlock`.
struct DenseBlockOptions {
  DenseBlockOptions(int64_t num_layers, int64_t num_input_features, int64_t growth_rate,
                    int64_t bn_size)
      : num_layers_(num_layers),
        num_input_features_(num_input_features),
        growth_rate_(growth_rate),
        bn_size_(bn_size) {}

  TORCH_ARG(int64_t, num_layers);
  TORCH_ARG(int64_t, num_input_features);
  TORCH_ARG(int64_t, growth_rate);
  TORCH_ARG(int64_t, bn_size);
  TORCH_ARG(double, drop_rate) = 0.0;
};

/// torchvision's `_DenseBlock`: layer i sees the block input and the outputs of layers 1..i-1;
/// the block returns all of them concatenated. Keys: denselayer1..denselayerN.
class DenseBlockImpl : public torch::nn::Cloneable<DenseBlockImpl> {
 public:
  explicit DenseBlockImpl(const DenseBlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    TORCH_CHECK(options.num_layers() > 0, "DenseBlock needs at least one layer, got ",
                options.num_layers());
    layers.clear();
    for (int64_t i = 0; i < options.num_layers(); ++i) {
      layers.push_back(register_module(
          "denselayer" + std::to_string(i + 1),
          DenseLayer(DenseLayerOptions(options.num_input_features() + i * options.growth_rate(),
                                       options.growth_rate(), options.bn_size())
                         .drop_rate(options.drop_rate()))));
    }
  }

  /// Channels of the block's output.
  int64_t num_output_features() const {
    return options.num_input_features() + options.num_layers() * options.growth_rate();
  }

  torch::Tensor forward(const torch::Tensor& x) {
    std::vector<torch::Tensor> features;
    features.reserve(layers.size() + 1);
    features.push_back(x);
    for (auto& layer : layers) features.push_back(layer(features));
    return torch::cat(features, 1);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::DenseBlock(num_layers=" << options.num_layers()
           << ", num_input_features=" << options.num_input_features()
           << ", growth_rate=" << options.growth_rate() << ")";
  }

  DenseBlockOptions options;
  std::vector<DenseLayer> layers;
};
TORCH_MODULE(DenseBlock);

/// Options of `DenseTransition`.
struct DenseTransitionOptions {
  DenseTransitionOptions(int64_t num_input_features, int64_t num_output_features)
      : num_input_features_(num_input_features), num_output_features_(num_output_features) {}

  TORCH_ARG(int64_t, num_input_features);
  TORCH_ARG(int64_t, num_output_features);
  /// Stride of the 2x2 average pool: 2 halves the map; 1 keeps it (one cell smaller).
  TORCH_ARG(int64_t, pool_stride) = 2;
};

/// torchvision's `_Transition`: BN, ReLU, 1x1 conv, 2x2 average pool. Keys: norm, conv.
class DenseTransitionImpl : public torch::nn::Cloneable<DenseTransitionImpl> {
 public:
  explicit DenseTransitionImpl(const DenseTransitionOptions& options_) : options(options_) {
    reset();
  }

  void reset() override {
    norm = register_module("norm", BatchNorm2d(options.num_input_features()));
    relu = register_module("relu", torch::nn::ReLU(torch::nn::ReLUOptions(/*inplace=*/true)));
    conv = register_module(
        "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.num_input_features(),
                                                           options.num_output_features(), 1)
                                      .bias(false)));
    pool = register_module(
        "pool", torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2).stride(options.pool_stride())));
  }

  torch::Tensor forward(const torch::Tensor& x) { return pool(conv(relu(norm(x)))); }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::DenseTransition(num_input_features=" << options.num_input_features()
           << ", num_output_features=" << options.num_output_features()
           << ", pool_stride=" << options.pool_stride() << ")";
  }

  DenseTransitionOptions options;
  BatchNorm2d norm{nullptr};
  torch::nn::ReLU relu{nullptr};
  torch::nn::Conv2d conv{nullptr};
  torch::nn::AvgPool2d pool{nullptr};
};
TORCH_MODULE(DenseTransition);

/// Options of `DenseNet`. `densenet121()` sets the variant's block_config, growth_rate and
/// num_init_features.
struct DenseNetOptions {
  /// Dense layers per block (denseblock1..denseblock4).
  TORCH_ARG(std::vector<int64_t>, block_config) = {6, 12, 24, 16};
  /// Channels each dense layer adds.
  TORCH_ARG(int64_t, growth_rate) = 32;
  /// Channels of conv0.
  TORCH_ARG(int64_t, num_init_features) = 64;
  /// Bottleneck width of a dense layer, in units of growth_rate.
  TORCH_ARG(int64_t, bn_size) = 4;
  /// Dropout after each dense layer while training (torchvision's drop_rate).
  TORCH_ARG(double, drop_rate) = 0.0;
  /// Width of the ImageNet classifier; 0 leaves `classifier` out of the module.
  TORCH_ARG(int64_t, class_num) = 1000;
  /// Stride of transition3's average pool; 1 keeps the last block at 1/16 (15x7 for a 256x128
  /// input instead of 8x4).
  TORCH_ARG(int64_t, last_stride) = 2;
};

namespace detail {
// Channels after each stage, in torchvision's order: every transition halves the channels.
inline int64_t densenet_num_features(const DenseNetOptions& options) {
  int64_t channels = options.num_init_features();
  const auto& blocks = options.block_config();
  for (size_t i = 0; i < blocks.size(); ++i) {
    channels += blocks[i] * options.growth_rate();
    if (i + 1 != blocks.size()) channels /= 2;
  }
  return channels;
}
}  // namespace detail

/// torchvision's `DenseNet.features`: conv0, norm0, relu0, pool0, denseblock1, transition1, ...,
/// denseblock4, norm5, run in that order. A module of its own rather than a named
/// torch::nn::Sequential, because Sequential::clone renames its children "0", "1", ...
class DenseNetFeaturesImpl : public torch::nn::Cloneable<DenseNetFeaturesImpl>, public DeclaresConvBatchNormPairs {
 public:
  explicit DenseNetFeaturesImpl(const DenseNetOptions& options_ = {}) : options(options_) {
    reset();
  }

  /// The stem's conv0 -> norm0; the dense layers normalise before their convs, which cannot fold.
  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override { return {{"conv0", "norm0"}}; }

  void reset() override {
    const int64_t init = options.num_init_features();
    conv0 = register_module(
        "conv0", torch::nn::Conv2d(
                     torch::nn::Conv2dOptions(3, init, 7).stride(2).padding(3).bias(false)));
    norm0 = register_module("norm0", BatchNorm2d(init));
    relu0 = register_module("relu0", torch::nn::ReLU(torch::nn::ReLUOptions(/*inplace=*/true)));
    pool0 = register_module(
        "pool0", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
    blocks.clear();
    transitions.clear();
    int64_t channels = init;
    const auto& config = options.block_config();
    for (size_t i = 0; i < config.size(); ++i) {
      const auto index = std::to_string(i + 1);
      blocks.push_back(register_module(
          "denseblock" + index,
          DenseBlock(DenseBlockOptions(config[i], channels, options.growth_rate(),
                                       options.bn_size())
                         .drop_rate(options.drop_rate()))));
      channels = blocks.back()->num_output_features();
      if (i + 1 == config.size()) break;
      // Only the last transition takes last_stride (transition3 in a four-block DenseNet).
      const int64_t stride = i + 2 == config.size() ? options.last_stride() : 2;
      transitions.push_back(register_module(
          "transition" + index,
          DenseTransition(DenseTransitionOptions(channels, channels / 2).pool_stride(stride))));
      channels /= 2;
    }
    norm5 = register_module("norm5", BatchNorm2d(channels));
  }

  /// The map after norm5 (no ReLU).
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = pool0(relu0(norm0(conv0(x))));
    for (size_t i = 0; i < blocks.size(); ++i) {
      out = blocks[i](out);
      if (i < transitions.size()) out = transitions[i](out);
    }
    return norm5(out);
  }

  void pretty_print(std::ostream& stream) const override { stream << "reidnet::DenseNetFeatures"; }

  DenseNetOptions options;
  torch::nn::Conv2d conv0{nullptr};
  BatchNorm2d norm0{nullptr}, norm5{nullptr};
  torch::nn::ReLU relu0{nullptr};
  torch::nn::MaxPool2d pool0{nullptr};
  std::vector<DenseBlock> blocks;
  std::vector<DenseTransition> transitions;
};
TORCH_MODULE(DenseNetFeatures);

/// torchvision's DenseNet init: convs Kaiming-normal (fan_in, leaky_relu with a = 0, i.e. gain
/// sqrt(2)), BatchNorm weight 1 and bias 0, Linear bias 0 (its weight keeps PyTorch's default).
struct DenseNetInit {
  void operator()(torch::nn::Module& root) const {
    torch::NoGradGuard no_grad;
    detail::for_each_conv(root, [](torch::Tensor& weight, torch::Tensor&) {
      torch::nn::init::kaiming_normal_(weight, 0.0, torch::kFanIn, torch::kLeakyReLU);
    });
    detail::for_each_batchnorm(root, [](torch::Tensor& weight, torch::Tensor& bias, bool) {
      torch::nn::init::ones_(weight);
      torch::nn::init::zeros_(bias);
    });
    detail::for_each_linear(root, [](torch::Tensor&, torch::Tensor& bias) {
      detail::zero_if_defined(bias);
    });
  }
};

/// torchvision's DenseNet as a reidnet backbone. Keys: features.*, classifier (when
/// class_num > 0), in torchvision's order.
class DenseNetImpl : public torch::nn::Cloneable<DenseNetImpl>, public Backbone {
 public:
  explicit DenseNetImpl(const DenseNetOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    // feature_strides() and last_stride (on transition3) assume torchvision's four blocks.
    TORCH_CHECK(options.block_config().size() == 4,
                "DenseNetOptions::block_config needs 4 block depths, got ",
                options.block_config().size());
    for (const auto depth : options.block_config()) {
      TORCH_CHECK(depth > 0, "DenseNetOptions::block_config depths must be positive, got ", depth);
    }
    TORCH_CHECK(options.last_stride() == 1 || options.last_stride() == 2,
                "DenseNetOptions::last_stride must be 1 or 2, got ", options.last_stride());
    TORCH_CHECK(options.class_num() >= 0,
                "DenseNetOptions::class_num is a width (0 = no classifier), got ",
                options.class_num());
    features = register_module("features", DenseNetFeatures(options));
    classifier = nullptr;
    if (options.class_num() > 0) {
      classifier =
          register_module("classifier", torch::nn::Linear(num_features(), options.class_num()));
    }
    apply_init(*this, DenseNetInit{});
  }

  /// Channels of norm5 (1024 for DenseNet-121).
  int64_t num_features() const override { return detail::densenet_num_features(options); }

  /// The unpooled map after norm5, without ReLU (the baseline's ft_net_dense feature).
  torch::Tensor forward_features(const torch::Tensor& images) override {
    return features(images);
  }

  /// Strides after denseblock1..denseblock4.
  std::vector<int64_t> feature_strides() const override {
    return {4, 8, 16, options.last_stride() == 1 ? 16 : 32};
  }

  /// ImageNet logits as torchvision's forward: ReLU, global average pool, classifier.
  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(!classifier.is_empty(),
                "DenseNet::forward needs the ImageNet classifier (class_num > 0); use "
                "forward_features for the feature map");
    auto out = torch::relu(forward_features(x));
    out = torch::flatten(torch::adaptive_avg_pool2d(out, {1, 1}), 1);
    return classifier(out);
  }

  void pretty_print(std::ostream& stream) const override {
    const auto& blocks = options.block_config();
    stream << "reidnet::DenseNet(block_config=[";
    for (size_t i = 0; i < blocks.size(); ++i) stream << (i ? ", " : "") << blocks[i];
    stream << "], growth_rate=" << options.growth_rate()
           << ", num_init_features=" << options.num_init_features()
           << ", bn_size=" << options.bn_size() << ", class_num=" << options.class_num()
           << ", last_stride=" << options.last_stride() << ")";
  }

  DenseNetOptions options;
  DenseNetFeatures features{nullptr};
  torch::nn::Linear classifier{nullptr};
};
TORCH_MODULE(DenseNet);

/// torchvision's densenet121; `options` keeps its bn_size, drop_rate, class_num and last_stride.
inline DenseNet densenet121(DenseNetOptions options = {}) {
  return DenseNet(
      options.block_config({6, 12, 24, 16}).growth_rate(32).num_init_features(64));
}

namespace detail {
// torchvision's published DenseNet files predate the ban on '.' in module names and spell
// `denselayer1.norm.1.weight` for `denselayer1.norm1.weight`; this is torchvision's own rewrite
// (densenet.py, _load_state_dict).
inline std::string densenet_imagenet_key(const std::string& key) {
  static const std::regex pattern(R"(^(.*denselayer\d+\.(?:norm|relu|conv))\.)"
                                  R"(((?:[12])\.(?:weight|bias|running_mean|running_var))$)");
  std::smatch match;
  if (std::regex_match(key, match, pattern)) return match[1].str() + match[2].str();
  return key;
}
}  // namespace detail

inline const bool kDenseNet121Registered = register_backbone(
    "densenet121",
    BackboneEntry{
        [](const BackboneArgs& args) {
          return AnyBackbone(densenet121(DenseNetOptions()
                                             .last_stride(args.last_stride())
                                             .class_num(args.keep_classifier() ? 1000 : 0))
                                 .ptr());
        },
        detail::densenet_imagenet_key,
        "torchvision DenseNet-121, 1024 channels; the map after norm5 without ReLU, as the "
        "baseline's ft_net_dense"});

}  // namespace reidnet
