#pragma once
/// timm's Swin Transformer V2 (Liu et al. 2022) as a reidnet backbone, with the state_dict keys,
/// order and shapes of `timm.create_model("swinv2_base_window8_256", img_size=(256, 128))`
/// (registered: swinv2_tiny/small/base _window8_256 and _window16_256).
///
///     auto net = reidnet::SwinTransformerV2(
///         reidnet::swinv2_variant_options("swinv2_base_window8_256").input_size({256, 128}));
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 256, 128}));   // (2, 1024, 8, 4)
///
/// Keys: patch_embed.proj, patch_embed.norm; layers.N (N >= 1 starts with downsample.reduction
/// and downsample.norm), layers.N.blocks.M (see layers/swinv2.hpp); norm; with keep_classifier,
/// head.fc. The map is the final norm's output, as timm's forward_features gives it, in NCHW.
/// The structure depends on the input size (windows clamp to small maps, the shift mask), so
/// a network runs at the size it was built for; the weights fit any size.

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/backbones/swin.hpp>
#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/swin.hpp>
#include <reidnet/models/layers/swinv2.hpp>
#include <reidnet/models/layers/windows.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <regex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

struct SwinV2Options {
  /// The input size (height, width) the network is built for; each side a multiple of
  /// patch_size * 2^(stages - 1) (32 for four stages). timm's variants: 256x256.
  TORCH_ARG(ImageSize, input_size) = ImageSize{256, 256};
  TORCH_ARG(int64_t, patch_size) = 4;
  /// Channels of the first stage; each later stage doubles them.
  TORCH_ARG(int64_t, embed_dim) = 96;
  /// Blocks per stage: swinv2_tiny {2, 2, 6, 2}.
  TORCH_ARG(std::vector<int64_t>, depths) = std::vector<int64_t>{2, 2, 6, 2};
  /// Attention heads per stage: swinv2_tiny {3, 6, 12, 24}.
  TORCH_ARG(std::vector<int64_t>, num_heads) = std::vector<int64_t>{3, 6, 12, 24};
  /// Side of the square attention window (clamped per stage to maps smaller than it).
  TORCH_ARG(int64_t, window_size) = 8;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// Per stage, the window the weights were pretrained with (timm's pretrained_window_sizes);
  /// empty or 0 = the stage's own window.
  TORCH_ARG(std::vector<int64_t>, pretrained_window_sizes) = std::vector<int64_t>{};
  /// Stochastic depth of the last block; earlier blocks rise linearly from 0 (timm's schedule).
  TORCH_ARG(double, drop_path_rate) = 0.0;
  /// timm's ImageNet head (head.fc on the average-pooled map) of this many classes; 0 = none.
  TORCH_ARG(int64_t, class_num) = 0;
};

/// One stage on a (B, H, W, C) map: `downsample` (V2 patch merging; stage 0 has none), then
/// `blocks`, alternately unshifted and shifted.
class SwinV2StageImpl : public torch::nn::Cloneable<SwinV2StageImpl> {
 public:
  SwinV2StageImpl(int64_t in_dim, int64_t out_dim, WindowSize input_resolution, int64_t num_heads,
                  int64_t window_size, bool with_downsample, std::vector<double> drop_paths, double mlp_ratio = 4.0,
                  int64_t pretrained_window_size = 0)
      : in_(in_dim), out_(out_dim), resolution_(input_resolution), heads_(num_heads), window_(window_size),
        downsample_(with_downsample), drop_paths_(std::move(drop_paths)), mlp_ratio_(mlp_ratio),
        pretrained_window_(pretrained_window_size) {
    reset();
  }

  void reset() override {
    TORCH_CHECK(downsample_ || in_ == out_, "SwinV2Stage: without downsample, in_dim (", in_,
                ") must equal out_dim (", out_, ")");
    downsample = nullptr;
    WindowSize resolution = resolution_;
    if (downsample_) {
      downsample = register_module("downsample", SwinV2PatchMerging(in_, out_));
      resolution = {resolution_[0] / 2, resolution_[1] / 2};
    }
    blocks = register_module("blocks", torch::nn::Sequential());
    for (size_t i = 0; i < drop_paths_.size(); ++i) {
      blocks->push_back(SwinV2Block(SwinV2BlockOptions(out_, heads_, resolution)
                                        .window_size({window_, window_})
                                        .shifted(i % 2 == 1)
                                        .mlp_ratio(mlp_ratio_)
                                        .drop_path(drop_paths_[i])
                                        .pretrained_window_size({pretrained_window_, pretrained_window_})));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    return blocks->forward(downsample.is_empty() ? x : downsample->forward(x));
  }

  SwinV2PatchMerging downsample{nullptr};
  torch::nn::Sequential blocks{nullptr};

 private:
  int64_t in_, out_;
  WindowSize resolution_;
  int64_t heads_, window_;
  bool downsample_;
  std::vector<double> drop_paths_;
  double mlp_ratio_;
  int64_t pretrained_window_;
};
TORCH_MODULE(SwinV2Stage);

/// timm's SwinTransformerV2, built for one input size.
class SwinTransformerV2Impl : public torch::nn::Cloneable<SwinTransformerV2Impl>, public Backbone {
 public:
  explicit SwinTransformerV2Impl(const SwinV2Options& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    const auto& depths = options.depths();
    const auto& heads = options.num_heads();
    const auto stages = static_cast<int64_t>(depths.size());
    auto pretrained = options.pretrained_window_sizes();
    if (pretrained.empty()) pretrained.assign(depths.size(), 0);
    TORCH_CHECK(stages >= 1 && heads.size() == depths.size() && pretrained.size() == depths.size(),
                "SwinV2Options: depths (", depths.size(), "), num_heads (", heads.size(),
                ") and pretrained_window_sizes (", options.pretrained_window_sizes().size(),
                ", or empty) need one entry per stage");
    TORCH_CHECK(options.drop_path_rate() >= 0 && options.drop_path_rate() < 1,
                "SwinV2Options::drop_path_rate must be in [0, 1), got ", options.drop_path_rate());
    TORCH_CHECK(options.embed_dim() > 0 && options.patch_size() > 0 && options.window_size() > 0,
                "SwinV2Options: embed_dim, patch_size and window_size must be positive");
    const auto size = options.input_size();
    const int64_t multiple = options.patch_size() << (stages - 1);
    TORCH_CHECK(size[0] > 0 && size[1] > 0 && size[0] % multiple == 0 && size[1] % multiple == 0,
                "SwinV2Options::input_size ", size[0], "x", size[1],
                ": height and width must be positive multiples of ",
                multiple, " (patch ", options.patch_size(), ", then ", stages - 1, " halvings)");
    int64_t total = 0;
    for (const auto depth : depths) {
      TORCH_CHECK(depth >= 1, "SwinV2Options::depths must be positive");
      total += depth;
    }
    patch_embed = register_module("patch_embed", SwinPatchEmbed(options.patch_size(), options.embed_dim()));
    const auto rates = linear_drop_path_rates(total, options.drop_path_rate());
    layers = register_module("layers", torch::nn::Sequential());
    WindowSize resolution{size[0] / options.patch_size(), size[1] / options.patch_size()};
    int64_t dim = options.embed_dim();
    size_t block = 0;
    for (int64_t i = 0; i < stages; ++i) {
      const auto stage = static_cast<size_t>(i);
      const int64_t out_dim = options.embed_dim() << i;
      std::vector<double> stage_rates(rates.begin() + static_cast<std::ptrdiff_t>(block),
                                      rates.begin() + static_cast<std::ptrdiff_t>(block + depths[stage]));
      block += static_cast<size_t>(depths[stage]);
      layers->push_back(SwinV2Stage(dim, out_dim, resolution, heads[stage], options.window_size(), i > 0,
                                    stage_rates, options.mlp_ratio(), pretrained[stage]));
      if (i > 0) resolution = {resolution[0] / 2, resolution[1] / 2};
      dim = out_dim;
    }
    norm = register_module("norm", detail::swin_layer_norm(num_features()));
    head = nullptr;
    if (options.class_num() > 0) {
      head = register_module("head", SwinClassifierHead(num_features(), options.class_num()));
    }
    initialize();
  }

  int64_t num_features() const override {
    return options.embed_dim() << (static_cast<int64_t>(options.depths().size()) - 1);
  }

  /// The final norm's output, channels-last (B, H/32, W/32, C), as timm's forward_features.
  torch::Tensor forward_tokens(const torch::Tensor& images) {
    const auto size = options.input_size();
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "SwinTransformerV2 needs (B, 3, H, W) images, got ",
                images.sizes());
    TORCH_CHECK(images.size(2) == size[0] && images.size(3) == size[1], "SwinTransformerV2 was built for ",
                size[0], "x", size[1], " input (SwinV2Options::input_size, BackboneArgs::input_size), got ",
                images.size(2), "x", images.size(3));
    return norm(layers->forward(patch_embed(images)));
  }

  /// The final norm's map (B, num_features(), H/32, W/32), channels first.
  torch::Tensor forward_features(const torch::Tensor& images) override {
    return forward_tokens(images).permute({0, 3, 1, 2}).contiguous();
  }

  std::vector<int64_t> feature_strides() const override {
    std::vector<int64_t> strides;
    for (size_t i = 0; i < options.depths().size(); ++i) strides.push_back(options.patch_size() << i);
    return strides;
  }

  /// timm's ImageNet logits (pool, head.fc) with the head, else the map.
  torch::Tensor forward(const torch::Tensor& images) {
    return head.is_empty() ? forward_features(images) : head(forward_tokens(images));
  }

  /// The window buffers timm computes and keeps out of its state_dict, keyed as older timm
  /// files hold them: layers.N.blocks.M.attn.relative_position_index and
  /// .relative_coords_table, and, for shifting blocks, layers.N.blocks.M.attn_mask.
  StateDict computed_buffers() const {
    StateDict out;
    for (size_t s = 0; s < layers->size(); ++s) {
      const auto& blocks = layers->ptr<SwinV2StageImpl>(s)->blocks;
      for (size_t b = 0; b < blocks->size(); ++b) {
        const auto block = blocks->ptr<SwinV2BlockImpl>(b);
        const auto prefix = "layers." + std::to_string(s) + ".blocks." + std::to_string(b) + ".";
        if (block->attn_mask().defined()) out.insert(prefix + "attn_mask", block->attn_mask());
        out.insert(prefix + "attn.relative_position_index", block->attn->relative_position_index());
        out.insert(prefix + "attn.relative_coords_table", block->attn->relative_coords_table());
      }
    }
    return out;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::SwinTransformerV2(embed_dim=" << options.embed_dim() << ", window=" << options.window_size()
           << ", input=" << options.input_size()[0] << "x" << options.input_size()[1]
           << ", drop_path_rate=" << options.drop_path_rate() << ")";
  }

  SwinV2Options options;
  SwinPatchEmbed patch_embed{nullptr};
  torch::nn::Sequential layers{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  /// timm's head, with class_num > 0.
  SwinClassifierHead head{nullptr};

 private:
  // timm's _init_weights: Linear weights truncated normal (std 0.02), biases 0; the patch
  // embedding's conv keeps PyTorch's default. Then _init_respostnorm: norm1 and norm2 of every
  // block start at 0, so that each block starts as the identity.
  void initialize() {
    torch::NoGradGuard no_grad;
    apply_init(*layers, TruncatedNormalInit{0.02});
    if (!head.is_empty()) apply_init(*head, TruncatedNormalInit{0.02});
    for (const auto& module : layers->modules(/*include_self=*/false)) {
      if (auto* block = module->as<SwinV2BlockImpl>()) {
        for (auto* post_norm : {&block->norm1, &block->norm2}) {
          (*post_norm)->weight.zero_();
          (*post_norm)->bias.zero_();
        }
      }
    }
  }
};
TORCH_MODULE(SwinTransformerV2);

/// timm's plain SwinV2 names (trained at 256x256 with their own window), smallest first.
inline const std::vector<std::string>& swinv2_variant_names() {
  static const std::vector<std::string> names{"swinv2_tiny_window8_256",  "swinv2_tiny_window16_256",
                                              "swinv2_small_window8_256", "swinv2_small_window16_256",
                                              "swinv2_base_window8_256",  "swinv2_base_window16_256"};
  return names;
}

/// The options of timm's model `name` (one of swinv2_variant_names()), at timm's 256x256.
inline SwinV2Options swinv2_variant_options(const std::string& name) {
  struct Variant {
    int64_t embed_dim;
    std::vector<int64_t> depths, heads;
    int64_t window;
  };
  static const std::map<std::string, Variant> variants{
      {"swinv2_tiny_window8_256", {96, {2, 2, 6, 2}, {3, 6, 12, 24}, 8}},
      {"swinv2_tiny_window16_256", {96, {2, 2, 6, 2}, {3, 6, 12, 24}, 16}},
      {"swinv2_small_window8_256", {96, {2, 2, 18, 2}, {3, 6, 12, 24}, 8}},
      {"swinv2_small_window16_256", {96, {2, 2, 18, 2}, {3, 6, 12, 24}, 16}},
      {"swinv2_base_window8_256", {128, {2, 2, 18, 2}, {4, 8, 16, 32}, 8}},
      {"swinv2_base_window16_256", {128, {2, 2, 18, 2}, {4, 8, 16, 32}, 16}}};
  const auto found = variants.find(name);
  if (found == variants.end()) {
    std::string known;
    for (const auto& item : swinv2_variant_names()) known += (known.empty() ? "" : ", ") + item;
    TORCH_CHECK(false, "no SwinV2 variant named \"", name, "\"; known: ", known);
  }
  const auto& v = found->second;
  return SwinV2Options().embed_dim(v.embed_dim).depths(v.depths).num_heads(v.heads).window_size(v.window);
}

namespace detail {
/// The backbone `name` of `options` as BackboneArgs build it.
inline AnyBackbone create_swinv2_backbone(SwinV2Options options, const std::string& name, const BackboneArgs& args) {
  TORCH_CHECK(args.last_stride() == 2, "BackboneArgs::last_stride (", args.last_stride(), ") does not apply to ", name,
              ": SwinV2's last stage is at stride 32");
  return AnyBackbone(SwinTransformerV2(options.input_size(args.input_size().value_or(options.input_size()))
                                           .drop_path_rate(args.drop_path_rate().value_or(0.2))
                                           .class_num(args.keep_classifier() ? 1000 : 0))
                         .ptr());
}
}  // namespace detail

inline const bool kSwinV2Registered = [] {
  for (const auto& name : swinv2_variant_names()) {
    BackboneEntry entry{[name](const BackboneArgs& args) {
      return detail::create_swinv2_backbone(swinv2_variant_options(name), name, args);
    }};
    entry.description = "timm's " + name + ", its final norm's map; drop path 0.2 (the baseline's); built for one "
                        "input size";
    entry.baseline_keeps_classifier = false;
    entry.default_input_size = {256, 128};
    entry.imagenet_adapt = [](const StateDict& entries, const torch::nn::Module& backbone) {
      const auto* swin = dynamic_cast<const SwinTransformerV2Impl*>(&backbone);
      TORCH_CHECK(swin != nullptr, "the SwinV2 file adapter needs a SwinTransformerV2 backbone");
      return detail::swin_family_imagenet_adapt(entries, swin->computed_buffers(), "SwinV2");
    };
    register_backbone(name, std::move(entry));
  }
  return true;
}();

}  // namespace reidnet
