#pragma once
/// EfficientNet-B0..B7 (Tan & Le 2019) as the efficientnet_pytorch package builds them
/// (`EfficientNet.from_name("efficientnet-b4")`), with its state_dict keys, order and shapes,
/// registered as backbones "efficientnet-b0" ... "efficientnet-b7" (the package's spelling).
///
///     auto net = reidnet::efficientnet("efficientnet-b4");
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 256, 128}));  // (2, 1792, 8, 4)
///     torch::Tensor logits = net(torch::randn({2, 3, 380, 380}));                 // (2, 1000)
///
/// The Market-1501 baseline's ft_net_efficient pools `extract_features(x)` (forward_features
/// here) and keeps the package's ImageNet classifier `_fc` unused in its checkpoints.
/// Every "SAME" padding is fixed for the variant's ImageNet resolution (380 for b4), whatever
/// the input size, as the package's static padding is (reidnet/models/layers/mbconv.hpp).

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/mbconv.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace reidnet {

/// One stage of MBConv blocks, as written for B0 (before width and depth scaling); the
/// package's block strings, e.g. "r2_k3_s22_e6_i16_o24_se0.25".
struct EfficientNetStage {
  int64_t num_repeat;
  int64_t kernel_size;
  /// Stride of the stage's first block; the others run at stride 1.
  int64_t stride;
  int64_t expand_ratio;
  int64_t input_filters;
  int64_t output_filters;
  double se_ratio = 0.25;
  bool id_skip = true;
};

/// The seven stages of EfficientNet-B0, shared by every variant.
inline std::vector<EfficientNetStage> efficientnet_b0_stages() {
  return {{1, 3, 1, 1, 32, 16},   {2, 3, 2, 6, 16, 24},   {2, 5, 2, 6, 24, 40},
          {3, 3, 2, 6, 40, 80},   {3, 5, 1, 6, 80, 112},  {4, 5, 2, 6, 112, 192},
          {1, 3, 1, 6, 192, 320}};
}

/// Options of `EfficientNet`: the package's GlobalParams. The defaults are B0's;
/// `efficientnet_variant_options(name)` gives any variant's.
struct EfficientNetOptions {
  /// Channel multiplier (round_filters).
  TORCH_ARG(double, width_coefficient) = 1.0;
  /// Block-count multiplier (round_repeats).
  TORCH_ARG(double, depth_coefficient) = 1.0;
  /// The square input size every "SAME" padding is computed for, once.
  TORCH_ARG(int64_t, image_size) = 224;
  /// Dropout before `_fc` while training.
  TORCH_ARG(double, dropout_rate) = 0.2;
  /// Drop connect of the last block's residual branch scaled by idx / number of blocks
  /// (so block 0 never drops and the last one drops at rate * (n - 1) / n).
  TORCH_ARG(double, drop_connect_rate) = 0.2;
  /// Width of the ImageNet classifier `_fc`; 0 leaves it out of the module.
  TORCH_ARG(int64_t, num_classes) = 1000;
  /// TensorFlow's decay: the BatchNorms take momentum 1 - 0.99 in PyTorch's convention.
  TORCH_ARG(double, batch_norm_momentum) = 0.99;
  TORCH_ARG(double, batch_norm_epsilon) = 1e-3;
  /// Widths are rounded to multiples of this.
  TORCH_ARG(int64_t, depth_divisor) = 8;
  /// Smallest width; 0 = depth_divisor (the package's None).
  TORCH_ARG(int64_t, min_depth) = 0;
  TORCH_ARG(std::vector<EfficientNetStage>, stages) = efficientnet_b0_stages();
};

namespace detail {

/// The package's round_filters: filters * width to the nearest multiple of depth_divisor,
/// at least min_depth, and never more than 10% below the scaled width.
inline int64_t efficientnet_round_filters(int64_t filters, const EfficientNetOptions& options) {
  const double width = options.width_coefficient();
  if (width == 0) return filters;
  const auto divisor = options.depth_divisor();
  const auto min_depth = options.min_depth() > 0 ? options.min_depth() : divisor;
  const double scaled = static_cast<double>(filters) * width;
  auto rounded = std::max<int64_t>(
      min_depth, static_cast<int64_t>(scaled + static_cast<double>(divisor) / 2) / divisor * divisor);
  if (static_cast<double>(rounded) < 0.9 * scaled) rounded += divisor;
  return rounded;
}

/// The package's round_repeats: ceil(depth * repeats).
inline int64_t efficientnet_round_repeats(int64_t repeats, const EfficientNetOptions& options) {
  const double depth = options.depth_coefficient();
  if (depth == 0) return repeats;
  return static_cast<int64_t>(std::ceil(depth * static_cast<double>(repeats)));
}

}  // namespace detail

/// efficientnet_pytorch's EfficientNet as a reidnet backbone. Keys (the package's names, kept
/// with their underscores so that its ImageNet files load as they are): _conv_stem, _bn0,
/// _blocks.N.*, _conv_head, _bn1, _fc (when num_classes > 0).
class EfficientNetImpl : public torch::nn::Cloneable<EfficientNetImpl>,
                         public Backbone,
                         public DeclaresConvBatchNormPairs {
 public:
  explicit EfficientNetImpl(const EfficientNetOptions& options_ = {}) : options(options_) {
    reset();
  }

  void reset() override {
    TORCH_CHECK(!options.stages().empty(), "EfficientNetOptions::stages is empty");
    TORCH_CHECK(options.image_size() > 0, "EfficientNetOptions::image_size must be positive, got ",
                options.image_size());
    TORCH_CHECK(options.num_classes() >= 0,
                "EfficientNetOptions::num_classes is a width (0 = no _fc), got ",
                options.num_classes());
    TORCH_CHECK(options.drop_connect_rate() >= 0 && options.drop_connect_rate() < 1,
                "EfficientNetOptions::drop_connect_rate must be in [0, 1), got ",
                options.drop_connect_rate());
    const double momentum = 1.0 - options.batch_norm_momentum();
    const auto norm = [&](int64_t channels) {
      return BatchNorm2d(
          torch::nn::BatchNormOptions(channels).momentum(momentum).eps(options.batch_norm_epsilon()));
    };
    const auto round_filters = [&](int64_t filters) {
      return detail::efficientnet_round_filters(filters, options);
    };

    // The map size the paddings are computed for, stage by stage.
    std::array<int64_t, 2> image{options.image_size(), options.image_size()};
    const auto stride_image = [&](int64_t stride) {
      for (auto& size : image) size = same_padded_output_size(size, stride);
    };

    const auto stem = round_filters(32);
    conv_stem = register_module(
        "_conv_stem", StaticSameConv2d(StaticSameConv2dOptions(3, stem, 3)
                                           .stride(2)
                                           .bias(false)
                                           .image_size({image[0], image[1]})));
    bn0 = register_module("_bn0", norm(stem));
    stride_image(2);

    int64_t block_count = 0;
    for (const auto& stage : options.stages()) {
      TORCH_CHECK(stage.num_repeat > 0 && stage.stride > 0,
                  "EfficientNetOptions::stages needs positive num_repeat and stride, got ",
                  stage.num_repeat, " and ", stage.stride);
      block_count += detail::efficientnet_round_repeats(stage.num_repeat, options);
    }
    blocks = register_module("_blocks", torch::nn::ModuleList());
    int64_t channels = stem;
    for (const auto& stage : options.stages()) {
      const auto input_filters = round_filters(stage.input_filters);
      const auto output_filters = round_filters(stage.output_filters);
      const auto repeats = detail::efficientnet_round_repeats(stage.num_repeat, options);
      for (int64_t i = 0; i < repeats; ++i) {
        // The package scales the rate by idx / count in this order, at forward time.
        const auto index = static_cast<int64_t>(blocks->size());
        const double drop_path_rate =
            options.drop_connect_rate() *
            (static_cast<double>(index) / static_cast<double>(block_count));
        const bool first = i == 0;
        blocks->push_back(MBConvBlock(MBConvBlockOptions(first ? input_filters : output_filters,
                                                         output_filters)
                                          .expand_ratio(stage.expand_ratio)
                                          .kernel_size(stage.kernel_size)
                                          .stride(first ? stage.stride : 1)
                                          .se_ratio(stage.se_ratio)
                                          .id_skip(stage.id_skip)
                                          .image_size({image[0], image[1]})
                                          .batch_norm_momentum(momentum)
                                          .batch_norm_eps(options.batch_norm_epsilon())
                                          .drop_path_rate(drop_path_rate)));
        if (first) stride_image(stage.stride);
      }
      channels = output_filters;
    }

    conv_head = register_module(
        "_conv_head",
        StaticSameConv2d(StaticSameConv2dOptions(channels, num_features(), 1).bias(false)));
    bn1 = register_module("_bn1", norm(num_features()));
    fc = nullptr;
    if (options.num_classes() > 0) {
      fc = register_module("_fc", torch::nn::Linear(num_features(), options.num_classes()));
    }
    // No init of its own: the package keeps PyTorch's defaults (convs and Linear
    // Kaiming-uniform with a = sqrt(5), BatchNorm weight 1 and bias 0), as the layers do.
  }

  /// Channels of _conv_head: round_filters(1280) (1280 for b0, 1792 for b4, 2560 for b7).
  /// The stem's and the head's; the blocks declare theirs.
  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override {
    return {{"_conv_stem", "_bn0"}, {"_conv_head", "_bn1"}};
  }

  int64_t num_features() const override {
    return detail::efficientnet_round_filters(1280, options);
  }

  /// The package's extract_features: swish(_bn0(_conv_stem)), the blocks,
  /// swish(_bn1(_conv_head)); unpooled, at stride 32.
  torch::Tensor forward_features(const torch::Tensor& images) override {
    auto x = swish(bn0(conv_stem(images)));
    for (const auto& block : *blocks) x = block->as<MBConvBlock>()->forward(x);
    return swish(bn1(conv_head(x)));
  }

  /// The cumulative stride after each stage that changes it (stem 2, then the blocks'):
  /// {4, 8, 16, 32} for every variant.
  std::vector<int64_t> feature_strides() const override {
    std::vector<int64_t> strides;
    int64_t stride = 2;
    for (const auto& stage : options.stages()) {
      if (stage.stride == 1) continue;
      stride *= stage.stride;
      strides.push_back(stride);
    }
    if (strides.empty()) strides.push_back(stride);
    return strides;
  }

  /// The package's forward: ImageNet logits (average pool, dropout while training, _fc);
  /// without _fc, the unpooled map of forward_features.
  torch::Tensor forward(const torch::Tensor& images) {
    auto x = forward_features(images);
    if (fc.is_empty()) return x;
    x = torch::flatten(torch::adaptive_avg_pool2d(x, {1, 1}), 1);
    return fc(torch::dropout(x, options.dropout_rate(), is_training()));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::EfficientNet(width_coefficient=" << options.width_coefficient()
           << ", depth_coefficient=" << options.depth_coefficient()
           << ", image_size=" << options.image_size() << ", blocks=" << blocks->size()
           << ", num_features=" << num_features() << ", num_classes=" << options.num_classes()
           << ")";
  }

  EfficientNetOptions options;
  StaticSameConv2d conv_stem{nullptr}, conv_head{nullptr};
  BatchNorm2d bn0{nullptr}, bn1{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(EfficientNet);

/// The package's variant names, b0..b7 (those it publishes ImageNet weights for).
inline const std::vector<std::string>& efficientnet_variant_names() {
  static const std::vector<std::string> names{
      "efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3",
      "efficientnet-b4", "efficientnet-b5", "efficientnet-b6", "efficientnet-b7"};
  return names;
}

/// The options of the package's variant `name`: its (width, depth, resolution, dropout)
/// from efficientnet_params, every other field the package's default.
inline EfficientNetOptions efficientnet_variant_options(const std::string& name) {
  struct Coefficients {
    double width, depth;
    int64_t image_size;
    double dropout_rate;
  };
  static const std::array<Coefficients, 8> coefficients{{{1.0, 1.0, 224, 0.2},
                                                         {1.0, 1.1, 240, 0.2},
                                                         {1.1, 1.2, 260, 0.3},
                                                         {1.2, 1.4, 300, 0.3},
                                                         {1.4, 1.8, 380, 0.4},
                                                         {1.6, 2.2, 456, 0.4},
                                                         {1.8, 2.6, 528, 0.5},
                                                         {2.0, 3.1, 600, 0.5}}};
  const auto& names = efficientnet_variant_names();
  const auto found = std::find(names.begin(), names.end(), name);
  if (found == names.end()) {
    std::string known;
    for (const auto& item : names) known += (known.empty() ? "" : ", ") + item;
    TORCH_CHECK(false, "no EfficientNet variant named \"", name, "\"; known: ", known);
  }
  const auto& c = coefficients[static_cast<size_t>(found - names.begin())];
  return EfficientNetOptions()
      .width_coefficient(c.width)
      .depth_coefficient(c.depth)
      .image_size(c.image_size)
      .dropout_rate(c.dropout_rate);
}

/// The package's `EfficientNet.from_name(name)`; `drop_connect_rate` and `num_classes` as given
/// (the package's 0.2 and 1000 by default).
inline EfficientNet efficientnet(const std::string& name, double drop_connect_rate = 0.2,
                                 int64_t num_classes = 1000) {
  return EfficientNet(efficientnet_variant_options(name)
                          .drop_connect_rate(drop_connect_rate)
                          .num_classes(num_classes));
}

// The package's published ImageNet files have the module's own keys (its loader asserts that
// none is missing or unexpected), so the registry's identity key map applies.
inline const bool kEfficientNetRegistered = [] {
  for (const auto& name : efficientnet_variant_names()) {
    const auto options = efficientnet_variant_options(name);
    register_backbone(
        name, BackboneEntry{[name](const BackboneArgs& args) {
                              TORCH_CHECK(args.last_stride() == 2, "BackboneArgs::last_stride (",
                                          args.last_stride(), ") does not apply to ", name,
                                          ": efficientnet_pytorch's EfficientNet has no last "
                                          "stride option; its map is at stride 32");
                              return AnyBackbone(
                                  efficientnet(name, args.drop_path_rate().value_or(0.2),
                                               args.keep_classifier() ? 1000 : 0)
                                      .ptr());
                            },
                            {},
                            "efficientnet_pytorch's " + name + ", " +
                                std::to_string(detail::efficientnet_round_filters(1280, options)) +
                                " channels at stride 32; extract_features, as the baseline's "
                                "ft_net_efficient"});
  }
  return true;
}();

}  // namespace reidnet
