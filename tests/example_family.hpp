#pragma once
// A model family added the way a user adds one: this header and the registration at its end,
// nothing else. It has its own head (max and average pooling side by side, a BatchNorm neck,
// a bias-free classifier), its own input size (96x48) and normalisation (mean = std = 0.5, as
// TransReID's and CLIP-ReID's), and the two-conv backbone of example_backbone.hpp.
#include "example_backbone.hpp"

#include <reidnet/models/model_zoo.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <memory>

namespace example {

class MaxAvgHeadImpl : public torch::nn::Cloneable<MaxAvgHeadImpl>, public reidnet::Head {
 public:
  MaxAvgHeadImpl(int64_t input_dim, int64_t class_num) : input_dim_(input_dim), class_num_(class_num) {
    reset();
  }

  void reset() override {
    neck = register_module("neck", torch::nn::BatchNorm1d(2 * input_dim_));
    classifier = register_module(
        "classifier", torch::nn::Linear(torch::nn::LinearOptions(2 * input_dim_, class_num_).bias(false)));
  }

  reidnet::ReidOutput forward_head(const torch::Tensor& map) override {
    const auto pooled = pool(map);
    const auto embedding = neck(pooled);
    return {{classifier(embedding)}, embedding, pooled};
  }
  torch::Tensor embed_head(const torch::Tensor& map) override { return neck(pool(map)); }
  int64_t feature_dim() const override { return 2 * input_dim_; }

  torch::nn::BatchNorm1d neck{nullptr};
  torch::nn::Linear classifier{nullptr};

 private:
  static torch::Tensor pool(const torch::Tensor& map) {
    return torch::cat({map.amax({2, 3}), map.mean({2, 3})}, 1);
  }
  int64_t input_dim_, class_num_;
};
TORCH_MODULE(MaxAvgHead);

inline reidnet::ModelConfig max_avg_config(const reidnet::ModelArgs& /*args*/) {
  return reidnet::ModelConfig()
      .height(96)
      .width(48)
      .mean({0.5, 0.5, 0.5})
      .std({0.5, 0.5, 0.5})
      .imagenet_prefix("trunk.");
}

inline reidnet::ReidModel max_avg_model(const reidnet::ModelArgs& args) {
  auto trunk = reidnet::create_backbone("tiny_net", reidnet::BackboneArgs().last_stride(args.last_stride()));
  auto head = MaxAvgHead(trunk->num_features(), args.class_num());
  return reidnet::ReidModel(std::move(trunk), head.ptr(), reidnet::ReidModelLayout("trunk", "head"),
                            max_avg_config(args));
}

inline const bool kMaxAvgRegistered = [] {
  reidnet::ModelEntry entry{max_avg_model, "two convs + max-and-average head (a family from outside)"};
  entry.config = max_avg_config;  // the programs read its input size without building one
  return reidnet::register_model("example_max_avg", entry);
}();

}  // namespace example
