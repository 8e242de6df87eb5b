#pragma once
/// OSNet's convolutional trunk (torchreid's OSNet up to conv5) as a reidnet backbone, with the
/// state_dict keys, order and shapes of torchreid's osnet.py (plain and IBN variants) and
/// osnet_ain.py (AIN variants).
///
///     auto net = reidnet::OSNet(reidnet::osnet_variant_options("osnet_ain_x1_0"));
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 256, 128}));
///     // map: (2, 512, 16, 8), the conv5 map torchreid pools
///
/// Children, in torchreid's order: conv1 (7x7 stride 2), maxpool (stride 2), conv2, conv3,
/// conv4, conv5 (1x1). Each of conv2 and conv3 ends in a stride-2 transition: in osnet.py it is
/// the stage's last entry (conv2.2, conv3.2), in osnet_ain.py the top-level pool2 and pool3
/// that follow the stage. conv4 keeps the resolution, so the map is at stride 16.
///
/// Variants: plain (osnet_x*), ibn (osnet_ibn_x1_0: InstanceNorm in conv1 and after the
/// residual sum of conv2's blocks; conv3 and conv4 stay plain, as upstream), ain
/// (osnet_ain_x*: InstanceNorm in conv1 and inside the residual branch of blocks conv2.0,
/// conv2.1, conv3.1 and conv4.0).

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/omni_scale.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

/// Where OSNet puts InstanceNorm; each variant also fixes its keys (see the header comment).
enum class OSNetVariant { kPlain, kIbn, kAin };

inline const char* osnet_variant_name(OSNetVariant variant) {
  switch (variant) {
    case OSNetVariant::kPlain: return "plain";
    case OSNetVariant::kIbn: return "ibn";
    case OSNetVariant::kAin: return "ain";
  }
  return "?";
}

struct OSNetOptions {
  /// Channels of conv1, conv2, conv3 and conv4 (= conv5): x1.0 is {64, 256, 384, 512}.
  TORCH_ARG(std::vector<int64_t>, channels) = std::vector<int64_t>{64, 256, 384, 512};
  /// Omni-scale blocks in conv2, conv3 and conv4 (the ain variant fixes them at 2 each: its
  /// pattern of plain and instance-normalised blocks is upstream's per position).
  TORCH_ARG(std::vector<int64_t>, layers) = std::vector<int64_t>{2, 2, 2};
  TORCH_ARG(OSNetVariant, variant) = OSNetVariant::kPlain;
};

namespace detail {
// osnet_ain's blocks in conv2, conv3, conv4: true = OSBlockINin, false = OSBlock.
inline constexpr std::array<std::array<bool, 2>, 3> kOSNetAinPattern{
    {{{true, true}}, {{false, true}}, {{true, false}}}};
}  // namespace detail

/// torchreid's OSNet trunk. Keys: conv1, conv2, [pool2,] conv3, [pool3,] conv4, conv5.
class OSNetImpl : public torch::nn::Cloneable<OSNetImpl>, public Backbone, public DescribesOmniScaleTrunk {
 public:
  explicit OSNetImpl(const OSNetOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    const auto& c = options.channels();
    TORCH_CHECK(c.size() == 4, "OSNetOptions::channels needs 4 widths (conv1..conv4), got ",
                c.size());
    for (const auto width : c) {
      TORCH_CHECK(width > 0, "OSNetOptions::channels must be positive, got ", width);
    }
    TORCH_CHECK(options.layers().size() == 3,
                "OSNetOptions::layers needs 3 block counts (conv2..conv4), got ",
                options.layers().size());
    for (const auto count : options.layers()) {
      TORCH_CHECK(count >= 1, "OSNetOptions::layers must be >= 1, got ", count);
    }
    const bool ain = options.variant() == OSNetVariant::kAin;
    const bool two_blocks_each = options.layers() == std::vector<int64_t>{2, 2, 2};
    TORCH_CHECK(!ain || two_blocks_each,
                "OSNetOptions::layers must be {2, 2, 2} for the ain variant (upstream fixes which "
                "blocks are instance-normalised)");

    conv1 = register_module(
        "conv1", OSConvLayer(OSConvLayerOptions(3, c[0], 7).stride(2).padding(3).instance_norm(
                     options.variant() != OSNetVariant::kPlain)));
    maxpool = register_module(
        "maxpool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
    pool2 = nullptr;
    pool3 = nullptr;
    if (ain) {
      conv2 = register_module("conv2", ain_stage(0));
      pool2 = register_module("pool2", OSTransition(c[1]));
      conv3 = register_module("conv3", ain_stage(1));
      pool3 = register_module("pool3", OSTransition(c[2]));
      conv4 = register_module("conv4", ain_stage(2));
    } else {
      // torchreid passes IN to conv1 and conv2 only.
      conv2 = register_module(
          "conv2", plain_stage(0, /*reduce=*/true, options.variant() == OSNetVariant::kIbn));
      conv3 = register_module("conv3", plain_stage(1, /*reduce=*/true, false));
      conv4 = register_module("conv4", plain_stage(2, /*reduce=*/false, false));
    }
    conv5 = register_module("conv5", os_conv1x1(c[3], c[3]));
    apply_init(*this, OSNetInit{});
  }

  /// Channels of conv5.
  int64_t num_features() const override { return options.channels()[3]; }

  /// The unpooled conv5 map (B, C, H/16, W/16): 16x8 for 256x128.
  torch::Tensor forward_features(const torch::Tensor& images) override {
    auto x = maxpool(conv1(images));
    x = conv2->forward(x);
    if (!pool2.is_empty()) x = pool2(x);
    x = conv3->forward(x);
    if (!pool3.is_empty()) x = pool3(x);
    return conv5(conv4->forward(x));
  }

  /// Strides at which the blocks of conv2, conv3 and conv4 run, then conv5's map.
  std::vector<int64_t> feature_strides() const override { return {4, 8, 16, 16}; }

  torch::Tensor forward(const torch::Tensor& images) { return forward_features(images); }

  /// The plain variant's layout; none for ibn and ain, whose InstanceNorms no plan folds.
  std::optional<OmniScaleTrunkView> omni_scale_trunk() const override {
    if (options.variant() != OSNetVariant::kPlain) return std::nullopt;
    const auto stem = conv1->view();
    const auto last = conv5->view();
    if (!stem || !last) return std::nullopt;
    OmniScaleTrunkView out{*stem, {}, *last, num_features()};
    for (const auto* stage : {&conv2, &conv3, &conv4}) {
      for (const auto& entry : **stage) {
        OmniScaleStepView step;
        if (const auto* block = entry.ptr()->as<OSBlockImpl>()) {
          step.block = block->view();
          if (!step.block) return std::nullopt;
        } else {
          const auto transition = entry.ptr()->as<OSTransitionImpl>()->view();
          if (!transition) return std::nullopt;
          step.transition = *transition;
        }
        out.steps.push_back(std::move(step));
      }
    }
    return out;
  }

  void pretty_print(std::ostream& stream) const override {
    const auto& c = options.channels();
    stream << "reidnet::OSNet(channels=[" << c[0] << ", " << c[1] << ", " << c[2] << ", " << c[3]
           << "], variant=" << osnet_variant_name(options.variant()) << ")";
  }

  OSNetOptions options;
  OSConvLayer conv1{nullptr}, conv5{nullptr};
  torch::nn::MaxPool2d maxpool{nullptr};
  torch::nn::Sequential conv2{nullptr}, conv3{nullptr}, conv4{nullptr};
  /// osnet_ain's transitions; empty in the other variants (theirs are conv2.2 and conv3.2).
  OSTransition pool2{nullptr}, pool3{nullptr};

 private:
  // osnet.py's _make_layer: the blocks, then (reduce) the transition as the last entry.
  torch::nn::Sequential plain_stage(size_t stage, bool reduce, bool instance_norm) const {
    const auto& c = options.channels();
    torch::nn::Sequential blocks;
    for (int64_t i = 0; i < options.layers()[stage]; ++i) {
      blocks->push_back(OSBlock(OSBlockOptions(i == 0 ? c[stage] : c[stage + 1], c[stage + 1])
                                    .instance_norm(instance_norm)));
    }
    if (reduce) blocks->push_back(OSTransition(c[stage + 1]));
    return blocks;
  }

  // osnet_ain.py's _make_layer: the two blocks of the stage, by upstream's pattern.
  torch::nn::Sequential ain_stage(size_t stage) const {
    const auto& c = options.channels();
    torch::nn::Sequential blocks;
    for (size_t i = 0; i < 2; ++i) {
      blocks->push_back(
          OSBlockAin(OSBlockAinOptions(i == 0 ? c[stage] : c[stage + 1], c[stage + 1])
                         .instance_norm(detail::kOSNetAinPattern[stage][i])));
    }
    return blocks;
  }
};
TORCH_MODULE(OSNet);

/// torchreid's OSNet model names, in its order: osnet_x1_0 ... osnet_x0_25, osnet_ibn_x1_0,
/// osnet_ain_x1_0 ... osnet_ain_x0_25.
inline const std::vector<std::string>& osnet_variant_names() {
  static const std::vector<std::string> names{
      "osnet_x1_0",     "osnet_x0_75",     "osnet_x0_5",     "osnet_x0_25",    "osnet_ibn_x1_0",
      "osnet_ain_x1_0", "osnet_ain_x0_75", "osnet_ain_x0_5", "osnet_ain_x0_25"};
  return names;
}

/// The options of torchreid's model `name` (one of osnet_variant_names()).
inline OSNetOptions osnet_variant_options(const std::string& name) {
  static const std::vector<std::pair<std::string, std::vector<int64_t>>> widths{
      {"x1_0", {64, 256, 384, 512}},
      {"x0_75", {48, 192, 288, 384}},
      {"x0_5", {32, 128, 192, 256}},
      {"x0_25", {16, 64, 96, 128}}};
  const auto split = [&](const std::string& prefix, OSNetVariant variant) -> std::optional<OSNetOptions> {
    if (name.rfind(prefix, 0) != 0) return std::nullopt;
    for (const auto& [suffix, channels] : widths) {
      if (name.substr(prefix.size()) == suffix) {
        return OSNetOptions().channels(channels).variant(variant);
      }
    }
    return std::nullopt;
  };
  // Longest prefixes first: "osnet_" would also match the ain and ibn names.
  auto options = split("osnet_ain_", OSNetVariant::kAin);
  if (!options) options = split("osnet_ibn_", OSNetVariant::kIbn);
  if (options && options->variant() == OSNetVariant::kIbn && options->channels()[0] != 64) {
    options.reset();  // torchreid has osnet_ibn_x1_0 only
  }
  if (!options) options = split("osnet_", OSNetVariant::kPlain);
  if (!options) {
    std::string known;
    for (const auto& item : osnet_variant_names()) known += (known.empty() ? "" : ", ") + item;
    TORCH_CHECK(false, "no OSNet variant named \"", name, "\"; known: ", known);
  }
  return *options;
}

}  // namespace reidnet
