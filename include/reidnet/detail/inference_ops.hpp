#pragma once
// Internals of reidnet/inference.hpp: BatchNorm folding and the per-layer kernels of the
// inference fast path (oneDNN blocked layout on CPU, dense channels_last elsewhere).

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace reidnet::detail {

/// An eval-mode BatchNorm as the affine map y = x * scale + shift (exact: running statistics).
struct BatchNormAffine {
  at::Tensor scale;
  at::Tensor shift;
};

/// `NormImpl` is BatchNorm1dImpl or BatchNorm2dImpl; the module's tensors are only read.
template <class NormImpl>
BatchNormAffine batch_norm_affine(const NormImpl& norm) {
  TORCH_CHECK(norm.options.track_running_stats(),
              "optimize_for_inference: a BatchNorm without running statistics cannot be folded");
  // Computed in double so that folding adds no rounding beyond the final cast.
  const auto var = norm.running_var.detach().to(at::kDouble);
  const auto mean = norm.running_mean.detach().to(at::kDouble);
  auto scale = at::rsqrt(var + norm.options.eps());
  if (norm.options.affine()) scale = scale * norm.weight.detach().to(at::kDouble);
  auto shift = -mean * scale;
  if (norm.options.affine()) shift = shift + norm.bias.detach().to(at::kDouble);
  return {scale, shift};
}

/// What every kernel needs to know about how tensors are stored.
struct KernelConfig {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  bool channels_last = true;
  bool fold_bn = true;
  /// Activations and weights in oneDNN's own (blocked) layout, weights reordered once.
  bool prepack = true;
  /// In-place ReLU and residual add (no extra activation buffers).
  bool fuse = true;

  at::MemoryFormat memory_format() const {
    return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  }
};

/// One Conv2d (no bias in ResNet) followed by its BatchNorm2d, ready to run.
struct ConvBn {
  at::Tensor weight;  // folded (or original) weight, dtype/device/memory format of the config
  at::Tensor bias;    // folded BatchNorm shift; undefined when BatchNorm is not folded
  at::Tensor packed_weight;  // oneDNN blocked weight (prepack)
  at::Tensor packed_bias;    // fp32 oneDNN bias (prepack)
  at::Tensor bn_scale, bn_shift;  // unfolded BatchNorm, as (1, C, 1, 1) affine
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;

  at::Tensor run(const at::Tensor& x, const KernelConfig& config) const {
    if (config.prepack) {
      return at::mkldnn_convolution(x, packed_weight, packed_bias, padding, stride, dilation,
                                    groups);
    }
    auto y = at::conv2d(x, weight, bias, stride, padding, dilation, groups);
    if (config.fold_bn) return y;
    return config.fuse ? y.mul_(bn_scale).add_(bn_shift) : y * bn_scale + bn_shift;
  }
};

inline std::vector<int64_t> to_vector(at::IntArrayRef values) { return values.vec(); }

inline ConvBn make_conv_bn(const torch::nn::Conv2dImpl& conv,
                           const torch::nn::BatchNorm2dImpl& norm, const KernelConfig& config) {
  const auto& conv_options = conv.options;
  ConvBn out;
  out.stride = to_vector(*conv_options.stride());
  out.dilation = to_vector(*conv_options.dilation());
  // Every conv of torchvision's ResNet pads by dilation * (kernel - 1) / 2; reading the
  // padding option itself would need c10::variant (1.x) or std::variant (2.x).
  const auto kernel = to_vector(*conv_options.kernel_size());
  out.padding = {out.dilation[0] * (kernel[0] - 1) / 2, out.dilation[1] * (kernel[1] - 1) / 2};
  out.groups = conv_options.groups();
  const auto affine = batch_norm_affine(norm);
  auto weight = conv.weight.detach().to(at::kDouble);
  at::Tensor bias = conv.bias.defined() ? conv.bias.detach().to(at::kDouble)
                                         : at::zeros({weight.size(0)}, weight.options());
  const auto target = at::TensorOptions().dtype(config.dtype).device(config.device);
  if (config.fold_bn) {
    weight = weight * affine.scale.view({-1, 1, 1, 1});
    bias = bias * affine.scale + affine.shift;
    if (!config.prepack) {  // the prepacked path keeps only the oneDNN copy
      out.weight = weight.to(target).contiguous(config.memory_format());
      out.bias = bias.to(target);
    }
  } else {
    // Unfolded: keep the conv as is; BatchNorm becomes a per-channel affine after it.
    out.weight = weight.to(target).contiguous(config.memory_format());
    out.bias = conv.bias.defined() ? bias.to(target) : at::Tensor();
    out.bn_scale = affine.scale.to(target).view({1, -1, 1, 1});
    out.bn_shift = affine.shift.to(target).view({1, -1, 1, 1});
  }
  if (config.prepack) {
    out.packed_weight = at::mkldnn_reorder_conv2d_weight(
        weight.to(at::kFloat).contiguous().to_mkldnn(config.dtype), out.padding, out.stride,
        out.dilation, out.groups);
    out.packed_bias = bias.to(at::kFloat).to_mkldnn();
  }
  return out;
}

/// A Linear possibly followed by an eval BatchNorm1d folded into it: y = x W^T + b.
struct DenseAffine {
  at::Tensor weight;  // (out, in), fp32
  at::Tensor bias;    // (out), fp32
};

inline DenseAffine linear_affine(const torch::nn::LinearImpl& linear) {
  return {linear.weight.detach().to(at::kDouble),
          linear.bias.defined() ? linear.bias.detach().to(at::kDouble)
                                : at::zeros({linear.weight.size(0)}, at::kDouble)};
}

/// True when oneDNN can run the CPU path of this LibTorch build.
inline bool onednn_available() {
  return at::hasMKLDNN() && at::globalContext().userEnabledMkldnn();
}

}  // namespace reidnet::detail
