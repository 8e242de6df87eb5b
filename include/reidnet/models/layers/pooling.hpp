#pragma once
/// Global pooling of a backbone's feature map: average, max, or generalized mean (GeM,
/// Radenović et al.) with a fixed or learnable exponent.
///
///     reidnet::GlobalPool gem(reidnet::GlobalPoolOptions(reidnet::PoolType::kGem));
///     torch::Tensor pooled = gem(feature_map);   // (B, C, H, W) -> (B, C)
///
/// A learnable GeM has one parameter, `p` (fast-reid's `heads.pool_layer.p`); the other kinds
/// have none, so they add no keys to a state_dict.

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <string>

namespace reidnet {

enum class PoolType {
  kAvg,       ///< adaptive average pooling (torchvision, the baseline)
  kMax,       ///< adaptive max pooling
  kGem,       ///< generalized mean with a learnable p (fast-reid's GeneralizedMeanPoolingP)
  kGemFixed,  ///< generalized mean with p fixed (fast-reid's GeneralizedMeanPooling)
  kToken,     ///< a transformer's class token (timm's global_pool='token'), which the backbone gives as a 1x1 map
};

/// The command-line and opts.yaml spelling of each kind.
inline const char* pool_name(PoolType type) {
  switch (type) {
    case PoolType::kAvg: return "avg";
    case PoolType::kMax: return "max";
    case PoolType::kGem: return "gem";
    case PoolType::kGemFixed: return "gem_fixed";
    case PoolType::kToken: return "token";
  }
  return "?";
}

/// The kind spelt `name` ("avg", "max", "gem", "gem_fixed", "token"); throws naming the
/// spellings.
inline PoolType pool_type_from_name(const std::string& name) {
  for (const auto type : {PoolType::kAvg, PoolType::kMax, PoolType::kGem, PoolType::kGemFixed, PoolType::kToken}) {
    if (name == pool_name(type)) return type;
  }
  TORCH_CHECK(false, "unknown pooling \"", name, "\"; expected avg, max, gem, gem_fixed or token");
}

struct GlobalPoolOptions {
  /* implicit */ GlobalPoolOptions(PoolType type = PoolType::kAvg) : type_(type) {}

  TORCH_ARG(PoolType, type);
  /// GeM's exponent (its initial value when learnable); 1 is average pooling, large p tends
  /// to max pooling.
  TORCH_ARG(double, p) = 3.0;
  /// GeM clamps activations to at least eps before the power, so that p-th roots stay finite.
  TORCH_ARG(double, eps) = 1e-6;
};

class GlobalPoolImpl : public torch::nn::Cloneable<GlobalPoolImpl> {
 public:
  explicit GlobalPoolImpl(const GlobalPoolOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    TORCH_CHECK(options.p() > 0 && options.eps() > 0,
                "GlobalPoolOptions: p and eps must be positive, got p=", options.p(),
                " eps=", options.eps());
    p = options.type() == PoolType::kGem
            ? register_parameter("p", torch::full({1}, options.p()))
            : torch::Tensor();
  }

  /// (B, C, H, W) -> (B, C).
  torch::Tensor forward(const torch::Tensor& map) {
    TORCH_CHECK(map.dim() == 4, "GlobalPool expects a feature map (B, C, H, W), got ", map.sizes());
    switch (options.type()) {
      case PoolType::kAvg: return torch::adaptive_avg_pool2d(map, {1, 1}).flatten(1);
      case PoolType::kMax: return std::get<0>(torch::adaptive_max_pool2d(map, {1, 1})).flatten(1);
      case PoolType::kGem: return generalized_mean(map, p);
      case PoolType::kGemFixed: return generalized_mean(map, options.p());
      case PoolType::kToken:
        TORCH_CHECK(map.size(2) == 1 && map.size(3) == 1, "GlobalPool(token) takes the class token that a "
                    "transformer backbone gives as a (B, C, 1, 1) map, got ", map.sizes());
        return map.flatten(1);
    }
    return {};
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::GlobalPool(" << pool_name(options.type());
    if (options.type() == PoolType::kGem || options.type() == PoolType::kGemFixed) {
      stream << ", p=" << options.p();
    }
    stream << ")";
  }

  GlobalPoolOptions options;
  /// GeM's learnable exponent (shape (1)); undefined for the other kinds.
  torch::Tensor p;

 private:
  template <class Exponent>
  torch::Tensor generalized_mean(const torch::Tensor& map, const Exponent& exponent) const {
    return torch::adaptive_avg_pool2d(map.clamp_min(options.eps()).pow(exponent), {1, 1})
        .pow(1.0 / exponent)
        .flatten(1);
  }
};
TORCH_MODULE(GlobalPool);

}  // namespace reidnet
