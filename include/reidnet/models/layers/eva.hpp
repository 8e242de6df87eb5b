#pragma once
/// The blocks of timm's Eva vision transformer as its DINOv3 models configure them: DINOv3's
/// axial rotary position embedding (rotate-half layout), the attention that rotates the patch
/// tokens' queries and keys (not the class and register tokens'), and the pre-norm block with
/// layer scales `gamma_1` and `gamma_2`.
///
///     reidnet::DinoV3Rotary rope(64);                            // head_dim 64, temperature 100
///     reidnet::EvaBlock block(reidnet::EvaBlockOptions(768, 12).num_prefix_tokens(5));
///     torch::Tensor y = block(tokens, rope.embedding(16, 8, tokens.options()));  // (B, 5 + 128, 768)
///
/// Block keys, in timm's order: gamma_1, gamma_2 (the block's own parameters come first),
/// norm1, attn.qkv (no bias), attn.proj, norm2, mlp.fc1, mlp.fc2. The rotary periods are
/// computed, never stored (timm keeps them in a non-persistent buffer).

#include <reidnet/models/layers/attention.hpp>
#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/mlp.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <utility>

namespace reidnet {

/// The head_dim / 4 periods of DINOv3's rotary embedding, temperature^(2i / (head_dim / 2)),
/// in float32 as timm computes them (the original release stores them rounded to bfloat16).
inline torch::Tensor dinov3_rope_periods(int64_t head_dim, double temperature = 100.0) {
  TORCH_CHECK(head_dim > 0 && head_dim % 4 == 0, "DINOv3's rotary embedding needs a head_dim divisible by 4 ",
              "(two axes, sin and cos), got ", head_dim);
  const auto exponents = torch::arange(head_dim / 4, torch::kFloat32) * 2.0 / (head_dim / 2);
  return torch::pow(temperature, exponents);
}

/// DINOv3's rotary table for a grid_h x grid_w patch grid, (grid_h * grid_w, 2 * head_dim) in
/// float32: [sin | cos], each [h angles, w angles] tiled twice (the rotate-half layout). Patch
/// centres are normalised by each side separately to [-1, 1], so the table depends on the grid
/// shape, not on a reference size.
inline torch::Tensor dinov3_rope_table(const torch::Tensor& periods, int64_t grid_h, int64_t grid_w) {
  TORCH_CHECK(grid_h > 0 && grid_w > 0, "dinov3_rope_table: the patch grid must not be empty, got ", grid_h, "x",
              grid_w);
  const auto coords_h = torch::arange(0.5, static_cast<double>(grid_h), torch::kFloat32) / static_cast<double>(grid_h);
  const auto coords_w = torch::arange(0.5, static_cast<double>(grid_w), torch::kFloat32) / static_cast<double>(grid_w);
  auto coords = torch::stack({coords_h.unsqueeze(1).expand({grid_h, grid_w}),
                              coords_w.unsqueeze(0).expand({grid_h, grid_w})},
                             -1)
                    .flatten(0, 1);  // (HW, 2), row-major like the patch tokens
  coords = coords * 2.0 - 1.0;
  // timm's order of operations (2 pi * coords, then / periods) keeps the float32 rounding equal.
  constexpr double kTwoPi = 6.283185307179586;  // 2 * math.pi
  const auto angles = (coords.unsqueeze(2) * kTwoPi / periods.to(torch::kFloat32).view({1, 1, -1}))
                          .flatten(1)
                          .repeat({1, 2});
  return torch::cat({angles.sin(), angles.cos()}, -1);
}

/// `x` (..., N, D) rotated by a [sin | cos] table (N, 2D) in the rotate-half layout:
/// x * cos + [-x2, x1] * sin, with x1, x2 the halves of D.
inline torch::Tensor apply_rotary_half(const torch::Tensor& x, const torch::Tensor& table) {
  const auto halves = table.chunk(2, -1);
  const auto parts = x.chunk(2, -1);
  return x * halves[1] + torch::cat({-parts[1], parts[0]}, -1) * halves[0];
}

/// DINOv3's rotary embedding with its tables cached per grid, device and dtype (a transformer
/// at a dynamic input size meets few grids). Computed in float32, then cast: timm computes it
/// in its buffer's dtype, so a bfloat16 model's tables differ by bfloat16 rounding.
class DinoV3Rotary {
 public:
  explicit DinoV3Rotary(int64_t head_dim = 64, double temperature = 100.0)
      : head_dim_(head_dim), temperature_(temperature), periods_(dinov3_rope_periods(head_dim, temperature)) {}

  // The cache is per copy: a cloned module starts empty.
  DinoV3Rotary(const DinoV3Rotary& other)
      : head_dim_(other.head_dim_), temperature_(other.temperature_), periods_(other.periods_) {}
  DinoV3Rotary& operator=(const DinoV3Rotary& other) {
    if (this != &other) {
      std::lock_guard<std::mutex> lock(*mutex_);
      head_dim_ = other.head_dim_;
      temperature_ = other.temperature_;
      periods_ = other.periods_;
      cache_.clear();
    }
    return *this;
  }

  /// The (grid_h * grid_w, 2 * head_dim) table on the device and in the dtype of `like`.
  torch::Tensor embedding(int64_t grid_h, int64_t grid_w, const torch::TensorOptions& like) const {
    const auto device = like.device();
    const Key key{grid_h, grid_w, device.str(), static_cast<int>(c10::typeMetaToScalarType(like.dtype()))};
    std::lock_guard<std::mutex> lock(*mutex_);
    const auto found = cache_.find(key);
    if (found != cache_.end()) return found->second;
    if (cache_.size() >= kMaxCached) cache_.clear();
    auto table = dinov3_rope_table(periods_, grid_h, grid_w).to(device, c10::typeMetaToScalarType(like.dtype()));
    cache_.emplace(key, table);
    return table;
  }

  /// The float32 periods (head_dim / 4).
  const torch::Tensor& periods() const { return periods_; }
  int64_t head_dim() const { return head_dim_; }
  double temperature() const { return temperature_; }

 private:
  using Key = std::tuple<int64_t, int64_t, std::string, int>;
  static constexpr size_t kMaxCached = 16;

  int64_t head_dim_;
  double temperature_;
  torch::Tensor periods_;
  mutable std::map<Key, torch::Tensor> cache_;
  std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();
};

/// Multi-head self-attention with a fused qkv projection without bias (timm's EvaAttention
/// with qkv_bias=False), whose queries and keys get the rotary embedding on the tokens after
/// the first `num_prefix_tokens`. Keys: qkv, proj.
class EvaAttentionImpl : public torch::nn::Cloneable<EvaAttentionImpl> {
 public:
  EvaAttentionImpl(int64_t dim, int64_t num_heads, int64_t num_prefix_tokens)
      : dim_(dim), num_heads_(num_heads), num_prefix_tokens_(num_prefix_tokens) {
    reset();
  }

  void reset() override {
    TORCH_CHECK(num_heads_ > 0 && dim_ % num_heads_ == 0, "EvaAttention: dim (", dim_,
                ") must be a multiple of num_heads (", num_heads_, ")");
    TORCH_CHECK(num_prefix_tokens_ >= 0, "EvaAttention: num_prefix_tokens must be >= 0, got ", num_prefix_tokens_);
    qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(dim_, 3 * dim_).bias(false)));
    proj = register_module("proj", torch::nn::Linear(dim_, dim_));
  }

  /// `x` (B, N, dim); `rope` (N - num_prefix_tokens, 2 * head_dim) from DinoV3Rotary.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& rope) {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == dim_, "EvaAttention(", dim_, ") needs (B, N, ", dim_, ") tokens, got ",
                x.sizes());
    const auto batch = x.size(0), tokens = x.size(1);
    TORCH_CHECK(rope.dim() == 2 && rope.size(0) == tokens - num_prefix_tokens_ &&
                    rope.size(1) == 2 * (dim_ / num_heads_),
                "EvaAttention: the rotary table ", rope.sizes(), " does not fit ", tokens - num_prefix_tokens_,
                " patch tokens of head_dim ", dim_ / num_heads_);
    const auto qkv_heads = qkv(x).reshape({batch, tokens, 3, num_heads_, -1}).permute({2, 0, 3, 1, 4});
    const auto q = rotate_patches(qkv_heads[0], rope).to(x.scalar_type());
    const auto k = rotate_patches(qkv_heads[1], rope).to(x.scalar_type());
    const auto attended = attention(q, k, qkv_heads[2]);
    return proj(attended.transpose(1, 2).reshape({batch, tokens, dim_}));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::EvaAttention(" << dim_ << ", heads=" << num_heads_ << ", prefix_tokens=" << num_prefix_tokens_
           << ")";
  }

  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  torch::Tensor rotate_patches(const torch::Tensor& heads, const torch::Tensor& rope) const {
    using torch::indexing::Slice;
    const auto prefix = heads.index({Slice(), Slice(), Slice(0, num_prefix_tokens_)});
    const auto patches = heads.index({Slice(), Slice(), Slice(num_prefix_tokens_)});
    return torch::cat({prefix, apply_rotary_half(patches, rope)}, 2);
  }

  int64_t dim_, num_heads_, num_prefix_tokens_;
};
TORCH_MODULE(EvaAttention);

struct EvaBlockOptions {
  EvaBlockOptions(int64_t dim, int64_t num_heads) : dim_(dim), num_heads_(num_heads) {}

  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  /// Tokens before the patches (class and registers) that the rotary embedding leaves alone.
  TORCH_ARG(int64_t, num_prefix_tokens) = 1;
  /// Hidden width of the MLP in units of dim (timm truncates dim * ratio to an integer).
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// Initial value of the layer scales gamma_1 and gamma_2; nullopt leaves them out (no keys).
  TORCH_ARG(std::optional<double>, layer_scale_init) = 1e-5;
  /// Of both LayerNorms (DINOv3's 1e-5).
  TORCH_ARG(double, norm_eps) = 1e-5;
  /// Stochastic depth of both residual branches while training.
  TORCH_ARG(double, drop_path) = 0.0;
};

/// x + drop_path(gamma_1 * attn(norm1(x))), then x + drop_path(gamma_2 * mlp(norm2(x)))
/// (timm's EvaBlock, pre-norm, plain GELU MLP).
class EvaBlockImpl : public torch::nn::Cloneable<EvaBlockImpl> {
 public:
  explicit EvaBlockImpl(const EvaBlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto dim = options.dim();
    TORCH_CHECK(options.mlp_ratio() > 0, "EvaBlockOptions::mlp_ratio must be positive, got ", options.mlp_ratio());
    if (options.layer_scale_init()) {
      gamma_1 = register_parameter("gamma_1", torch::full({dim}, *options.layer_scale_init()));
      gamma_2 = register_parameter("gamma_2", torch::full({dim}, *options.layer_scale_init()));
    }
    const auto norm_options = torch::nn::LayerNormOptions({dim}).eps(options.norm_eps());
    norm1 = register_module("norm1", torch::nn::LayerNorm(norm_options));
    attn = register_module("attn", EvaAttention(dim, options.num_heads(), options.num_prefix_tokens()));
    norm2 = register_module("norm2", torch::nn::LayerNorm(norm_options));
    mlp = register_module("mlp", Mlp(dim, static_cast<int64_t>(static_cast<double>(dim) * options.mlp_ratio())));
  }

  /// `x` (B, N, dim); `rope` the rotary table of the N - num_prefix_tokens patches.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& rope) {
    auto branch = attn(norm1(x), rope);
    if (gamma_1.defined()) branch = gamma_1 * branch;
    auto y = x + drop_path(branch, options.drop_path(), is_training());
    branch = mlp(norm2(y));
    if (gamma_2.defined()) branch = gamma_2 * branch;
    return y + drop_path(branch, options.drop_path(), is_training());
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::EvaBlock(" << options.dim() << ", heads=" << options.num_heads()
           << ", drop_path=" << options.drop_path() << ")";
  }

  EvaBlockOptions options;
  torch::Tensor gamma_1, gamma_2;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  EvaAttention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(EvaBlock);

}  // namespace reidnet
