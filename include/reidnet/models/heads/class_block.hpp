#pragma once
/// The ReID head of the Python Market-1501 baseline. On pooled features it is the Python
/// module; as a reidnet::Head it first pools the backbone's map (average by default).
///
///     reidnet::ClassBlock head(reidnet::ClassBlockOptions(2048, 751).droprate(0.5));
///     torch::Tensor logits = head(features);           // (B, 751)
///     torch::Tensor embedding = head->embed(features); // (B, 512), the add_block output

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/pooling.hpp>
#include <reidnet/models/reid_model.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>
#include <vector>

namespace reidnet {

struct ClassBlockOptions {
  ClassBlockOptions(int64_t input_dim, int64_t class_num)
      : input_dim_(input_dim), class_num_(class_num) {}

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, class_num);
  /// Dropout before the classifier; 0 leaves the Dropout out.
  TORCH_ARG(double, droprate) = 0.5;
  /// LeakyReLU(0.1) after the BatchNorm1d.
  TORCH_ARG(bool, relu) = false;
  /// BatchNorm1d on the bottleneck.
  TORCH_ARG(bool, bnorm) = true;
  /// Width of the bottleneck Linear (the Python argument `linear`); 0 leaves the Linear out
  /// (the width stays input_dim).
  TORCH_ARG(int64_t, linear_num) = 512;
  /// Whether the Python module's forward returns [logits, feature]; see `forward_outputs`.
  TORCH_ARG(bool, return_f) = false;
  /// How `forward_head` pools a feature map (a learnable GeM registers `pool.p`).
  TORCH_ARG(GlobalPoolOptions, pool) = GlobalPoolOptions();
};

/// The logits and the bottleneck feature of one forward pass.
struct LogitsAndFeature {
  torch::Tensor logits;
  torch::Tensor feature;
};

/// `add_block` (Linear, BatchNorm1d, LeakyReLU, Dropout, each optional) then `classifier`
/// (one Linear). `AddBlockInit` initialises add_block, `ClassifierInit` the classifier.
template <class AddBlockInit = KaimingHeadInit, class ClassifierInit = ClassifierNormalInit>
class ClassBlockImpl : public torch::nn::Cloneable<ClassBlockImpl<AddBlockInit, ClassifierInit>>,
                       public Head,
                       public DeclaresLinearBatchNormPairs {
 public:
  explicit ClassBlockImpl(const ClassBlockOptions& options_,
                          AddBlockInit add_block_init = {}, ClassifierInit classifier_init = {})
      : options(options_),
        add_block_init_(std::move(add_block_init)),
        classifier_init_(std::move(classifier_init)) {
    reset();
  }

  void reset() override {
    TORCH_CHECK(options.input_dim() > 0 && options.class_num() > 0,
                "ClassBlock needs input_dim > 0 and class_num > 0, got input_dim=",
                options.input_dim(), " class_num=", options.class_num());
    TORCH_CHECK(options.linear_num() >= 0,
                "ClassBlockOptions::linear_num is a width (0 = no Linear), got ",
                options.linear_num());
    TORCH_CHECK(options.droprate() >= 0 && options.droprate() < 1,
                "ClassBlockOptions::droprate must be in [0, 1), got ", options.droprate());
    add_block = torch::nn::Sequential();
    int64_t width = options.input_dim();
    if (options.linear_num() > 0) {
      add_block->push_back(torch::nn::Linear(width, options.linear_num()));
      width = options.linear_num();
    }
    if (options.bnorm()) add_block->push_back(BatchNorm1d(width));
    if (options.relu()) {
      add_block->push_back(torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.1)));
    }
    if (options.droprate() > 0) {
      add_block->push_back(torch::nn::Dropout(options.droprate()));
    }
    classifier = torch::nn::Sequential(torch::nn::Linear(width, options.class_num()));
    this->register_module("add_block", add_block);
    this->register_module("classifier", classifier);
    pool = GlobalPool(options.pool());
    // Only a learnable pool has keys; the baseline's layout has none for pooling.
    if (options.pool().type() == PoolType::kGem) this->register_module("pool", pool);
    add_block_init_(*add_block);
    classifier_init_(*classifier);
  }

  /// Width of the feature `embed` returns.
  int64_t feature_dim() const override {
    return options.linear_num() > 0 ? options.linear_num() : options.input_dim();
  }

  /// The bottleneck Linear and the BatchNorm1d right after it, where it has both.
  std::vector<LinearBatchNormPair> linear_batch_norm_pairs() const override {
    if (options.linear_num() == 0 || !options.bnorm()) return {};
    return {{"add_block.0", "add_block.1"}};
  }

  ReidOutput forward_head(const torch::Tensor& map) override {
    auto out = forward_with_feature(pool(map));
    return {{out.logits}, out.feature, out.feature};
  }

  torch::Tensor embed_head(const torch::Tensor& map) override { return embed(pool(map)); }

  /// The bottleneck feature (the add_block output): the test-time ReID embedding.
  torch::Tensor embed(const torch::Tensor& x) {
    // Every add_block layer is optional; an empty Sequential refuses forward().
    return add_block->is_empty() ? x : add_block->forward(x);
  }

  /// Class logits.
  torch::Tensor forward(const torch::Tensor& x) { return classifier->forward(embed(x)); }

  /// Logits and feature from one pass (the Python `return_f=True` case).
  LogitsAndFeature forward_with_feature(const torch::Tensor& x) {
    auto feature = embed(x);
    return {classifier->forward(feature), feature};
  }

  /// What the Python module's forward returns: {logits}, or {logits, feature} with return_f.
  std::vector<torch::Tensor> forward_outputs(const torch::Tensor& x) {
    if (!options.return_f()) return {forward(x)};
    auto out = forward_with_feature(x);
    return {out.logits, out.feature};
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::ClassBlock(input_dim=" << options.input_dim()
           << ", class_num=" << options.class_num() << ", linear_num=" << options.linear_num()
           << ", droprate=" << options.droprate() << ")";
  }

  ClassBlockOptions options;
  torch::nn::Sequential add_block{nullptr};
  torch::nn::Sequential classifier{nullptr};
  GlobalPool pool{nullptr};

 private:
  AddBlockInit add_block_init_;
  ClassifierInit classifier_init_;
};

/// Holder for `ClassBlockImpl` with chosen init policies.
template <class AddBlockInit = KaimingHeadInit, class ClassifierInit = ClassifierNormalInit>
class BasicClassBlock : public torch::nn::ModuleHolder<ClassBlockImpl<AddBlockInit, ClassifierInit>> {
 public:
  using torch::nn::ModuleHolder<ClassBlockImpl<AddBlockInit, ClassifierInit>>::ModuleHolder;
  using Impl = ClassBlockImpl<AddBlockInit, ClassifierInit>;
};

/// The baseline's ClassBlock: Kaiming head init and N(0, 0.001) classifier init.
using ClassBlock = BasicClassBlock<>;

}  // namespace reidnet
