#pragma once
/// timm's Swin Transformer v1 (Liu et al. 2021) as a reidnet backbone, with the state_dict
/// keys, order and shapes of `timm.create_model("swin_base_patch4_window7_224")` (registered as
/// swin_tiny_, swin_small_, swin_base_ and swin_large_patch4_window7_224, built for 224x224).
///
///     auto net = reidnet::SwinTransformer(reidnet::swin_variant_options("swin_base_patch4_window7_224"));
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 224, 224}));
///     // map: (2, 1024, 7, 7), the final norm's output as NCHW, as the baseline pools it
///
/// Keys: patch_embed.proj, patch_embed.norm; layers.N (N >= 1) start with downsample.norm,
/// downsample.reduction (patch merging); layers.N.blocks.M; norm; with keep_classifier, timm's
/// head.fc. The windows, their shifts and masks depend on the input size, so the network is
/// built for one (BackboneArgs::input_size) and takes no other.

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/swin.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

struct SwinTransformerOptions {
  /// Channels of the patch embedding; stage i has embed_dim * 2^i (swin_base: 128).
  TORCH_ARG(int64_t, embed_dim) = 96;
  /// Blocks per stage (swin_base: {2, 2, 18, 2}).
  TORCH_ARG(std::vector<int64_t>, depths) = std::vector<int64_t>{2, 2, 6, 2};
  /// Attention heads per stage (swin_base: {4, 8, 16, 32}).
  TORCH_ARG(std::vector<int64_t>, num_heads) = std::vector<int64_t>{3, 6, 12, 24};
  /// Side of the square attention window, in tokens; a stage whose map is no longer than it
  /// along an axis uses the whole axis, unshifted (timm's rule).
  TORCH_ARG(int64_t, window_size) = 7;
  /// Side of the square patches of the embedding, in pixels.
  TORCH_ARG(int64_t, patch_size) = 4;
  /// Hidden width of the blocks' MLP, in units of their width.
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// The input (height, width) the network is built for: multiples of patch_size * 2^(stages-1)
  /// (32 for the published variants).
  TORCH_ARG(ImageSize, input_size) = ImageSize{224, 224};
  /// Stochastic depth of the last block; earlier blocks rise linearly from 0 (timm's schedule).
  TORCH_ARG(double, drop_path_rate) = 0.0;
  /// timm's ImageNet head (head.fc) of this many classes; 0 = none, as the baseline.
  TORCH_ARG(int64_t, class_num) = 0;
};

/// One stage: `downsample` (patch merging; absent in stage 0), then `blocks`, alternately
/// unshifted and shifted.
class SwinTransformerStageImpl : public torch::nn::Cloneable<SwinTransformerStageImpl> {
 public:
  /// `input_resolution` is the stage's input map; merging halves it.
  SwinTransformerStageImpl(int64_t in_dim, int64_t out_dim, WindowSize input_resolution, bool downsample,
                           int64_t num_heads, int64_t window_size, double mlp_ratio, std::vector<double> drop_paths)
      : in_(in_dim),
        out_(out_dim),
        input_resolution_(input_resolution),
        has_downsample_(downsample),
        heads_(num_heads),
        window_(window_size),
        mlp_ratio_(mlp_ratio),
        drop_paths_(std::move(drop_paths)) {
    reset();
  }

  void reset() override {
    downsample = nullptr;
    WindowSize resolution = input_resolution_;
    if (has_downsample_) {
      downsample = register_module("downsample", SwinPatchMerging(in_, out_));
      resolution = {resolution[0] / 2, resolution[1] / 2};
    } else {
      TORCH_CHECK(in_ == out_, "SwinTransformerStage: without merging the width cannot change (", in_, " -> ", out_,
                  ")");
    }
    blocks = register_module("blocks", torch::nn::Sequential());
    for (size_t i = 0; i < drop_paths_.size(); ++i) {
      blocks->push_back(SwinTransformerBlock(SwinTransformerBlockOptions(out_, heads_, resolution)
                                                 .window_size({window_, window_})
                                                 .shifted(i % 2 == 1)
                                                 .mlp_ratio(mlp_ratio_)
                                                 .drop_path(drop_paths_[i])));
    }
  }

  /// Block `index` of `blocks`, typed.
  std::shared_ptr<SwinTransformerBlockImpl> block(size_t index) const {
    return blocks->ptr<SwinTransformerBlockImpl>(index);
  }

  /// (B, H, W, in) -> (B, H', W', out).
  torch::Tensor forward(const torch::Tensor& x) {
    return blocks->forward(downsample.is_empty() ? x : downsample->forward(x));
  }

  SwinPatchMerging downsample{nullptr};
  torch::nn::Sequential blocks{nullptr};

 private:
  int64_t in_, out_;
  WindowSize input_resolution_;
  bool has_downsample_;
  int64_t heads_, window_;
  double mlp_ratio_;
  std::vector<double> drop_paths_;
};
TORCH_MODULE(SwinTransformerStage);

/// timm's ClassifierHead on a channels-last map: average over the map, then `fc`. Keys: fc.
class SwinClassifierHeadImpl : public torch::nn::Cloneable<SwinClassifierHeadImpl> {
 public:
  SwinClassifierHeadImpl(int64_t channels, int64_t class_num) : channels_(channels), class_num_(class_num) {
    reset();
  }

  void reset() override { fc = register_module("fc", torch::nn::Linear(channels_, class_num_)); }

  /// (B, H, W, C) -> (B, class_num).
  torch::Tensor forward(const torch::Tensor& tokens) { return fc(tokens.mean({1, 2})); }

  torch::nn::Linear fc{nullptr};

 private:
  int64_t channels_, class_num_;
};
TORCH_MODULE(SwinClassifierHead);

/// timm's SwinTransformer (v1) with a fixed input size (timm's strict_img_size).
class SwinTransformerImpl : public torch::nn::Cloneable<SwinTransformerImpl>, public Backbone {
 public:
  explicit SwinTransformerImpl(const SwinTransformerOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    const auto& depths = options.depths();
    const auto& heads = options.num_heads();
    const auto stages = static_cast<int64_t>(depths.size());
    TORCH_CHECK(stages >= 1 && heads.size() == depths.size(), "SwinTransformerOptions: depths and num_heads need ",
                "one entry per stage, got ", depths.size(), " and ", heads.size());
    TORCH_CHECK(options.embed_dim() >= 1 && options.window_size() >= 1 && options.patch_size() >= 1 &&
                    options.mlp_ratio() > 0,
                "SwinTransformerOptions: embed_dim, window_size, patch_size and mlp_ratio must be positive");
    TORCH_CHECK(options.drop_path_rate() >= 0 && options.drop_path_rate() < 1,
                "SwinTransformerOptions::drop_path_rate must be in [0, 1), got ", options.drop_path_rate());
    const auto& size = options.input_size();
    const int64_t multiple = options.patch_size() << (stages - 1);
    TORCH_CHECK(size[0] >= multiple && size[1] >= multiple && size[0] % multiple == 0 && size[1] % multiple == 0,
                "SwinTransformerOptions::input_size ", size[0], "x", size[1], " is not supported: height and width ",
                "must be positive multiples of ", multiple, " (patch ", options.patch_size(), " halved ", stages - 1,
                " times), e.g. 224x224 or 256x128");
    int64_t total = 0;
    for (size_t i = 0; i < depths.size(); ++i) {
      TORCH_CHECK(depths[i] >= 1 && heads[i] >= 1, "SwinTransformerOptions: stage ", i,
                  " needs positive depth and num_heads");
      TORCH_CHECK((options.embed_dim() << i) % heads[i] == 0, "SwinTransformerOptions: stage ", i, "'s width (",
                  options.embed_dim() << i, ") is not a multiple of its num_heads (", heads[i], ")");
      total += depths[i];
    }

    patch_embed = register_module("patch_embed", SwinPatchEmbed(options.patch_size(), options.embed_dim()));
    const auto rates = linear_drop_path_rates(total, options.drop_path_rate());
    layers = register_module("layers", torch::nn::Sequential());
    WindowSize resolution{size[0] / options.patch_size(), size[1] / options.patch_size()};
    size_t block = 0;
    for (int64_t i = 0; i < stages; ++i) {
      const auto in_dim = options.embed_dim() << std::max<int64_t>(i - 1, 0);
      std::vector<double> stage_rates(rates.begin() + static_cast<std::ptrdiff_t>(block),
                                      rates.begin() + static_cast<std::ptrdiff_t>(block + depths[i]));
      block += static_cast<size_t>(depths[i]);
      layers->push_back(SwinTransformerStage(in_dim, options.embed_dim() << i, resolution, i > 0, heads[i],
                                             options.window_size(), options.mlp_ratio(), stage_rates));
      if (i > 0) resolution = {resolution[0] / 2, resolution[1] / 2};
    }
    norm = register_module("norm", torch::nn::LayerNorm(
                                       torch::nn::LayerNormOptions({num_features()}).eps(kSwinLayerNormEps)));
    head = nullptr;
    if (options.class_num() > 0) {
      head = register_module("head", SwinClassifierHead(num_features(), options.class_num()));
    }
    // timm's init_weights_vit_timm: every Linear from a truncated normal, zero bias; the
    // patch conv keeps PyTorch's default and the bias tables their own truncated normal.
    for (const auto& module : modules(/*include_self=*/false)) {
      if (module->as<torch::nn::Linear>() != nullptr) apply_init(*module, TruncatedNormalInit{0.02});
    }
  }

  int64_t num_features() const override {
    return options.embed_dim() << (static_cast<int64_t>(options.depths().size()) - 1);
  }

  std::vector<int64_t> feature_strides() const override {
    std::vector<int64_t> strides;
    for (size_t i = 0; i < options.depths().size(); ++i) strides.push_back(options.patch_size() << i);
    return strides;
  }

  /// The final norm's output, channels-last (B, H/32, W/32, C), as timm's forward_features.
  torch::Tensor forward_tokens(const torch::Tensor& images) {
    const auto& size = options.input_size();
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "SwinTransformer needs (B, 3, H, W) images, got ",
                images.sizes());
    TORCH_CHECK(images.size(2) == size[0] && images.size(3) == size[1], "SwinTransformer was built for ", size[0],
                "x", size[1], " inputs, got ", images.size(2), "x", images.size(3),
                " (set BackboneArgs::input_size / SwinTransformerOptions::input_size to the input size)");
    return norm(layers->forward(patch_embed(images)));
  }

  /// The final norm's output as NCHW (B, C, H/32, W/32), the map the baseline pools.
  torch::Tensor forward_features(const torch::Tensor& images) override {
    return forward_tokens(images).permute({0, 3, 1, 2}).contiguous();
  }

  /// timm's ImageNet logits (average pool, head.fc) with the head, else forward_features' map.
  torch::Tensor forward(const torch::Tensor& images) {
    return head.is_empty() ? forward_features(images) : head(forward_tokens(images));
  }

  /// The buffers timm computes and keeps out of its state_dict, keyed as older timm files
  /// hold them: layers.N.blocks.M.attn.relative_position_index and, for shifting blocks,
  /// layers.N.blocks.M.attn_mask.
  StateDict computed_buffers() const {
    StateDict out;
    for (size_t s = 0; s < layers->size(); ++s) {
      const auto stage = layers->ptr<SwinTransformerStageImpl>(s);
      for (size_t b = 0; b < stage->blocks->size(); ++b) {
        const auto block = stage->block(b);
        const auto prefix = "layers." + std::to_string(s) + ".blocks." + std::to_string(b) + ".";
        if (block->attn_mask().defined()) out.insert(prefix + "attn_mask", block->attn_mask());
        out.insert(prefix + "attn.relative_position_index", block->attn->relative_position_index());
      }
    }
    return out;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::SwinTransformer(embed_dim=" << options.embed_dim() << ", depths=[";
    for (size_t i = 0; i < options.depths().size(); ++i) stream << (i ? ", " : "") << options.depths()[i];
    stream << "], window=" << options.window_size() << ", input=" << options.input_size()[0] << "x"
           << options.input_size()[1] << ", drop_path_rate=" << options.drop_path_rate() << ")";
  }

  SwinTransformerOptions options;
  SwinPatchEmbed patch_embed{nullptr};
  /// The stages (SwinTransformerStage).
  torch::nn::Sequential layers{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  /// timm's head, with class_num > 0.
  SwinClassifierHead head{nullptr};
};
TORCH_MODULE(SwinTransformer);

/// timm's Swin v1 names, smallest first.
inline const std::vector<std::string>& swin_variant_names() {
  static const std::vector<std::string> names{"swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224",
                                              "swin_base_patch4_window7_224", "swin_large_patch4_window7_224"};
  return names;
}

/// The options of timm's model `name` (one of swin_variant_names()), for 224x224 inputs.
inline SwinTransformerOptions swin_variant_options(const std::string& name) {
  struct Numbers {
    int64_t embed_dim;
    std::vector<int64_t> depths, num_heads;
  };
  static const std::map<std::string, Numbers> variants{
      {"swin_tiny_patch4_window7_224", {96, {2, 2, 6, 2}, {3, 6, 12, 24}}},
      {"swin_small_patch4_window7_224", {96, {2, 2, 18, 2}, {3, 6, 12, 24}}},
      {"swin_base_patch4_window7_224", {128, {2, 2, 18, 2}, {4, 8, 16, 32}}},
      {"swin_large_patch4_window7_224", {192, {2, 2, 18, 2}, {6, 12, 24, 48}}}};
  const auto found = variants.find(name);
  if (found == variants.end()) {
    std::string known;
    for (const auto& item : swin_variant_names()) known += (known.empty() ? "" : ", ") + item;
    TORCH_CHECK(false, "no Swin Transformer variant named \"", name, "\"; known: ", known);
  }
  return SwinTransformerOptions()
      .embed_dim(found->second.embed_dim)
      .depths(found->second.depths)
      .num_heads(found->second.num_heads)
      .window_size(7)
      .patch_size(4)
      .input_size({224, 224});
}

namespace detail {
// Fits a file of timm's Swin or SwinV2 to the network. Current timm files match it key for key.
// Older timm (and Microsoft's) files put each patch merging at the end of the stage before
// (layers.N.downsample is the new layers.N+1.downsample; a layers.0.downsample marks such a
// file), name the classifier head.weight / head.bias, and hold the window buffers
// (relative_position_index, attn_mask, SwinV2's relative_coords_table), which the network
// computes: `computed` has them under the files' keys. A stored buffer of the network's shape
// must hold its values (else the file was built for other windows); all are dropped. Buffers of
// another shape (a 256x256 SwinV2 file's last stage in a 256x128 network) are expected: the
// weights do not depend on the window.
inline StateDict swin_family_imagenet_adapt(const StateDict& entries, const StateDict& computed,
                                            const std::string& family) {
  bool merging_at_stage_end = false;
  for (const auto& item : entries) merging_at_stage_end |= item.key().rfind("layers.0.downsample.", 0) == 0;
  static const std::regex merging(R"(^layers\.(\d+)\.downsample\.)");
  StateDict out;
  for (const auto& item : entries) {
    auto key = item.key();
    const auto& value = item.value();
    const auto name = key.substr(key.rfind('.') + 1);
    if (name == "relative_position_index" || name == "relative_coords_table" || name == "attn_mask") {
      const auto* own = computed.find(key);
      if (own != nullptr && own->sizes() == value.sizes() && value.numel() > 0 &&
          (value.to(torch::kCPU, torch::kDouble) - own->to(torch::kCPU, torch::kDouble)).abs().max().item<double>() >
              1e-5) {
        throw std::runtime_error(family + " ImageNet file: '" + key + "' differs from the one the network " +
                                 "computes for its windows (a file for other windows or input size)");
      }
      continue;
    }
    std::smatch match;
    if (merging_at_stage_end && std::regex_search(key, match, merging)) {
      key = "layers." + std::to_string(std::stoll(match[1].str()) + 1) + ".downsample." + match.suffix().str();
    } else if (key.rfind("head.", 0) == 0 && key.rfind("head.fc.", 0) != 0) {
      key = "head.fc." + key.substr(5);
    }
    if (out.contains(key)) throw std::runtime_error(family + " ImageNet file: '" + key + "' twice (after renaming)");
    out.insert(key, value);
  }
  return out;
}

inline StateDict swin_imagenet_adapt(const StateDict& entries, const torch::nn::Module& backbone) {
  const auto* swin = dynamic_cast<const SwinTransformerImpl*>(&backbone);
  TORCH_CHECK(swin != nullptr, "swin_imagenet_adapt needs a SwinTransformer backbone");
  return swin_family_imagenet_adapt(entries, swin->computed_buffers(), "Swin");
}
}  // namespace detail

namespace detail {
/// The backbone `name` of `options` as BackboneArgs build it.
inline AnyBackbone create_swin_backbone(SwinTransformerOptions options, const std::string& name,
                                        const BackboneArgs& args) {
  TORCH_CHECK(args.last_stride() == 2, "BackboneArgs::last_stride (", args.last_stride(), ") does not apply to ", name,
              ": Swin's last stage is at stride 32");
  return AnyBackbone(SwinTransformer(options.input_size(args.input_size().value_or(options.input_size()))
                                         .drop_path_rate(args.drop_path_rate().value_or(0.2))
                                         .class_num(args.keep_classifier() ? 1000 : 0))
                         .ptr());
}
}  // namespace detail

inline const bool kSwinTransformerRegistered = [] {
  for (const auto& name : swin_variant_names()) {
    BackboneEntry entry{[name](const BackboneArgs& args) {
      return detail::create_swin_backbone(swin_variant_options(name), name, args);
    }};
    entry.description = "timm's " + name + ", its final norm's map; drop path 0.2 (the baseline's)";
    entry.baseline_keeps_classifier = false;
    entry.default_input_size = {224, 224};
    entry.imagenet_adapt = detail::swin_imagenet_adapt;
    register_backbone(name, std::move(entry));
  }
  return true;
}();

}  // namespace reidnet
