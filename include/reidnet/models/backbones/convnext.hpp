#pragma once
/// timm's ConvNeXt (Liu et al. 2022) as a reidnet backbone, with the state_dict keys, order and
/// shapes of `timm.create_model("convnext_base")` (registered as convnext_tiny, _small, _base,
/// _large and _xlarge).
///
///     auto net = reidnet::ConvNeXt(reidnet::convnext_variant_options("convnext_base"));
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 256, 128}));
///     // map: (2, 1024, 8, 4), the last stage's map without a norm, as the baseline pools it
///
/// Keys: stem.0 (4x4 conv, stride 4), stem.1 (LayerNorm2d); stages.0..3, each `downsample`
/// (LayerNorm2d, 2x2 conv of stride 2; stage 0 has none) and `blocks.N`; with keep_classifier,
/// timm's head (head.norm, head.fc). The baseline replaces timm's head (its LayerNorm with it)
/// by an empty module, so the feature is the raw last stage; `forward_features` returns it.

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/convnext.hpp>
#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/init.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <ostream>
#include <regex>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

struct ConvNeXtOptions {
  /// Blocks per stage: convnext_base {3, 3, 27, 3}.
  TORCH_ARG(std::vector<int64_t>, depths) = std::vector<int64_t>{3, 3, 27, 3};
  /// Channels per stage: convnext_base {128, 256, 512, 1024}.
  TORCH_ARG(std::vector<int64_t>, dims) = std::vector<int64_t>{128, 256, 512, 1024};
  /// Stochastic depth of the last block; earlier blocks rise linearly from 0 (timm's schedule).
  TORCH_ARG(double, drop_path_rate) = 0.0;
  /// timm's ImageNet head (head.norm, head.fc) of this many classes; 0 = none, as the baseline.
  TORCH_ARG(int64_t, class_num) = 0;
};

/// One stage: `downsample` (LayerNorm2d, 2x2 conv of stride 2; absent when nothing changes),
/// then `blocks`.
class ConvNeXtStageImpl : public torch::nn::Cloneable<ConvNeXtStageImpl> {
 public:
  ConvNeXtStageImpl(int64_t in_channels, int64_t out_channels, int64_t stride, std::vector<double> drop_paths)
      : in_(in_channels), out_(out_channels), stride_(stride), drop_paths_(std::move(drop_paths)) {
    reset();
  }

  void reset() override {
    downsample = nullptr;
    if (in_ != out_ || stride_ > 1) {
      downsample = register_module(
          "downsample",
          torch::nn::Sequential(LayerNorm2d(in_), torch::nn::Conv2d(torch::nn::Conv2dOptions(in_, out_, stride_)
                                                                        .stride(stride_))));
    }
    blocks = register_module("blocks", torch::nn::Sequential());
    for (const double rate : drop_paths_) blocks->push_back(ConvNeXtBlock(ConvNeXtBlockOptions(out_).drop_path(rate)));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    return blocks->forward(downsample.is_empty() ? x : downsample->forward(x));
  }

  torch::nn::Sequential downsample{nullptr}, blocks{nullptr};

 private:
  int64_t in_, out_, stride_;
  std::vector<double> drop_paths_;
};
TORCH_MODULE(ConvNeXtStage);

/// timm's ImageNet head (NormMlpClassifierHead without a hidden layer): average pool, norm,
/// fc. Keys: norm, fc.
class ConvNeXtHeadImpl : public torch::nn::Cloneable<ConvNeXtHeadImpl> {
 public:
  ConvNeXtHeadImpl(int64_t channels, int64_t class_num) : channels_(channels), class_num_(class_num) { reset(); }

  void reset() override {
    norm = register_module("norm", LayerNorm2d(channels_));
    fc = register_module("fc", torch::nn::Linear(channels_, class_num_));
  }

  torch::Tensor forward(const torch::Tensor& map) {
    return fc(norm(map.mean({2, 3}, /*keepdim=*/true)).flatten(1));
  }

  LayerNorm2d norm{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  int64_t channels_, class_num_;
};
TORCH_MODULE(ConvNeXtHead);

/// timm's ConvNeXt with its default (channels-last MLP) block.
class ConvNeXtImpl : public torch::nn::Cloneable<ConvNeXtImpl>, public Backbone {
 public:
  explicit ConvNeXtImpl(const ConvNeXtOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    const auto& depths = options.depths();
    const auto& dims = options.dims();
    TORCH_CHECK(depths.size() == 4 && dims.size() == 4, "ConvNeXtOptions: depths and dims need 4 stages, got ",
                depths.size(), " and ", dims.size());
    TORCH_CHECK(options.drop_path_rate() >= 0 && options.drop_path_rate() < 1,
                "ConvNeXtOptions::drop_path_rate must be in [0, 1), got ", options.drop_path_rate());
    int64_t total = 0;
    for (size_t i = 0; i < 4; ++i) {
      TORCH_CHECK(depths[i] >= 1 && dims[i] >= 1, "ConvNeXtOptions: stage ", i, " needs positive depth and width");
      total += depths[i];
    }
    stem = register_module("stem", torch::nn::Sequential(
                                       torch::nn::Conv2d(torch::nn::Conv2dOptions(3, dims[0], 4).stride(4)),
                                       LayerNorm2d(dims[0])));
    const auto rates = linear_drop_path_rates(total, options.drop_path_rate());
    stages = register_module("stages", torch::nn::Sequential());
    size_t block = 0;
    for (size_t i = 0; i < 4; ++i) {
      std::vector<double> stage_rates(rates.begin() + static_cast<std::ptrdiff_t>(block),
                                      rates.begin() + static_cast<std::ptrdiff_t>(block + depths[i]));
      block += static_cast<size_t>(depths[i]);
      stages->push_back(ConvNeXtStage(i == 0 ? dims[0] : dims[i - 1], dims[i], i == 0 ? 1 : 2, stage_rates));
    }
    head = nullptr;
    if (options.class_num() > 0) head = register_module("head", ConvNeXtHead(dims[3], options.class_num()));
    apply_init(*this, TruncatedNormalInit{0.02});  // timm's _init_weights
  }

  int64_t num_features() const override { return options.dims()[3]; }

  /// The last stage's map (B, C, H/32, W/32), before any norm.
  torch::Tensor forward_features(const torch::Tensor& images) override {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "ConvNeXt needs (B, 3, H, W) images, got ",
                images.sizes());
    return stages->forward(stem->forward(images));
  }

  std::vector<int64_t> feature_strides() const override { return {4, 8, 16, 32}; }

  /// timm's ImageNet logits (pool, head.norm, head.fc) with the head, else the map.
  torch::Tensor forward(const torch::Tensor& images) {
    auto map = forward_features(images);
    return head.is_empty() ? map : head(map);
  }

  void pretty_print(std::ostream& stream) const override {
    const auto& d = options.dims();
    stream << "reidnet::ConvNeXt(dims=[" << d[0] << ", " << d[1] << ", " << d[2] << ", " << d[3]
           << "], drop_path_rate=" << options.drop_path_rate() << ")";
  }

  ConvNeXtOptions options;
  torch::nn::Sequential stem{nullptr}, stages{nullptr};
  /// timm's head, with class_num > 0.
  ConvNeXtHead head{nullptr};
};
TORCH_MODULE(ConvNeXt);

/// timm's ConvNeXt names, smallest first.
inline const std::vector<std::string>& convnext_variant_names() {
  static const std::vector<std::string> names{"convnext_tiny", "convnext_small", "convnext_base",
                                              "convnext_large", "convnext_xlarge"};
  return names;
}

/// The options of timm's model `name` (one of convnext_variant_names()).
inline ConvNeXtOptions convnext_variant_options(const std::string& name) {
  static const std::map<std::string, std::pair<std::vector<int64_t>, std::vector<int64_t>>> variants{
      {"convnext_tiny", {{3, 3, 9, 3}, {96, 192, 384, 768}}},
      {"convnext_small", {{3, 3, 27, 3}, {96, 192, 384, 768}}},
      {"convnext_base", {{3, 3, 27, 3}, {128, 256, 512, 1024}}},
      {"convnext_large", {{3, 3, 27, 3}, {192, 384, 768, 1536}}},
      {"convnext_xlarge", {{3, 3, 27, 3}, {256, 512, 1024, 2048}}}};
  const auto found = variants.find(name);
  if (found == variants.end()) {
    std::string known;
    for (const auto& item : convnext_variant_names()) known += (known.empty() ? "" : ", ") + item;
    TORCH_CHECK(false, "no ConvNeXt variant named \"", name, "\"; known: ", known);
  }
  return ConvNeXtOptions().depths(found->second.first).dims(found->second.second);
}

namespace detail {
// timm's files use the module's keys. The original (facebookresearch) files spell the stem
// and downsamples `downsample_layers.S.I`, the blocks `stages.S.N` with dwconv / pwconv1 / 2,
// and the final norm `norm`; timm's checkpoint filter renames them so, and so does this.
inline std::string convnext_imagenet_key(const std::string& key) {
  static const std::vector<std::pair<std::regex, std::string>> renames{
      {std::regex(R"(^downsample_layers\.0\.)"), "stem."},
      {std::regex(R"(^downsample_layers\.(\d+)\.(\d+)\.)"), "stages.$1.downsample.$2."},
      {std::regex(R"(^stages\.(\d+)\.(\d+)\.)"), "stages.$1.blocks.$2."},
      {std::regex(R"(\.dwconv\.)"), ".conv_dw."},
      {std::regex(R"(\.pwconv(\d)\.)"), ".mlp.fc$1."},
      {std::regex(R"(^norm\.)"), "head.norm."}};
  if (key.rfind("head.", 0) == 0 && key.rfind("head.norm.", 0) != 0 && key.rfind("head.fc.", 0) != 0) {
    return "head.fc." + key.substr(5);  // the original head is the fc itself
  }
  std::string renamed = key;
  for (const auto& [pattern, replacement] : renames) renamed = std::regex_replace(renamed, pattern, replacement);
  return renamed;
}
}  // namespace detail

inline const bool kConvNeXtRegistered = [] {
  for (const auto& name : convnext_variant_names()) {
    register_backbone(
        name, BackboneEntry{[name](const BackboneArgs& args) {
                              TORCH_CHECK(args.last_stride() == 2, "BackboneArgs::last_stride (", args.last_stride(),
                                          ") does not apply to ", name, ": ConvNeXt's last stage is at stride 32");
                              return AnyBackbone(ConvNeXt(convnext_variant_options(name)
                                                              .drop_path_rate(args.drop_path_rate().value_or(0.2))
                                                              .class_num(args.keep_classifier() ? 1000 : 0))
                                                     .ptr());
                            },
                            detail::convnext_imagenet_key,
                            "timm's " + name + ", its last stage unnormalised; drop path 0.2 (the baseline's)",
                            "", "", /*baseline_keeps_classifier=*/false});
  }
  return true;
}();

}  // namespace reidnet
