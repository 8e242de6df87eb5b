#pragma once
/// Scaled dot-product attention, softmax(q k^T * scale + mask) v, as timm's attention layers
/// compute it: LibTorch 2.x's fused `scaled_dot_product_attention` (flash or memory-efficient
/// kernels on CPU and CUDA) where LibTorch has it, else timm's own unfused arithmetic (scale q,
/// multiply, add the mask, softmax, multiply), which is what PyTorch 1.13 ran.
///
///     // q, k, v: (B, heads, N, head_dim); bias: (heads, N, N), added before the softmax
///     torch::Tensor y = reidnet::attention(q, k, v, bias);
///
/// (Not named scaled_dot_product_attention: LibTorch 2.x's at:: function of that name would
/// make unqualified calls ambiguous.)

#include <torch/types.h>
#include <torch/version.h>

#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

namespace reidnet {

/// Attention of `query` (..., N, D) over `key` and `value` (..., M, D) and (..., M, Dv). The
/// optional `additive_mask` broadcasts to (..., N, M) and is added to the scaled scores (a
/// relative position bias, or -100 between windows that do not meet). `scale` defaults to
/// 1 / sqrt(D).
inline torch::Tensor attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                               const torch::Tensor& additive_mask = {}, std::optional<double> scale = std::nullopt) {
  TORCH_CHECK(query.dim() >= 2 && key.dim() == query.dim() && value.dim() == query.dim(),
              "attention: query, key and value need the same rank (>= 2), got ",
              query.sizes(), ", ", key.sizes(), ", ", value.sizes());
  TORCH_CHECK(query.size(-1) == key.size(-1) && key.size(-2) == value.size(-2),
              "attention: query ", query.sizes(), ", key ", key.sizes(), " and value ",
              value.sizes(), " do not fit");
  const double factor = scale.value_or(1.0 / std::sqrt(static_cast<double>(query.size(-1))));
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  std::optional<torch::Tensor> mask;
  if (additive_mask.defined()) mask = additive_mask.to(query.scalar_type());
  return at::scaled_dot_product_attention(query, key, value, mask, /*dropout_p=*/0.0, /*is_causal=*/false, factor);
#else
  auto scores = torch::matmul(query * factor, key.transpose(-2, -1));
  if (additive_mask.defined()) scores = scores + additive_mask.to(scores.scalar_type());
  return torch::matmul(scores.softmax(-1), value);
#endif
}

}  // namespace reidnet
