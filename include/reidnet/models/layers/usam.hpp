#pragma once
/// USAM, the parameter-free spatial attention of the Python Market-1501 baseline: a cell is
/// boosted by how much its channel sum exceeds the mean of its k x k neighbourhood.
///
///     reidnet::Usam usam;                                   // kernel 3, padding 1, polish
///     torch::Tensor y = usam(torch::randn({2, 64, 64, 32}));  // same shape: x + att * x
///
/// Keys: weight, weight2 (fixed all-ones kernels, requires_grad false), bn.* (BatchNorm2d(1)).

#include <reidnet/models/layers/batch_norm.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <c10/util/Exception.h>

#include <cstdint>
#include <ostream>

namespace reidnet {

struct UsamOptions {
  /// Side of the neighbourhood kernel.
  TORCH_ARG(int64_t, kernel_size) = 3;
  /// Padding of the neighbourhood conv; (kernel_size - 1) / 2 keeps the map size.
  TORCH_ARG(int64_t, padding) = 1;
  /// Zero the attention on the first and last rows and columns, where the zero padding makes
  /// the neighbourhood sum meaningless.
  TORCH_ARG(bool, polish) = true;
  /// Slope of the LeakyReLU on the normalised attention.
  TORCH_ARG(double, negative_slope) = 0.1;
};

/// fmap = x.sum(1); att = LeakyReLU(BN(k*k * fmap - boxsum_k(fmap))); returns x + att * x.
class UsamImpl : public torch::nn::Cloneable<UsamImpl> {
 public:
  explicit UsamImpl(const UsamOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    const int64_t k = options.kernel_size();
    TORCH_CHECK(k > 0 && k % 2 == 1, "UsamOptions::kernel_size must be odd and positive, got ", k);
    // The two conv outputs are subtracted, so both must keep the map size.
    TORCH_CHECK(2 * options.padding() + 1 == k,
                "UsamOptions::padding must be (kernel_size - 1) / 2 = ", (k - 1) / 2, ", got ",
                options.padding());
    // The Python module's registration order, hence its state_dict order.
    weight = register_parameter("weight", torch::ones({1, 1, k, k}), /*requires_grad=*/false);
    weight2 = register_parameter("weight2", torch::ones({1, 1, 1, 1}) * static_cast<double>(k * k),
                                 /*requires_grad=*/false);
    relu = register_module(
        "relu", torch::nn::LeakyReLU(
                    torch::nn::LeakyReLUOptions().negative_slope(options.negative_slope())));
    bn = register_module("bn", BatchNorm2d(1));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    namespace F = torch::nn::functional;
    const auto fmap = x.sum(1, /*keepdim=*/true);
    auto att = F::conv2d(fmap, weight2) -
               F::conv2d(fmap, weight, F::Conv2dFuncOptions().padding(options.padding()));
    att = relu(bn(att));
    if (options.polish()) att = att * border_mask(att);
    return x + att * x;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::Usam(kernel_size=" << options.kernel_size()
           << ", padding=" << options.padding()
           << ", polish=" << (options.polish() ? "true" : "false")
           << ", negative_slope=" << options.negative_slope() << ")";
  }

  UsamOptions options;
  torch::Tensor weight, weight2;
  torch::nn::LeakyReLU relu{nullptr};
  BatchNorm2d bn{nullptr};

 private:
  // Ones inside, zeros on the outer rows and columns. Multiplying by it gives the values and
  // gradients of the Python in-place slice assignment without writing into an autograd output.
  static torch::Tensor border_mask(const torch::Tensor& att) {
    // Padded ones rather than a write into a view of zeros, so that a trace of the forward
    // (ONNX export) records the mask.
    const int64_t h = att.size(2), w = att.size(3);
    if (h <= 2 || w <= 2) return torch::zeros({1, 1, h, w}, att.options());
    return torch::constant_pad_nd(torch::ones({1, 1, h - 2, w - 2}, att.options()), {1, 1, 1, 1});
  }
};
TORCH_MODULE(Usam);

}  // namespace reidnet
