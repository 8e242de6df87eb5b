#pragma once
/// OSNet's building blocks (Zhou et al. 2019, "Omni-Scale Feature Learning for Person
/// Re-Identification"), with the state_dict keys of torchreid's osnet.py and osnet_ain.py.
///
/// An omni-scale block squeezes its input with a 1x1 conv to a quarter of its output width,
/// runs T streams of 1..T lightweight 3x3 convs (receptive fields 3, 5, 7, 9 for T = 4), weighs
/// each stream's channels with one shared gate and sums them, expands back with a linear 1x1
/// conv and adds the (projected) input. The two upstream files spell it differently:
///
///     reidnet::OSBlock block(reidnet::OSBlockOptions(64, 256));        // osnet.py
///     // keys conv1, conv2a, conv2b.{0,1}, conv2c.{0..2}, conv2d.{0..3}, gate, conv3, downsample
///     reidnet::OSBlockAin ain(reidnet::OSBlockAinOptions(64, 256).instance_norm(true));
///     // osnet_ain.py's OSBlockINin: conv1, conv2.{0..3}.layers.*, gate, conv3, downsample, IN

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/init.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/instancenorm.h>  // LibTorch 1.13's module header lacks it
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/instancenorm.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace reidnet {

// ---------------------------------------------------------------------------------------------
// Views for inference plans
// ---------------------------------------------------------------------------------------------

/// A lite 3x3 conv: the linear 1x1 conv, then the depthwise 3x3 conv, its BatchNorm and ReLU.
struct LightConvView {
  const torch::nn::Conv2dImpl* pointwise = nullptr;
  ConvNormView depthwise;
};

/// A channel gate: global average pool, 1x1 conv, ReLU, 1x1 conv, sigmoid (both convs biased).
struct ChannelGateView {
  const torch::nn::Conv2dImpl* reduce = nullptr;
  const torch::nn::Conv2dImpl* expand = nullptr;
};

/// An omni-scale block as y = relu(expand(sum_t gate(stream_t(squeeze(x)))) + shortcut(x)):
/// the 1x1 squeeze (BatchNorm, ReLU), the streams of lite 3x3 convs, the gate they share, the
/// linear 1x1 expansion (BatchNorm) and the projection shortcut (BatchNorm), where the block
/// has one (else the identity).
struct OmniScaleBlockView {
  ConvNormView squeeze;
  std::vector<std::vector<LightConvView>> streams;
  ChannelGateView gate;
  ConvNormView expand;
  std::optional<ConvNormView> shortcut;
};

/// A step of an omni-scale trunk: a block, or a transition (1x1 conv, BatchNorm and ReLU, then
/// a 2x2 average pool of stride 2).
struct OmniScaleStepView {
  std::optional<OmniScaleBlockView> block;
  ConvNormView transition;
};

/// OSNet's layout: the stem's 7x7 conv (stride 2, BatchNorm, ReLU), a 3x3 max pool (stride 2,
/// padding 1), the steps, then a last 1x1 conv (BatchNorm, ReLU). Every conv pads
/// (kernel - 1) / 2 each side.
struct OmniScaleTrunkView {
  ConvNormView stem;
  std::vector<OmniScaleStepView> steps;
  ConvNormView last;
  int64_t num_features = 0;
};

/// Implemented by backbones of that layout: inference runs them on a fused conv plan
/// (reidnet/inference/inference.hpp). None where some layer does not fit it (an InstanceNorm).
class DescribesOmniScaleTrunk {
 public:
  virtual ~DescribesOmniScaleTrunk() = default;
  virtual std::optional<OmniScaleTrunkView> omni_scale_trunk() const = 0;
};

/// The trunk `backbone` describes; none where it describes none.
inline std::optional<OmniScaleTrunkView> omni_scale_trunk_of(const torch::nn::Module& backbone) {
  const auto* describes = dynamic_cast<const DescribesOmniScaleTrunk*>(&backbone);
  return describes != nullptr ? describes->omni_scale_trunk() : std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Conv layers
// ---------------------------------------------------------------------------------------------

struct OSConvLayerOptions {
  OSConvLayerOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, padding) = 0;
  /// An affine InstanceNorm instead of the BatchNorm (the stem of osnet_ibn and osnet_ain):
  /// it removes per-image style such as colour and contrast.
  TORCH_ARG(bool, instance_norm) = false;
};

/// torchreid's ConvLayer and Conv1x1: bias-free conv, norm, ReLU. Keys: conv, bn (the norm
/// keeps the key `bn` when it is an InstanceNorm, as upstream).
class OSConvLayerImpl : public torch::nn::Cloneable<OSConvLayerImpl>, public DeclaresConvBatchNormPairs {
 public:
  explicit OSConvLayerImpl(const OSConvLayerOptions& options_) : options(options_) { reset(); }

  void reset() override {
    TORCH_CHECK(options.in_channels() > 0 && options.out_channels() > 0,
                "OSConvLayer needs positive channels, got in_channels=", options.in_channels(),
                " out_channels=", options.out_channels());
    conv = register_module(
        "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(),
                                                           options.out_channels(),
                                                           options.kernel_size())
                                      .stride(options.stride())
                                      .padding(options.padding())
                                      .bias(false)));
    batch_norm = nullptr;
    instance_norm = nullptr;
    if (options.instance_norm()) {
      instance_norm = register_module(
          "bn", torch::nn::InstanceNorm2d(
                    torch::nn::InstanceNorm2dOptions(options.out_channels()).affine(true)));
    } else {
      batch_norm = register_module("bn", BatchNorm2d(options.out_channels()));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto y = conv(x);
    return torch::relu(options.instance_norm() ? instance_norm(y) : batch_norm(y));
  }

  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override {
    if (batch_norm.is_empty()) return {};
    return {{"conv", "bn"}};
  }

  /// None with an InstanceNorm, which no conv plan folds.
  std::optional<ConvNormView> view() const {
    if (batch_norm.is_empty()) return std::nullopt;
    return ConvNormView{conv.get(), batch_norm.get()};
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::OSConvLayer(" << options.in_channels() << ", " << options.out_channels()
           << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride()
           << ", norm=" << (options.instance_norm() ? "instance" : "batch") << ")";
  }

  OSConvLayerOptions options;
  torch::nn::Conv2d conv{nullptr};
  /// The one of these that options.instance_norm() picks; the other stays empty.
  BatchNorm2d batch_norm{nullptr};
  torch::nn::InstanceNorm2d instance_norm{nullptr};
};
TORCH_MODULE(OSConvLayer);

/// torchreid's Conv1x1: 1x1 conv, BatchNorm, ReLU.
inline OSConvLayer os_conv1x1(int64_t in_channels, int64_t out_channels) {
  return OSConvLayer(OSConvLayerOptions(in_channels, out_channels, 1));
}

struct OSLinear1x1Options {
  OSLinear1x1Options(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// false leaves the BatchNorm out (osnet_ain's OSBlockINin normalises per instance instead).
  TORCH_ARG(bool, batch_norm) = true;
};

/// torchreid's Conv1x1Linear: 1x1 conv and BatchNorm without activation, so that a residual
/// sum sees both signs. Keys: conv, bn.
class OSLinear1x1Impl : public torch::nn::Cloneable<OSLinear1x1Impl>, public DeclaresConvBatchNormPairs {
 public:
  explicit OSLinear1x1Impl(const OSLinear1x1Options& options_) : options(options_) { reset(); }

  void reset() override {
    conv = register_module(
        "conv", torch::nn::Conv2d(
                    torch::nn::Conv2dOptions(options.in_channels(), options.out_channels(), 1)
                        .bias(false)));
    bn = nullptr;
    if (options.batch_norm()) bn = register_module("bn", BatchNorm2d(options.out_channels()));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto y = conv(x);
    return bn.is_empty() ? y : bn(y);
  }

  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override {
    if (bn.is_empty()) return {};
    return {{"conv", "bn"}};
  }

  /// None without its BatchNorm (osnet_ain's InstanceNorm follows instead).
  std::optional<ConvNormView> view() const {
    if (bn.is_empty()) return std::nullopt;
    return ConvNormView{conv.get(), bn.get()};
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::OSLinear1x1(" << options.in_channels() << ", " << options.out_channels()
           << ", batch_norm=" << (options.batch_norm() ? "true" : "false") << ")";
  }

  OSLinear1x1Options options;
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d bn{nullptr};
};
TORCH_MODULE(OSLinear1x1);

struct LightConv3x3Options {
  LightConv3x3Options(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
};

/// torchreid's LightConv3x3: a linear 1x1 conv, then a depthwise 3x3 conv, BatchNorm, ReLU;
/// about a ninth of a full 3x3 conv's weights. Keys: conv1, conv2, bn.
class LightConv3x3Impl : public torch::nn::Cloneable<LightConv3x3Impl>, public DeclaresConvBatchNormPairs {
 public:
  explicit LightConv3x3Impl(const LightConv3x3Options& options_) : options(options_) { reset(); }

  void reset() override {
    const auto out = options.out_channels();
    conv1 = register_module(
        "conv1",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), out, 1).bias(false)));
    conv2 = register_module(
        "conv2",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1).groups(out).bias(false)));
    bn = register_module("bn", BatchNorm2d(out));
  }

  torch::Tensor forward(const torch::Tensor& x) { return torch::relu(bn(conv2(conv1(x)))); }

  /// The depthwise conv2 feeds bn (conv1 is linear and unnormalised).
  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override { return {{"conv2", "bn"}}; }

  LightConvView view() const { return {conv1.get(), {conv2.get(), bn.get()}}; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::LightConv3x3(" << options.in_channels() << ", " << options.out_channels()
           << ")";
  }

  LightConv3x3Options options;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  BatchNorm2d bn{nullptr};
};
TORCH_MODULE(LightConv3x3);

// ---------------------------------------------------------------------------------------------
// Channel gate
// ---------------------------------------------------------------------------------------------

enum class GateActivation { kSigmoid, kReLU, kLinear };

struct ChannelGateOptions {
  /* implicit */ ChannelGateOptions(int64_t in_channels) : in_channels_(in_channels) {}

  TORCH_ARG(int64_t, in_channels);
  /// Gates produced; 0 = one per input channel (every OSNet variant).
  TORCH_ARG(int64_t, num_gates) = 0;
  /// forward returns the gates themselves instead of the gated input.
  TORCH_ARG(bool, return_gates) = false;
  TORCH_ARG(GateActivation, activation) = GateActivation::kSigmoid;
  /// Width of the hidden layer, in_channels / reduction (rounded down).
  TORCH_ARG(int64_t, reduction) = 16;
  /// A LayerNorm on the hidden layer (key norm1).
  TORCH_ARG(bool, layer_norm) = false;
};

/// torchreid's ChannelGate: global average pool, 1x1 conv (with bias) down by `reduction`,
/// ReLU, 1x1 conv (with bias) up, sigmoid; the input times the gates. Keys: fc1, [norm1,] fc2.
class ChannelGateImpl : public torch::nn::Cloneable<ChannelGateImpl> {
 public:
  explicit ChannelGateImpl(const ChannelGateOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto hidden = options.in_channels() / options.reduction();
    TORCH_CHECK(options.reduction() > 0 && hidden > 0, "ChannelGateOptions::reduction ",
                options.reduction(), " leaves no hidden channel of ", options.in_channels());
    TORCH_CHECK(options.num_gates() >= 0,
                "ChannelGateOptions::num_gates is a count (0 = in_channels), got ",
                options.num_gates());
    const auto gates = options.num_gates() > 0 ? options.num_gates() : options.in_channels();
    fc1 = register_module(
        "fc1", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), hidden, 1)));
    norm1 = nullptr;
    if (options.layer_norm()) {
      norm1 = register_module(
          "norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden, 1, 1})));
    }
    fc2 = register_module("fc2",
                          torch::nn::Conv2d(torch::nn::Conv2dOptions(hidden, gates, 1)));
  }

  /// The gates (B, num_gates, 1, 1).
  torch::Tensor gates(const torch::Tensor& x) {
    auto g = fc1(torch::adaptive_avg_pool2d(x, {1, 1}));
    if (!norm1.is_empty()) g = norm1(g);
    g = fc2(torch::relu(g));
    switch (options.activation()) {
      case GateActivation::kSigmoid: return torch::sigmoid(g);
      case GateActivation::kReLU: return torch::relu(g);
      case GateActivation::kLinear: return g;
    }
    return g;
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto g = gates(x);
    return options.return_gates() ? g : x * g;
  }

  /// None unless it is OSNet's gate: sigmoid gates, one per channel, no LayerNorm.
  std::optional<ChannelGateView> view() const {
    const bool osnet_gate = options.activation() == GateActivation::kSigmoid && norm1.is_empty() &&
                            !options.return_gates() &&
                            (options.num_gates() == 0 || options.num_gates() == options.in_channels());
    if (!osnet_gate) return std::nullopt;
    return ChannelGateView{fc1.get(), fc2.get()};
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::ChannelGate(" << options.in_channels()
           << ", reduction=" << options.reduction() << ")";
  }

  ChannelGateOptions options;
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};
  torch::nn::LayerNorm norm1{nullptr};
};
TORCH_MODULE(ChannelGate);

namespace detail {
// Upstream checks: the bottleneck must be a whole number of channels.
inline int64_t os_mid_channels(const char* block, int64_t out_channels, int64_t reduction) {
  TORCH_CHECK(reduction > 0 && out_channels >= reduction && out_channels % reduction == 0, block,
              ": out_channels ", out_channels, " must be a positive multiple of the reduction ",
              reduction);
  return out_channels / reduction;
}
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// osnet.py's omni-scale block
// ---------------------------------------------------------------------------------------------

struct OSBlockOptions {
  OSBlockOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// The bottleneck is out_channels / reduction wide.
  TORCH_ARG(int64_t, reduction) = 4;
  /// An affine InstanceNorm after the residual sum, before the ReLU (osnet_ibn_x1_0's conv2).
  TORCH_ARG(bool, instance_norm) = false;
};

namespace detail {
// A block's projection shortcut, registered as `downsample` where the widths differ.
inline OSLinear1x1 os_downsample(torch::nn::Module& block, int64_t in_channels, int64_t out_channels) {
  if (in_channels == out_channels) return nullptr;
  return block.register_module("downsample", OSLinear1x1(OSLinear1x1Options(in_channels, out_channels)));
}

// A block's affine InstanceNorm, registered as `IN` where asked for.
inline torch::nn::InstanceNorm2d os_instance_norm(torch::nn::Module& block, bool wanted, int64_t channels) {
  if (!wanted) return nullptr;
  return block.register_module(
      "IN", torch::nn::InstanceNorm2d(torch::nn::InstanceNorm2dOptions(channels).affine(true)));
}
}  // namespace detail

/// torchreid osnet.py's OSBlock: four streams of 1, 2, 3 and 4 lite 3x3 convs named conv2a,
/// conv2b, conv2c, conv2d. Keys: conv1, conv2a, conv2b, conv2c, conv2d, gate, conv3,
/// downsample (when the widths differ), IN (with instance_norm).
class OSBlockImpl : public torch::nn::Cloneable<OSBlockImpl> {
 public:
  explicit OSBlockImpl(const OSBlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto mid = detail::os_mid_channels("OSBlock", options.out_channels(), options.reduction());
    conv1 = register_module("conv1", os_conv1x1(options.in_channels(), mid));
    const auto stream = [mid](int depth) {
      torch::nn::Sequential layers;
      for (int i = 0; i < depth; ++i) layers->push_back(LightConv3x3(LightConv3x3Options(mid, mid)));
      return layers;
    };
    conv2a = register_module("conv2a", LightConv3x3(LightConv3x3Options(mid, mid)));
    conv2b = register_module("conv2b", stream(2));
    conv2c = register_module("conv2c", stream(3));
    conv2d = register_module("conv2d", stream(4));
    gate = register_module("gate", ChannelGate(mid));
    conv3 = register_module("conv3", OSLinear1x1(OSLinear1x1Options(mid, options.out_channels())));
    downsample = detail::os_downsample(*this, options.in_channels(), options.out_channels());
    IN = detail::os_instance_norm(*this, options.instance_norm(), options.out_channels());
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto squeezed = conv1(x);
    // Summed in upstream's order (a + b + c + d), so that float results match bit for bit.
    auto mixed = gate(conv2a(squeezed)) + gate(conv2b->forward(squeezed));
    mixed = mixed + gate(conv2c->forward(squeezed));
    mixed = mixed + gate(conv2d->forward(squeezed));
    auto out = conv3(mixed) + (downsample.is_empty() ? x : downsample(x));
    if (!IN.is_empty()) out = IN(out);
    return torch::relu(out);
  }

  /// None with the InstanceNorm after the sum.
  std::optional<OmniScaleBlockView> view() const {
    const auto squeeze = conv1->view();
    const auto gate_view = gate->view();
    const auto expand = conv3->view();
    if (!IN.is_empty() || !squeeze || !gate_view || !expand) return std::nullopt;
    OmniScaleBlockView out{*squeeze, {{conv2a->view()}}, *gate_view, *expand, std::nullopt};
    for (const auto* stream : {&conv2b, &conv2c, &conv2d}) {
      std::vector<LightConvView> layers;
      for (const auto& layer : **stream) layers.push_back(layer.ptr()->as<LightConv3x3Impl>()->view());
      out.streams.push_back(std::move(layers));
    }
    if (!downsample.is_empty()) {
      out.shortcut = downsample->view();
      if (!out.shortcut) return std::nullopt;
    }
    return out;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::OSBlock(" << options.in_channels() << ", " << options.out_channels()
           << ", instance_norm=" << (options.instance_norm() ? "true" : "false") << ")";
  }

  OSBlockOptions options;
  OSConvLayer conv1{nullptr};
  LightConv3x3 conv2a{nullptr};
  torch::nn::Sequential conv2b{nullptr}, conv2c{nullptr}, conv2d{nullptr};
  ChannelGate gate{nullptr};
  OSLinear1x1 conv3{nullptr}, downsample{nullptr};
  torch::nn::InstanceNorm2d IN{nullptr};  // NOLINT: torchreid's key name
};
TORCH_MODULE(OSBlock);

// ---------------------------------------------------------------------------------------------
// osnet_ain.py's blocks
// ---------------------------------------------------------------------------------------------

struct LightConvStreamOptions {
  LightConvStreamOptions(int64_t channels, int64_t depth) : channels_(channels), depth_(depth) {}

  TORCH_ARG(int64_t, channels);
  /// Lite 3x3 convs in a row (receptive field 2 * depth + 1).
  TORCH_ARG(int64_t, depth);
};

/// torchreid osnet_ain.py's LightConvStream. Key: layers.{0..depth-1}.
class LightConvStreamImpl : public torch::nn::Cloneable<LightConvStreamImpl> {
 public:
  explicit LightConvStreamImpl(const LightConvStreamOptions& options_) : options(options_) {
    reset();
  }

  void reset() override {
    TORCH_CHECK(options.depth() >= 1, "LightConvStreamOptions::depth must be >= 1, got ",
                options.depth());
    layers = torch::nn::Sequential();
    for (int64_t i = 0; i < options.depth(); ++i) {
      layers->push_back(LightConv3x3(LightConv3x3Options(options.channels(), options.channels())));
    }
    register_module("layers", layers);
  }

  torch::Tensor forward(const torch::Tensor& x) { return layers->forward(x); }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::LightConvStream(" << options.channels() << ", depth=" << options.depth()
           << ")";
  }

  LightConvStreamOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(LightConvStream);

struct OSBlockAinOptions {
  OSBlockAinOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, reduction) = 4;
  /// Streams of 1..streams lite 3x3 convs (upstream's T).
  TORCH_ARG(int64_t, streams) = 4;
  /// OSBlockINin: conv3 loses its BatchNorm and an affine InstanceNorm follows it inside the
  /// residual branch, so the shortcut keeps the style information the norm removes.
  TORCH_ARG(bool, instance_norm) = false;
};

/// torchreid osnet_ain.py's OSBlock, or its OSBlockINin with instance_norm. Keys: conv1,
/// conv2.{0..streams-1} (stream t has t layers), gate, conv3, downsample (when the widths
/// differ), IN (with instance_norm).
class OSBlockAinImpl : public torch::nn::Cloneable<OSBlockAinImpl> {
 public:
  explicit OSBlockAinImpl(const OSBlockAinOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto mid =
        detail::os_mid_channels("OSBlockAin", options.out_channels(), options.reduction());
    TORCH_CHECK(options.streams() >= 1, "OSBlockAinOptions::streams must be >= 1, got ",
                options.streams());
    conv1 = register_module("conv1", os_conv1x1(options.in_channels(), mid));
    conv2 = torch::nn::ModuleList();
    for (int64_t depth = 1; depth <= options.streams(); ++depth) {
      conv2->push_back(LightConvStream(LightConvStreamOptions(mid, depth)));
    }
    register_module("conv2", conv2);
    gate = register_module("gate", ChannelGate(mid));
    conv3 = register_module(
        "conv3", OSLinear1x1(OSLinear1x1Options(mid, options.out_channels())
                                 .batch_norm(!options.instance_norm())));
    downsample = detail::os_downsample(*this, options.in_channels(), options.out_channels());
    IN = detail::os_instance_norm(*this, options.instance_norm(), options.out_channels());
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto squeezed = conv1(x);
    torch::Tensor mixed;
    // Through the list itself: clone() replaces its entries, so no typed copies are kept.
    for (const auto& stream : *conv2) {
      auto gated = gate(stream->as<LightConvStreamImpl>()->forward(squeezed));
      mixed = mixed.defined() ? mixed + gated : gated;
    }
    auto residual = conv3(mixed);
    if (!IN.is_empty()) residual = IN(residual);
    return torch::relu(residual + (downsample.is_empty() ? x : downsample(x)));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::OSBlockAin(" << options.in_channels() << ", " << options.out_channels()
           << ", instance_norm=" << (options.instance_norm() ? "true" : "false") << ")";
  }

  OSBlockAinOptions options;
  OSConvLayer conv1{nullptr};
  torch::nn::ModuleList conv2{nullptr};
  ChannelGate gate{nullptr};
  OSLinear1x1 conv3{nullptr}, downsample{nullptr};
  torch::nn::InstanceNorm2d IN{nullptr};  // NOLINT: torchreid's key name
};
TORCH_MODULE(OSBlockAin);

// ---------------------------------------------------------------------------------------------
// Transition
// ---------------------------------------------------------------------------------------------

/// torchreid's stride-2 transition, nn.Sequential(Conv1x1(c, c), nn.AvgPool2d(2, stride=2)):
/// a 1x1 conv, BatchNorm and ReLU, then a 2x2 average pool. Keys: 0.conv, 0.bn (its children
/// are named "0" and "1", as the Sequential's).
class OSTransitionImpl : public torch::nn::Cloneable<OSTransitionImpl> {
 public:
  explicit OSTransitionImpl(int64_t channels) : channels_(channels) { reset(); }

  void reset() override {
    conv = register_module("0", os_conv1x1(channels_, channels_));
    pool = register_module("1", torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2).stride(2)));
  }

  torch::Tensor forward(const torch::Tensor& x) { return pool(conv(x)); }

  std::optional<ConvNormView> view() const { return conv->view(); }

  int64_t channels() const { return channels_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::OSTransition(" << channels_ << ")";
  }

  OSConvLayer conv{nullptr};
  torch::nn::AvgPool2d pool{nullptr};

 private:
  int64_t channels_;
};
TORCH_MODULE(OSTransition);

// ---------------------------------------------------------------------------------------------
// Initialisation
// ---------------------------------------------------------------------------------------------

/// torchreid's OSNet._init_params: convs Kaiming-normal (fan_out, relu) with bias 0, every
/// BatchNorm and affine InstanceNorm weight 1 and bias 0, Linear N(0, linear_std) with bias 0.
struct OSNetInit {
  double linear_std = 0.01;

  void operator()(torch::nn::Module& root) const {
    TorchvisionInit{}(root);  // convs and BatchNorms as torchvision's ResNet
    torch::NoGradGuard no_grad;
    detail::for_each_module(root, [](torch::nn::Module& module) {
      auto* norm = module.as<torch::nn::InstanceNorm2d>();
      if (norm == nullptr || !norm->options.affine()) return;
      torch::nn::init::ones_(norm->weight);
      torch::nn::init::zeros_(norm->bias);
    });
    detail::for_each_linear(root, [this](torch::Tensor& weight, torch::Tensor& bias) {
      torch::nn::init::normal_(weight, 0.0, linear_std);
      detail::zero_if_defined(bias);
    });
  }
};

}  // namespace reidnet
