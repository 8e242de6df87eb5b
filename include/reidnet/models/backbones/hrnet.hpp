#pragma once
/// timm's HRNet classification network (HighResolutionNet, head "classification") as a reidnet
/// backbone, with the state_dict keys, order and shapes of `timm.create_model("hrnet_w18")`;
/// registered as hrnet_w18_small, hrnet_w18_small_v2 and hrnet_w18 ... hrnet_w64.
///
///     auto net = reidnet::HRNet(reidnet::hrnet_options("hrnet_w18"));
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 256, 128}));
///     // map: (2, 2048, 8, 4), the map the baseline's ft_net_hr pools
///     torch::Tensor logits = net(torch::randn({2, 3, 224, 224}));  // (2, 1000)
///
/// Children, in timm's order: conv1, bn1 (3x3 stride 2, stem_width), conv2, bn2 (3x3 stride 2,
/// 64), layer1 (stage 1: residual blocks at 1/4), transition1, stage2, transition2, stage3,
/// transition3, stage4 (high-resolution modules over 2, 3, 4 branches at 1/4 ... 1/32), then
/// the classification head: incre_modules (one Bottleneck per branch, to 128, 256, 512, 1024
/// channels), downsamp_modules (stride-2 3x3 convs that carry the sum down the resolutions),
/// final_layer (1x1 conv to 2048) and classifier (Linear 2048 -> 1000, when kept).
///
/// timm's parameter-free modules have no counterpart here where they change nothing: the stem's
/// act1 / act2 and the modules' fuse_act are ReLU calls, the Identity transitions are
/// key-less placeholders, and global_pool / head_drop (average pool, Dropout(0)) sit in `forward`.

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/hrnet.hpp>
#include <reidnet/models/layers/init.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

/// One stage of timm's HRNet configuration (its cfg dict `stageN`).
struct HRNetStageOptions {
  HRNetStageOptions(int64_t num_modules, HRNetBlock block, std::vector<int64_t> num_blocks,
                    std::vector<int64_t> num_channels)
      : num_modules_(num_modules),
        num_branches_(static_cast<int64_t>(num_channels.size())),
        block_(block),
        num_blocks_(std::move(num_blocks)),
        num_channels_(std::move(num_channels)) {}

  /// High-resolution modules in the stage (stage 1 is a plain chain of blocks: 1).
  TORCH_ARG(int64_t, num_modules);
  /// Resolutions the stage runs; must equal the sizes of num_blocks and num_channels.
  TORCH_ARG(int64_t, num_branches);
  TORCH_ARG(HRNetBlock, block);
  TORCH_ARG(std::vector<int64_t>, num_blocks);
  TORCH_ARG(std::vector<int64_t>, num_channels);
  TORCH_ARG(HRNetFuseMethod, fuse_method) = HRNetFuseMethod::kSum;
};

/// Options of `HRNet`; `hrnet_options(name)` gives timm's configuration of each variant.
struct HRNetOptions {
  /// Channels of conv1 (conv2 always has 64).
  TORCH_ARG(int64_t, stem_width) = 64;
  /// stage1 .. stage4; stage1 has one branch, stage k has k.
  TORCH_ARG(std::vector<HRNetStageOptions>, stages) = {};
  /// Width of the ImageNet classifier; 0 leaves `classifier` out of the module.
  TORCH_ARG(int64_t, class_num) = 1000;
  /// Bias on the head's downsamp_modules and final_layer convs (timm's head_conv_bias: true
  /// except for its *_ssld weights).
  TORCH_ARG(bool, head_conv_bias) = true;
};

/// timm's HRNet init_weights: convs Kaiming-normal (fan_out, relu), BatchNorm weight 1 and bias
/// 0. Conv biases (head only) and the classifier keep PyTorch's default init, as in timm.
struct HRNetInit {
  void operator()(torch::nn::Module& root) const {
    torch::NoGradGuard no_grad;
    detail::for_each_conv(root, [](torch::Tensor& weight, torch::Tensor&) {
      torch::nn::init::kaiming_normal_(weight, 0.0, torch::kFanOut, torch::kReLU);
    });
    detail::for_each_batchnorm(root, [](torch::Tensor& weight, torch::Tensor& bias, bool) {
      torch::nn::init::ones_(weight);
      torch::nn::init::zeros_(bias);
    });
  }
};

/// timm's HighResolutionNet with its classification head as a reidnet backbone.
/// Keys: conv1, bn1, conv2, bn2, layer1, transition1, stage2, transition2, stage3,
/// transition3, stage4, incre_modules, downsamp_modules, final_layer[, classifier].
class HRNetImpl : public torch::nn::Cloneable<HRNetImpl>, public Backbone, public DeclaresConvBatchNormPairs {
 public:
  /// Width of the incre_modules' Bottlenecks per branch (x4 channels out), fixed in timm.
  static constexpr int64_t kHeadWidths[4] = {32, 64, 128, 256};
  static constexpr int64_t kNumFeatures = 2048;

  explicit HRNetImpl(const HRNetOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto& stages = options.stages();
    TORCH_CHECK(stages.size() == 4, "HRNetOptions::stages needs stage1..stage4, got ",
                stages.size());
    for (size_t s = 0; s < stages.size(); ++s) {
      const auto& stage = stages[s];
      TORCH_CHECK(stage.num_branches() == static_cast<int64_t>(s + 1), "HRNet stage", s + 1,
                  " needs ", s + 1, " branches, got ", stage.num_branches());
      TORCH_CHECK(stage.num_modules() > 0, "HRNet stage", s + 1, " needs at least one module");
      TORCH_CHECK(static_cast<int64_t>(stage.num_blocks().size()) == stage.num_branches() &&
                      static_cast<int64_t>(stage.num_channels().size()) == stage.num_branches(),
                  "HRNet stage", s + 1, ": num_branches(", stage.num_branches(),
                  ") <> num_blocks(", stage.num_blocks().size(), ") or num_channels(",
                  stage.num_channels().size(), ")");
    }
    TORCH_CHECK(options.class_num() >= 0,
                "HRNetOptions::class_num is a width (0 = no classifier), got ", options.class_num());

    const auto stem_conv = [](int64_t in, int64_t out) {
      return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(2).padding(1).bias(false));
    };
    conv1 = register_module("conv1", stem_conv(3, options.stem_width()));
    bn1 = register_module("bn1", BatchNorm2d(options.stem_width()));
    conv2 = register_module("conv2", stem_conv(options.stem_width(), 64));
    bn2 = register_module("bn2", BatchNorm2d(64));

    const auto& stage1 = stages[0];
    layer1 = register_module("layer1", detail::hrnet_blocks(stage1.block(), 64,
                                                            stage1.num_channels()[0],
                                                            stage1.num_blocks()[0]));
    std::vector<int64_t> channels{stage1.num_channels()[0] * hrnet_block_expansion(stage1.block())};

    transitions.clear();
    stage_lists.clear();
    for (size_t s = 1; s < stages.size(); ++s) {
      const auto& stage = stages[s];
      std::vector<int64_t> widths;
      for (const auto width : stage.num_channels()) {
        widths.push_back(width * hrnet_block_expansion(stage.block()));
      }
      transitions.push_back(
          register_module("transition" + std::to_string(s), make_transition(channels, widths)));
      stage_lists.push_back(
          register_module("stage" + std::to_string(s + 1), torch::nn::ModuleList()));
      for (int64_t m = 0; m < stage.num_modules(); ++m) {
        HighResolutionModule module(HighResolutionModuleOptions(widths, stage.block(),
                                                                stage.num_blocks(),
                                                                stage.num_channels())
                                        .fuse_method(stage.fuse_method()));
        stage_lists.back()->push_back(module);
        widths = module->out_channels();
      }
      channels = widths;
    }

    // The classification head (timm's _make_head).
    incre_modules = register_module("incre_modules", torch::nn::ModuleList());
    for (size_t i = 0; i < channels.size(); ++i) {
      incre_modules->push_back(
          detail::hrnet_blocks(HRNetBlock::kBottleneck, channels[i], kHeadWidths[i], 1));
    }
    downsamp_modules = register_module("downsamp_modules", torch::nn::ModuleList());
    const int64_t expansion = BottleneckImpl::expansion;
    for (size_t i = 0; i + 1 < channels.size(); ++i) {
      downsamp_modules->push_back(HRNetConvUnit(
          HRNetConvUnitOptions(kHeadWidths[i] * expansion, kHeadWidths[i + 1] * expansion, 3)
              .stride(2)
              .bias(options.head_conv_bias())));
    }
    final_layer = register_module(
        "final_layer", HRNetConvUnit(HRNetConvUnitOptions(kHeadWidths[3] * expansion, kNumFeatures, 1)
                                         .bias(options.head_conv_bias())));
    classifier = nullptr;
    if (options.class_num() > 0) {
      classifier =
          register_module("classifier", torch::nn::Linear(kNumFeatures, options.class_num()));
    }
    apply_init(*this, HRNetInit{});
  }

  /// The stem's two; the units and blocks declare theirs.
  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override {
    return {{"conv1", "bn1"}, {"conv2", "bn2"}};
  }

  /// Channels of final_layer's map.
  int64_t num_features() const override { return kNumFeatures; }

  /// The four branches work at 1/4 .. 1/32; the head carries the sum down to 1/32.
  std::vector<int64_t> feature_strides() const override { return {4, 8, 16, 32}; }

  /// The stage-4 branch maps (stride 4, 8, 16, 32), before the head.
  std::vector<torch::Tensor> forward_stages(const torch::Tensor& images) {
    auto x = torch::relu(bn1(conv1(images)));
    x = torch::relu(bn2(conv2(x)));
    std::vector<torch::Tensor> maps{layer1->forward(x)};
    for (size_t s = 0; s < transitions.size(); ++s) {
      std::vector<torch::Tensor> inputs;
      for (size_t i = 0; i < transitions[s]->size(); ++i) {
        // As timm: a branch with a transition unit takes the last branch of the previous
        // stage (only new, lower branches have one in timm's configurations); an Identity
        // passes its own branch on.
        auto& path = *transitions[s][i];
        inputs.push_back(path.as<torch::nn::Identity>()
                             ? maps[i]
                             : detail::hrnet_path_forward(path, maps.back()));
      }
      for (const auto& module : *stage_lists[s]) {
        inputs = module->as<HighResolutionModule>()->forward(std::move(inputs));
      }
      maps = std::move(inputs);
    }
    return maps;
  }

  /// final_layer's map (B, 2048, H/32, W/32), the map the baseline's ft_net_hr pools.
  torch::Tensor forward_features(const torch::Tensor& images) override {
    const auto maps = forward_stages(images);
    torch::Tensor y;
    for (size_t i = 0; i < incre_modules->size(); ++i) {
      auto increased = incre_modules[i]->as<torch::nn::Sequential>()->forward(maps[i]);
      if (y.defined()) {
        increased = increased + downsamp_modules[i - 1]->as<HRNetConvUnit>()->forward(y);
      }
      y = increased;
    }
    return final_layer(y);
  }

  /// ImageNet logits as timm's forward (average pool, classifier) when the classifier is kept;
  /// the feature map otherwise.
  torch::Tensor forward(const torch::Tensor& images) {
    auto map = forward_features(images);
    if (classifier.is_empty()) return map;
    return classifier(torch::flatten(torch::adaptive_avg_pool2d(map, {1, 1}), 1));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::HRNet(stem_width=" << options.stem_width() << ", widths=[";
    const auto& last = options.stages().back().num_channels();
    for (size_t i = 0; i < last.size(); ++i) stream << (i ? ", " : "") << last[i];
    stream << "], class_num=" << options.class_num() << ")";
  }

  HRNetOptions options;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential layer1{nullptr};
  torch::nn::ModuleList incre_modules{nullptr}, downsamp_modules{nullptr};
  HRNetConvUnit final_layer{nullptr};
  torch::nn::Linear classifier{nullptr};
  /// transition1..transition3: per branch an HRNetConvUnit, a Sequential of units or an Identity.
  std::vector<torch::nn::ModuleList> transitions;
  /// stage2..stage4: HighResolutionModules.
  std::vector<torch::nn::ModuleList> stage_lists;

 private:
  // timm's _make_transition_layer: a branch that exists keeps its map (Identity) unless its
  // channels change (3x3 conv unit, stride 1); each new branch is a chain of stride-2 3x3 conv
  // units from the last old branch, all with ReLU.
  static torch::nn::ModuleList make_transition(const std::vector<int64_t>& before,
                                               const std::vector<int64_t>& after) {
    torch::nn::ModuleList paths;
    for (size_t i = 0; i < after.size(); ++i) {
      if (i >= before.size()) {
        const auto count = static_cast<int64_t>(i + 1 - before.size());
        paths->push_back(
            detail::hrnet_downsample_chain(before.back(), after[i], count, /*relu_last=*/true));
      } else if (before[i] != after[i]) {
        paths->push_back(HRNetConvUnit(HRNetConvUnitOptions(before[i], after[i], 3)));
      } else {
        paths->push_back(torch::nn::Identity());
      }
    }
    return paths;
  }
};
TORCH_MODULE(HRNet);

/// timm's HRNet names that reidnet registers, smallest first.
inline const std::vector<std::string>& hrnet_variant_names() {
  static const std::vector<std::string> names{"hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18",
                                              "hrnet_w30",       "hrnet_w32",          "hrnet_w40",
                                              "hrnet_w44",       "hrnet_w48",          "hrnet_w64"};
  return names;
}

/// timm's configuration (cfg_cls) of the HRNet variant `name`, one of hrnet_variant_names().
inline HRNetOptions hrnet_options(const std::string& name) {
  using Stage = HRNetStageOptions;
  constexpr auto kBasic = HRNetBlock::kBasic;
  constexpr auto kBottleneck = HRNetBlock::kBottleneck;
  if (name == "hrnet_w18_small") {
    return HRNetOptions().stages({Stage(1, kBottleneck, {1}, {32}),
                                  Stage(1, kBasic, {2, 2}, {16, 32}),
                                  Stage(1, kBasic, {2, 2, 2}, {16, 32, 64}),
                                  Stage(1, kBasic, {2, 2, 2, 2}, {16, 32, 64, 128})});
  }
  if (name == "hrnet_w18_small_v2") {
    return HRNetOptions().stages({Stage(1, kBottleneck, {2}, {64}),
                                  Stage(1, kBasic, {2, 2}, {18, 36}),
                                  Stage(3, kBasic, {2, 2, 2}, {18, 36, 72}),
                                  Stage(2, kBasic, {2, 2, 2, 2}, {18, 36, 72, 144})});
  }
  // The full-size variants differ only in the width w of branch 0 (branch i has w * 2^i).
  for (const int64_t w : {18, 30, 32, 40, 44, 48, 64}) {
    if (name != "hrnet_w" + std::to_string(w)) continue;
    return HRNetOptions().stages({Stage(1, kBottleneck, {4}, {64}),
                                  Stage(1, kBasic, {4, 4}, {w, 2 * w}),
                                  Stage(4, kBasic, {4, 4, 4}, {w, 2 * w, 4 * w}),
                                  Stage(3, kBasic, {4, 4, 4, 4}, {w, 2 * w, 4 * w, 8 * w})});
  }
  std::string known;
  for (const auto& item : hrnet_variant_names()) known += (known.empty() ? "" : ", ") + item;
  TORCH_CHECK(false, "no HRNet variant named \"", name, "\"; known: ", known);
  return {};
}

inline const bool kHRNetRegistered = [] {
  for (const auto& name : hrnet_variant_names()) {
    register_backbone(
        name,
        BackboneEntry{
            [name](const BackboneArgs& args) {
              TORCH_CHECK(args.last_stride() == 2, "BackboneArgs::last_stride (", args.last_stride(),
                          ") does not apply to ", name,
                          ": HRNet's head always reaches stride 32 (use last_stride 2)");
              // HRNet has no stochastic depth: drop_path_rate is ignored.
              return AnyBackbone(
                  HRNet(hrnet_options(name).class_num(args.keep_classifier() ? 1000 : 0)).ptr());
            },
            // timm's published files (and the HRNet authors' originals it converted) use these
            // very keys in every timm version.
            {},
            "timm's " + name + ", 2048 channels at stride 32: final_layer's map, as the "
            "baseline's ft_net_hr pools",
            "", "", /*baseline_keeps_classifier=*/false});
  }
  return true;
}();

}  // namespace reidnet
