#pragma once
/// timm's DINOv3 vision transformers (Siméoni et al. 2025; timm's Eva class) as reidnet
/// backbones, with the state_dict keys, order and shapes of
/// `timm.create_model("vit_base_patch16_dinov3")` (registered as vit_small_, vit_base_ and
/// vit_large_patch16_dinov3).
///
///     auto net = reidnet::Eva(reidnet::eva_variant_options("vit_base_patch16_dinov3"));
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 256, 128}));
///     // map: (2, 768, 1, 133): the class, 4 register and 16x8 patch tokens after the final norm
///
/// Keys: cls_token, reg_token (1, 4, D), patch_embed.proj (16x16 conv of stride 16), blocks.N
/// (layers/eva.hpp), norm; with keep_classifier, head (Linear(D, 1000)). No position table:
/// the rotary embedding is computed from each input's patch grid, so any size whose sides are
/// multiples of 16 runs. The baseline averages every token timm's forward_features returns,
/// class and registers included; `forward_features` lays them out as a (B, D, 1, T) map so
/// that the head's average pool does the same.

#include <reidnet/io/state_dict.hpp>
#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/eva.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/vision_transformer.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

struct EvaOptions {
  /// Token width D: vit_base_patch16_dinov3 768.
  TORCH_ARG(int64_t, embed_dim) = 768;
  /// Number of blocks.
  TORCH_ARG(int64_t, depth) = 12;
  /// Attention heads; embed_dim / num_heads must be divisible by 4 (the rotary embedding's axes).
  TORCH_ARG(int64_t, num_heads) = 12;
  /// Hidden width of the MLPs in units of embed_dim.
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// Register tokens after the class token (reg_token).
  TORCH_ARG(int64_t, num_reg_tokens) = 4;
  /// Side of the square, non-overlapping patches.
  TORCH_ARG(int64_t, patch_size) = 16;
  /// Base of the rotary periods (DINOv3's 100).
  TORCH_ARG(double, rope_temperature) = 100.0;
  /// Initial layer scales gamma_1 / gamma_2 of the blocks; nullopt leaves them out.
  TORCH_ARG(std::optional<double>, layer_scale_init) = 1e-5;
  /// Of every LayerNorm.
  TORCH_ARG(double, norm_eps) = 1e-5;
  /// Stochastic depth of the last block; earlier blocks rise linearly from 0 (timm's schedule).
  TORCH_ARG(double, drop_path_rate) = 0.0;
  /// timm's ImageNet head (Linear(D, class_num)) on the patch tokens' mean; 0 = none.
  TORCH_ARG(int64_t, class_num) = 0;
  /// forward_features gives the class token (B, D, 1, 1) instead of every token.
  TORCH_ARG(bool, class_token_feature) = false;
};

/// timm's Eva as its DINOv3 models configure it: class and register tokens, no position table,
/// DINOv3's rotary embedding in every block, a final LayerNorm over all tokens.
class EvaImpl : public torch::nn::Cloneable<EvaImpl>, public Backbone {
 public:
  explicit EvaImpl(const EvaOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    const auto dim = options.embed_dim();
    TORCH_CHECK(dim > 0 && options.depth() > 0 && options.num_heads() > 0,
                "EvaOptions: embed_dim, depth and num_heads must be positive");
    TORCH_CHECK(dim % options.num_heads() == 0, "EvaOptions::embed_dim (", dim, ") must be a multiple of num_heads (",
                options.num_heads(), ")");
    TORCH_CHECK((dim / options.num_heads()) % 4 == 0, "EvaOptions: the head width embed_dim / num_heads (",
                dim / options.num_heads(), ") must be divisible by 4 for the rotary embedding");
    TORCH_CHECK(options.num_reg_tokens() >= 0, "EvaOptions::num_reg_tokens must be >= 0");
    TORCH_CHECK(options.patch_size() > 0, "EvaOptions::patch_size must be positive");
    TORCH_CHECK(options.drop_path_rate() >= 0 && options.drop_path_rate() < 1,
                "EvaOptions::drop_path_rate must be in [0, 1), got ", options.drop_path_rate());
    patch_embed = register_module("patch_embed", PatchEmbed(dim, options.patch_size()));
    cls_token = register_parameter("cls_token", torch::zeros({1, 1, dim}));
    reg_token = torch::Tensor();
    if (options.num_reg_tokens() > 0) {
      reg_token = register_parameter("reg_token", torch::zeros({1, options.num_reg_tokens(), dim}));
    }
    rope = DinoV3Rotary(dim / options.num_heads(), options.rope_temperature());
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (const double rate : linear_drop_path_rates(options.depth(), options.drop_path_rate())) {
      blocks->push_back(EvaBlock(EvaBlockOptions(dim, options.num_heads())
                                     .num_prefix_tokens(num_prefix_tokens())
                                     .mlp_ratio(options.mlp_ratio())
                                     .layer_scale_init(options.layer_scale_init())
                                     .norm_eps(options.norm_eps())
                                     .drop_path(rate)));
    }
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(options.norm_eps())));
    head = nullptr;
    if (options.class_num() > 0) head = register_module("head", torch::nn::Linear(dim, options.class_num()));
    init_weights();
  }

  /// The class token and the registers.
  int64_t num_prefix_tokens() const { return 1 + options.num_reg_tokens(); }

  int64_t num_features() const override { return options.embed_dim(); }

  /// timm's forward_features: every token after the final norm, (B, prefix + H/p * W/p, D).
  torch::Tensor forward_tokens(const torch::Tensor& images) {
    TORCH_CHECK(images.dim() == 4 && images.size(2) % options.patch_size() == 0 &&
                    images.size(3) % options.patch_size() == 0,
                "Eva needs (B, 3, H, W) images with H and W multiples of the patch size ", options.patch_size(),
                ", got ", images.sizes());
    const auto grid = patch_embed->grid_size(images.size(2), images.size(3));
    const auto patches = patch_embed(images);  // (B, rows * columns, D), row by row as timm's
    const auto batch = patches.size(0);
    std::vector<torch::Tensor> parts{cls_token.expand({batch, -1, -1})};
    if (reg_token.defined()) parts.push_back(reg_token.expand({batch, -1, -1}));
    parts.push_back(patches);
    auto x = torch::cat(parts, 1);
    const auto table = rope.embedding(grid[0], grid[1], x.options());
    for (const auto& block : *blocks) x = block->as<EvaBlock>()->forward(x, table);
    return norm(x);
  }

  /// Every token as a (B, D, 1, T) map, whose average is the baseline's pooled feature; with
  /// class_token_feature, the class token as (B, D, 1, 1).
  torch::Tensor forward_features(const torch::Tensor& images) override {
    const auto tokens = forward_tokens(images);
    if (options.class_token_feature()) return tokens.select(1, 0).unsqueeze(-1).unsqueeze(-1);
    return tokens.transpose(1, 2).unsqueeze(2);
  }

  /// One cell per patch: the patch size.
  std::vector<int64_t> feature_strides() const override { return {options.patch_size()}; }

  /// timm's ImageNet logits (the patch tokens' mean, prefix tokens excluded, then head) with
  /// the head, else forward_features.
  torch::Tensor forward(const torch::Tensor& images) {
    if (head.is_empty()) return forward_features(images);
    const auto tokens = forward_tokens(images);
    return head(tokens.slice(1, num_prefix_tokens()).mean(1));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::Eva(embed_dim=" << options.embed_dim() << ", depth=" << options.depth()
           << ", heads=" << options.num_heads() << ", registers=" << options.num_reg_tokens()
           << ", drop_path_rate=" << options.drop_path_rate() << ")";
  }

  EvaOptions options;
  PatchEmbed patch_embed{nullptr};
  torch::Tensor cls_token, reg_token;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  /// timm's head, with class_num > 0.
  torch::nn::Linear head{nullptr};
  /// The rotary tables, computed per patch grid (nothing stored in the state_dict).
  DinoV3Rotary rope;

 private:
  // timm's Eva init: Linear layers truncated-normal (std 0.02) with zero bias, the patch conv
  // left at PyTorch's default, tokens truncated-normal, each block's output projections
  // divided by sqrt(2 * (block + 1)), the head scaled by 0.001. Layer scales start at 1e-5.
  void init_weights() {
    torch::NoGradGuard no_grad;
    apply_init(*blocks, TruncatedNormalInit{0.02});
    truncated_normal_(cls_token, 0.02);
    if (reg_token.defined()) truncated_normal_(reg_token, 0.02);
    int64_t index = 0;
    for (const auto& module : *blocks) {
      auto* block = module->as<EvaBlock>();
      const double scale = std::sqrt(2.0 * static_cast<double>(index + 1));
      block->attn->proj->weight.div_(scale);
      block->mlp->fc2->weight.div_(scale);
      ++index;
    }
    if (!head.is_empty()) {
      apply_init(*head, TruncatedNormalInit{0.02});
      head->weight.mul_(0.001);
      head->bias.mul_(0.001);
    }
  }
};
TORCH_MODULE(Eva);

/// timm's DINOv3 ViT names registered here, smallest first (the plain-MLP, bias-free-qkv ones;
/// the _qkvb, small_plus and huge_plus variants are other code).
inline const std::vector<std::string>& eva_variant_names() {
  static const std::vector<std::string> names{"vit_small_patch16_dinov3", "vit_base_patch16_dinov3",
                                              "vit_large_patch16_dinov3"};
  return names;
}

/// The options of timm's model `name` (one of eva_variant_names()).
inline EvaOptions eva_variant_options(const std::string& name) {
  // embed_dim, depth, num_heads
  static const std::map<std::string, std::array<int64_t, 3>> variants{
      {"vit_small_patch16_dinov3", {384, 12, 6}},
      {"vit_base_patch16_dinov3", {768, 12, 12}},
      {"vit_large_patch16_dinov3", {1024, 24, 16}}};
  const auto found = variants.find(name);
  if (found == variants.end()) {
    std::string known;
    for (const auto& item : eva_variant_names()) known += (known.empty() ? "" : ", ") + item;
    TORCH_CHECK(false, "no DINOv3 ViT variant named \"", name, "\"; known: ", known);
  }
  const auto& [dim, depth, heads] = found->second;
  return EvaOptions().embed_dim(dim).depth(depth).num_heads(heads);
}

namespace detail {

// timm's files use the module's keys. The original (facebookresearch/dinov3) files name the
// registers storage_tokens and the layer scales blocks.N.ls1.gamma / ls2.gamma; timm's
// checkpoint filter renames them so, and so does this. Their other extras (mask_token,
// rope_embed.periods, the qkv bias and its mask) keep their keys for eva_dinov3_imagenet_adapt.
inline std::string eva_dinov3_imagenet_key(const std::string& key) {
  if (key == "storage_tokens") return "reg_token";
  for (const char* scale : {"1", "2"}) {
    const std::string original = std::string(".ls") + scale + ".gamma";
    if (ends_with(key, original)) return key.substr(0, key.size() - original.size()) + ".gamma_" + scale;
  }
  return key;
}

// Drops what an original DINOv3 file carries beyond the module, after checking it agrees:
// mask_token (pretraining's masked-patch token); rope_embed.periods (computed here; stored
// rounded to bfloat16, hence the 1% tolerance); each block's qkv bias, which must be zero where
// its bias_mask keeps it (the distilled ViT-B/L/H files have zero biases, which timm's bias-free
// models drop), with its bias_mask.
inline StateDict eva_dinov3_imagenet_adapt(const StateDict& entries, const torch::nn::Module& backbone) {
  const auto* eva = dynamic_cast<const EvaImpl*>(&backbone);
  if (eva == nullptr) throw std::runtime_error("the DINOv3 file adapter needs an Eva backbone");
  StateDict out;
  for (const auto& item : entries) {
    const auto& key = item.key();
    const auto& value = item.value();
    if (key == "mask_token" || ends_with(key, ".attn.qkv.bias_mask")) continue;
    if (key == "rope_embed.periods") {
      const auto& expected = eva->rope.periods();
      if (value.sizes() != expected.sizes() ||
          !torch::allclose(value.to(torch::kFloat32).cpu(), expected, /*rtol=*/1e-2, /*atol=*/0.0)) {
        throw std::runtime_error("the file's " + key + " " + c10::str(value.sizes()) +
                                 " are not the rotary periods of head_dim " + std::to_string(eva->rope.head_dim()) +
                                 " and temperature " + c10::str(eva->rope.temperature()) + " that the backbone uses");
      }
      continue;
    }
    if (ends_with(key, ".attn.qkv.bias")) {
      auto effective = value.to(torch::kFloat32);
      const auto* mask = entries.find(key + "_mask");
      if (mask != nullptr) effective = effective * mask->to(torch::kFloat32);
      if (!effective.eq(0).all().item<bool>()) {
        throw std::runtime_error("the file's " + key + " is not zero, and this backbone's qkv has no bias " +
                                 "(timm's *_dinov3_qkvb models have one)");
      }
      continue;
    }
    out.insert(key, value);
  }
  return out;
}

/// The backbone `name` of `options` as BackboneArgs build it.
inline AnyBackbone create_eva_backbone(EvaOptions options, const std::string& name, const BackboneArgs& args) {
  TORCH_CHECK(args.last_stride() == 2, "BackboneArgs::last_stride (", args.last_stride(), ") does not apply to ", name,
              ": a vision transformer has no strided stages");
  TORCH_CHECK(!args.patch_stride() || *args.patch_stride() == options.patch_size(), "BackboneArgs::patch_stride (",
              args.patch_stride().value_or(0), ") does not apply to ", name, ": its patches do not overlap (stride ",
              options.patch_size(), ")");
  if (args.input_size()) {
    const auto& size = *args.input_size();
    TORCH_CHECK(size[0] % options.patch_size() == 0 && size[1] % options.patch_size() == 0,
                "BackboneArgs::input_size (", size[0], "x", size[1], ") of ", name, " must be multiples of ",
                options.patch_size());
  }
  options.drop_path_rate(args.drop_path_rate().value_or(0.2))
      .class_num(args.keep_classifier() ? 1000 : 0)
      .class_token_feature(args.class_token_feature());
  return AnyBackbone(Eva(options).ptr());
}

}  // namespace detail

inline const bool kEvaRegistered = [] {
  for (const auto& name : eva_variant_names()) {
    BackboneEntry entry{[name](const BackboneArgs& args) {
                          return detail::create_eva_backbone(eva_variant_options(name), name, args);
                        },
                        detail::eva_dinov3_imagenet_key,
                        "timm's " + name + ", every token after the final norm; drop path 0.2 (the baseline's)",
                        "",
                        "",
                        /*baseline_keeps_classifier=*/false};
    entry.default_input_size = {256, 128};
    entry.input_mean = {0.485, 0.456, 0.406};  // DINOv3 files expect ImageNet's normalisation
    entry.input_std = {0.229, 0.224, 0.225};
    entry.has_class_token = true;
    entry.imagenet_adapt = detail::eva_dinov3_imagenet_adapt;
    register_backbone(name, std::move(entry));
  }
  return true;
}();

}  // namespace reidnet
