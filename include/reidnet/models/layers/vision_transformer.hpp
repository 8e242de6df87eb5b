#pragma once
/// The building blocks of timm's vision transformer (Dosovitskiy et al. 2021), with timm's
/// state_dict keys and numerics: the patch embedding, multi-head self-attention, layer scale and
/// the pre-norm transformer block.
///
///     reidnet::VitBlock block(reidnet::VitBlockOptions(768, 12).drop_path(0.1));
///     torch::Tensor y = block(tokens);   // (B, N, 768) -> (B, N, 768)
///
/// Keys, in timm's order: PatchEmbed proj; VitAttention qkv, proj (timm's q_norm and k_norm are
/// identities here, without keys); LayerScale gamma; VitBlock norm1, attn, ls1 (with a layer-scale
/// init), norm2, mlp.fc1, mlp.fc2, ls2.

#include <reidnet/models/layers/attention.hpp>
#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/mlp.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>

namespace reidnet {

/// Height and width of a patch grid, in patches.
using PatchGrid = std::array<int64_t, 2>;

/// Patches of (patch_size x patch_size) pixels taken every patch_stride pixels, each projected
/// to embed_dim: one strided Conv2d (key `proj`). A stride below the patch size overlaps the
/// patches (TransReID); the grid then has (H - patch) / stride + 1 rows, and as many columns.
///
///     reidnet::PatchEmbed embed(768, 16, 12);
///     torch::Tensor tokens = embed(images);   // (B, 3, 256, 128) -> (B, 21 * 10, 768)
class PatchEmbedImpl : public torch::nn::Cloneable<PatchEmbedImpl> {
 public:
  PatchEmbedImpl(int64_t embed_dim, int64_t patch_size, std::optional<int64_t> patch_stride = std::nullopt,
                 int64_t in_channels = 3)
      : embed_dim_(embed_dim),
        patch_size_(patch_size),
        patch_stride_(patch_stride.value_or(patch_size)),
        in_channels_(in_channels) {
    reset();
  }

  void reset() override {
    TORCH_CHECK(patch_size_ >= 1, "PatchEmbed: the patch size must be positive, got ", patch_size_);
    TORCH_CHECK(patch_stride_ >= 1 && patch_stride_ <= patch_size_, "PatchEmbed: the patch stride must be in [1, ",
                patch_size_, "] (the patch size), got ", patch_stride_);
    proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels_, embed_dim_, patch_size_)
                                                         .stride(patch_stride_)));
  }

  /// The grid of whole patches in an image of `height` x `width` pixels.
  PatchGrid grid_size(int64_t height, int64_t width) const {
    TORCH_CHECK(height >= patch_size_ && width >= patch_size_, "PatchEmbed: a ", height, "x", width,
                " image holds no whole ", patch_size_, "x", patch_size_, " patch");
    return {(height - patch_size_) / patch_stride_ + 1, (width - patch_size_) / patch_stride_ + 1};
  }

  /// (B, C, H, W) images -> (B, rows * columns, embed_dim) tokens, row by row.
  torch::Tensor forward(const torch::Tensor& images) {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == in_channels_, "PatchEmbed needs (B, ", in_channels_,
                ", H, W) images, got ", images.sizes());
    return proj(images).flatten(2).transpose(1, 2);
  }

  int64_t patch_size() const { return patch_size_; }
  int64_t patch_stride() const { return patch_stride_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::PatchEmbed(" << in_channels_ << " -> " << embed_dim_ << ", patch=" << patch_size_
           << ", stride=" << patch_stride_ << ")";
  }

  torch::nn::Conv2d proj{nullptr};

 private:
  int64_t embed_dim_, patch_size_, patch_stride_, in_channels_;
};
TORCH_MODULE(PatchEmbed);

/// Multi-head self-attention over tokens: a joint qkv Linear (with bias), attention per head,
/// and the output Linear. Keys: qkv, proj.
class VitAttentionImpl : public torch::nn::Cloneable<VitAttentionImpl> {
 public:
  VitAttentionImpl(int64_t dim, int64_t num_heads) : dim_(dim), num_heads_(num_heads) { reset(); }

  void reset() override {
    TORCH_CHECK(num_heads_ >= 1 && dim_ % num_heads_ == 0, "VitAttention: the width (", dim_,
                ") must be a multiple of the head count (", num_heads_, ")");
    qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(dim_, 3 * dim_).bias(true)));
    proj = register_module("proj", torch::nn::Linear(dim_, dim_));
  }

  /// (B, N, dim) -> (B, N, dim).
  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == dim_, "VitAttention(", dim_, ") needs (B, N, ", dim_, ") tokens, got ",
                x.sizes());
    const auto batch = x.size(0), tokens = x.size(1);
    // (B, N, 3 * dim) -> (3, B, heads, N, head_dim): q, k and v per head, as timm splits them.
    const auto qkv_heads = qkv(x).reshape({batch, tokens, 3, num_heads_, dim_ / num_heads_}).permute({2, 0, 3, 1, 4});
    const auto parts = qkv_heads.unbind(0);
    const auto attended = attention(parts[0], parts[1], parts[2]);
    return proj(attended.transpose(1, 2).reshape({batch, tokens, dim_}));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::VitAttention(" << dim_ << ", heads=" << num_heads_ << ")";
  }

  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t dim_, num_heads_;
};
TORCH_MODULE(VitAttention);

/// A learned per-channel factor on the last dimension (CaiT's layer scale). Key: gamma.
class LayerScaleImpl : public torch::nn::Cloneable<LayerScaleImpl> {
 public:
  LayerScaleImpl(int64_t dim, double init_value) : dim_(dim), init_value_(init_value) { reset(); }

  void reset() override { gamma = register_parameter("gamma", torch::full({dim_}, init_value_)); }

  torch::Tensor forward(const torch::Tensor& x) { return x * gamma; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::LayerScale(" << dim_ << ", init=" << init_value_ << ")";
  }

  torch::Tensor gamma;

 private:
  int64_t dim_;
  double init_value_;
};
TORCH_MODULE(LayerScale);

struct VitBlockOptions {
  VitBlockOptions(int64_t dim, int64_t num_heads) : dim_(dim), num_heads_(num_heads) {}

  /// Token width.
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  /// Hidden width of the MLP, in units of dim (truncated to an integer, as timm does).
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// Initial value of the layer scales ls1 and ls2; nullopt leaves them out (no keys), as in
  /// the original ViT.
  TORCH_ARG(std::optional<double>, layer_scale_init) = std::nullopt;
  /// Stochastic depth of both residual branches while training.
  TORCH_ARG(double, drop_path) = 0.0;
  /// Of norm1 and norm2: timm's 1e-6 (torch.nn.LayerNorm's default is 1e-5).
  TORCH_ARG(double, norm_eps) = 1e-6;
};

/// timm's pre-norm transformer block:
/// x + drop_path(ls1(attn(norm1(x)))), then + drop_path(ls2(mlp(norm2(x)))).
class VitBlockImpl : public torch::nn::Cloneable<VitBlockImpl> {
 public:
  explicit VitBlockImpl(const VitBlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto dim = options.dim();
    TORCH_CHECK(options.mlp_ratio() > 0, "VitBlockOptions::mlp_ratio must be positive, got ", options.mlp_ratio());
    const auto norm_options = torch::nn::LayerNormOptions({dim}).eps(options.norm_eps());
    norm1 = register_module("norm1", torch::nn::LayerNorm(norm_options));
    attn = register_module("attn", VitAttention(dim, options.num_heads()));
    ls1 = nullptr;
    ls2 = nullptr;
    if (options.layer_scale_init()) ls1 = register_module("ls1", LayerScale(dim, *options.layer_scale_init()));
    norm2 = register_module("norm2", torch::nn::LayerNorm(norm_options));
    mlp = register_module("mlp", Mlp(dim, static_cast<int64_t>(static_cast<double>(dim) * options.mlp_ratio())));
    if (options.layer_scale_init()) ls2 = register_module("ls2", LayerScale(dim, *options.layer_scale_init()));
  }

  /// (B, N, dim) -> (B, N, dim).
  torch::Tensor forward(const torch::Tensor& x) {
    auto branch = attn(norm1(x));
    if (!ls1.is_empty()) branch = ls1(branch);
    auto y = x + drop_path(branch, options.drop_path(), is_training());
    branch = mlp(norm2(y));
    if (!ls2.is_empty()) branch = ls2(branch);
    return y + drop_path(branch, options.drop_path(), is_training());
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::VitBlock(" << options.dim() << ", heads=" << options.num_heads()
           << ", drop_path=" << options.drop_path() << ")";
  }

  VitBlockOptions options;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  VitAttention attn{nullptr};
  Mlp mlp{nullptr};
  /// With VitBlockOptions::layer_scale_init only.
  LayerScale ls1{nullptr}, ls2{nullptr};
};
TORCH_MODULE(VitBlock);

}  // namespace reidnet
