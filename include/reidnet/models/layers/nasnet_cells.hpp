#pragma once
/// NASNet-A's building blocks (Zoph et al. 2018, "Learning Transferable Architectures for
/// Scalable Image Recognition"), with the state_dict keys of Cadene's pretrainedmodels
/// (pretrainedmodels/models/nasnet.py), the port of TensorFlow's NASNet-A-Large.
///
/// A cell takes two inputs, the previous cell's output `x` and the one before it `x_prev`,
/// squeezes each with ReLU-conv1x1-BN, combines them in five pairs of branches (separable
/// convs, 3x3 pools, identities) that are summed pairwise, and concatenates the sums:
///
///     reidnet::NASNetNormalCell cell(reidnet::NASNetCellOptions(1008, 168, 1008, 168));
///     torch::Tensor out = cell(x, x_prev);   // 6 x 168 channels, same size as x
///
/// Two pixel shifts of the TensorFlow port are kept, because the weights were trained with
/// them: the factorised reduction's second path (`path_2`) reads the map shifted by one pixel
/// (pad right/bottom, drop the first row and column), and the first reduction cell pads
/// left/top by one before its stride-2 ops and drops their first output row and column. That
/// cell halves n rows to floor(n / 2) while the factorised reduction of the cell after it
/// halves the same map to ceil(n / 2), so a cell's inputs disagree on odd sizes; the cells
/// refuse such inputs with a message, where PyTorch fails in an addition.
///
/// Every BatchNorm has eps 0.001 and momentum 0.1 (TensorFlow's values); every conv is
/// bias-free; the ReLUs are not in place; weights keep PyTorch's default initialisation.
/// The cells run their ops in upstream's order, one statement each (C++ leaves the order of
/// `a(x) + b(y)`'s operands open): the autograd graph, and so the order in which gradients
/// of a shared input add up, then matches PyTorch's to the bit.

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/padding.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <string>

namespace reidnet {

namespace detail {

// pretrainedmodels' BatchNorm2d(c, eps=0.001, momentum=0.1, affine=True).
inline BatchNorm2d nasnet_batch_norm(int64_t channels) {
  return BatchNorm2d(torch::nn::BatchNormOptions(channels).eps(1e-3).momentum(0.1).affine(true));
}

// `x[:, :, 1:, 1:]`: the crop that undoes a one-pixel pad.
inline torch::Tensor drop_first_row_and_column(const torch::Tensor& x) {
  return x.slice(2, 1).slice(3, 1);
}

// ZeroPad2d((1, 0, 1, 0)) (left, right, top, bottom) and ZeroPad2d((0, 1, 0, 1)).
inline torch::nn::ZeroPad2d nasnet_pad_top_left() {
  return torch::nn::ZeroPad2d(torch::nn::ZeroPad2dOptions({1, 0, 1, 0}));
}
inline torch::nn::ZeroPad2d nasnet_pad_bottom_right() {
  return torch::nn::ZeroPad2d(torch::nn::ZeroPad2dOptions({0, 1, 0, 1}));
}

// MaxPool2d(3, stride, padding=1) and AvgPool2d(3, stride, padding=1, count_include_pad=False).
inline torch::nn::MaxPool2d nasnet_max_pool(int64_t stride) {
  return torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(stride).padding(1));
}
inline torch::nn::AvgPool2d nasnet_avg_pool(int64_t stride) {
  return torch::nn::AvgPool2d(
      torch::nn::AvgPool2dOptions(3).stride(stride).padding(1).count_include_pad(false));
}

// The check before a cell adds branches of its two inputs.
inline void check_nasnet_inputs_agree(const char* cell, const torch::Tensor& left,
                                      const torch::Tensor& right) {
  TORCH_CHECK(left.size(2) == right.size(2) && left.size(3) == right.size(3), "NASNet ", cell,
              ": its inputs reach it at ", left.size(2), "x", left.size(3), " and ", right.size(2),
              "x", right.size(3), "; NASNet-A runs only where its stride-8 map (cells 0-5) has an "
              "even height and width, e.g. for 256x128 or 128x64 images (pretrainedmodels' "
              "NASNetALarge fails on this input too)");
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Branches
// ---------------------------------------------------------------------------------------------

struct NASNetSeparableConvOptions {
  NASNetSeparableConvOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  /// Stride and padding of the depthwise conv (the pointwise conv is 1x1, stride 1).
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, padding) = 0;
  /// Biases on both convs; false in every NASNet-A layer.
  TORCH_ARG(bool, bias) = false;
};

/// pretrainedmodels' SeparableConv2d: a depthwise kxk conv, then a pointwise 1x1 conv, without
/// a norm or activation between them. Keys: depthwise_conv2d, pointwise_conv2d.
class NASNetSeparableConvImpl : public torch::nn::Cloneable<NASNetSeparableConvImpl> {
 public:
  explicit NASNetSeparableConvImpl(const NASNetSeparableConvOptions& options_) : options(options_) {
    reset();
  }

  void reset() override {
    const auto in = options.in_channels();
    depthwise_conv2d = register_module(
        "depthwise_conv2d", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, in, options.kernel_size())
                                                  .stride(options.stride())
                                                  .padding(options.padding())
                                                  .groups(in)
                                                  .bias(options.bias())));
    pointwise_conv2d = register_module(
        "pointwise_conv2d",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(in, options.out_channels(), 1).bias(options.bias())));
  }

  torch::Tensor forward(const torch::Tensor& x) { return pointwise_conv2d(depthwise_conv2d(x)); }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetSeparableConv(" << options.in_channels() << ", "
           << options.out_channels() << ", kernel_size=" << options.kernel_size()
           << ", stride=" << options.stride() << ", padding=" << options.padding() << ")";
  }

  NASNetSeparableConvOptions options;
  torch::nn::Conv2d depthwise_conv2d{nullptr}, pointwise_conv2d{nullptr};
};
TORCH_MODULE(NASNetSeparableConv);

/// Which of pretrainedmodels' three separable branches a `NASNetBranch` is.
enum class NASNetBranchKind {
  /// BranchSeparables: the first separable conv keeps in_channels.
  kPlain,
  /// BranchSeparablesStem: the first separable conv maps to out_channels.
  kStem,
  /// BranchSeparablesReduction (ReductionCell0): as kPlain, with the first separable conv run
  /// on the input padded left/top by one and its first output row and column dropped.
  kReduction,
};

inline const char* nasnet_branch_kind_name(NASNetBranchKind kind) {
  switch (kind) {
    case NASNetBranchKind::kPlain: return "plain";
    case NASNetBranchKind::kStem: return "stem";
    case NASNetBranchKind::kReduction: return "reduction";
  }
  return "?";
}

struct NASNetBranchOptions {
  NASNetBranchOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                      int64_t stride, int64_t padding)
      : in_channels_(in_channels),
        out_channels_(out_channels),
        kernel_size_(kernel_size),
        stride_(stride),
        padding_(padding) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  /// Stride of the first separable conv (the second has stride 1).
  TORCH_ARG(int64_t, stride);
  /// Padding of both depthwise convs.
  TORCH_ARG(int64_t, padding);
  TORCH_ARG(NASNetBranchKind, kind) = NASNetBranchKind::kPlain;
};

/// ReLU, separable conv, BN, ReLU, separable conv (stride 1), BN. Keys: separable_1, bn_sep_1,
/// separable_2, bn_sep_2.
class NASNetBranchImpl : public torch::nn::Cloneable<NASNetBranchImpl>, public DeclaresConvBatchNormPairs {
 public:
  explicit NASNetBranchImpl(const NASNetBranchOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto middle =
        options.kind() == NASNetBranchKind::kStem ? options.out_channels() : options.in_channels();
    separable_1 = register_module(
        "separable_1", NASNetSeparableConv(NASNetSeparableConvOptions(options.in_channels(), middle,
                                                                      options.kernel_size())
                                               .stride(options.stride())
                                               .padding(options.padding())));
    bn_sep_1 = register_module("bn_sep_1", detail::nasnet_batch_norm(middle));
    separable_2 = register_module(
        "separable_2", NASNetSeparableConv(NASNetSeparableConvOptions(middle, options.out_channels(),
                                                                      options.kernel_size())
                                               .padding(options.padding())));
    bn_sep_2 = register_module("bn_sep_2", detail::nasnet_batch_norm(options.out_channels()));
    // Registered last, as upstream's subclass adds it after the branch's own layers.
    padding = nullptr;
    if (options.kind() == NASNetBranchKind::kReduction) {
      padding = register_module("padding", detail::nasnet_pad_top_left());
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto out = torch::relu(x);
    if (options.kind() == NASNetBranchKind::kReduction) {
      out = detail::drop_first_row_and_column(separable_1(padding(out))).contiguous();
    } else {
      out = separable_1(out);
    }
    out = torch::relu(bn_sep_1(out));
    return bn_sep_2(separable_2(out));
  }

  /// Each separable conv's pointwise half feeds its BatchNorm (the reduction kind's crop in
  /// between keeps every channel's values, so the fold still holds).
  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override {
    return {{"separable_1.pointwise_conv2d", "bn_sep_1"}, {"separable_2.pointwise_conv2d", "bn_sep_2"}};
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetBranch(" << options.in_channels() << ", " << options.out_channels()
           << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride()
           << ", kind=" << nasnet_branch_kind_name(options.kind()) << ")";
  }

  NASNetBranchOptions options;
  NASNetSeparableConv separable_1{nullptr}, separable_2{nullptr};
  BatchNorm2d bn_sep_1{nullptr}, bn_sep_2{nullptr};
  /// kReduction only.
  torch::nn::ZeroPad2d padding{nullptr};
};
TORCH_MODULE(NASNetBranch);

/// pretrainedmodels' conv_1x1 / conv_prev_1x1: ReLU, bias-free 1x1 conv, BN. Keys: conv, bn.
class NASNetReLUConvBNImpl : public torch::nn::Cloneable<NASNetReLUConvBNImpl>, public DeclaresConvBatchNormPairs {
 public:
  NASNetReLUConvBNImpl(int64_t in_channels, int64_t out_channels)
      : in_channels(in_channels), out_channels(out_channels) {
    reset();
  }

  void reset() override {
    conv = register_module(
        "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 1).bias(false)));
    bn = register_module("bn", detail::nasnet_batch_norm(out_channels));
  }

  torch::Tensor forward(const torch::Tensor& x) { return bn(conv(torch::relu(x))); }

  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override { return {{"conv", "bn"}}; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetReLUConvBN(" << in_channels << ", " << out_channels << ")";
  }

  int64_t in_channels, out_channels;
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d bn{nullptr};
};
TORCH_MODULE(NASNetReLUConvBN);

/// Max or average pool in `NASNetShiftedPool`.
enum class NASNetPoolKind { kMax, kAverage };

/// pretrainedmodels' MaxPoolPad / AvgPoolPad (ReductionCell0): pad left/top by one, 3x3 pool
/// of stride 2 and padding 1 (the average excluding its own padding), drop the first row and
/// column. No keys.
class NASNetShiftedPoolImpl : public torch::nn::Cloneable<NASNetShiftedPoolImpl> {
 public:
  explicit NASNetShiftedPoolImpl(NASNetPoolKind kind) : kind(kind) { reset(); }

  void reset() override {
    pad = register_module("pad", detail::nasnet_pad_top_left());
    max_pool = nullptr;
    avg_pool = nullptr;
    if (kind == NASNetPoolKind::kMax) {
      max_pool = register_module("pool", detail::nasnet_max_pool(2));
    } else {
      avg_pool = register_module("pool", detail::nasnet_avg_pool(2));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto padded = pad(x);
    return detail::drop_first_row_and_column(kind == NASNetPoolKind::kMax ? max_pool(padded)
                                                                          : avg_pool(padded));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetShiftedPool(" << (kind == NASNetPoolKind::kMax ? "max" : "average")
           << ")";
  }

  NASNetPoolKind kind;
  torch::nn::ZeroPad2d pad{nullptr};
  torch::nn::MaxPool2d max_pool{nullptr};
  torch::nn::AvgPool2d avg_pool{nullptr};
};
TORCH_MODULE(NASNetShiftedPool);

/// One path of the factorised reduction (path_1, path_2 of cell_stem_1 and the First cells):
/// every second pixel (a 1x1 average pool of stride 2), then a bias-free 1x1 conv. The shifted
/// path (path_2) first pads right/bottom by one and drops the first row and column, so that it
/// reads the odd pixels. Keys: conv.
class NASNetPathImpl : public torch::nn::Cloneable<NASNetPathImpl> {
 public:
  NASNetPathImpl(int64_t in_channels, int64_t out_channels, bool shifted)
      : in_channels(in_channels), out_channels(out_channels), shifted(shifted) {
    reset();
  }

  void reset() override {
    pad = nullptr;
    if (shifted) pad = register_module("pad", detail::nasnet_pad_bottom_right());
    avgpool = register_module(
        "avgpool",
        torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(1).stride(2).count_include_pad(false)));
    conv = register_module(
        "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 1).bias(false)));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    return conv(avgpool(shifted ? detail::drop_first_row_and_column(pad(x)) : x));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetPath(" << in_channels << ", " << out_channels
           << ", shifted=" << (shifted ? "true" : "false") << ")";
  }

  int64_t in_channels, out_channels;
  bool shifted;
  torch::nn::ZeroPad2d pad{nullptr};
  torch::nn::AvgPool2d avgpool{nullptr};
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(NASNetPath);

// ---------------------------------------------------------------------------------------------
// Stem cells
// ---------------------------------------------------------------------------------------------

namespace detail {
// A cell's layer: a module holder, or an AnyModule (the reduction cells' pools).
template <class Layer>
torch::Tensor nasnet_apply(Layer& layer, const torch::Tensor& x) {
  return layer(x);
}
inline torch::Tensor nasnet_apply(torch::nn::AnyModule& layer, const torch::Tensor& x) { return layer.forward(x); }

// The wiring that pretrainedmodels' stem and reduction cells share: five combinations of the
// cell's branches over its two inputs, each sum in upstream's order (the order of the adds
// decides how gradients accumulate), concatenated as [c1, c2, c3, c4].
template <class Cell>
torch::Tensor nasnet_reduction_wiring(Cell& cell, const torch::Tensor& left, const torch::Tensor& right) {
  auto c0 = nasnet_apply(cell.comb_iter_0_left, left);
  c0 = c0 + nasnet_apply(cell.comb_iter_0_right, right);
  auto c1 = nasnet_apply(cell.comb_iter_1_left, left);
  c1 = c1 + nasnet_apply(cell.comb_iter_1_right, right);
  auto c2 = nasnet_apply(cell.comb_iter_2_left, left);
  c2 = c2 + nasnet_apply(cell.comb_iter_2_right, right);
  const auto c3 = nasnet_apply(cell.comb_iter_3_right, c0) + c1;
  auto c4 = nasnet_apply(cell.comb_iter_4_left, c0);
  c4 = c4 + nasnet_apply(cell.comb_iter_4_right, left);
  return torch::cat({c1, c2, c3, c4}, 1);
}
}  // namespace detail


struct NASNetStemCellOptions {
  NASNetStemCellOptions(int64_t stem_filters, int64_t num_filters)
      : stem_filters_(stem_filters), num_filters_(num_filters) {}

  /// Channels of conv0's output.
  TORCH_ARG(int64_t, stem_filters);
  /// Width of the cell's branches; the cell outputs 4 x num_filters channels.
  TORCH_ARG(int64_t, num_filters);
};

/// pretrainedmodels' CellStem0: halves conv0's map. The left input is conv_1x1(x), the right
/// one x itself (through stem branches). Output: [c1, c2, c3, c4], 4 x num_filters channels.
class NASNetCellStem0Impl : public torch::nn::Cloneable<NASNetCellStem0Impl> {
 public:
  explicit NASNetCellStem0Impl(const NASNetStemCellOptions& options_) : options(options_) {
    reset();
  }

  void reset() override {
    const auto stem = options.stem_filters();
    const auto f = options.num_filters();
    const auto stem_branch = [&](int64_t kernel) {
      return NASNetBranch(
          NASNetBranchOptions(stem, f, kernel, 2, kernel / 2).kind(NASNetBranchKind::kStem));
    };
    conv_1x1 = register_module("conv_1x1", NASNetReLUConvBN(stem, f));
    comb_iter_0_left = register_module("comb_iter_0_left", NASNetBranch(NASNetBranchOptions(f, f, 5, 2, 2)));
    comb_iter_0_right = register_module("comb_iter_0_right", stem_branch(7));
    comb_iter_1_left = register_module("comb_iter_1_left", detail::nasnet_max_pool(2));
    comb_iter_1_right = register_module("comb_iter_1_right", stem_branch(7));
    comb_iter_2_left = register_module("comb_iter_2_left", detail::nasnet_avg_pool(2));
    comb_iter_2_right = register_module("comb_iter_2_right", stem_branch(5));
    comb_iter_3_right = register_module("comb_iter_3_right", detail::nasnet_avg_pool(1));
    comb_iter_4_left = register_module("comb_iter_4_left", NASNetBranch(NASNetBranchOptions(f, f, 3, 1, 1)));
    comb_iter_4_right = register_module("comb_iter_4_right", detail::nasnet_max_pool(2));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto left = conv_1x1(x);
    return detail::nasnet_reduction_wiring(*this, left, x);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetCellStem0(stem_filters=" << options.stem_filters()
           << ", num_filters=" << options.num_filters() << ")";
  }

  NASNetStemCellOptions options;
  NASNetReLUConvBN conv_1x1{nullptr};
  NASNetBranch comb_iter_0_left{nullptr}, comb_iter_0_right{nullptr}, comb_iter_1_right{nullptr},
      comb_iter_2_right{nullptr}, comb_iter_4_left{nullptr};
  torch::nn::MaxPool2d comb_iter_1_left{nullptr}, comb_iter_4_right{nullptr};
  torch::nn::AvgPool2d comb_iter_2_left{nullptr}, comb_iter_3_right{nullptr};
};
TORCH_MODULE(NASNetCellStem0);

/// pretrainedmodels' CellStem1: halves cell_stem_0's map. The left input is
/// conv_1x1(cell_stem_0), the right one the factorised reduction of conv0's map (relu, path_1,
/// path_2, final_path_bn). Output: [c1, c2, c3, c4], 4 x num_filters channels.
class NASNetCellStem1Impl : public torch::nn::Cloneable<NASNetCellStem1Impl> {
 public:
  explicit NASNetCellStem1Impl(const NASNetStemCellOptions& options_) : options(options_) {
    reset();
  }

  void reset() override {
    const auto stem = options.stem_filters();
    const auto f = options.num_filters();
    const auto branch = [&](int64_t kernel, int64_t stride) {
      return NASNetBranch(NASNetBranchOptions(f, f, kernel, stride, kernel / 2));
    };
    conv_1x1 = register_module("conv_1x1", NASNetReLUConvBN(2 * f, f));
    path_1 = register_module("path_1", NASNetPath(stem, f / 2, /*shifted=*/false));
    path_2 = register_module("path_2", NASNetPath(stem, f / 2, /*shifted=*/true));
    final_path_bn = register_module("final_path_bn", detail::nasnet_batch_norm(f));
    comb_iter_0_left = register_module("comb_iter_0_left", branch(5, 2));
    comb_iter_0_right = register_module("comb_iter_0_right", branch(7, 2));
    comb_iter_1_left = register_module("comb_iter_1_left", detail::nasnet_max_pool(2));
    comb_iter_1_right = register_module("comb_iter_1_right", branch(7, 2));
    comb_iter_2_left = register_module("comb_iter_2_left", detail::nasnet_avg_pool(2));
    comb_iter_2_right = register_module("comb_iter_2_right", branch(5, 2));
    comb_iter_3_right = register_module("comb_iter_3_right", detail::nasnet_avg_pool(1));
    comb_iter_4_left = register_module("comb_iter_4_left", branch(3, 1));
    comb_iter_4_right = register_module("comb_iter_4_right", detail::nasnet_max_pool(2));
  }

  /// Upstream's argument order: conv0's map, then cell_stem_0's.
  torch::Tensor forward(const torch::Tensor& x_conv0, const torch::Tensor& x_stem_0) {
    const auto left = conv_1x1(x_stem_0);
    const auto relu = torch::relu(x_conv0);
    const auto right = final_path_bn(torch::cat({path_1(relu), path_2(relu)}, 1));
    return detail::nasnet_reduction_wiring(*this, left, right);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetCellStem1(stem_filters=" << options.stem_filters()
           << ", num_filters=" << options.num_filters() << ")";
  }

  NASNetStemCellOptions options;
  NASNetReLUConvBN conv_1x1{nullptr};
  NASNetPath path_1{nullptr}, path_2{nullptr};
  BatchNorm2d final_path_bn{nullptr};
  NASNetBranch comb_iter_0_left{nullptr}, comb_iter_0_right{nullptr}, comb_iter_1_right{nullptr},
      comb_iter_2_right{nullptr}, comb_iter_4_left{nullptr};
  torch::nn::MaxPool2d comb_iter_1_left{nullptr}, comb_iter_4_right{nullptr};
  torch::nn::AvgPool2d comb_iter_2_left{nullptr}, comb_iter_3_right{nullptr};
};
TORCH_MODULE(NASNetCellStem1);

// ---------------------------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------------------------

/// Widths of a cell: the left input is x_prev, the right one x (upstream's names).
struct NASNetCellOptions {
  NASNetCellOptions(int64_t in_channels_left, int64_t out_channels_left, int64_t in_channels_right,
                    int64_t out_channels_right)
      : in_channels_left_(in_channels_left),
        out_channels_left_(out_channels_left),
        in_channels_right_(in_channels_right),
        out_channels_right_(out_channels_right) {}

  TORCH_ARG(int64_t, in_channels_left);
  TORCH_ARG(int64_t, out_channels_left);
  TORCH_ARG(int64_t, in_channels_right);
  TORCH_ARG(int64_t, out_channels_right);
};

namespace detail {

// The five combinations shared by FirstCell and NormalCell, registered in upstream's order
// (comb_iter_0_left ... comb_iter_4_left) on the cell that owns them.
struct NASNetNormalCombinations {
  NASNetBranch comb_iter_0_left{nullptr}, comb_iter_0_right{nullptr}, comb_iter_1_left{nullptr},
      comb_iter_1_right{nullptr}, comb_iter_4_left{nullptr};
  torch::nn::AvgPool2d comb_iter_2_left{nullptr}, comb_iter_3_left{nullptr},
      comb_iter_3_right{nullptr};

  // `left` and `right`: the widths of the branches on x_left and on x_right.
  void register_on(torch::nn::Module& cell, int64_t left, int64_t right) {
    const auto branch = [](int64_t width, int64_t kernel) {
      return NASNetBranch(NASNetBranchOptions(width, width, kernel, 1, kernel / 2));
    };
    comb_iter_0_left = cell.register_module("comb_iter_0_left", branch(right, 5));
    comb_iter_0_right = cell.register_module("comb_iter_0_right", branch(left, 3));
    comb_iter_1_left = cell.register_module("comb_iter_1_left", branch(left, 5));
    comb_iter_1_right = cell.register_module("comb_iter_1_right", branch(left, 3));
    comb_iter_2_left = cell.register_module("comb_iter_2_left", nasnet_avg_pool(1));
    comb_iter_3_left = cell.register_module("comb_iter_3_left", nasnet_avg_pool(1));
    comb_iter_3_right = cell.register_module("comb_iter_3_right", nasnet_avg_pool(1));
    comb_iter_4_left = cell.register_module("comb_iter_4_left", branch(right, 3));
  }

  // [x_left, c0, c1, c2, c3, c4], as upstream concatenates them.
  torch::Tensor combine(const char* cell, const torch::Tensor& x_left, const torch::Tensor& x_right) {
    check_nasnet_inputs_agree(cell, x_left, x_right);
    auto c0 = comb_iter_0_left(x_right);
    c0 = c0 + comb_iter_0_right(x_left);
    auto c1 = comb_iter_1_left(x_left);
    c1 = c1 + comb_iter_1_right(x_left);
    const auto c2 = comb_iter_2_left(x_right) + x_left;
    auto c3 = comb_iter_3_left(x_left);
    c3 = c3 + comb_iter_3_right(x_left);
    const auto c4 = comb_iter_4_left(x_right) + x_right;
    return torch::cat({x_left, c0, c1, c2, c3, c4}, 1);
  }
};

}  // namespace detail

/// pretrainedmodels' FirstCell, the first cell of each stage: x_prev is twice x's size and is
/// halved by the factorised reduction (relu, path_1, path_2, final_path_bn) to
/// 2 x out_channels_left channels. Output: [x_left, c0, c1, c2, c3, c4],
/// 2 x out_channels_left + 5 x out_channels_right channels.
class NASNetFirstCellImpl : public torch::nn::Cloneable<NASNetFirstCellImpl> {
 public:
  explicit NASNetFirstCellImpl(const NASNetCellOptions& options_) : options(options_) { reset(); }

  void reset() override {
    const auto out_left = options.out_channels_left();
    conv_1x1 = register_module(
        "conv_1x1", NASNetReLUConvBN(options.in_channels_right(), options.out_channels_right()));
    path_1 = register_module("path_1", NASNetPath(options.in_channels_left(), out_left, false));
    path_2 = register_module("path_2", NASNetPath(options.in_channels_left(), out_left, true));
    final_path_bn = register_module("final_path_bn", detail::nasnet_batch_norm(2 * out_left));
    // Upstream sizes every branch of this cell by out_channels_right, those on x_left too.
    combinations.register_on(*this, options.out_channels_right(), options.out_channels_right());
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& x_prev) {
    const auto relu = torch::relu(x_prev);
    const auto x_left = final_path_bn(torch::cat({path_1(relu), path_2(relu)}, 1));
    return combinations.combine("FirstCell", x_left, conv_1x1(x));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetFirstCell(" << options.in_channels_left() << ", "
           << options.out_channels_left() << ", " << options.in_channels_right() << ", "
           << options.out_channels_right() << ")";
  }

  NASNetCellOptions options;
  NASNetReLUConvBN conv_1x1{nullptr};
  NASNetPath path_1{nullptr}, path_2{nullptr};
  BatchNorm2d final_path_bn{nullptr};
  detail::NASNetNormalCombinations combinations;
};
TORCH_MODULE(NASNetFirstCell);

/// pretrainedmodels' NormalCell: x and x_prev at the same size; left = conv_prev_1x1(x_prev),
/// right = conv_1x1(x). Output: [x_left, c0, c1, c2, c3, c4].
class NASNetNormalCellImpl : public torch::nn::Cloneable<NASNetNormalCellImpl> {
 public:
  explicit NASNetNormalCellImpl(const NASNetCellOptions& options_) : options(options_) { reset(); }

  void reset() override {
    conv_prev_1x1 = register_module(
        "conv_prev_1x1", NASNetReLUConvBN(options.in_channels_left(), options.out_channels_left()));
    conv_1x1 = register_module(
        "conv_1x1", NASNetReLUConvBN(options.in_channels_right(), options.out_channels_right()));
    combinations.register_on(*this, options.out_channels_left(), options.out_channels_right());
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& x_prev) {
    const auto x_left = conv_prev_1x1(x_prev);
    return combinations.combine("NormalCell", x_left, conv_1x1(x));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetNormalCell(" << options.in_channels_left() << ", "
           << options.out_channels_left() << ", " << options.in_channels_right() << ", "
           << options.out_channels_right() << ")";
  }

  NASNetCellOptions options;
  NASNetReLUConvBN conv_prev_1x1{nullptr}, conv_1x1{nullptr};
  detail::NASNetNormalCombinations combinations;
};
TORCH_MODULE(NASNetNormalCell);

struct NASNetReductionCellOptions {
  NASNetReductionCellOptions(int64_t in_channels_left, int64_t out_channels_left,
                             int64_t in_channels_right, int64_t out_channels_right)
      : in_channels_left_(in_channels_left),
        out_channels_left_(out_channels_left),
        in_channels_right_(in_channels_right),
        out_channels_right_(out_channels_right) {}

  TORCH_ARG(int64_t, in_channels_left);
  TORCH_ARG(int64_t, out_channels_left);
  TORCH_ARG(int64_t, in_channels_right);
  TORCH_ARG(int64_t, out_channels_right);
  /// ReductionCell0 (true): BranchSeparablesReduction, MaxPoolPad and AvgPoolPad, which halve
  /// n rows to floor(n / 2); ReductionCell1 (false): plain branches and pools (ceil(n / 2)).
  TORCH_ARG(bool, shifted) = false;
};

/// pretrainedmodels' ReductionCell0 and ReductionCell1: halve x and x_prev (the same size).
/// Output: [c1, c2, c3, c4], 4 x out_channels_right channels.
class NASNetReductionCellImpl : public torch::nn::Cloneable<NASNetReductionCellImpl> {
 public:
  explicit NASNetReductionCellImpl(const NASNetReductionCellOptions& options_) : options(options_) {
    reset();
  }

  void reset() override {
    const auto r = options.out_channels_right();
    const bool shifted = options.shifted();
    const auto branch = [&](int64_t kernel, int64_t stride) {
      return NASNetBranch(NASNetBranchOptions(r, r, kernel, stride, kernel / 2)
                              .kind(shifted ? NASNetBranchKind::kReduction : NASNetBranchKind::kPlain));
    };
    conv_prev_1x1 = register_module(
        "conv_prev_1x1", NASNetReLUConvBN(options.in_channels_left(), options.out_channels_left()));
    conv_1x1 = register_module("conv_1x1", NASNetReLUConvBN(options.in_channels_right(), r));
    comb_iter_0_left = register_module("comb_iter_0_left", branch(5, 2));
    comb_iter_0_right = register_module("comb_iter_0_right", branch(7, 2));
    comb_iter_1_left = register_pool("comb_iter_1_left", NASNetPoolKind::kMax);
    comb_iter_1_right = register_module("comb_iter_1_right", branch(7, 2));
    comb_iter_2_left = register_pool("comb_iter_2_left", NASNetPoolKind::kAverage);
    comb_iter_2_right = register_module("comb_iter_2_right", branch(5, 2));
    comb_iter_3_right = register_module("comb_iter_3_right", detail::nasnet_avg_pool(1));
    comb_iter_4_left = register_module("comb_iter_4_left", branch(3, 1));
    comb_iter_4_right = register_pool("comb_iter_4_right", NASNetPoolKind::kMax);
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& x_prev) {
    const auto x_left = conv_prev_1x1(x_prev);
    const auto x_right = conv_1x1(x);
    detail::check_nasnet_inputs_agree("ReductionCell", x_left, x_right);
    return detail::nasnet_reduction_wiring(*this, x_right, x_left);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetReductionCell(" << options.in_channels_left() << ", "
           << options.out_channels_left() << ", " << options.in_channels_right() << ", "
           << options.out_channels_right() << ", shifted=" << (options.shifted() ? "true" : "false")
           << ")";
  }

  NASNetReductionCellOptions options;
  NASNetReLUConvBN conv_prev_1x1{nullptr}, conv_1x1{nullptr};
  NASNetBranch comb_iter_0_left{nullptr}, comb_iter_0_right{nullptr}, comb_iter_1_right{nullptr},
      comb_iter_2_right{nullptr}, comb_iter_4_left{nullptr};
  /// MaxPoolPad / AvgPoolPad (shifted) or MaxPool2d / AvgPool2d of stride 2.
  torch::nn::AnyModule comb_iter_1_left, comb_iter_2_left, comb_iter_4_right;
  torch::nn::AvgPool2d comb_iter_3_right{nullptr};

 private:
  // A key-less 3x3 pool of stride 2, registered under `name` for the module tree.
  torch::nn::AnyModule register_pool(const std::string& name, NASNetPoolKind kind) {
    torch::nn::AnyModule pool;
    if (options.shifted()) {
      pool = torch::nn::AnyModule(NASNetShiftedPool(kind));
    } else if (kind == NASNetPoolKind::kMax) {
      pool = torch::nn::AnyModule(detail::nasnet_max_pool(2));
    } else {
      pool = torch::nn::AnyModule(detail::nasnet_avg_pool(2));
    }
    register_module(name, pool.ptr());
    return pool;
  }
};
TORCH_MODULE(NASNetReductionCell);

}  // namespace reidnet
