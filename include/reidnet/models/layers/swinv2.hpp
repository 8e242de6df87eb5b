#pragma once
/// Swin Transformer V2's building blocks (Liu et al. 2022), with the state_dict keys, order,
/// shapes and numerics of timm's swin_transformer_v2: window attention with scaled cosine
/// similarity and a continuous position bias, the post-norm block, V2's patch merging (reduce,
/// then normalise) and the patch embedding.
///
///     reidnet::SwinV2Block block(reidnet::SwinV2BlockOptions(128, 4, {64, 32}).shifted(true));
///     torch::Tensor y = block(torch::randn({2, 64, 32, 128}));   // (B, H, W, C), same shape
///
/// Block keys, in timm's order: attn.logit_scale, attn.q_bias, attn.v_bias, attn.cpb_mlp.0
/// (weight, bias), attn.cpb_mlp.2.weight, attn.qkv.weight, attn.proj, norm1, mlp.fc1, mlp.fc2,
/// norm2. The window tables and the shift mask are computed, not stored: timm registers them
/// with persistent=False.

#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/mlp.hpp>
#include <reidnet/models/layers/swin.hpp>
#include <reidnet/models/layers/windows.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <ostream>

namespace reidnet {

/// (1, 2wh-1, 2ww-1, 2) float32: every relative offset (dy, dx) of a window, divided by the
/// pretraining window's side - 1 (the window's own when `pretrained_window` is 0), times 8,
/// then sign(x) * log2(|x| + 1) / 3, the input of the continuous position bias MLP.
inline torch::Tensor swinv2_relative_coords_table(WindowSize window, WindowSize pretrained_window = {0, 0}) {
  const WindowSize divisor_side = pretrained_window[0] > 0 ? pretrained_window : window;
  TORCH_CHECK(divisor_side[0] > 1 && divisor_side[1] > 1, "SwinV2 window ", window[0], "x", window[1],
              " (pretrained ", pretrained_window[0], "x", pretrained_window[1],
              "): the coordinates table divides by the window's side - 1, which must not be 0; a stage ",
              "map 1 token across gives such a window, so use a larger input");
  const auto dy = torch::arange(-(window[0] - 1), window[0], torch::kFloat32);
  const auto dx = torch::arange(-(window[1] - 1), window[1], torch::kFloat32);
  auto table = torch::stack({dy.view({-1, 1}).expand({dy.size(0), dx.size(0)}),
                             dx.view({1, -1}).expand({dy.size(0), dx.size(0)})},
                            -1)
                   .unsqueeze(0)
                   .contiguous();
  // The same float32 steps as timm: divide, scale to [-8, 8], log-space.
  table.select(3, 0).div_(static_cast<double>(divisor_side[0] - 1));
  table.select(3, 1).div_(static_cast<double>(divisor_side[1] - 1));
  table.mul_(8);
  return torch::sign(table) * torch::log2(torch::abs(table) + 1.0) / 3.0;
}

/// Multi-head self-attention inside a window, V2's way: cosine similarity of q and k times a
/// learned per-head temperature (logit_scale, exp'd after clamping at log(100)), plus
/// 16 * sigmoid of a bias that an MLP (cpb_mlp) computes from the log-spaced relative
/// coordinates. qkv has no bias of its own: q_bias and v_bias are separate parameters and k's
/// bias is zero. Keys: logit_scale, q_bias, v_bias, cpb_mlp.0, cpb_mlp.2, qkv, proj.
class SwinV2WindowAttentionImpl : public torch::nn::Cloneable<SwinV2WindowAttentionImpl> {
 public:
  SwinV2WindowAttentionImpl(int64_t dim, int64_t num_heads, WindowSize window,
                            WindowSize pretrained_window = {0, 0})
      : dim_(dim), heads_(num_heads), window_(window), pretrained_window_(pretrained_window) {
    reset();
  }

  void reset() override {
    TORCH_CHECK(dim_ > 0 && heads_ > 0 && dim_ % heads_ == 0, "SwinV2WindowAttention: dim (", dim_,
                ") must be a positive multiple of num_heads (", heads_, ")");
    TORCH_CHECK(window_[0] > 0 && window_[1] > 0, "SwinV2WindowAttention: window ", window_[0], "x", window_[1],
                " must be positive");
    logit_scale = register_parameter("logit_scale", torch::full({heads_, 1, 1}, std::log(10.0)));
    cpb_mlp = register_module(
        "cpb_mlp", torch::nn::Sequential(torch::nn::Linear(2, 512), torch::nn::ReLU(torch::nn::ReLUOptions(true)),
                                         torch::nn::Linear(torch::nn::LinearOptions(512, heads_).bias(false))));
    qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(dim_, 3 * dim_).bias(false)));
    q_bias = register_parameter("q_bias", torch::zeros({dim_}));
    v_bias = register_parameter("v_bias", torch::zeros({dim_}));
    proj = register_module("proj", torch::nn::Linear(dim_, dim_));
    coords_table_ = swinv2_relative_coords_table(window_, pretrained_window_);
    position_index_ = reidnet::relative_position_index(window_);
  }

  /// `windows` (B * nW, wh * ww, C); `mask` (nW, N, N), added to the scores of each image's
  /// windows (shifted windows), or undefined.
  torch::Tensor forward(const torch::Tensor& windows, const torch::Tensor& mask = {}) {
    const int64_t tokens = window_[0] * window_[1];
    TORCH_CHECK(windows.dim() == 3 && windows.size(1) == tokens && windows.size(2) == dim_,
                "SwinV2WindowAttention needs (B*nW, ", tokens, ", ", dim_, ") windows, got ", windows.sizes());
    const int64_t count = windows.size(0);
    namespace F = torch::nn::functional;
    const auto bias = torch::cat({q_bias, torch::zeros_like(v_bias), v_bias});
    const auto qkv_heads =
        F::linear(windows, qkv->weight, bias).reshape({count, tokens, 3, heads_, -1}).permute({2, 0, 3, 1, 4});
    const auto q = qkv_heads[0], k = qkv_heads[1], v = qkv_heads[2];
    const auto unit = F::NormalizeFuncOptions().dim(-1);
    // timm's order: cosine similarity, times the temperature, plus bias and mask, softmax.
    auto scores = torch::matmul(F::normalize(q, unit), F::normalize(k, unit).transpose(-2, -1));
    scores = scores * torch::clamp_max(logit_scale, std::log(100.0)).exp();
    scores = scores + position_bias(windows).unsqueeze(0);
    if (mask.defined()) {
      const int64_t windows_per_image = mask.size(0);
      TORCH_CHECK(count % windows_per_image == 0, "SwinV2WindowAttention: ", count,
                  " windows are not whole images of ", windows_per_image, " windows (the mask's)");
      scores = (scores.view({-1, windows_per_image, heads_, tokens, tokens}) +
                mask.to(scores.options()).unsqueeze(1).unsqueeze(0))
                   .view({-1, heads_, tokens, tokens});
    }
    const auto mixed = torch::matmul(scores.softmax(-1), v).transpose(1, 2).reshape({count, tokens, dim_});
    return proj(mixed);
  }

  /// (heads, N, N): 16 * sigmoid(cpb_mlp(table)) read at each token pair's relative offset.
  torch::Tensor position_bias(const torch::Tensor& like) {
    const int64_t tokens = window_[0] * window_[1];
    const auto table = cpb_mlp->forward(coords_table_.to(like.options())).view({-1, heads_});
    const auto pairs = table.index({position_index_.to(like.device()).view(-1)}).view({tokens, tokens, -1});
    return 16 * torch::sigmoid(pairs.permute({2, 0, 1}).contiguous());
  }

  /// The coordinates table timm keeps as the non-persistent buffer relative_coords_table.
  const torch::Tensor& relative_coords_table() const { return coords_table_; }
  /// timm's non-persistent buffer relative_position_index, (N, N) int64.
  const torch::Tensor& relative_position_index() const { return position_index_; }
  WindowSize window_size() const { return window_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::SwinV2WindowAttention(dim=" << dim_ << ", heads=" << heads_ << ", window=" << window_[0]
           << "x" << window_[1] << ")";
  }

  torch::Tensor logit_scale, q_bias, v_bias;
  torch::nn::Sequential cpb_mlp{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t dim_, heads_;
  WindowSize window_, pretrained_window_;
  torch::Tensor coords_table_, position_index_;
};
TORCH_MODULE(SwinV2WindowAttention);

struct SwinV2BlockOptions {
  SwinV2BlockOptions(int64_t dim, int64_t num_heads, WindowSize input_resolution)
      : dim_(dim), num_heads_(num_heads), input_resolution_(input_resolution) {}

  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  /// Height and width of the (B, H, W, C) map the block is built for, in tokens.
  TORCH_ARG(WindowSize, input_resolution);
  /// Attention window; clamped to the map where the map is smaller (timm's _calc_window_shift).
  TORCH_ARG(WindowSize, window_size) = WindowSize{8, 8};
  /// Whether windows are shifted by half a window (odd blocks of a stage); not along an axis
  /// that one window spans.
  TORCH_ARG(bool, shifted) = false;
  /// Hidden width of the MLP, in units of dim (timm: int(dim * mlp_ratio)).
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// Stochastic depth of both residual branches while training.
  TORCH_ARG(double, drop_path) = 0.0;
  /// The window the weights were pretrained with, for the coordinates table; 0 = this window.
  TORCH_ARG(WindowSize, pretrained_window_size) = WindowSize{0, 0};
};

/// V2's post-norm block on a (B, H, W, C) map: x + drop_path(norm1(attn(x))), then
/// x + drop_path(norm2(mlp(x))), the attention in (shifted) windows. Keys: attn, norm1, mlp,
/// norm2.
class SwinV2BlockImpl : public torch::nn::Cloneable<SwinV2BlockImpl> {
 public:
  explicit SwinV2BlockImpl(const SwinV2BlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto resolution = options.input_resolution();
    const auto target = options.window_size();
    TORCH_CHECK(resolution[0] > 0 && resolution[1] > 0 && target[0] > 0 && target[1] > 0,
                "SwinV2BlockOptions: input_resolution and window_size must be positive");
    TORCH_CHECK(options.drop_path() >= 0 && options.drop_path() < 1,
                "SwinV2BlockOptions::drop_path must be in [0, 1), got ", options.drop_path());
    for (size_t axis = 0; axis < 2; ++axis) {
      // A window as large as the map where the map is smaller; no shift along an axis that one
      // window spans.
      window_[axis] = std::min(resolution[axis], target[axis]);
      shift_[axis] = (options.shifted() && resolution[axis] > window_[axis]) ? target[axis] / 2 : 0;
    }
    TORCH_CHECK(resolution[0] % window_[0] == 0 && resolution[1] % window_[1] == 0, "SwinV2Block: the ",
                resolution[0], "x", resolution[1], " map is not a whole number of ", window_[0], "x", window_[1],
                " windows (timm cannot build its shift mask either); choose an input size whose stage maps are");
    attn = register_module(
        "attn", SwinV2WindowAttention(options.dim(), options.num_heads(), window_, options.pretrained_window_size()));
    norm1 = register_module("norm1", detail::swin_layer_norm(options.dim()));
    mlp = register_module("mlp", Mlp(options.dim(), static_cast<int64_t>(options.dim() * options.mlp_ratio())));
    norm2 = register_module("norm2", detail::swin_layer_norm(options.dim()));
    auto mask = shifted_window_mask(resolution[0], resolution[1], window_, shift_);
    attn_mask_ = mask ? *mask : torch::Tensor();
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto resolution = options.input_resolution();
    TORCH_CHECK(x.dim() == 4 && x.size(1) == resolution[0] && x.size(2) == resolution[1] &&
                    x.size(3) == options.dim(),
                "SwinV2Block was built for a (B, ", resolution[0], ", ", resolution[1], ", ", options.dim(),
                ") map, got ", x.sizes());
    const auto batch = x.size(0), channels = x.size(3);
    const bool shifted = shift_[0] != 0 || shift_[1] != 0;
    auto rolled = shifted ? torch::roll(x, {-shift_[0], -shift_[1]}, {1, 2}) : x;
    auto windows = window_partition(rolled, window_).view({-1, window_[0] * window_[1], channels});
    windows = attn(windows, attn_mask_.defined() ? attn_mask_.to(x.device()) : attn_mask_);
    auto mixed = window_reverse(windows.view({-1, window_[0], window_[1], channels}), window_, resolution[0],
                                resolution[1]);
    if (shifted) mixed = torch::roll(mixed, {shift_[0], shift_[1]}, {1, 2});
    auto y = x + drop_path(norm1(mixed), options.drop_path(), is_training());
    y = y.reshape({batch, -1, channels});
    y = y + drop_path(norm2(mlp(y)), options.drop_path(), is_training());
    return y.reshape({batch, resolution[0], resolution[1], channels});
  }

  /// The window after clamping to the map, and the shift along each axis.
  WindowSize window_size() const { return window_; }
  WindowSize shift_size() const { return shift_; }
  /// timm's non-persistent buffer attn_mask (nW, N, N), undefined without a shift.
  const torch::Tensor& attn_mask() const { return attn_mask_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::SwinV2Block(dim=" << options.dim() << ", heads=" << options.num_heads()
           << ", window=" << window_[0] << "x" << window_[1] << ", shift=" << shift_[0] << "x" << shift_[1] << ")";
  }

  SwinV2BlockOptions options;
  SwinV2WindowAttention attn{nullptr};
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Mlp mlp{nullptr};

 private:
  WindowSize window_{}, shift_{};
  torch::Tensor attn_mask_;
};
TORCH_MODULE(SwinV2Block);

/// V2's patch merging on a (B, H, W, C) map: each 2x2 neighbourhood concatenated (top-left,
/// bottom-left, top-right, bottom-right, as timm), reduced to out_dim, then normalised (V1
/// normalises first). Keys: reduction (no bias), norm.
class SwinV2PatchMergingImpl : public torch::nn::Cloneable<SwinV2PatchMergingImpl> {
 public:
  SwinV2PatchMergingImpl(int64_t dim, std::optional<int64_t> out_dim = std::nullopt)
      : dim_(dim), out_(out_dim.value_or(2 * dim)) {
    reset();
  }

  void reset() override {
    reduction = register_module("reduction", torch::nn::Linear(torch::nn::LinearOptions(4 * dim_, out_).bias(false)));
    norm = register_module("norm", detail::swin_layer_norm(out_));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 4 && x.size(1) % 2 == 0 && x.size(2) % 2 == 0 && x.size(3) == dim_,
                "SwinV2PatchMerging needs a (B, H, W, ", dim_, ") map of even H and W, got ", x.sizes());
    const auto b = x.size(0), h = x.size(1), w = x.size(2);
    const auto merged = x.reshape({b, h / 2, 2, w / 2, 2, dim_}).permute({0, 1, 3, 4, 2, 5}).flatten(3);
    return norm(reduction(merged));
  }

  torch::nn::Linear reduction{nullptr};
  torch::nn::LayerNorm norm{nullptr};

 private:
  int64_t dim_, out_;
};
TORCH_MODULE(SwinV2PatchMerging);

}  // namespace reidnet
