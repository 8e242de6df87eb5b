#pragma once
/// Swin Transformer's building blocks (Liu et al. 2021), with timm's state_dict keys and
/// numerics: the patch embedding, window attention with a relative position bias, the
/// (shifted-)window block and the patch merging that starts stages 1..3. They work on
/// channels-last maps (B, H, W, C), as timm's do.
///
///     reidnet::SwinTransformerBlock block(
///         reidnet::SwinTransformerBlockOptions(128, 4, {56, 56}).window_size({7, 7}).shifted(true));
///     torch::Tensor y = block(torch::randn({2, 56, 56, 128}));   // same shape
///
/// Keys: SwinPatchEmbed proj, norm; SwinWindowAttention relative_position_bias_table, qkv,
/// proj; SwinTransformerBlock norm1, attn, norm2, mlp.fc1, mlp.fc2; SwinPatchMerging norm,
/// reduction. timm keeps relative_position_index and attn_mask out of its state_dict (they
/// follow from the window); here they are plain members, computed in reset().

#include <reidnet/models/layers/attention.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/mlp.hpp>
#include <reidnet/models/layers/windows.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <ostream>

namespace reidnet {

/// timm's LayerNorm eps for Swin (torch.nn.LayerNorm's default).
constexpr double kSwinLayerNormEps = 1e-5;

namespace detail {
/// A LayerNorm over `channels` with Swin's eps (V1 and V2 alike).
inline torch::nn::LayerNorm swin_layer_norm(int64_t channels) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({channels}).eps(kSwinLayerNormEps));
}
}  // namespace detail

/// The window a Swin block attends in and the cyclic shift it applies on a map of `resolution`
/// tokens (height, width).
struct SwinWindowShift {
  WindowSize window;
  WindowSize shift;
};

/// timm's `_calc_window_shift` (without always_partition): per axis, a map no longer than the
/// target window becomes one whole window and is not shifted; a longer one keeps the target
/// window and shift.
inline SwinWindowShift swin_window_shift(WindowSize resolution, WindowSize target_window, WindowSize target_shift) {
  SwinWindowShift out{};
  for (size_t axis = 0; axis < 2; ++axis) {
    const bool whole = resolution[axis] <= target_window[axis];
    out.window[axis] = whole ? resolution[axis] : target_window[axis];
    out.shift[axis] = whole ? 0 : target_shift[axis];
  }
  return out;
}

/// Patchify by a patch-size conv, then LayerNorm over the channels: images (B, 3, H, W) ->
/// tokens (B, H/p, W/p, C). Keys: proj, norm.
class SwinPatchEmbedImpl : public torch::nn::Cloneable<SwinPatchEmbedImpl> {
 public:
  SwinPatchEmbedImpl(int64_t patch_size, int64_t embed_dim, int64_t in_channels = 3)
      : patch_(patch_size), dim_(embed_dim), in_(in_channels) {
    reset();
  }

  void reset() override {
    proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_, dim_, patch_).stride(patch_)));
    norm = register_module("norm", detail::swin_layer_norm(dim_));
  }

  torch::Tensor forward(const torch::Tensor& images) { return norm(proj(images).permute({0, 2, 3, 1})); }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::SwinPatchEmbed(patch=" << patch_ << ", " << in_ << " -> " << dim_ << ")";
  }

  torch::nn::Conv2d proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};

 private:
  int64_t patch_, dim_, in_;
};
TORCH_MODULE(SwinPatchEmbed);

/// Multi-head self-attention inside each window, with a learned bias per head for every
/// relative offset between two tokens of a window (timm's WindowAttention, qkv with bias).
/// Keys: relative_position_bias_table ((2wh-1)(2ww-1), heads), qkv, proj.
class SwinWindowAttentionImpl : public torch::nn::Cloneable<SwinWindowAttentionImpl> {
 public:
  SwinWindowAttentionImpl(int64_t dim, int64_t num_heads, WindowSize window)
      : dim_(dim), heads_(num_heads), window_(window) {
    reset();
  }

  void reset() override {
    TORCH_CHECK(heads_ >= 1 && dim_ % heads_ == 0, "SwinWindowAttention: dim (", dim_,
                ") must be a multiple of num_heads (", heads_, ")");
    TORCH_CHECK(window_[0] >= 1 && window_[1] >= 1, "SwinWindowAttention: bad window ", window_[0], "x",
                window_[1]);
    relative_position_bias_table = register_parameter(
        "relative_position_bias_table", torch::empty({(2 * window_[0] - 1) * (2 * window_[1] - 1), heads_}));
    truncated_normal_(relative_position_bias_table, 0.02);
    qkv = register_module("qkv", torch::nn::Linear(dim_, 3 * dim_));
    proj = register_module("proj", torch::nn::Linear(dim_, dim_));
    position_index_ = reidnet::relative_position_index(window_);
  }

  /// The bias (heads, N, N) of every token pair of a window, N = wh * ww.
  torch::Tensor relative_position_bias() const {
    const auto area = window_[0] * window_[1];
    const auto index = position_index_.to(relative_position_bias_table.device()).view(-1);
    return relative_position_bias_table.index_select(0, index).view({area, area, heads_}).permute({2, 0, 1});
  }

  /// timm's relative_position_index (N, N) int64, the table row each token pair reads.
  const torch::Tensor& relative_position_index() const { return position_index_; }

  WindowSize window_size() const { return window_; }

  /// `windows` (B*nW, N, C), windows of each image consecutive; `shift_mask` (nW, N, N), the
  /// additive mask of a shifted block, or undefined.
  torch::Tensor forward(const torch::Tensor& windows, const torch::Tensor& shift_mask = {}) {
    const auto area = window_[0] * window_[1];
    TORCH_CHECK(windows.dim() == 3 && windows.size(1) == area && windows.size(2) == dim_,
                "SwinWindowAttention needs (B*nW, ", area, ", ", dim_, ") windows, got ", windows.sizes());
    const auto count = windows.size(0);
    const auto qkv_heads = qkv(windows).reshape({count, area, 3, heads_, -1}).permute({2, 0, 3, 1, 4});
    auto mask = relative_position_bias().unsqueeze(0);  // (1, heads, N, N)
    if (shift_mask.defined()) {
      const auto per_image = shift_mask.size(0);
      TORCH_CHECK(shift_mask.dim() == 3 && count % per_image == 0, "SwinWindowAttention: a shift mask ",
                  shift_mask.sizes(), " does not fit ", count, " windows");
      // Window w of every image meets mask w: (nW, heads, N, N), repeated image by image.
      mask = (mask + shift_mask.to(mask.options()).unsqueeze(1))
                 .unsqueeze(0)
                 .expand({count / per_image, per_image, heads_, area, area})
                 .reshape({count, heads_, area, area});
    }
    const double scale = std::pow(static_cast<double>(dim_ / heads_), -0.5);
    const auto attended = attention(qkv_heads[0], qkv_heads[1], qkv_heads[2], mask, scale);
    return proj(attended.transpose(1, 2).reshape({count, area, -1}));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::SwinWindowAttention(dim=" << dim_ << ", heads=" << heads_ << ", window=" << window_[0]
           << "x" << window_[1] << ")";
  }

  torch::Tensor relative_position_bias_table;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t dim_, heads_;
  WindowSize window_;
  torch::Tensor position_index_;
};
TORCH_MODULE(SwinWindowAttention);

struct SwinTransformerBlockOptions {
  SwinTransformerBlockOptions(int64_t dim, int64_t num_heads, WindowSize input_resolution)
      : dim_(dim), num_heads_(num_heads), input_resolution_(input_resolution) {}

  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  /// The (height, width) of the token map the block is built for; its window and mask follow
  /// from it, and forward takes no other.
  TORCH_ARG(WindowSize, input_resolution);
  /// The target window; clamped to the map as timm does (see swin_window_shift).
  TORCH_ARG(WindowSize, window_size) = WindowSize{7, 7};
  /// Shift the windows by half the target window (timm's odd blocks).
  TORCH_ARG(bool, shifted) = false;
  /// Hidden width of the MLP, in units of dim.
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// Stochastic depth of both residual branches while training.
  TORCH_ARG(double, drop_path) = 0.0;
};

/// x + drop_path(window_attention(norm1(x))), then x + drop_path(mlp(norm2(x))). The
/// attention rolls the map by -shift, pads it to whole windows, attends per window (with the
/// -100 mask between regions the roll brought together), crops and rolls back.
/// Keys: norm1, attn, norm2, mlp.fc1, mlp.fc2.
class SwinTransformerBlockImpl : public torch::nn::Cloneable<SwinTransformerBlockImpl> {
 public:
  explicit SwinTransformerBlockImpl(const SwinTransformerBlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto& resolution = options.input_resolution();
    TORCH_CHECK(resolution[0] >= 1 && resolution[1] >= 1, "SwinTransformerBlockOptions::input_resolution must be ",
                "positive, got ", resolution[0], "x", resolution[1]);
    const auto& target = options.window_size();
    const WindowSize target_shift = options.shifted() ? WindowSize{target[0] / 2, target[1] / 2} : WindowSize{0, 0};
    const auto window_shift = swin_window_shift(resolution, target, target_shift);
    window_ = window_shift.window;
    shift_ = window_shift.shift;
    const auto dim = options.dim();
    norm1 = register_module("norm1", detail::swin_layer_norm(dim));
    attn = register_module("attn", SwinWindowAttention(dim, options.num_heads(), window_));
    norm2 = register_module("norm2", detail::swin_layer_norm(dim));
    mlp = register_module("mlp", Mlp(dim, static_cast<int64_t>(static_cast<double>(dim) * options.mlp_ratio())));
    // The mask is built on the map padded to whole windows, as timm builds it.
    const auto padded = [](int64_t size, int64_t window) { return (size + window - 1) / window * window; };
    const auto mask = shifted_window_mask(padded(resolution[0], window_[0]), padded(resolution[1], window_[1]),
                                          window_, shift_);
    attn_mask_ = mask ? *mask : torch::Tensor();
  }

  /// The window and shift in use, after clamping to the map.
  WindowSize window_size() const { return window_; }
  WindowSize shift_size() const { return shift_; }

  /// timm's attn_mask (nW, N, N), or undefined when the block does not shift.
  const torch::Tensor& attn_mask() const { return attn_mask_; }

  /// `x` (B, H, W, C) at the input resolution -> the same shape.
  torch::Tensor forward(const torch::Tensor& x) {
    const auto& resolution = options.input_resolution();
    TORCH_CHECK(x.dim() == 4 && x.size(1) == resolution[0] && x.size(2) == resolution[1] &&
                    x.size(3) == options.dim(),
                "SwinTransformerBlock was built for (B, ", resolution[0], ", ", resolution[1], ", ", options.dim(),
                ") maps, got ", x.sizes());
    const double rate = options.drop_path();
    auto y = x + drop_path(window_attention(norm1(x)), rate, is_training());
    return y + drop_path(mlp(norm2(y)), rate, is_training());
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::SwinTransformerBlock(dim=" << options.dim() << ", heads=" << options.num_heads()
           << ", window=" << window_[0] << "x" << window_[1] << ", shift=" << shift_[0] << "x" << shift_[1]
           << ", drop_path=" << options.drop_path() << ")";
  }

  SwinTransformerBlockOptions options;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  SwinWindowAttention attn{nullptr};
  Mlp mlp{nullptr};

 private:
  torch::Tensor window_attention(const torch::Tensor& x) {
    const auto height = x.size(1), width = x.size(2), channels = x.size(3);
    const bool shifted = shift_[0] != 0 || shift_[1] != 0;
    auto map = shifted ? torch::roll(x, {-shift_[0], -shift_[1]}, {1, 2}) : x;
    const auto pad_h = (window_[0] - height % window_[0]) % window_[0];
    const auto pad_w = (window_[1] - width % window_[1]) % window_[1];
    if (pad_h > 0 || pad_w > 0) map = torch::constant_pad_nd(map, {0, 0, 0, pad_w, 0, pad_h});
    const auto padded_h = height + pad_h, padded_w = width + pad_w;
    auto windows = window_partition(map, window_).view({-1, window_[0] * window_[1], channels});
    windows = attn(windows, attn_mask_.defined() ? attn_mask_.to(x.device(), x.scalar_type()) : torch::Tensor());
    map = window_reverse(windows.view({-1, window_[0], window_[1], channels}), window_, padded_h, padded_w);
    if (pad_h > 0 || pad_w > 0) map = map.slice(1, 0, height).slice(2, 0, width).contiguous();
    return shifted ? torch::roll(map, {shift_[0], shift_[1]}, {1, 2}) : map;
  }

  WindowSize window_{}, shift_{};
  torch::Tensor attn_mask_;
};
TORCH_MODULE(SwinTransformerBlock);

/// Halves the map by concatenating each 2x2 patch's channels (timm's order: (0,0), (1,0),
/// (0,1), (1,1) as (row, col) offsets), then LayerNorm and a bias-free Linear 4C -> out.
/// Pads an odd side by one. Keys: norm, reduction.
class SwinPatchMergingImpl : public torch::nn::Cloneable<SwinPatchMergingImpl> {
 public:
  explicit SwinPatchMergingImpl(int64_t dim, std::optional<int64_t> out_dim = std::nullopt)
      : dim_(dim), out_(out_dim.value_or(2 * dim)) {
    reset();
  }

  void reset() override {
    norm = register_module("norm", detail::swin_layer_norm(4 * dim_));
    reduction = register_module("reduction", torch::nn::Linear(torch::nn::LinearOptions(4 * dim_, out_).bias(false)));
  }

  /// (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out).
  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 4 && x.size(3) == dim_, "SwinPatchMerging(", dim_, ") needs (B, H, W, ", dim_,
                ") maps, got ", x.sizes());
    auto map = x;
    if (x.size(1) % 2 != 0 || x.size(2) % 2 != 0) {
      map = torch::constant_pad_nd(x, {0, 0, 0, x.size(2) % 2, 0, x.size(1) % 2});
    }
    const auto b = map.size(0), h = map.size(1), w = map.size(2);
    map = map.reshape({b, h / 2, 2, w / 2, 2, dim_}).permute({0, 1, 3, 4, 2, 5}).flatten(3);
    return reduction(norm(map));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::SwinPatchMerging(" << dim_ << " -> " << out_ << ")";
  }

  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear reduction{nullptr};

 private:
  int64_t dim_, out_;
};
TORCH_MODULE(SwinPatchMerging);

}  // namespace reidnet
