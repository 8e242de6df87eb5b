#pragma once
/// Stochastic depth (Huang et al. 2016), as timm's `drop_path` and efficientnet_pytorch's
/// `drop_connect` apply it to a residual branch: while training, each sample's branch is
/// zeroed with probability `rate` and the kept ones are scaled by 1 / (1 - rate); in eval mode,
/// or at rate 0, the branch passes unchanged.
///
///     x = x + reidnet::drop_path(branch(x), rate, is_training());
///
/// The mask is drawn from LibTorch's generator, so a training step with a positive rate cannot
/// repeat PyTorch's draw; parity tests train at rate 0.

#include <torch/types.h>

#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

namespace reidnet {

/// `x` (B, ...) with whole samples dropped at `rate` while training.
inline torch::Tensor drop_path(const torch::Tensor& x, double rate, bool training) {
  TORCH_CHECK(rate >= 0 && rate < 1, "drop_path: the rate must be in [0, 1), got ", rate);
  if (!training || rate == 0) return x;
  const double keep = 1 - rate;
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  const auto mask = torch::empty(shape, x.options()).bernoulli_(keep);
  return x * mask.div_(keep);
}

/// The per-block rates of a network of `blocks` blocks whose last block drops at `rate`:
/// rising linearly from 0, timm's `torch.linspace(0, drop_path_rate, depth)` (in float32, as
/// there).
inline std::vector<double> linear_drop_path_rates(int64_t blocks, double rate) {
  const auto spread = torch::linspace(0.0, rate, blocks, torch::kFloat32).to(torch::kDouble);
  const auto* values = spread.data_ptr<double>();
  return std::vector<double>(values, values + blocks);
}

}  // namespace reidnet
