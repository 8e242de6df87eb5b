#pragma once
/// IBN-Net's instance-batch normalisation (Pan et al. 2018, "IBN-a"): the first half of the
/// channels is normalised per image (InstanceNorm2d with affine weights), the rest per batch
/// (BatchNorm2d). Instance normalisation removes per-image style (colour, contrast), which is
/// why IBN-a backbones generalise better across cameras.
///
///     reidnet::Ibn ibn(64);                      // keys IN.weight, IN.bias, BN.*
///     torch::Tensor y = ibn(torch::randn({2, 64, 32, 16}));

#include <reidnet/models/layers/batch_norm.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/instancenorm.h>  // LibTorch 1.13's module header lacks it
#include <torch/nn/modules/instancenorm.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>

namespace reidnet {

struct IbnOptions {
  /* implicit */ IbnOptions(int64_t planes) : planes_(planes) {}

  /// Channels in and out.
  TORCH_ARG(int64_t, planes);
  /// Share of the channels normalised per instance (IBN-Net: 0.5, rounded down).
  TORCH_ARG(double, ratio) = 0.5;
};

/// Keys `IN.{weight,bias}` and `BN.{weight,bias,running_mean,running_var,num_batches_tracked}`,
/// IBN-Net's spellings.
class IbnImpl : public torch::nn::Cloneable<IbnImpl> {
 public:
  explicit IbnImpl(const IbnOptions& options_) : options(options_) { reset(); }

  void reset() override {
    half_ = static_cast<int64_t>(static_cast<double>(options.planes()) * options.ratio());
    TORCH_CHECK(half_ > 0 && half_ < options.planes(), "Ibn: ", options.planes(),
                " channels at ratio ", options.ratio(), " leave one of the halves empty");
    IN = register_module(
        "IN", torch::nn::InstanceNorm2d(torch::nn::InstanceNorm2dOptions(half_).affine(true)));
    BN = register_module("BN", BatchNorm2d(options.planes() - half_));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto halves = x.split_with_sizes({half_, options.planes() - half_}, 1);
    return torch::cat({IN(halves[0].contiguous()), BN(halves[1].contiguous())}, 1);
  }

  /// Channels that go through InstanceNorm (the first ones).
  int64_t instance_channels() const { return half_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::Ibn(planes=" << options.planes() << ", instance=" << half_ << ")";
  }

  IbnOptions options;
  torch::nn::InstanceNorm2d IN{nullptr};  // NOLINT: IBN-Net's key names
  BatchNorm2d BN{nullptr};     // NOLINT

 private:
  int64_t half_ = 0;
};
TORCH_MODULE(Ibn);

}  // namespace reidnet
