#pragma once
// Internals of reidnet/inference/inference.hpp: BatchNorm folding and the per-layer kernels of the
// inference fast path (oneDNN blocked layout on CPU, dense channels_last elsewhere).

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/omni_scale.hpp>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace reidnet::detail {

/// oneDNN's prepacked convolution with a fused ReLU (`mkldnn_prepacked::conv2d_prepack` /
/// `conv2d_run`, registered by LibTorch builds with oneDNN since 1.12). Looked up at run time:
/// where it is missing the blocked-layout path runs instead.
struct PrepackedConvOps {
  // c10::optional in LibTorch 1.x, std::optional in recent 2.x.
  using MaybeOperator = decltype(c10::Dispatcher::singleton().findSchema({"", ""}));
  MaybeOperator prepack;
  MaybeOperator run;

  static const PrepackedConvOps& get() {
    static const PrepackedConvOps ops = [] {
      PrepackedConvOps found;
      auto& dispatcher = c10::Dispatcher::singleton();
      found.prepack = dispatcher.findSchema({"mkldnn_prepacked::conv2d_prepack", ""});
      found.run = dispatcher.findSchema({"mkldnn_prepacked::conv2d_run", ""});
      return found;
    }();
    return ops;
  }
  /// Both ops, with the argument lists this code passes (W, B, stride, padding, dilation,
  /// groups, input_size, attr) and (X, context).
  bool available() const {
    return prepack.has_value() && run.has_value() &&
           prepack->schema().arguments().size() == 8 && run->schema().arguments().size() == 2;
  }
};

/// The kernels a model runs with, chosen once from the options and this LibTorch build.
enum class ConvBackend {
  kDense,          // at::conv2d on dense (channels_last) tensors: CUDA, or any CPU build
  kOnednnBlocked,  // activations and weights in oneDNN's blocked layout, eltwise ops in place
  kOnednnFused,    // channels_last activations, prepacked weights, conv+ReLU fused by oneDNN
  kCudnnFused,     // CUDA: conv+bias+ReLU and conv+bias+residual add+ReLU fused by cuDNN
  kOnednnDirect,   // CPU: the whole trunk on oneDNN's own API (detail/onednn_kernels.hpp)
};

/// What every kernel needs to know about how tensors are stored.
struct KernelConfig {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  bool channels_last = true;
  bool fold_bn = true;
  /// Activations and weights in oneDNN's own (blocked) layout, weights reordered once.
  bool prepack = true;
  /// ReLU fused into the conv where oneDNN can; in-place ReLU and residual add elsewhere.
  bool fuse = true;
  ConvBackend backend = ConvBackend::kDense;

  at::MemoryFormat memory_format() const {
    return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  }
};

/// oneDNN contexts of one conv, one per input shape (a context is built for a fixed shape and
/// holds its own copy of the packed weights, so only the most recent few shapes are kept:
/// a feature extractor sees the full batch and one smaller last batch).
class PrepackedConvCache {
 public:
  static constexpr size_t kMaxShapes = 3;

  /// `prepack_arguments`: W, B, stride, padding, dilation, groups, attr (input_size is added
  /// per shape). Built once, so that a call allocates nothing when its shape is cached.
  explicit PrepackedConvCache(std::vector<c10::IValue> prepack_arguments)
      : prepack_arguments_(std::move(prepack_arguments)) {}

  c10::IValue get(const at::Tensor& x) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto shape = x.sizes();
    for (const auto& [cached_shape, context] : contexts_) {
      if (shape.equals(cached_shape)) return context;
    }
    torch::jit::Stack stack(prepack_arguments_);
    stack.insert(stack.begin() + 6, c10::IValue(shape.vec()));  // input_size, before attr
    PrepackedConvOps::get().prepack->callBoxed(&stack);
    if (contexts_.size() == kMaxShapes) contexts_.erase(contexts_.begin());
    contexts_.emplace_back(shape.vec(), stack.at(0));
    return contexts_.back().second;
  }

 private:
  const std::vector<c10::IValue> prepack_arguments_;
  std::mutex mutex_;
  std::vector<std::pair<std::vector<int64_t>, c10::IValue>> contexts_;  // oldest first
};

/// IBN-a's InstanceNorm half after a conv: the first `channels` channels normalised per image
/// and channel over its map, then scaled and shifted (the ReLU after the pair follows it).
struct InstanceNormPart {
  int64_t channels = 0;
  at::Tensor weight, bias;  // (channels,), float32
  double eps = 1e-5;
};

/// One Conv2d (no bias in ResNet), its BatchNorm2d and, if `relu`, the ReLU after them.
struct ConvBn {
  at::Tensor weight;  // folded (or original) weight, dtype/device/memory format of the config
  at::Tensor bias;    // folded BatchNorm shift; undefined when BatchNorm is not folded
  at::Tensor packed_weight;  // oneDNN blocked weight (onednn_blocked)
  at::Tensor packed_bias;    // fp32 oneDNN bias (onednn_blocked)
  at::Tensor bn_scale, bn_shift;  // unfolded BatchNorm, as (1, C, 1, 1) affine
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
  bool relu = false;
  std::shared_ptr<PrepackedConvCache> prepacked;  // onednn_fused
  // IBN-a: its BatchNorm half is folded, this half runs between the conv and the ReLU (only
  // the direct oneDNN trunk plans it).
  std::optional<InstanceNormPart> instance_norm;

  at::Tensor run(const at::Tensor& x, const KernelConfig& config) const {
    TORCH_INTERNAL_ASSERT(!instance_norm, "an InstanceNorm half runs in the direct oneDNN trunk only");
    switch (config.backend) {
      case ConvBackend::kOnednnFused: {
        // Reused per thread: at batch 1, per-call allocations are a visible share of a conv.
        thread_local torch::jit::Stack stack;
        stack.clear();
        stack.emplace_back(x);
        stack.emplace_back(prepacked->get(x));
        PrepackedConvOps::get().run->callBoxed(&stack);
        auto y = std::move(stack.at(0)).toTensor();  // ReLU already applied by oneDNN
        stack.clear();
        return y;
      }
      case ConvBackend::kOnednnBlocked:
        return apply_relu(at::mkldnn_convolution(x, packed_weight, packed_bias, padding, stride,
                                                 dilation, groups),
                          config);
      case ConvBackend::kCudnnFused:
        if (relu) return at::cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups);
        break;
      case ConvBackend::kDense:
      case ConvBackend::kOnednnDirect:  // runs in an OnednnTrunk, never here
        break;
    }
    auto y = at::conv2d(x, weight, bias, stride, padding, dilation, groups);
    if (!config.fold_bn) y = config.fuse ? y.mul_(bn_scale).add_(bn_shift) : y * bn_scale + bn_shift;
    return apply_relu(std::move(y), config);
  }

  /// relu(conv(x) + identity): the last conv of a residual block (built with relu = false).
  at::Tensor run_add_relu(const at::Tensor& x, const at::Tensor& identity,
                          const KernelConfig& config) const {
    if (config.backend == ConvBackend::kCudnnFused) {
      return at::cudnn_convolution_add_relu(x, weight, identity, at::Scalar(1.0), bias, stride,
                                            padding, dilation, groups);
    }
    auto y = run(x, config);
    if (!config.fuse) return at::relu(y + identity);
    // One pass instead of two (add_, then relu_) over the block's output: ~15% of a CPU
    // forward at batch 16 goes to these memory-bound passes. ATen's kernel is fp32 only.
    if (y.scalar_type() == at::kFloat && !y.is_mkldnn()) return at::_add_relu_(y, identity);
    return y.add_(identity).relu_();
  }

 private:
  // Only ever applied to a fresh conv output, so the in-place form is safe.
  at::Tensor apply_relu(at::Tensor y, const KernelConfig& config) const {
    if (!relu) return y;
    return config.fuse ? y.relu_() : at::relu(y);
  }
};

/// The convs of one residual block, in order, and its downsample conv if it has one.
struct ResidualBlockPlan {
  std::vector<ConvBn> convs;
  bool has_downsample = false;
  ConvBn downsample;
};

/// A lite 3x3 conv: the linear 1x1, then the depthwise 3x3 with its ReLU.
struct LightConvPlan {
  ConvBn pointwise, depthwise;
};

/// An omni-scale block (see OmniScaleBlockView), its BatchNorms folded.
struct OmniScaleBlockPlan {
  ConvBn squeeze;
  std::vector<std::vector<LightConvPlan>> streams;
  ConvBn gate_reduce, gate_expand;  // with a ReLU; before the sigmoid
  ConvBn expand;                    // before the residual add and ReLU
  std::optional<ConvBn> shortcut;
};

/// A block, or a transition conv (with ReLU) before its 2x2 average pool.
struct OmniScaleStepPlan {
  std::optional<OmniScaleBlockPlan> block;
  ConvBn transition;
};

struct OmniScaleTrunkPlan {
  ConvBn stem;
  std::vector<OmniScaleStepPlan> steps;
  ConvBn last;
};

/// Sees the activations int8 calibration measures, one at a time, in the order a trunk's float
/// run computes them (see Int8Calibration::activation_max).
using ActivationObserver = std::function<void(const at::Tensor&)>;

/// Runs `x` through the blocks on LibTorch's ops (every backend but onednn_direct). `observe`,
/// where given, sees per block its projection shortcut's output (where it has one), each
/// main-path conv's output but the last, and the block's output.
inline at::Tensor run_residual_blocks(const std::vector<ResidualBlockPlan>& blocks, at::Tensor x,
                                      const KernelConfig& config,
                                      const ActivationObserver& observe = nullptr) {
  const auto seen = [&observe](at::Tensor value) {
    if (observe) observe(value);
    return value;
  };
  for (const auto& block : blocks) {
    const at::Tensor identity = block.has_downsample ? seen(block.downsample.run(x, config)) : x;
    at::Tensor out = x;
    for (size_t k = 0; k + 1 < block.convs.size(); ++k) out = seen(block.convs[k].run(out, config));
    x = seen(block.convs.back().run_add_relu(out, identity, config));
  }
  return x;
}

/// The stem, torchvision's 3x3 max pool (stride 2, padding 1), then the blocks, as
/// run_residual_blocks runs them; `observe` sees the pooled stem first.
inline at::Tensor run_residual_trunk(const ConvBn& stem, const std::vector<ResidualBlockPlan>& blocks,
                                     const at::Tensor& x, const KernelConfig& config,
                                     const ActivationObserver& observe = nullptr) {
  const auto pooled = at::max_pool2d(stem.run(x, config), {3, 3}, {2, 2}, {1, 1});
  if (observe) observe(pooled);
  return run_residual_blocks(blocks, pooled, config, observe);
}

/// An omni-scale trunk on LibTorch's ops, as int8 calibration measures it. `observe` sees the
/// pooled stem; per block, the squeeze's output, each lite conv's pointwise and depthwise
/// outputs stream by stream, the gated sum, the shortcut's output (where it has one) and the
/// block's output; per transition, its conv's output; then the last conv's output.
inline at::Tensor run_omni_scale_trunk(const OmniScaleTrunkPlan& plan, const at::Tensor& images,
                                       const KernelConfig& config,
                                       const ActivationObserver& observe = nullptr) {
  const auto seen = [&observe](at::Tensor value) {
    if (observe) observe(value);
    return value;
  };
  auto x = seen(at::max_pool2d(plan.stem.run(images, config), {3, 3}, {2, 2}, {1, 1}));
  for (const auto& step : plan.steps) {
    if (!step.block) {
      x = at::avg_pool2d(seen(step.transition.run(x, config)), {2, 2}, {2, 2});
      continue;
    }
    const auto& block = *step.block;
    const auto squeezed = seen(block.squeeze.run(x, config));
    at::Tensor mixed;
    for (const auto& stream : block.streams) {
      auto y = squeezed;
      for (const auto& layer : stream) y = seen(layer.depthwise.run(seen(layer.pointwise.run(y, config)), config));
      const auto pooled = at::adaptive_avg_pool2d(y, {1, 1});
      const auto gate = block.gate_expand.run(block.gate_reduce.run(pooled, config), config).sigmoid();
      mixed = mixed.defined() ? mixed + y * gate : y * gate;
    }
    seen(mixed);
    const auto identity = block.shortcut ? seen(block.shortcut->run(x, config)) : x;
    x = seen(block.expand.run_add_relu(mixed, identity, config));
  }
  return seen(plan.last.run(x, config));
}

inline std::vector<int64_t> to_vector(at::IntArrayRef values) { return values.vec(); }

/// The plan of `layer`'s conv, its BatchNorm (where it has one) folded in where the config says.
inline ConvBn make_conv_bn(const ConvNormView& layer, bool relu, const KernelConfig& config) {
  const auto& conv = *layer.conv;
  const auto& conv_options = conv.options;
  ConvBn out;
  out.relu = relu;
  out.stride = to_vector(*conv_options.stride());
  out.dilation = to_vector(*conv_options.dilation());
  // Every conv of the trunks planned (torchvision's ResNet, OSNet) pads by
  // dilation * (kernel - 1) / 2; reading the padding option itself would need c10::variant
  // (1.x) or std::variant (2.x).
  const auto kernel = to_vector(*conv_options.kernel_size());
  out.padding = {out.dilation[0] * (kernel[0] - 1) / 2, out.dilation[1] * (kernel[1] - 1) / 2};
  out.groups = conv_options.groups();
  auto weight = conv.weight.detach().to(at::kDouble);
  // Without a BatchNorm, an affine that changes nothing; IBN-a's BatchNorm covers the channels
  // after the InstanceNorm's, which the conv writes as they are.
  const int64_t instance_channels = layer.instance_norm != nullptr ? layer.instance_norm->options.num_features() : 0;
  auto affine = BatchNormAffine{at::ones({weight.size(0)}, weight.options()),
                                at::zeros({weight.size(0)}, weight.options())};
  if (layer.norm != nullptr) {
    const auto norm = batch_norm_affine(*layer.norm);
    affine.scale.narrow(0, instance_channels, norm.scale.size(0)).copy_(norm.scale);
    affine.shift.narrow(0, instance_channels, norm.shift.size(0)).copy_(norm.shift);
  }
  if (layer.instance_norm != nullptr) {
    TORCH_CHECK(config.backend == ConvBackend::kOnednnDirect && config.fold_bn,
                "an IBN-a InstanceNorm half is planned for the direct oneDNN backend only");
    const auto& instance_norm = *layer.instance_norm;
    TORCH_CHECK(instance_norm.options.affine(), "an IBN-a InstanceNorm half without affine weights");
    out.instance_norm = InstanceNormPart{instance_channels, instance_norm.weight.detach().to(at::kFloat),
                                         instance_norm.bias.detach().to(at::kFloat), instance_norm.options.eps()};
  }
  at::Tensor bias = conv.bias.defined() ? conv.bias.detach().to(at::kDouble)
                                         : at::zeros({weight.size(0)}, weight.options());
  const auto target = at::TensorOptions().dtype(config.dtype).device(config.device);
  if (config.fold_bn) {
    weight = weight * affine.scale.view({-1, 1, 1, 1});
    bias = bias * affine.scale + affine.shift;
    if (config.backend != ConvBackend::kOnednnBlocked) {  // that one keeps only its copy
      out.weight = weight.to(target).contiguous(config.memory_format());
      // oneDNN adds a float bias to bf16 convs: no need to round it.
      out.bias = bias.to(config.backend == ConvBackend::kOnednnDirect ? target.dtype(at::kFloat)
                                                                       : target);
    }
  } else {
    // Unfolded: keep the conv as is; BatchNorm becomes a per-channel affine after it.
    out.weight = weight.to(target).contiguous(config.memory_format());
    out.bias = conv.bias.defined() ? bias.to(target) : at::Tensor();
    out.bn_scale = affine.scale.to(target).view({1, -1, 1, 1});
    out.bn_shift = affine.shift.to(target).view({1, -1, 1, 1});
  }
  if (config.backend == ConvBackend::kOnednnFused) {
    out.prepacked = std::make_shared<PrepackedConvCache>(std::vector<c10::IValue>{
        out.weight, out.bias, out.stride, out.padding, out.dilation, out.groups,
        std::string(relu ? "relu" : "none")});
  }
  if (config.backend == ConvBackend::kOnednnBlocked) {
    out.packed_weight = at::mkldnn_reorder_conv2d_weight(
        weight.to(at::kFloat).contiguous().to_mkldnn(config.dtype), out.padding, out.stride,
        out.dilation, out.groups);
    out.packed_bias = bias.to(at::kFloat).to_mkldnn();
  }
  return out;
}

/// The folded plan of an omni-scale trunk; its convs and BatchNorms are only read.
inline OmniScaleTrunkPlan make_omni_scale_plan(const OmniScaleTrunkView& trunk, const KernelConfig& config) {
  const auto plain = [&](const torch::nn::Conv2dImpl* conv, bool relu) {
    return make_conv_bn(ConvNormView{conv, nullptr}, relu, config);
  };
  OmniScaleTrunkPlan out;
  out.stem = make_conv_bn(trunk.stem, /*relu=*/true, config);
  out.last = make_conv_bn(trunk.last, /*relu=*/true, config);
  for (const auto& step : trunk.steps) {
    OmniScaleStepPlan planned;
    if (!step.block) {
      planned.transition = make_conv_bn(step.transition, /*relu=*/true, config);
      out.steps.push_back(std::move(planned));
      continue;
    }
    const auto& block = *step.block;
    OmniScaleBlockPlan plan;
    plan.squeeze = make_conv_bn(block.squeeze, /*relu=*/true, config);
    for (const auto& stream : block.streams) {
      std::vector<LightConvPlan> layers;
      for (const auto& layer : stream) {
        layers.push_back({plain(layer.pointwise, false), make_conv_bn(layer.depthwise, true, config)});
      }
      plan.streams.push_back(std::move(layers));
    }
    plan.gate_reduce = plain(block.gate.reduce, true);
    plan.gate_expand = plain(block.gate.expand, false);
    plan.expand = make_conv_bn(block.expand, /*relu=*/false, config);
    if (block.shortcut) plan.shortcut = make_conv_bn(*block.shortcut, /*relu=*/false, config);
    planned.block = std::move(plan);
    out.steps.push_back(std::move(planned));
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

/// Whether cuDNN's fused conv+bias+ReLU and conv+bias+add+ReLU run for this dtype and layout
/// (they need a LibTorch built with cuDNN, and some cuDNN versions lack some dtypes): tried
/// once on a tiny input, so that the model falls back to separate kernels instead of failing.
inline bool cudnn_fusion_available(const KernelConfig& config) {
  try {
    const auto options = at::TensorOptions().dtype(config.dtype).device(config.device);
    const auto x = at::randn({1, 8, 6, 6}, options).contiguous(config.memory_format());
    const auto weight = at::randn({8, 8, 3, 3}, options).contiguous(config.memory_format());
    const auto bias = at::randn({8}, options);
    const std::vector<int64_t> one{1, 1};
    const auto fused = at::cudnn_convolution_add_relu(x, weight, x, at::Scalar(1.0), bias, one,
                                                      one, one, 1);
    const auto reference = at::relu(at::conv2d(x, weight, bias, one, one, one, 1) + x);
    return at::cudnn_convolution_relu(x, weight, bias, one, one, one, 1).defined() &&
           at::allclose(fused.to(at::kFloat), reference.to(at::kFloat), 5e-2, 5e-2);
  } catch (const c10::Error&) {
    return false;
  }
}

/// True when oneDNN can run the CPU path of this LibTorch build.
inline bool onednn_available() {
  return at::hasMKLDNN() && at::globalContext().userEnabledMkldnn();
}

/// Whether oneDNN has bf16 convolutions on this CPU: it needs AVX-512 (BW, VL, DQ), as
/// LibTorch's own check says; on AVX2 every bf16 oneDNN conv fails to build its primitive,
/// and LibTorch's native convolution runs bf16 instead.
inline bool onednn_runs_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool supported = __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") &&
                                __builtin_cpu_supports("avx512dq");
  return supported;
#else
  return false;
#endif
}

}  // namespace reidnet::detail
