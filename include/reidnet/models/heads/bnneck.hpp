#pragma once
/// The BNNeck head of the strong ReID baseline (Luo et al. 2019) in fast-reid's layout
/// (its EmbeddingHead): global pooling gives the feature the triplet loss takes; a BatchNorm
/// whose bias stays 0 gives the embedding, which a bias-free linear classifier scores and the
/// test compares by cosine.
///
///     reidnet::BNNeckHead head(reidnet::BNNeckHeadOptions(2048, 751).pool(reidnet::PoolType::kGem));
///     reidnet::ReidOutput out = head->forward_head(map);
///     // out.metric_feature: pooled (B, 2048); out.embedding: after the BatchNorm
///
/// Keys, as fast-reid's: `weight` (class_num x input_dim), `pool_layer.p` (learnable GeM only),
/// `bottleneck.0.{weight,bias,running_mean,running_var,num_batches_tracked}`.

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/pooling.hpp>
#include <reidnet/models/reid_model.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>

namespace reidnet {

struct BNNeckHeadOptions {
  BNNeckHeadOptions(int64_t input_dim, int64_t class_num)
      : input_dim_(input_dim), class_num_(class_num) {}

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, class_num);
  TORCH_ARG(GlobalPoolOptions, pool) = GlobalPoolOptions();
  /// fast-reid freezes the neck's bias at 0: the embedding stays centred on the BatchNorm's
  /// running mean, which suits cosine distance.
  TORCH_ARG(bool, freeze_bias) = true;
  /// Std of the classifier's normal init (fast-reid: 0.01).
  TORCH_ARG(double, classifier_std) = 0.01;
};

class BNNeckHeadImpl : public torch::nn::Cloneable<BNNeckHeadImpl>, public Head {
 public:
  explicit BNNeckHeadImpl(const BNNeckHeadOptions& options_) : options(options_) { reset(); }

  void reset() override {
    TORCH_CHECK(options.input_dim() > 0 && options.class_num() > 0,
                "BNNeckHead needs input_dim > 0 and class_num > 0, got ", options.input_dim(), " and ",
                options.class_num());
    weight = register_parameter("weight", torch::empty({options.class_num(), options.input_dim()}));
    pool_layer = register_module("pool_layer", GlobalPool(options.pool()));
    bottleneck = register_module("bottleneck",
                                 torch::nn::Sequential(BatchNorm1d(options.input_dim())));
    torch::NoGradGuard no_grad;
    torch::nn::init::normal_(weight, 0.0, options.classifier_std());
    if (options.freeze_bias()) neck()->bias.requires_grad_(false);
  }

  ReidOutput forward_head(const torch::Tensor& map) override {
    const auto feature = pool_layer(map);
    auto embedding = bottleneck->forward(feature);
    auto logits = torch::nn::functional::linear(embedding, weight);
    return {{logits}, embedding, feature};
  }

  torch::Tensor embed_head(const torch::Tensor& map) override {
    return bottleneck->forward(pool_layer(map));
  }

  int64_t feature_dim() const override { return options.input_dim(); }

  /// The neck's BatchNorm (bottleneck.0).
  BatchNorm1dImpl* neck() const {
    return bottleneck->ptr(0)->as<BatchNorm1dImpl>();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::BNNeckHead(input_dim=" << options.input_dim()
           << ", class_num=" << options.class_num() << ", pool=" << pool_name(options.pool().type())
           << ")";
  }

  BNNeckHeadOptions options;
  /// The classifier's weight (class_num, input_dim); no bias.
  torch::Tensor weight;
  GlobalPool pool_layer{nullptr};
  torch::nn::Sequential bottleneck{nullptr};
};
TORCH_MODULE(BNNeckHead);

}  // namespace reidnet
