#pragma once
/// torchreid's OSNet head: global average pool, the fc block (Linear, BatchNorm1d, ReLU) and
/// an identity classifier. Its feature v (after fc) is what torchreid returns in eval mode and
/// what its triplet loss takes; the classifier scores v.
///
///     reidnet::OSNetHead head(reidnet::OSNetHeadOptions(512, 751));
///     reidnet::ReidOutput out = head->forward_head(map);   // map: (B, 512, 16, 8)
///     // out.logits[0]: (B, 751); out.embedding and out.metric_feature: v, (B, 512)
///
/// Keys, as torchreid's: fc.0.{weight,bias}, fc.1.{weight,bias,running_mean,running_var,
/// num_batches_tracked}, classifier.{weight,bias}.

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/omni_scale.hpp>
#include <reidnet/models/reid_model.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <vector>

namespace reidnet {

struct OSNetHeadOptions {
  OSNetHeadOptions(int64_t input_dim, int64_t class_num)
      : input_dim_(input_dim), class_num_(class_num) {}

  /// Channels of the backbone map.
  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, class_num);
  /// Width of the fc block (torchreid's feature_dim, 512 in every variant); 0 leaves the block
  /// out, so that v is the pooled map (torchreid's fc_dims=None).
  TORCH_ARG(int64_t, fc_dim) = 512;
  /// Dropout after the fc block's ReLU (torchreid's dropout_p); 0, as upstream, leaves it out.
  TORCH_ARG(double, dropout) = 0.0;
  /// Std of the classifier's normal init (torchreid: 0.01, as for every Linear).
  TORCH_ARG(double, classifier_std) = 0.01;
};

class OSNetHeadImpl : public torch::nn::Cloneable<OSNetHeadImpl>,
                      public Head,
                      public DeclaresLinearBatchNormPairs {
 public:
  explicit OSNetHeadImpl(const OSNetHeadOptions& options_) : options(options_) { reset(); }

  void reset() override {
    TORCH_CHECK(options.input_dim() > 0 && options.class_num() > 0,
                "OSNetHead needs input_dim > 0 and class_num > 0, got input_dim=",
                options.input_dim(), " class_num=", options.class_num());
    TORCH_CHECK(options.fc_dim() >= 0, "OSNetHeadOptions::fc_dim is a width (0 = no fc), got ",
                options.fc_dim());
    TORCH_CHECK(options.dropout() >= 0 && options.dropout() < 1,
                "OSNetHeadOptions::dropout must be in [0, 1), got ", options.dropout());
    fc = nullptr;
    if (options.fc_dim() > 0) {
      fc = torch::nn::Sequential(torch::nn::Linear(options.input_dim(), options.fc_dim()),
                                 BatchNorm1d(options.fc_dim()), torch::nn::ReLU());
      if (options.dropout() > 0) fc->push_back(torch::nn::Dropout(options.dropout()));
      register_module("fc", fc);
      apply_init(*fc, OSNetInit{});
    }
    classifier = register_module("classifier", torch::nn::Linear(feature_dim(), options.class_num()));
    apply_init(*classifier, OSNetInit{options.classifier_std()});
  }

  /// The fc block's Linear and BatchNorm1d.
  std::vector<LinearBatchNormPair> linear_batch_norm_pairs() const override {
    if (options.fc_dim() == 0) return {};
    return {{"fc.0", "fc.1"}};
  }

  /// Logits of v, and v as both the embedding and the metric feature.
  ReidOutput forward_head(const torch::Tensor& map) override {
    auto v = embed_head(map);
    return {{classifier(v)}, v, v};
  }

  /// v: the pooled map through the fc block (torchreid's eval-mode output).
  torch::Tensor embed_head(const torch::Tensor& map) override {
    auto v = torch::adaptive_avg_pool2d(map, {1, 1}).flatten(1);
    return fc.is_empty() ? v : fc->forward(v);
  }

  int64_t feature_dim() const override {
    return options.fc_dim() > 0 ? options.fc_dim() : options.input_dim();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::OSNetHead(input_dim=" << options.input_dim()
           << ", class_num=" << options.class_num() << ", fc_dim=" << options.fc_dim() << ")";
  }

  OSNetHeadOptions options;
  torch::nn::Sequential fc{nullptr};
  torch::nn::Linear classifier{nullptr};
};
TORCH_MODULE(OSNetHead);

}  // namespace reidnet
