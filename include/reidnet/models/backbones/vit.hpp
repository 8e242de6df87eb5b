#pragma once
/// timm's vision transformer (ViT, Dosovitskiy et al. 2021) as a reidnet backbone, with the
/// state_dict keys, order and shapes of `timm.create_model("vit_base_patch16_224")` (registered
/// as vit_tiny_patch16, vit_small_patch16 and vit_base_patch16), built for ReID's 256x128 input
/// and optionally with TransReID's overlapping patches (patch stride 12 of 16).
///
///     auto net = reidnet::VisionTransformer(reidnet::vit_variant_options("vit_base_patch16").patch_stride(12));
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 256, 128}));
///     // map: (2, 768, 21, 10), the patch tokens after the final norm
///
/// Keys: cls_token (1, 1, D); pos_embed (1, 1 + rows * columns, D), the class token's position
/// first; patch_embed.proj; blocks.N (layers/vision_transformer.hpp); norm; with
/// keep_classifier, timm's ImageNet head `head` (Linear(D, 1000) on the class token).
///
/// The feature is the patch-token map after `norm`, which average pooling turns into the mean
/// patch token. (timm's own mean-pooling models move that norm after the pool, as `fc_norm`;
/// keeping it as `norm` keeps the published files' keys.) With class_token_feature it is the
/// class token after `norm`, as (B, D, 1, 1): TransReID's global feature.

#include <reidnet/io/state_dict.hpp>
#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/vision_transformer.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace reidnet {

struct VisionTransformerOptions {
  /// Token width D: vit_base 768.
  TORCH_ARG(int64_t, embed_dim) = 768;
  /// Transformer blocks.
  TORCH_ARG(int64_t, depth) = 12;
  TORCH_ARG(int64_t, num_heads) = 12;
  /// Hidden width of each block's MLP, in units of D.
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// Side of the square patches, in pixels.
  TORCH_ARG(int64_t, patch_size) = 16;
  /// Pixels between patches; unset = patch_size (no overlap). TransReID overlaps 16-pixel
  /// patches at stride 12.
  TORCH_ARG(std::optional<int64_t>, patch_stride) = std::nullopt;
  /// The input (height, width) the position table is built for; other sizes are refused.
  TORCH_ARG(ImageSize, input_size) = ImageSize{256, 128};
  /// The feature is the class token (B, D, 1, 1) rather than the patch-token map.
  TORCH_ARG(bool, class_token_feature) = false;
  /// Stochastic depth of the last block; earlier blocks rise linearly from 0 (timm's schedule).
  TORCH_ARG(double, drop_path_rate) = 0.0;
  /// Initial layer-scale value of every block (ls1, ls2); nullopt = none, as in ViT.
  TORCH_ARG(std::optional<double>, layer_scale_init) = std::nullopt;
  /// timm's ImageNet head (`head`, Linear(D, class_num) on the class token); 0 = none.
  TORCH_ARG(int64_t, class_num) = 0;
};

/// A position table (1, prefix + N, D) over a square grid of N positions, resampled to a
/// (rows, columns) grid: the prefix (class) tokens' positions are kept, the grid is resized
/// with antialiased bicubic interpolation (align_corners false) in float32. This is timm's
/// `resample_abs_pos_embed(posemb, new_size, num_prefix_tokens=...)` with its defaults,
/// including returning the table unchanged when it already has the size of a square new grid.
///
///     auto table = reidnet::resample_position_embedding(file_table, {21, 10});  // 197 -> 211 rows
inline torch::Tensor resample_position_embedding(const torch::Tensor& posemb, PatchGrid new_grid,
                                                 int64_t num_prefix_tokens = 1) {
  TORCH_CHECK(posemb.dim() == 3 && posemb.size(0) == 1, "resample_position_embedding: a (1, tokens, D) table is "
              "needed, got ", posemb.sizes());
  TORCH_CHECK(new_grid[0] >= 1 && new_grid[1] >= 1 && num_prefix_tokens >= 0 && posemb.size(1) > num_prefix_tokens,
              "resample_position_embedding: cannot resample ", posemb.sizes(), " with ", num_prefix_tokens,
              " prefix tokens to a ", new_grid[0], "x", new_grid[1], " grid");
  const auto positions = posemb.size(1);
  if (positions == new_grid[0] * new_grid[1] + num_prefix_tokens && new_grid[0] == new_grid[1]) return posemb;
  const auto old_positions = positions - num_prefix_tokens;
  const auto side = static_cast<int64_t>(std::sqrt(static_cast<double>(old_positions)));
  TORCH_CHECK(side * side == old_positions, "resample_position_embedding: the table's ", old_positions,
              " grid positions are not a square grid");
  const auto dim = posemb.size(2);
  // The interpolation runs in float32 whatever the table's dtype (timm's choice).
  const auto grid = posemb.slice(1, num_prefix_tokens).to(torch::kFloat).reshape({1, side, side, dim})
                        .permute({0, 3, 1, 2});
  namespace F = torch::nn::functional;
  const auto resized = F::interpolate(grid, F::InterpolateFuncOptions()
                                                .size(std::vector<int64_t>{new_grid[0], new_grid[1]})
                                                .mode(torch::kBicubic)
                                                .align_corners(false)
                                                .antialias(true));
  const auto table = resized.permute({0, 2, 3, 1}).reshape({1, -1, dim}).to(posemb.scalar_type());
  if (num_prefix_tokens == 0) return table;
  return torch::cat({posemb.slice(1, 0, num_prefix_tokens), table}, 1);
}

/// timm's VisionTransformer with a class token, learned absolute positions (the class token's
/// included) and pre-norm blocks, for one input size.
class VisionTransformerImpl : public torch::nn::Cloneable<VisionTransformerImpl>, public Backbone {
 public:
  explicit VisionTransformerImpl(const VisionTransformerOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    const auto dim = options.embed_dim();
    const auto stride = options.patch_stride().value_or(options.patch_size());
    const auto& size = options.input_size();
    TORCH_CHECK(dim >= 1 && options.depth() >= 1, "VisionTransformerOptions: embed_dim (", dim, ") and depth (",
                options.depth(), ") must be positive");
    TORCH_CHECK(options.num_heads() >= 1 && dim % options.num_heads() == 0, "VisionTransformerOptions: embed_dim (",
                dim, ") must be a multiple of num_heads (", options.num_heads(), ")");
    TORCH_CHECK(options.patch_size() >= 1, "VisionTransformerOptions::patch_size must be positive, got ",
                options.patch_size());
    TORCH_CHECK(stride >= 1 && stride <= options.patch_size(), "VisionTransformerOptions::patch_stride must be in [1, ",
                options.patch_size(), "] (the patch size), got ", stride);
    TORCH_CHECK(size[0] >= options.patch_size() && size[1] >= options.patch_size(),
                "VisionTransformerOptions::input_size ", size[0], "x", size[1], " holds no whole ",
                options.patch_size(), "x", options.patch_size(), " patch");
    TORCH_CHECK(options.drop_path_rate() >= 0 && options.drop_path_rate() < 1,
                "VisionTransformerOptions::drop_path_rate must be in [0, 1), got ", options.drop_path_rate());

    patch_embed = register_module("patch_embed", PatchEmbed(dim, options.patch_size(), stride));
    grid_ = patch_embed->grid_size(size[0], size[1]);
    cls_token = register_parameter("cls_token", torch::empty({1, 1, dim}));
    pos_embed = register_parameter("pos_embed", torch::empty({1, 1 + grid_[0] * grid_[1], dim}));
    blocks = register_module("blocks", torch::nn::Sequential());
    for (const double rate : linear_drop_path_rates(options.depth(), options.drop_path_rate())) {
      blocks->push_back(VitBlock(VitBlockOptions(dim, options.num_heads())
                                  .mlp_ratio(options.mlp_ratio())
                                  .layer_scale_init(options.layer_scale_init())
                                  .drop_path(rate)));
    }
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
    head = nullptr;
    if (options.class_num() > 0) head = register_module("head", torch::nn::Linear(dim, options.class_num()));

    // timm's init: the tables, then every Linear truncated-normal; the patch convolution keeps
    // its default (kaiming-uniform) init, as in timm.
    torch::NoGradGuard no_grad;
    truncated_normal_(pos_embed, 0.02);
    cls_token.normal_(0.0, 1e-6);
    apply_init(*blocks, TruncatedNormalInit{0.02});
    if (!head.is_empty()) apply_init(*head, TruncatedNormalInit{0.02});
  }

  /// Rows and columns of the patch grid.
  PatchGrid grid_size() const { return grid_; }

  int64_t num_features() const override { return options.embed_dim(); }

  std::vector<int64_t> feature_strides() const override {
    return {options.patch_stride().value_or(options.patch_size())};
  }

  /// All tokens after the final norm, (B, 1 + rows * columns, D), the class token first (timm's
  /// forward_features).
  torch::Tensor forward_tokens(const torch::Tensor& images) {
    const auto& size = options.input_size();
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "VisionTransformer needs (B, 3, H, W) images, got ",
                images.sizes());
    TORCH_CHECK(images.size(2) == size[0] && images.size(3) == size[1], "VisionTransformer was built for ", size[0],
                "x", size[1], " input (its position table), got ", images.size(2), "x", images.size(3));
    const auto patches = patch_embed(images);
    auto x = torch::cat({cls_token.expand({images.size(0), -1, -1}), patches}, 1) + pos_embed;
    return norm(blocks->forward(x));
  }

  /// The patch tokens as a map (B, D, rows, columns), or with class_token_feature the class
  /// token as (B, D, 1, 1); both after the final norm.
  torch::Tensor forward_features(const torch::Tensor& images) override {
    const auto tokens = forward_tokens(images);
    const auto batch = tokens.size(0), dim = tokens.size(2);
    if (options.class_token_feature()) return tokens.select(1, 0).reshape({batch, dim, 1, 1});
    return tokens.slice(1, 1).transpose(1, 2).reshape({batch, dim, grid_[0], grid_[1]});
  }

  /// timm's ImageNet logits (the class token after norm, then head) with the head, else the
  /// feature map.
  torch::Tensor forward(const torch::Tensor& images) {
    if (head.is_empty()) return forward_features(images);
    return head(forward_tokens(images).select(1, 0));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::VisionTransformer(embed_dim=" << options.embed_dim() << ", depth=" << options.depth()
           << ", heads=" << options.num_heads() << ", patch=" << options.patch_size()
           << ", stride=" << options.patch_stride().value_or(options.patch_size()) << ", grid=" << grid_[0] << "x"
           << grid_[1] << (options.class_token_feature() ? ", class token feature" : "")
           << ", drop_path_rate=" << options.drop_path_rate() << ")";
  }

  VisionTransformerOptions options;
  torch::Tensor cls_token, pos_embed;
  PatchEmbed patch_embed{nullptr};
  torch::nn::Sequential blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  /// timm's ImageNet head, with class_num > 0.
  torch::nn::Linear head{nullptr};

 private:
  PatchGrid grid_{};
};
TORCH_MODULE(VisionTransformer);

/// The registered ViT names (timm's vit_*_patch16_224 architectures), smallest first.
inline const std::vector<std::string>& vit_variant_names() {
  static const std::vector<std::string> names{"vit_tiny_patch16", "vit_small_patch16", "vit_base_patch16"};
  return names;
}

/// The options of `name` (one of vit_variant_names()): timm's architecture, at the default
/// 256x128 input, patch stride 16, no drop path and no head.
inline VisionTransformerOptions vit_variant_options(const std::string& name) {
  // embed_dim, depth, num_heads
  static const std::map<std::string, std::tuple<int64_t, int64_t, int64_t>> variants{
      {"vit_tiny_patch16", {192, 12, 3}}, {"vit_small_patch16", {384, 12, 6}}, {"vit_base_patch16", {768, 12, 12}}};
  const auto found = variants.find(name);
  if (found == variants.end()) {
    std::string known;
    for (const auto& item : vit_variant_names()) known += (known.empty() ? "" : ", ") + item;
    TORCH_CHECK(false, "no ViT variant named \"", name, "\"; known: ", known);
  }
  const auto [dim, depth, heads] = found->second;
  return VisionTransformerOptions().embed_dim(dim).depth(depth).num_heads(heads).patch_size(16);
}

namespace detail {
inline std::string vit_shape_text(torch::IntArrayRef sizes) {
  std::ostringstream text;
  text << sizes;
  return text.str();
}

// A published file (224x224: a 14x14 grid) fits any input size once its position table is
// resampled to the module's grid, as timm's checkpoint filter does; a patch kernel of another
// size does not (timm would resample it, which changes what the weights compute).
inline StateDict vit_imagenet_adapt(const StateDict& entries, const torch::nn::Module& backbone) {
  const auto* vit = dynamic_cast<const VisionTransformerImpl*>(&backbone);
  if (vit == nullptr) throw std::runtime_error("vit_imagenet_adapt: the backbone is not a VisionTransformer");
  StateDict out;
  for (const auto& item : entries) {
    const auto& key = item.key();
    auto value = item.value();
    if (key == "patch_embed.proj.weight") {
      const auto expected = vit->patch_embed->proj->weight.sizes();
      if (value.dim() != 4 || value.size(2) != expected[2] || value.size(3) != expected[3]) {
        throw std::runtime_error("patch_embed.proj.weight: the file's " + vit_shape_text(value.sizes()) +
                                 " is not the module's kernel " + vit_shape_text(expected) +
                                 "; a file of another patch size does not fit");
      }
    } else if (key == "pos_embed" && value.sizes() != vit->pos_embed.sizes()) {
      const auto expected = vit->pos_embed.sizes();
      if (value.dim() != 3 || value.size(0) != 1 || value.size(2) != expected[2]) {
        throw std::runtime_error("pos_embed: the file's " + vit_shape_text(value.sizes()) +
                                 " cannot be resampled to the module's " + vit_shape_text(expected));
      }
      const auto old_positions = value.size(1) - 1;
      const auto side = static_cast<int64_t>(std::sqrt(static_cast<double>(old_positions)));
      if (old_positions < 1 || side * side != old_positions) {
        throw std::runtime_error("pos_embed: the file's " + vit_shape_text(value.sizes()) +
                                 " is not a class token and a square grid; the module needs " +
                                 vit_shape_text(expected));
      }
      value = resample_position_embedding(value, vit->grid_size(), 1);
    }
    out.insert(key, value);
  }
  return out;
}
}  // namespace detail

namespace detail {
/// The backbone `name` of `options` as BackboneArgs build it.
inline AnyBackbone create_vit_backbone(VisionTransformerOptions options, const std::string& name,
                                       const BackboneArgs& args) {
  TORCH_CHECK(args.last_stride() == 2, "BackboneArgs::last_stride (", args.last_stride(), ") does not apply to ", name,
              ": a ViT has one patch stride; set patch_stride");
  TORCH_CHECK(args.input_size(), "BackboneArgs::input_size is needed by ", name);
  return AnyBackbone(VisionTransformer(options.input_size(*args.input_size())
                                           .patch_stride(args.patch_stride())
                                           .class_token_feature(args.class_token_feature())
                                           .drop_path_rate(args.drop_path_rate().value_or(0.2))
                                           .class_num(args.keep_classifier() ? 1000 : 0))
                         .ptr());
}
}  // namespace detail

inline const bool kVisionTransformerRegistered = [] {
  for (const auto& name : vit_variant_names()) {
    BackboneEntry entry{[name](const BackboneArgs& args) {
      return detail::create_vit_backbone(vit_variant_options(name), name, args);
    }};
    entry.description = "timm's " + name + "_224 at 256x128 (a 224x224 file's positions resampled), patch stride from "
                        "patch_stride (TransReID: 12); the patch tokens after the final norm, or the class token; "
                        "drop path 0.2 (the baseline's; TransReID uses 0.1)";
    entry.baseline_keeps_classifier = false;
    entry.default_input_size = {256, 128};
    entry.input_mean = {0.5, 0.5, 0.5};  // timm's ViT files are trained on [-1, 1] input
    entry.input_std = {0.5, 0.5, 0.5};
    entry.has_class_token = true;
    entry.imagenet_adapt = detail::vit_imagenet_adapt;
    register_backbone(name, entry);
  }
  return true;
}();

}  // namespace reidnet
