#pragma once
/// HRNet's building blocks (Wang et al. 2020, "Deep High-Resolution Representation Learning
/// for Visual Recognition"), with the state_dict keys of timm's hrnet.py.
///
/// A high-resolution module runs one chain of residual blocks per resolution (branch i works
/// at 1/2^i of branch 0's size), then fuses: every output branch i is the ReLU of the sum over
/// all branches j of branch j brought to branch i's width and size.
///
///     reidnet::HighResolutionModule module(reidnet::HighResolutionModuleOptions(
///         {18, 36}, reidnet::HRNetBlock::kBasic, {4, 4}, {18, 36}));
///     auto outputs = module->forward({x0, x1});   // x1 at half the size of x0
///     // keys branches.{i}.{k}.*, fuse_layers.{i}.{j}.* (no entry where i == j)

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/residual_blocks.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>  // torch::nn::Identity
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/options/upsampling.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

/// The residual block of an HRNet stage (timm's cfg `block_type`).
enum class HRNetBlock {
  kBasic,       ///< "BASIC": two 3x3 convs, expansion 1
  kBottleneck,  ///< "BOTTLENECK": 1x1 -> 3x3 -> 1x1, expansion 4
};

/// How a module combines the branches (timm's cfg `fuse_method`); every HRNet sums.
enum class HRNetFuseMethod {
  kSum,  ///< "SUM"
};

/// Output channels per unit of width of `block` (BasicBlock 1, Bottleneck 4).
inline int64_t hrnet_block_expansion(HRNetBlock block) {
  return block == HRNetBlock::kBottleneck ? BottleneckImpl::expansion : BasicBlockImpl::expansion;
}

/// timm's spelling of `block` in its stage configurations.
inline const char* hrnet_block_name(HRNetBlock block) {
  return block == HRNetBlock::kBottleneck ? "BOTTLENECK" : "BASIC";
}

namespace detail {

// timm's _make_layer and _make_one_branch (stride 1): `count` blocks of width `planes`; the
// first gets the 1x1 conv + BN shortcut when the channels change. timm builds that shortcut
// with BatchNorm momentum 0.1, the default, so reidnet's blocks (torchvision's layout and
// numerics, as timm's resnet.py blocks) build the very same one.
inline torch::nn::Sequential hrnet_blocks(HRNetBlock block, int64_t in_channels, int64_t planes,
                                          int64_t count) {
  TORCH_CHECK(count > 0, "HRNet: a branch needs at least one block, got ", count);
  torch::nn::Sequential blocks;
  int64_t channels = in_channels;
  for (int64_t i = 0; i < count; ++i) {
    const ResidualBlockOptions options(channels, planes);
    if (block == HRNetBlock::kBottleneck) {
      blocks->push_back(Bottleneck(options));
    } else {
      blocks->push_back(BasicBlock(options));
    }
    channels = planes * hrnet_block_expansion(block);
  }
  return blocks;
}

}  // namespace detail

/// Options of `HRNetConvUnit`.
struct HRNetConvUnitOptions {
  HRNetConvUnitOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// Square kernel, padded by kernel_size / 2.
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  /// Conv bias: only the classification head's convs have one.
  TORCH_ARG(bool, bias) = false;
  /// ReLU after the BatchNorm.
  TORCH_ARG(bool, relu) = true;
  /// Nearest-neighbour upsampling factor after the BatchNorm (1 = none): a fuse path from a
  /// lower branch.
  TORCH_ARG(int64_t, upsample) = 1;
};

/// timm's nn.Sequential(conv, BatchNorm2d[, ReLU | Upsample]) of the transitions, the fuse
/// layers and the head: conv, BatchNorm (eps 1e-5, momentum 0.1), then ReLU or a nearest
/// upsample, which have no keys. Keys: 0 (conv), 1 (BatchNorm).
///
///     reidnet::HRNetConvUnit unit(reidnet::HRNetConvUnitOptions(18, 36, 3).stride(2));
class HRNetConvUnitImpl : public torch::nn::Cloneable<HRNetConvUnitImpl>, public DeclaresConvBatchNormPairs {
 public:
  explicit HRNetConvUnitImpl(const HRNetConvUnitOptions& options_) : options(options_) { reset(); }

  void reset() override {
    TORCH_CHECK(options.upsample() >= 1, "HRNetConvUnit: upsample must be >= 1, got ",
                options.upsample());
    const auto kernel = options.kernel_size();
    conv = register_module(
        "0", torch::nn::Conv2d(
                 torch::nn::Conv2dOptions(options.in_channels(), options.out_channels(), kernel)
                     .stride(options.stride())
                     .padding(kernel / 2)
                     .bias(options.bias())));
    norm = register_module("1", BatchNorm2d(options.out_channels()));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto out = norm(conv(x));
    if (options.relu()) out = out.relu_();  // on the BatchNorm's own output
    if (options.upsample() > 1) {
      // nn.Upsample(scale_factor=s, mode="nearest"): the same interpolate call.
      const auto scale = static_cast<double>(options.upsample());
      namespace F = torch::nn::functional;
      out = F::interpolate(out, F::InterpolateFuncOptions()
                                    .scale_factor(std::vector<double>{scale, scale})
                                    .mode(torch::kNearest));
    }
    return out;
  }

  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override { return {{"0", "1"}}; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::HRNetConvUnit(" << options.in_channels() << ", " << options.out_channels()
           << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride()
           << ", relu=" << options.relu() << ", upsample=" << options.upsample() << ")";
  }

  HRNetConvUnitOptions options;
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d norm{nullptr};
};
TORCH_MODULE(HRNetConvUnit);

namespace detail {

// A path between two branches, in a fuse layer or a transition, is one conv unit, a chain of
// stride-2 conv units (torch::nn::Sequential, keys k.0 and k.1), or timm's key-less Identity,
// which keeps the indices of the paths after it. The containers are asked for their modules
// at each forward rather than keeping typed copies of the pointers: cloning a ModuleList
// replaces its children, which such copies would not see.
inline torch::Tensor hrnet_path_forward(torch::nn::Module& path, const torch::Tensor& x) {
  if (auto* unit = path.as<HRNetConvUnit>()) return unit->forward(x);
  if (auto* chain = path.as<torch::nn::Sequential>()) return chain->forward(x);
  TORCH_CHECK(path.as<torch::nn::Identity>() != nullptr, "HRNet: unexpected path module ",
              path.name());
  return x;
}

// A chain of `count` stride-2 3x3 conv units from `in` channels: every unit keeps `in` but the
// last, which maps to `out`; `relu_last` says whether that last unit ends in ReLU.
inline torch::nn::Sequential hrnet_downsample_chain(int64_t in, int64_t out, int64_t count,
                                                    bool relu_last) {
  torch::nn::Sequential chain;
  for (int64_t k = 0; k < count; ++k) {
    const bool last = k + 1 == count;
    chain->push_back(HRNetConvUnit(
        HRNetConvUnitOptions(in, last ? out : in, 3).stride(2).relu(!last || relu_last)));
  }
  return chain;
}

}  // namespace detail

/// Options of `HighResolutionModule`: one entry per branch in each vector.
struct HighResolutionModuleOptions {
  HighResolutionModuleOptions(std::vector<int64_t> in_channels, HRNetBlock block,
                              std::vector<int64_t> num_blocks, std::vector<int64_t> num_channels)
      : in_channels_(std::move(in_channels)),
        block_(block),
        num_blocks_(std::move(num_blocks)),
        num_channels_(std::move(num_channels)) {}

  /// Channels entering each branch.
  TORCH_ARG(std::vector<int64_t>, in_channels);
  TORCH_ARG(HRNetBlock, block);
  /// Residual blocks per branch.
  TORCH_ARG(std::vector<int64_t>, num_blocks);
  /// Width of each branch; its output has num_channels * expansion channels.
  TORCH_ARG(std::vector<int64_t>, num_channels);
  TORCH_ARG(HRNetFuseMethod, fuse_method) = HRNetFuseMethod::kSum;
  /// false keeps only the fused output of branch 0 (every timm HRNet keeps all of them).
  TORCH_ARG(bool, multi_scale_output) = true;
};

/// timm's HighResolutionModule. Keys: branches.{i}.{k}.* (residual blocks), then
/// fuse_layers.{i}.{j}.* for i != j (none with a single branch):
/// - j > i: 0 = 1x1 conv to branch i's channels, 1 = BatchNorm; then a nearest upsample by
///   2^(j - i) (no keys);
/// - j < i: i - j stride-2 3x3 conv units k = 0..i-j-1, each with keys k.0 (conv) and k.1
///   (BatchNorm); all but the last keep branch j's channels and end in ReLU, the last maps to
///   branch i's channels without ReLU.
class HighResolutionModuleImpl : public torch::nn::Cloneable<HighResolutionModuleImpl> {
 public:
  explicit HighResolutionModuleImpl(const HighResolutionModuleOptions& options_)
      : options(options_) {
    reset();
  }

  void reset() override {
    const auto branch_count = options.num_channels().size();
    // timm's _check_branches.
    TORCH_CHECK(branch_count > 0, "HighResolutionModule needs at least one branch");
    TORCH_CHECK(options.num_blocks().size() == branch_count, "HighResolutionModule: num_branches(",
                branch_count, ") <> num_blocks(", options.num_blocks().size(), ")");
    TORCH_CHECK(options.in_channels().size() == branch_count, "HighResolutionModule: num_branches(",
                branch_count, ") <> num_in_chs(", options.in_channels().size(), ")");
    const auto& in = options.in_channels();
    const auto out = out_channels();

    branches = register_module("branches", torch::nn::ModuleList());
    for (size_t i = 0; i < branch_count; ++i) {
      branches->push_back(detail::hrnet_blocks(options.block(), in[i], options.num_channels()[i],
                                               options.num_blocks()[i]));
    }

    fuse_layers = nullptr;
    if (branch_count == 1) return;  // timm: an Identity, no keys
    fuse_layers = register_module("fuse_layers", torch::nn::ModuleList());
    const size_t outputs = options.multi_scale_output() ? branch_count : 1;
    for (size_t i = 0; i < outputs; ++i) {
      torch::nn::ModuleList row;
      for (size_t j = 0; j < branch_count; ++j) {
        if (j > i) {
          row->push_back(HRNetConvUnit(
              HRNetConvUnitOptions(out[j], out[i], 1).relu(false).upsample(int64_t{1} << (j - i))));
        } else if (j < i) {
          row->push_back(detail::hrnet_downsample_chain(out[j], out[i], static_cast<int64_t>(i - j),
                                                        /*relu_last=*/false));
        } else {
          row->push_back(torch::nn::Identity());
        }
      }
      fuse_layers->push_back(row);
    }
  }

  /// Output channels of each branch (num_channels * expansion).
  std::vector<int64_t> out_channels() const {
    std::vector<int64_t> channels;
    for (const auto width : options.num_channels()) {
      channels.push_back(width * hrnet_block_expansion(options.block()));
    }
    return channels;
  }

  /// One map per branch in, one fused map per output branch out.
  std::vector<torch::Tensor> forward(std::vector<torch::Tensor> x) {
    TORCH_CHECK(x.size() == branches->size(), "HighResolutionModule expects ", branches->size(),
                " maps, got ", x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = branches[i]->as<torch::nn::Sequential>()->forward(x[i]);
    if (!fuse_layers) return x;  // one branch: no fusion, no ReLU
    std::vector<torch::Tensor> fused;
    fused.reserve(fuse_layers->size());
    for (const auto& row : *fuse_layers) {
      const auto& paths = *row->as<torch::nn::ModuleList>();
      torch::Tensor sum;
      for (size_t j = 0; j < x.size(); ++j) {
        auto term = detail::hrnet_path_forward(*paths[j], x[j]);
        sum = sum.defined() ? sum + term : term;
      }
      fused.push_back(torch::relu(sum));  // timm's fuse_act, not in place
    }
    return fused;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::HighResolutionModule(block=" << hrnet_block_name(options.block())
           << ", num_channels=[";
    for (size_t i = 0; i < options.num_channels().size(); ++i) {
      stream << (i ? ", " : "") << options.num_channels()[i];
    }
    stream << "])";
  }

  HighResolutionModuleOptions options;
  torch::nn::ModuleList branches{nullptr};
  /// fuse_layers.i.j: HRNetConvUnit (j > i), Sequential of units (j < i) or Identity (i == j);
  /// null with a single branch.
  torch::nn::ModuleList fuse_layers{nullptr};
};
TORCH_MODULE(HighResolutionModule);

}  // namespace reidnet
