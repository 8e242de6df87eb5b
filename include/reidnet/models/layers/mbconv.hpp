#pragma once
/// EfficientNet's building blocks as the efficientnet_pytorch package builds them: a conv with
/// TensorFlow's "SAME" padding fixed when the model is built (its Conv2dStaticSamePadding), and
/// the mobile inverted bottleneck (its MBConvBlock).
///
///     reidnet::StaticSameConv2d stem(
///         reidnet::StaticSameConv2dOptions(3, 32, 3).stride(2).bias(false).image_size(224));
///     // pads 0 before and 1 after each axis (what keeps 224 -> 112), for any input size
///     reidnet::MBConvBlock block(reidnet::MBConvBlockOptions(16, 24).expand_ratio(6).stride(2)
///                                    .image_size(112));
///
/// The padding depends on the image size the package assumes (the variant's ImageNet
/// resolution), not on the input: at 256x128 a stride-2 conv still pads as it would at 224x224.
/// The parity with efficientnet_pytorch's weights and outputs needs exactly that padding.

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/drop_path.hpp>

#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <vector>

namespace reidnet {

namespace detail {
// efficientnet_pytorch's MemoryEfficientSwish, op for op: it keeps only x, and recomputes
// sigmoid(x) for the gradient, grad * (s * (1 + x * (1 - s))). (LibTorch's silu is the same
// function with another rounding, which three training steps amplify past 1e-4.)
struct SwishFunction : torch::autograd::Function<SwishFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& x) {
    context->save_for_backward({x});
    return x * torch::sigmoid(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 const torch::autograd::variable_list& gradients) {
    const auto x = context->get_saved_variables()[0];
    const auto s = torch::sigmoid(x);
    return {gradients[0] * (s * (1 + x * (1 - s)))};
  }
};
}  // namespace detail

/// Swish, x * sigmoid(x): efficientnet_pytorch's activation, with its memory-efficient backward.
inline torch::Tensor swish(const torch::Tensor& x) {
  if (!torch::GradMode::is_enabled() || !x.requires_grad()) return x * torch::sigmoid(x);
  return detail::SwishFunction::apply(x);
}

/// ceil(size / stride): the map size after a "SAME"-padded conv of that stride.
inline int64_t same_padded_output_size(int64_t size, int64_t stride) {
  return (size + stride - 1) / stride;
}

/// Options of `StaticSameConv2d`.
struct StaticSameConv2dOptions {
  StaticSameConv2dOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// Square kernels only, as everywhere in EfficientNet.
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  /// in_channels for a depthwise conv.
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(bool, bias) = true;
  /// (height, width) of the input the padding is computed for, once; (1, 1) for the
  /// squeeze-excitation convs, as upstream.
  TORCH_ARG(torch::ExpandingArray<2>, image_size) = 1;
};

/// A conv padded as TensorFlow's "SAME" would pad an input of `image_size`: in all
/// (out - 1) * stride + kernel - in zeros per axis, the smaller half before, the larger after.
/// Keys: weight, bias (no key for the padding, which has no parameters upstream either).
class StaticSameConv2dImpl : public torch::nn::Cloneable<StaticSameConv2dImpl>, public FoldableConv {
 public:
  explicit StaticSameConv2dImpl(const StaticSameConv2dOptions& options_) : options(options_) {
    reset();
  }

  void reset() override {
    const auto in = options.in_channels();
    const auto out = options.out_channels();
    const auto kernel = options.kernel_size();
    const auto groups = options.groups();
    TORCH_CHECK(in > 0 && out > 0 && kernel > 0 && options.stride() > 0 && groups > 0,
                "StaticSameConv2d needs positive channels, kernel, stride and groups, got in=", in,
                " out=", out, " kernel=", kernel, " stride=", options.stride(), " groups=", groups);
    TORCH_CHECK(in % groups == 0 && out % groups == 0, "StaticSameConv2d: groups (", groups,
                ") must divide in_channels (", in, ") and out_channels (", out, ")");
    const auto& image = *options.image_size();
    TORCH_CHECK(image[0] > 0 && image[1] > 0, "StaticSameConv2d needs a positive image_size, got ",
                image[0], "x", image[1]);
    const auto total_padding = [&](int64_t size) {
      const auto output = same_padded_output_size(size, options.stride());
      return std::max<int64_t>((output - 1) * options.stride() + kernel - size, 0);
    };
    const auto pad_h = total_padding(image[0]);
    const auto pad_w = total_padding(image[1]);
    padding = {pad_w / 2, pad_w - pad_w / 2, pad_h / 2, pad_h - pad_h / 2};

    weight = register_parameter("weight", torch::empty({out, in / groups, kernel, kernel}));
    bias = register_parameter("bias", options.bias() ? torch::empty({out}) : torch::Tensor(),
                              /*requires_grad=*/options.bias());
    reset_parameters();
  }

  /// PyTorch's default conv init (efficientnet_pytorch sets none of its own): weight
  /// Kaiming-uniform with a = sqrt(5), bias uniform in +-1/sqrt(fan_in).
  void reset_parameters() {
    torch::NoGradGuard no_grad;
    torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
    if (bias.defined()) {
      const auto fan_in = weight.size(1) * weight.size(2) * weight.size(3);
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
      torch::nn::init::uniform_(bias, -bound, bound);
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto [left, right, top, bottom] = padding;
    const std::array<int64_t, 2> stride{options.stride(), options.stride()};
    const std::array<int64_t, 2> dilation{1, 1};
    // An even padding goes to the conv itself, which spares a padded copy of the map: the
    // same zeros either way.
    if (left == right && top == bottom) {
      const std::array<int64_t, 2> even{top, left};
      return torch::conv2d(x, weight, bias, stride, even, dilation, options.groups());
    }
    const std::array<int64_t, 2> none{0, 0};
    return torch::conv2d(torch::constant_pad_nd(x, {left, right, top, bottom}, 0), weight, bias,
                         stride, none, dilation, options.groups());
  }

  torch::Tensor& conv_weight() override { return weight; }
  torch::Tensor& conv_bias() override { return bias; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::StaticSameConv2d(" << options.in_channels() << ", "
           << options.out_channels() << ", kernel_size=" << options.kernel_size()
           << ", stride=" << options.stride() << ", groups=" << options.groups()
           << ", bias=" << (options.bias() ? "true" : "false") << ", padding=(" << padding[0]
           << ", " << padding[1] << ", " << padding[2] << ", " << padding[3] << "))";
  }

  StaticSameConv2dOptions options;
  torch::Tensor weight, bias;
  /// Zeros added (left, right, top, bottom), as the package's ZeroPad2d takes them.
  std::array<int64_t, 4> padding{};
};
TORCH_MODULE(StaticSameConv2d);

/// Options of `MBConvBlock`: one entry of efficientnet_pytorch's BlockArgs after width scaling.
struct MBConvBlockOptions {
  MBConvBlockOptions(int64_t input_filters, int64_t output_filters)
      : input_filters_(input_filters), output_filters_(output_filters) {}

  TORCH_ARG(int64_t, input_filters);
  TORCH_ARG(int64_t, output_filters);
  /// Width of the depthwise conv, in units of input_filters; 1 = no expansion conv.
  TORCH_ARG(int64_t, expand_ratio) = 1;
  TORCH_ARG(int64_t, kernel_size) = 3;
  TORCH_ARG(int64_t, stride) = 1;
  /// Squeeze width as a fraction of input_filters; outside (0, 1] = no squeeze-excitation.
  TORCH_ARG(double, se_ratio) = 0.25;
  /// Whether the block may add its input (still only at stride 1 and equal widths).
  TORCH_ARG(bool, id_skip) = true;
  /// Map size at the block's input, for the "SAME" padding of its depthwise conv.
  TORCH_ARG(torch::ExpandingArray<2>, image_size) = 1;
  /// PyTorch's convention: 1 - TensorFlow's decay (0.99).
  TORCH_ARG(double, batch_norm_momentum) = 1.0 - 0.99;
  TORCH_ARG(double, batch_norm_eps) = 1e-3;
  /// Drop connect (stochastic depth) of the residual branch while training.
  TORCH_ARG(double, drop_path_rate) = 0.0;
};

/// efficientnet_pytorch's MBConvBlock: 1x1 expansion, depthwise conv, squeeze-excitation,
/// 1x1 linear projection, and the input added back (with drop connect) where the block keeps
/// its shape. Keys (the package's, underscores included, so that its files load):
/// _expand_conv, _bn0 (only when expand_ratio != 1), _depthwise_conv, _bn1, _se_reduce,
/// _se_expand (with bias), _project_conv, _bn2.
class MBConvBlockImpl : public torch::nn::Cloneable<MBConvBlockImpl>, public DeclaresConvBatchNormPairs {
 public:
  explicit MBConvBlockImpl(const MBConvBlockOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto in = options.input_filters();
    const auto out = options.output_filters();
    TORCH_CHECK(in > 0 && out > 0 && options.expand_ratio() > 0,
                "MBConvBlock needs positive input_filters, output_filters and expand_ratio, got ",
                in, ", ", out, ", ", options.expand_ratio());
    TORCH_CHECK(options.drop_path_rate() >= 0 && options.drop_path_rate() < 1,
                "MBConvBlock: drop_path_rate must be in [0, 1), got ", options.drop_path_rate());
    const auto inner = in * options.expand_ratio();
    const auto norm = [&](int64_t channels) {
      return BatchNorm2d(torch::nn::BatchNormOptions(channels)
                             .momentum(options.batch_norm_momentum())
                             .eps(options.batch_norm_eps()));
    };
    const auto pointwise = [&](int64_t from, int64_t to) {
      return StaticSameConv2d(StaticSameConv2dOptions(from, to, 1).bias(false));
    };

    expand_conv = nullptr;
    bn0 = nullptr;
    if (options.expand_ratio() != 1) {
      expand_conv = register_module("_expand_conv", pointwise(in, inner));
      bn0 = register_module("_bn0", norm(inner));
    }
    depthwise_conv = register_module(
        "_depthwise_conv",
        StaticSameConv2d(StaticSameConv2dOptions(inner, inner, options.kernel_size())
                             .stride(options.stride())
                             .groups(inner)
                             .bias(false)
                             .image_size(options.image_size())));
    bn1 = register_module("_bn1", norm(inner));
    se_reduce = nullptr;
    se_expand = nullptr;
    if (has_squeeze_excitation()) {
      // The package truncates: int(input_filters * se_ratio), at least 1.
      const auto squeezed = std::max<int64_t>(
          1, static_cast<int64_t>(static_cast<double>(in) * options.se_ratio()));
      se_reduce =
          register_module("_se_reduce", StaticSameConv2d(StaticSameConv2dOptions(inner, squeezed, 1)));
      se_expand =
          register_module("_se_expand", StaticSameConv2d(StaticSameConv2dOptions(squeezed, inner, 1)));
    }
    project_conv = register_module("_project_conv", pointwise(inner, out));
    bn2 = register_module("_bn2", norm(out));
  }

  bool has_squeeze_excitation() const { return options.se_ratio() > 0 && options.se_ratio() <= 1; }

  /// Whether the input is added back: id_skip, stride 1 and equal widths.
  bool has_skip() const {
    return options.id_skip() && options.stride() == 1 &&
           options.input_filters() == options.output_filters();
  }

  torch::Tensor forward(const torch::Tensor& inputs) {
    auto x = inputs;
    if (!expand_conv.is_empty()) x = swish(bn0(expand_conv(x)));
    x = swish(bn1(depthwise_conv(x)));
    if (!se_reduce.is_empty()) {
      const auto squeezed = torch::adaptive_avg_pool2d(x, {1, 1});
      x = torch::sigmoid(se_expand(swish(se_reduce(squeezed)))) * x;
    }
    x = bn2(project_conv(x));
    if (has_skip()) x = drop_path(x, options.drop_path_rate(), is_training()) + inputs;
    return x;
  }

  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override {
    std::vector<ConvBatchNormPair> pairs{{"_depthwise_conv", "_bn1"}, {"_project_conv", "_bn2"}};
    if (!expand_conv.is_empty()) pairs.insert(pairs.begin(), {"_expand_conv", "_bn0"});
    return pairs;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::MBConvBlock(" << options.input_filters() << ", "
           << options.output_filters() << ", expand_ratio=" << options.expand_ratio()
           << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride()
           << ", se_ratio=" << options.se_ratio() << ", drop_path_rate=" << options.drop_path_rate()
           << ")";
  }

  MBConvBlockOptions options;
  StaticSameConv2d expand_conv{nullptr}, depthwise_conv{nullptr}, se_reduce{nullptr},
      se_expand{nullptr}, project_conv{nullptr};
  BatchNorm2d bn0{nullptr}, bn1{nullptr}, bn2{nullptr};
};
TORCH_MODULE(MBConvBlock);

}  // namespace reidnet
