#pragma once
/// torchvision's residual blocks (ResNet v1.5: the stride sits on the 3x3 conv).
///
/// Both blocks take the same options, so `ResNet<Block>` builds either one:
///
///     reidnet::Bottleneck block(reidnet::ResidualBlockOptions(256, 128).stride(2));
///
/// Each block also describes itself as a ResidualBlockView, and a backbone made of them as a
/// ResidualTrunkView (DescribesResidualTrunk): inference runs such a trunk on its fused conv
/// plan (reidnet/inference/inference.hpp), whatever head follows it.

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/ibn.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>
#include <optional>
#include <utility>
#include <vector>

namespace reidnet {

/// Options shared by `BasicBlock` and `Bottleneck`.
struct ResidualBlockOptions {
  ResidualBlockOptions(int64_t inplanes, int64_t planes) : inplanes_(inplanes), planes_(planes) {}

  /// Channels entering the block.
  TORCH_ARG(int64_t, inplanes);
  /// Width of the block; the output has `planes * Block::expansion` channels.
  TORCH_ARG(int64_t, planes);
  /// Stride of the 3x3 conv and of the downsample conv.
  TORCH_ARG(int64_t, stride) = 1;
  /// Grouped 3x3 conv (ResNeXt); 1 for ResNet.
  TORCH_ARG(int64_t, groups) = 1;
  /// Width per group; 64 for ResNet.
  TORCH_ARG(int64_t, base_width) = 64;
  /// Dilation of the 3x3 conv.
  TORCH_ARG(int64_t, dilation) = 1;
  /// IBN-a (IBN-Net): `bn1` normalises half of its channels per instance (Bottleneck only).
  TORCH_ARG(bool, ibn) = false;
};

/// A residual block as y = relu(main(x) + shortcut(x)): the main path's convs, each with its
/// BatchNorm and a ReLU after every one but the last, and the projection shortcut, where the
/// block has one (else the identity).
struct ResidualBlockView {
  std::vector<ConvNormView> main_path;
  std::optional<ConvNormView> shortcut;
};

/// torchvision's ResNet layout: the stem's conv, BatchNorm and ReLU, a 3x3 max pool (stride
/// 2, padding 1), then residual blocks; every conv pads dilation * (kernel - 1) / 2 each side.
struct ResidualTrunkView {
  ConvNormView stem;
  std::vector<ResidualBlockView> blocks;
  int64_t num_features = 0;
};

/// Implemented by backbones of that layout, whoever builds them. None where some layer does not
/// fit it: such a backbone runs as a module. An IBN-a block's first norm is in the view, as
/// its InstanceNorm and BatchNorm halves (needs_instance_norm).
class DescribesResidualTrunk {
 public:
  virtual ~DescribesResidualTrunk() = default;
  virtual std::optional<ResidualTrunkView> residual_trunk() const = 0;
};

/// The trunk `backbone` describes; none where it describes none or is not of that layout.
inline std::optional<ResidualTrunkView> residual_trunk_of(const torch::nn::Module& backbone) {
  const auto* describes = dynamic_cast<const DescribesResidualTrunk*>(&backbone);
  return describes != nullptr ? describes->residual_trunk() : std::nullopt;
}

/// Whether some conv of `trunk` is followed by an InstanceNorm half (IBN-a), which no conv
/// absorbs: only a plan that normalises between its convs runs such a trunk.
inline bool needs_instance_norm(const ResidualTrunkView& trunk) {
  for (const auto& block : trunk.blocks) {
    for (const auto& layer : block.main_path) {
      if (layer.instance_norm != nullptr) return true;
    }
  }
  return false;
}

namespace detail {

inline torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1, int64_t groups = 1,
                                 int64_t dilation = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3)
                               .stride(stride)
                               .padding(dilation)
                               .groups(groups)
                               .dilation(dilation)
                               .bias(false));
}

inline torch::nn::Conv2d conv1x1(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).stride(stride).bias(false));
}

// torchvision adds `downsample` = Sequential(conv1x1, BN) only when the block changes the
// spatial size or the channel count; otherwise the shortcut is the identity.
inline torch::nn::Sequential make_downsample(const ResidualBlockOptions& options,
                                             int64_t expansion) {
  const int64_t out = options.planes() * expansion;
  if (options.stride() == 1 && options.inplanes() == out) return nullptr;
  return torch::nn::Sequential(conv1x1(options.inplanes(), out, options.stride()),
                               BatchNorm2d(out));
}

// A block's pairs, with its downsample's (conv, BatchNorm) where it has one.
inline std::vector<ConvBatchNormPair> with_downsample_pair(std::vector<ConvBatchNormPair> pairs,
                                                           const torch::nn::Sequential& downsample) {
  if (downsample) pairs.push_back({"downsample.0", "downsample.1"});
  return pairs;
}

// A block's view: its main path and the downsample's conv and BatchNorm, where it has one.
inline ResidualBlockView residual_view(std::vector<ConvNormView> main_path,
                                       const torch::nn::Sequential& downsample) {
  ResidualBlockView view{std::move(main_path), std::nullopt};
  if (downsample) {
    view.shortcut = ConvNormView{downsample->ptr(0)->as<torch::nn::Conv2dImpl>(),
                                 downsample->ptr(1)->as<BatchNorm2dImpl>()};
  }
  return view;
}

inline torch::Tensor shortcut(torch::nn::Sequential& downsample, const torch::Tensor& x) {
  return downsample ? downsample->forward(x) : x;
}

}  // namespace detail

/// Two 3x3 convs (ResNet-18/34). Keys: conv1, bn1, conv2, bn2[, downsample.0, downsample.1].
class BasicBlockImpl : public torch::nn::Cloneable<BasicBlockImpl>, public DeclaresConvBatchNormPairs {
 public:
  static constexpr int64_t expansion = 1;

  explicit BasicBlockImpl(const ResidualBlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    TORCH_CHECK(options.groups() == 1 && options.base_width() == 64,
                "BasicBlock supports only groups=1 and base_width=64 (as torchvision)");
    TORCH_CHECK(options.dilation() == 1, "BasicBlock does not support dilation > 1");
    TORCH_CHECK(!options.ibn(), "BasicBlock does not support IBN (use Bottleneck)");
    conv1 = register_module("conv1", detail::conv3x3(options.inplanes(), options.planes(),
                                                     options.stride()));
    bn1 = register_module("bn1", BatchNorm2d(options.planes()));
    conv2 = register_module("conv2", detail::conv3x3(options.planes(), options.planes()));
    bn2 = register_module("bn2", BatchNorm2d(options.planes()));
    downsample = detail::make_downsample(options, expansion);
    if (downsample) register_module("downsample", downsample);
  }

  // In-place ReLU and add, as torchvision: fewer allocations, same values and gradients.
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = bn1(conv1(x)).relu_();
    out = bn2(conv2(out));
    return out.add_(detail::shortcut(downsample, x)).relu_();
  }

  /// The BatchNorm whose weight `zero_init_residual` zeroes.
  BatchNorm2d& last_norm() { return bn2; }

  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override {
    return detail::with_downsample_pair({{"conv1", "bn1"}, {"conv2", "bn2"}}, downsample);
  }

  std::optional<ResidualBlockView> residual_view() const {
    return detail::residual_view({{conv1.get(), bn1.get()}, {conv2.get(), bn2.get()}}, downsample);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::BasicBlock(inplanes=" << options.inplanes()
           << ", planes=" << options.planes() << ", stride=" << options.stride() << ")";
  }

  ResidualBlockOptions options;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(BasicBlock);

/// 1x1 -> 3x3 (strided) -> 1x1 with expansion 4 (ResNet-50/101/152).
/// Keys: conv1, bn1, conv2, bn2, conv3, bn3[, downsample.0, downsample.1].
class BottleneckImpl : public torch::nn::Cloneable<BottleneckImpl>, public DeclaresConvBatchNormPairs {
 public:
  static constexpr int64_t expansion = 4;

  explicit BottleneckImpl(const ResidualBlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const int64_t width = options.planes() * options.base_width() / 64 * options.groups();
    const int64_t out = options.planes() * expansion;
    conv1 = register_module("conv1", detail::conv1x1(options.inplanes(), width));
    // IBN-Net keeps the name bn1 for its IN/BN pair, so its checkpoints load as they are.
    if (options.ibn()) {
      ibn1 = register_module("bn1", Ibn(width));
    } else {
      bn1 = register_module("bn1", BatchNorm2d(width));
    }
    conv2 = register_module("conv2", detail::conv3x3(width, width, options.stride(),
                                                     options.groups(), options.dilation()));
    bn2 = register_module("bn2", BatchNorm2d(width));
    conv3 = register_module("conv3", detail::conv1x1(width, out));
    bn3 = register_module("bn3", BatchNorm2d(out));
    downsample = detail::make_downsample(options, expansion);
    if (downsample) register_module("downsample", downsample);
  }

  // In-place ReLU and add, as torchvision: fewer allocations, same values and gradients.
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = conv1(x);
    out = (ibn1 ? ibn1(out) : bn1(out)).relu_();
    out = bn2(conv2(out)).relu_();
    out = bn3(conv3(out));
    return out.add_(detail::shortcut(downsample, x)).relu_();
  }

  /// The BatchNorm whose weight `zero_init_residual` zeroes.
  BatchNorm2d& last_norm() { return bn3; }

  /// bn1 is none where it is IBN-a's pair of an InstanceNorm and a BatchNorm half.
  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override {
    std::vector<ConvBatchNormPair> pairs{{"conv2", "bn2"}, {"conv3", "bn3"}};
    if (!ibn1) pairs.insert(pairs.begin(), {"conv1", "bn1"});
    return detail::with_downsample_pair(std::move(pairs), downsample);
  }

  /// Where bn1 is IBN-a's pair, conv1's view holds both its halves.
  std::optional<ResidualBlockView> residual_view() const {
    const ConvNormView first = ibn1 ? ConvNormView{conv1.get(), ibn1->BN.get(), ibn1->IN.get()}
                                    : ConvNormView{conv1.get(), bn1.get()};
    return detail::residual_view({first, {conv2.get(), bn2.get()}, {conv3.get(), bn3.get()}}, downsample);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::Bottleneck(inplanes=" << options.inplanes()
           << ", planes=" << options.planes() << ", stride=" << options.stride() << ")";
  }

  ResidualBlockOptions options;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  /// `bn1` is null when the block is IBN-a; `ibn1` (key bn1) is then set instead.
  BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  Ibn ibn1{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

}  // namespace reidnet
