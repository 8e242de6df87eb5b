#pragma once
/// The backbone contract of reidnet's ReID models, and the registry of backbones by name.
///
/// A backbone is a torch::nn::Module that also implements `reidnet::Backbone`: it maps images
/// to an unpooled feature map, as timm's `forward_features` does. Pooling and the ReID head
/// come after it (reidnet/models/layers/pooling.hpp, reidnet/models/reid_model.hpp).
///
///     reidnet::AnyBackbone backbone = reidnet::create_backbone("resnet50", {});
///     torch::Tensor map = backbone->forward_features(images);   // (B, 2048, H/32, W/32)
///
/// A new backbone is one header: the module, and one line that registers it:
///
///     inline const bool kTinyNetRegistered = reidnet::register_backbone(
///         "tiny_net", {[](const reidnet::BackboneArgs& args) { return reidnet::AnyBackbone(
///                          std::make_shared<TinyNetImpl>(args)); }});
///
/// after which `reidnet::create_model("tiny_net", args)` builds it with the baseline's head.

#include <reidnet/io/state_dict.hpp>

#include <torch/nn/module.h>
#include <torch/types.h>

#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace reidnet {

/// What a ReID model asks of its backbone.
class Backbone {
 public:
  virtual ~Backbone() = default;

  /// The unpooled feature map (B, num_features(), h, w) of a batch of images (B, 3, H, W).
  virtual torch::Tensor forward_features(const torch::Tensor& images) = 0;

  /// Channels of the feature map.
  virtual int64_t num_features() const = 0;

  /// Input pixels per feature-map cell after each stage, e.g. {4, 8, 16, 32} for ResNet
  /// ({4, 8, 16, 16} with last stride 1). The last entry is the final map's.
  virtual std::vector<int64_t> feature_strides() const = 0;
};

/// One module seen both as a torch::nn::Module (to register, train, move and save) and through
/// the contract it implements (`Backbone`, `Head`) to run it. Copies share the module.
template <class Contract>
class ModulePart {
 public:
  ModulePart() = default;

  /// From any module that implements the contract (e.g. `resnet50().ptr()`).
  template <class Impl, class = std::enable_if_t<std::is_base_of_v<Contract, Impl> &&
                                                 std::is_base_of_v<torch::nn::Module, Impl>>>
  /* implicit */ ModulePart(std::shared_ptr<Impl> impl) : module_(impl), part_(std::move(impl)) {}

  Contract* operator->() const { return part_.get(); }
  Contract& operator*() const { return *part_; }
  explicit operator bool() const { return part_ != nullptr; }

  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }

  /// The module as its concrete type, or nullptr (e.g. `as<ResNetImpl<Bottleneck>>()`).
  template <class Impl>
  std::shared_ptr<Impl> as() const {
    return std::dynamic_pointer_cast<Impl>(module_);
  }

 private:
  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<Contract> part_;
};

/// A backbone module and its Backbone contract.
using AnyBackbone = ModulePart<Backbone>;

/// Input height and width, in pixels.
using ImageSize = std::array<int64_t, 2>;

/// What the registry's factories are given; a backbone ignores what it has no use for.
struct BackboneArgs {
  /// Stride of the last stage: 2 as on ImageNet, or 1 for a map twice as fine (ReID's trick).
  TORCH_ARG(int64_t, last_stride) = 2;
  /// Keep the backbone's ImageNet classifier in the module (the baseline keeps it, unused, so
  /// that its checkpoints carry it); false drops it, as fast-reid's backbones do.
  TORCH_ARG(bool, keep_classifier) = true;
  /// Stochastic depth of the backbone's deepest block while training (the baseline's 0.2 for
  /// ConvNeXt and EfficientNet); unset = the backbone's own default; ignored by backbones
  /// without it.
  TORCH_ARG(std::optional<double>, drop_path_rate) = std::nullopt;
  /// The input size a backbone whose structure depends on it is built for (a transformer's
  /// position table, its attention windows); create_backbone fills in the entry's
  /// default_input_size when unset. Convolutional backbones ignore it.
  TORCH_ARG(std::optional<ImageSize>, input_size) = std::nullopt;
  /// Pixels between the patches of a vision transformer's patch embedding: its patch size
  /// when unset, less for overlapping patches (TransReID's 12 of 16). Others ignore it.
  TORCH_ARG(std::optional<int64_t>, patch_stride) = std::nullopt;
  /// A vision transformer's feature: its class token (as TransReID and DINO's linear probes
  /// take it) rather than its patch tokens as a map for the head to pool. Others ignore it.
  TORCH_ARG(bool, class_token_feature) = false;
};

/// Maps a key of the backbone's published ImageNet weight file onto the backbone's own key;
/// an empty result drops the entry.
using ImagenetKeyMap = std::function<std::string(const std::string&)>;

/// Fits a published ImageNet file's entries, already under the backbone's own keys, to the
/// backbone as built: resamples a position table to its patch grid, checks the buffers an
/// older file carries that the module computes itself and drops them. Throws, naming the key,
/// where the file cannot fit.
using ImagenetFileAdapter = std::function<StateDict(const StateDict& entries, const torch::nn::Module& backbone)>;

/// A registered backbone.
struct BackboneEntry {
  std::function<AnyBackbone(const BackboneArgs&)> create;
  /// How the ImageNet weight file's keys map onto the backbone's (identity when unset).
  ImagenetKeyMap imagenet_key = {};
  /// One line for `reidnet-model-summary --list`.
  std::string description = {};
  /// The Python baseline's switch that puts a family on this backbone (resnet50_ibn_a:
  /// "ibn"), as its opts.yaml key and flag spellings; empty = none.
  std::string switch_key = {};
  std::string switch_flags = {};
  /// Whether the Python baseline keeps the backbone's ImageNet classifier (unused) when it puts
  /// its ClassBlock on it: torchvision's ResNet and DenseNet keep theirs, its timm and
  /// pretrainedmodels networks lose theirs. The ClassBlock head follows it.
  bool baseline_keeps_classifier = true;
  /// The input size the backbone is built for when BackboneArgs::input_size is unset (the
  /// size its name or its project gives: 224x224 for swin_base_patch4_window7_224), and the
  /// input size of the ReID models on it.
  ImageSize default_input_size = {256, 128};
  /// The per-channel mean and std (on 0..1) of the pictures the backbone's published weights
  /// were trained on: ImageNet's, or 0.5 for timm's ViT files.
  std::vector<double> input_mean = {0.485, 0.456, 0.406};
  std::vector<double> input_std = {0.229, 0.224, 0.225};
  /// Whether the backbone has a class token it gives as its feature with
  /// BackboneArgs::class_token_feature (ModelArgs::pool token).
  bool has_class_token = false;
  /// How the file's entries are fitted to the backbone after the key mapping (as they are when
  /// unset).
  ImagenetFileAdapter imagenet_adapt = {};
};

namespace detail {
/// Whether `text` ends with `tail` (keys of published files, matched by their last part).
inline bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

inline std::map<std::string, BackboneEntry>& backbone_registry() {
  static std::map<std::string, BackboneEntry> registry;
  return registry;
}
inline std::mutex& backbone_registry_mutex() {
  static std::mutex mutex;
  return mutex;
}
}  // namespace detail

/// Adds `entry` under `name` (once per name: a second registration of a name is refused).
/// Returns true, so that a header can register at namespace scope with an inline variable.
inline bool register_backbone(const std::string& name, BackboneEntry entry) {
  TORCH_CHECK(entry.create, "register_backbone(\"", name, "\"): the entry has no factory");
  std::lock_guard<std::mutex> lock(detail::backbone_registry_mutex());
  const bool inserted = detail::backbone_registry().emplace(name, std::move(entry)).second;
  TORCH_CHECK(inserted, "register_backbone: the name \"", name, "\" is already registered");
  return true;
}

/// Every registered backbone name, sorted.
inline std::vector<std::string> backbone_names() {
  std::lock_guard<std::mutex> lock(detail::backbone_registry_mutex());
  std::vector<std::string> names;
  for (const auto& item : detail::backbone_registry()) names.push_back(item.first);
  return names;
}

/// Whether a backbone is registered under `name`.
inline bool is_backbone_name(const std::string& name) {
  std::lock_guard<std::mutex> lock(detail::backbone_registry_mutex());
  return detail::backbone_registry().count(name) > 0;
}

/// The entry registered under `name`; throws naming the known names otherwise.
inline BackboneEntry backbone_entry(const std::string& name) {
  std::lock_guard<std::mutex> lock(detail::backbone_registry_mutex());
  const auto& registry = detail::backbone_registry();
  const auto found = registry.find(name);
  if (found == registry.end()) {
    std::string known;
    for (const auto& item : registry) known += (known.empty() ? "" : ", ") + item.first;
    TORCH_CHECK(false, "no backbone named \"", name, "\"; registered: ", known);
  }
  return found->second;
}

/// A new backbone of the registered kind `name`.
inline AnyBackbone create_backbone(const std::string& name, const BackboneArgs& args = {}) {
  const auto entry = backbone_entry(name);
  auto sized = args;
  if (!sized.input_size()) sized.input_size(entry.default_input_size);
  return entry.create(sized);
}

}  // namespace reidnet
