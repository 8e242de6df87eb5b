#pragma once
/// A ReID model: a backbone (reidnet/models/backbones/backbone.hpp) that maps images to a feature map, and a
/// head that pools it and returns identity logits, the test-time embedding and the feature the
/// metric losses take. The model registers the parts' modules under the names a layout gives,
/// so that each Python model's state_dict keys are reproduced exactly:
///
///   layout                                keys                        Python model
///   {backbone "model", head "classifier"}  model.*, classifier.*       the baseline's ft_net
///   {backbone "model", head ""}            model.*, classifier0..5.*   the baseline's PCB
///   {backbone "backbone", head "heads"}    backbone.*, heads.*         fast-reid's Baseline
///
/// An empty name registers the part's children directly in the model (a part so flattened
/// must own no parameters itself); `order` lists the top-level names when the parts' children
/// interleave (the baseline registers usam_1/usam_2, which belong to the backbone, after its
/// classifier).
///
///     auto model = reidnet::create_model("ft_net", reidnet::ModelArgs().class_num(751));
///     reidnet::ReidOutput out = model->forward(images);       // out.logits[0]: (B, 751)
///     torch::Tensor embedding = model->embed(images);        // (B, 512), eval mode

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>

#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

/// What a ReID model computes from a batch of images.
struct ReidOutput {
  /// Identity logits, one tensor per classifier (one; six for PCB).
  std::vector<torch::Tensor> logits;
  /// The test-time embedding (B, feature_dim), before flip-summing and normalisation.
  torch::Tensor embedding;
  /// What metric losses (triplet, circle) take: the baseline's ClassBlock output, or the
  /// pooled feature before a BNNeck.
  torch::Tensor metric_feature;
};

/// What a ReID model asks of its head.
class Head {
 public:
  virtual ~Head() = default;

  /// Logits, embedding and metric feature of a backbone feature map (B, C, h, w).
  virtual ReidOutput forward_head(const torch::Tensor& map) = 0;

  /// The embedding alone (what inference needs; the classifiers are skipped).
  virtual torch::Tensor embed_head(const torch::Tensor& map) = 0;

  /// Width of the embedding.
  virtual int64_t feature_dim() const = 0;

  /// How many parts the embedding concatenates, channel-major (PCB: 6); the test-time rule
  /// normalises each part to norm 1/sqrt(parts).
  virtual int64_t embedding_parts() const { return 1; }
};

/// A head module and its Head contract.
using AnyHead = ModulePart<Head>;

/// Names under which a ReidModel registers its parts; see the table at the top.
struct ReidModelLayout {
  ReidModelLayout(std::string backbone = "model", std::string head = "classifier",
                  std::vector<std::string> order = {})
      : backbone_(std::move(backbone)), head_(std::move(head)), order_(std::move(order)) {}

  TORCH_ARG(std::string, backbone);
  TORCH_ARG(std::string, head);
  /// Registration order of the top-level children; empty: the backbone's, then the head's.
  TORCH_ARG(std::vector<std::string>, order);
};

/// How a model sees its input and its test-time features: kept apart from the architecture,
/// so that data pipelines and evaluation read it without knowing the family.
/// How a family's trained files are laid out: a plain state_dict (reidnet's and the Python
/// baseline's net_last.pth), or fast-reid's {'model': state_dict, ...} with its pixel_mean and
/// pixel_std (load_trained_weights reads either).
enum class CheckpointFormat { kStateDict, kFastReid };

struct ModelConfig {
  TORCH_ARG(int64_t, height) = 256;
  TORCH_ARG(int64_t, width) = 128;
  /// Per-channel mean and std of the input normalisation, on RGB levels divided by
  /// max_pixel_value: 255 puts them on 0..1 (torchvision's convention), 1 on 0..255
  /// (fast-reid's pixel_mean and pixel_std).
  TORCH_ARG(std::vector<double>, mean) = std::vector<double>{0.485, 0.456, 0.406};
  TORCH_ARG(std::vector<double>, std) = std::vector<double>{0.229, 0.224, 0.225};
  TORCH_ARG(double, max_pixel_value) = 255;
  /// Resize filter of the data pipeline (the baseline resizes bicubically).
  TORCH_ARG(std::string, interpolation) = "bicubic";
  /// Where ImageNet weights go: the key prefix of the pretrained network in the state_dict.
  TORCH_ARG(std::string, imagenet_prefix) = "model.";
  /// How the ImageNet file's keys map onto the backbone's (identity when unset).
  TORCH_ARG(ImagenetKeyMap, imagenet_key) = {};
  /// How the file's entries are then fitted to the backbone as built (a position table
  /// resampled to its patch grid; as they are when unset).
  TORCH_ARG(ImagenetFileAdapter, imagenet_adapt) = {};
  /// The layout of the family's trained files.
  TORCH_ARG(CheckpointFormat, checkpoint_format) = CheckpointFormat::kStateDict;
};

/// Parameters split the way the recipes train them: the pretrained backbone (at a fraction of
/// the learning rate) and the layers the ReID model adds.
struct ParameterGroups {
  std::vector<torch::Tensor> backbone;
  std::vector<torch::Tensor> head;
};

class ReidModelImpl : public torch::nn::Module,
                      public DeclaresConvBatchNormPairs,
                      public DeclaresLinearBatchNormPairs {
 public:
  ReidModelImpl(AnyBackbone backbone, AnyHead head, const ReidModelLayout& layout = {},
                ModelConfig config = {})
      : backbone_(std::move(backbone)), head_(std::move(head)), config_(std::move(config)) {
    TORCH_CHECK(backbone_ && head_, "ReidModel needs a backbone and a head");
    register_parts(layout);
  }

  /// Logits, embedding and metric feature (training and evaluation alike).
  ReidOutput forward(const torch::Tensor& images) {
    return head_->forward_head(backbone_->forward_features(images));
  }

  /// The backbone's unpooled feature map (B, C, h, w), what the head pools.
  torch::Tensor forward_features(const torch::Tensor& images) {
    return backbone_->forward_features(images);
  }

  /// The test-time embedding (B, feature_dim()); call in eval mode.
  torch::Tensor embed(const torch::Tensor& images) {
    return head_->embed_head(backbone_->forward_features(images));
  }

  int64_t feature_dim() const { return head_->feature_dim(); }
  int64_t embedding_parts() const { return head_->embedding_parts(); }

  const AnyBackbone& backbone() const { return backbone_; }
  const AnyHead& head() const { return head_; }
  const ModelConfig& config() const { return config_; }

  /// Every parameter of the backbone module, then every other one (the head's and any
  /// layer the model adds).
  ParameterGroups parameter_groups() const {
    ParameterGroups groups;
    groups.backbone = backbone_.module()->parameters();
    for (const auto& parameter : parameters()) {
      const bool in_backbone =
          std::any_of(groups.backbone.begin(), groups.backbone.end(),
                      [&](const torch::Tensor& p) { return p.is_same(parameter); });
      if (!in_backbone) groups.head.push_back(parameter);
    }
    return groups;
  }

  /// Parts registered under no name of their own are not children, so set their mode here.
  void train(bool on = true) override {
    torch::nn::Module::train(on);
    for (const auto& part : flattened_) part->train(on);
  }

  /// The pairs that parts registered under no name of their own declare: their children are
  /// this model's, so their paths hold here as they are (fold_batch_norms never visits such a
  /// part itself).
  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override {
    return flattened_pairs<DeclaresConvBatchNormPairs, ConvBatchNormPair>(
        [](const DeclaresConvBatchNormPairs& part) { return part.conv_batch_norm_pairs(); });
  }
  std::vector<LinearBatchNormPair> linear_batch_norm_pairs() const override {
    return flattened_pairs<DeclaresLinearBatchNormPairs, LinearBatchNormPair>(
        [](const DeclaresLinearBatchNormPairs& part) { return part.linear_batch_norm_pairs(); });
  }

  /// A deep copy: the model rebuilt by the factory that made it, with this one's state.
  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device = c10::nullopt) const override {
    TORCH_CHECK(factory_, "this ReidModel was assembled by hand and cannot be cloned; build it "
                          "with reidnet::create_model to clone it");
    auto copy = factory_();
    copy->factory_ = factory_;
    copy_state_into(*copy, device);
    return copy;
  }

  /// Sets what `clone` rebuilds the model with (create_model does).
  void set_factory(std::function<std::shared_ptr<ReidModelImpl>()> factory) {
    factory_ = std::move(factory);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::ReidModel(feature_dim=" << feature_dim() << ")";
  }

 protected:
  /// Copies parameters, buffers and training mode into `copy`, an identically built model.
  void copy_state_into(torch::nn::Module& copy, const c10::optional<torch::Device>& device) const {
    torch::NoGradGuard no_grad;
    const auto copy_all = [&](auto from, auto to) {
      TORCH_CHECK(from.size() == to.size(), "ReidModel::clone: the rebuilt model differs");
      for (size_t i = 0; i < from.size(); ++i) {
        to[i].copy_(from[i]);
        to[i].requires_grad_(from[i].requires_grad());
      }
    };
    copy_all(parameters(), copy.parameters());
    copy_all(buffers(), copy.buffers());
    if (device) copy.to(*device);
    copy.train(is_training());
  }

 private:
  template <class Declares, class Pair, class PairsOf>
  std::vector<Pair> flattened_pairs(PairsOf pairs_of) const {
    std::vector<Pair> pairs;
    for (const auto& part : flattened_) {
      if (const auto* declares = dynamic_cast<const Declares*>(part.get())) {
        for (auto& pair : pairs_of(*declares)) pairs.push_back(std::move(pair));
      }
    }
    return pairs;
  }

  void register_parts(const ReidModelLayout& layout) {
    std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> children;
    const auto add = [&](const std::string& name, const std::shared_ptr<torch::nn::Module>& part,
                         const char* what) {
      if (!name.empty()) {
        children.emplace_back(name, part);
        return;
      }
      TORCH_CHECK(part->named_parameters(false).is_empty() && part->named_buffers(false).is_empty(),
                  "ReidModelLayout: the ", what, " owns parameters itself, so it needs a name");
      for (const auto& child : part->named_children()) children.emplace_back(child.key(), child.value());
      flattened_.push_back(part);
    };
    add(layout.backbone(), backbone_.module(), "backbone");
    add(layout.head(), head_.module(), "head");
    if (!layout.order().empty()) {
      TORCH_CHECK(layout.order().size() == children.size(), "ReidModelLayout::order names ",
                  layout.order().size(), " children; the parts have ", children.size());
      std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> ordered;
      for (const auto& name : layout.order()) {
        const auto found = std::find_if(children.begin(), children.end(),
                                        [&](const auto& child) { return child.first == name; });
        TORCH_CHECK(found != children.end(), "ReidModelLayout::order: no child named ", name);
        ordered.push_back(*found);
      }
      children = std::move(ordered);
    }
    for (const auto& [name, module] : children) register_module(name, module);
  }

  AnyBackbone backbone_;
  AnyHead head_;
  ModelConfig config_;
  std::vector<std::shared_ptr<torch::nn::Module>> flattened_;
  std::function<std::shared_ptr<ReidModelImpl>()> factory_;
};
TORCH_MODULE(ReidModel);

}  // namespace reidnet
