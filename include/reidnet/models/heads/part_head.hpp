#pragma once
/// PCB's head (Sun et al. 2018, "Beyond Part Models"), as the Python Market-1501 baseline
/// builds it: the feature map average-pooled into horizontal stripes, dropout, and one
/// ClassBlock per stripe, registered as classifier0..classifier<parts-1>.
///
///     reidnet::PartHead head(reidnet::PartHeadOptions(2048, 751));
///     reidnet::ReidOutput out = head->forward_head(map);   // out.logits: six (B, 751)
///     // out.embedding: (B, 2048 * 6), index = channel * 6 + part (the baseline's PCB_test)

#include <reidnet/models/heads/class_block.hpp>
#include <reidnet/models/reid_model.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace reidnet {

struct PartHeadOptions {
  PartHeadOptions(int64_t input_dim, int64_t class_num)
      : input_dim_(input_dim), class_num_(class_num) {}

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, class_num);
  /// Horizontal stripes.
  TORCH_ARG(int64_t, parts) = 6;
  /// Dropout on the pooled stripes, and inside each stripe's ClassBlock.
  TORCH_ARG(double, droprate) = 0.5;
  /// Bottleneck width of each stripe's ClassBlock.
  TORCH_ARG(int64_t, linear_num) = 256;
  /// Std of the classifiers' normal init.
  TORCH_ARG(double, classifier_std) = 0.001;
};

class PartHeadImpl : public torch::nn::Cloneable<PartHeadImpl>, public Head {
 public:
  explicit PartHeadImpl(const PartHeadOptions& options_) : options(options_) { reset(); }

  void reset() override {
    TORCH_CHECK(options.parts() >= 1, "PartHeadOptions::parts must be >= 1, got ", options.parts());
    classifiers.clear();
    for (int64_t part = 0; part < options.parts(); ++part) {
      classifiers.push_back(register_module(
          "classifier" + std::to_string(part),
          ClassBlock(ClassBlockOptions(options.input_dim(), options.class_num())
                         .droprate(options.droprate())
                         .linear_num(options.linear_num()),
                     KaimingHeadInit{}, ClassifierNormalInit{options.classifier_std()})));
    }
  }

  ReidOutput forward_head(const torch::Tensor& map) override {
    const auto stripes = pool_stripes(map);  // (B, C, parts)
    const auto dropped = torch::nn::functional::dropout(
        stripes, torch::nn::functional::DropoutFuncOptions().p(options.droprate()).training(is_training()));
    ReidOutput out;
    for (int64_t part = 0; part < options.parts(); ++part) {
      out.logits.push_back(classifiers[part]->forward(dropped.select(2, part)));
    }
    out.embedding = stripes.flatten(1);
    out.metric_feature = out.embedding;
    return out;
  }

  /// The pooled stripes, channel-major: (B, input_dim * parts).
  torch::Tensor embed_head(const torch::Tensor& map) override { return pool_stripes(map).flatten(1); }

  int64_t feature_dim() const override { return options.input_dim() * options.parts(); }
  int64_t embedding_parts() const override { return options.parts(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::PartHead(input_dim=" << options.input_dim()
           << ", class_num=" << options.class_num() << ", parts=" << options.parts() << ")";
  }

  PartHeadOptions options;
  std::vector<ClassBlock> classifiers;

 private:
  torch::Tensor pool_stripes(const torch::Tensor& map) const {
    TORCH_CHECK(map.dim() == 4 && map.size(1) == options.input_dim(), "PartHead expects a map (B, ",
                options.input_dim(), ", H, W), got ", map.sizes());
    return torch::adaptive_avg_pool2d(map, {options.parts(), 1}).squeeze(3);
  }
};
TORCH_MODULE(PartHead);

}  // namespace reidnet
