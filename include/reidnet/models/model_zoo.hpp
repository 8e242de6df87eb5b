#pragma once
/// The model registry: every ReID model family by name, built from one set of arguments.
///
///   name            backbone (key prefix)              head (keys)               Python model
///   ft_net          resnet50 (model.)                  ClassBlock (classifier.)  baseline ft_net
///   ft_net_ibn      resnet50_ibn_a (model.)            ClassBlock (classifier.)  ft_net(ibn=True)
///   ft_net_usam     resnet50 + USAM (model., usam_1/2) ClassBlock (classifier.)  ft_net(usam=True)
///   ft_net_dense    densenet121 (model.)               ClassBlock (classifier.)  ft_net_dense
///   pcb             resnet50, last stride 1 (model.)   six stripes (classifier0..5.)  PCB
///   bnneck          resnet50 without fc (backbone.)    BNNeck (heads.)           fast-reid BoT
///   <backbone>      any registered backbone (model.)   ClassBlock (classifier.)
///
/// ft_net, ft_net_usam and bnneck take resnet50_ibn_a as ModelArgs::backbone (ft_net_usam on
/// it is the baseline's ft_net(ibn=True, usam=True)); register_model adds a family.
///
///     auto model = reidnet::create_model("pcb", reidnet::ModelArgs().class_num(751));
///     for (const auto& name : reidnet::model_names()) std::cout << name << '\n';

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/heads/bnneck.hpp>
#include <reidnet/io/checkpoint.hpp>
#include <reidnet/models/heads/class_block.hpp>
#include <reidnet/models/backbones/densenet.hpp>
#include <reidnet/models/ft_net.hpp>
#include <reidnet/models/heads/part_head.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/pooling.hpp>
#include <reidnet/models/reid_model.hpp>
#include <reidnet/models/backbones/resnet.hpp>
#include <reidnet/models/backbones/usam_resnet.hpp>

#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

/// Everything a model family is built from; a family ignores what it has no use for.
struct ModelArgs {
  /// Training identities (the classifiers' width).
  TORCH_ARG(int64_t, class_num) = 751;
  /// Dropout before each classifier (PCB: also on its pooled stripes).
  TORCH_ARG(double, droprate) = 0.5;
  /// Stride of the backbone's last stage: 2, or 1 for a finer map (PCB always uses 1).
  TORCH_ARG(int64_t, last_stride) = 2;
  /// ClassBlock bottleneck width; 0 = no Linear (PCB's stripes use 256 whatever this says).
  TORCH_ARG(int64_t, linear_num) = 512;
  /// Global pooling: avg, max, gem (learnable p) or gem_fixed.
  TORCH_ARG(PoolType, pool) = PoolType::kAvg;
  /// The backbone of the families that take one (ft_net, ft_net_usam, bnneck: e.g.
  /// resnet50_ibn_a): empty = resnet50.
  TORCH_ARG(std::string, backbone) = "";
  /// Std of the classifier's normal init; unset = the family's own (0.001, fast-reid 0.01).
  TORCH_ARG(std::optional<double>, classifier_std) = std::nullopt;
  /// The registered head (head_names()) that create_model puts on a backbone named as the
  /// model: empty = class_block, the baseline's. Families have their own heads (a family whose
  /// trunk is registered as a backbone of its name, as OSNet's, takes one there).
  TORCH_ARG(std::string, head) = "";
  /// Stochastic depth of backbones that have it (ConvNeXt, EfficientNet); unset = the
  /// backbone's default (the baseline's 0.2); 0 turns it off (repeatable training steps).
  TORCH_ARG(std::optional<double>, drop_path_rate) = std::nullopt;
  /// The input size of backbones built for one (the transformers: their position tables and
  /// attention windows); unset = the backbone's own (Swin's 224x224, else 256x128). The
  /// model's config says the size it was built for.
  TORCH_ARG(std::optional<ImageSize>, input_size) = std::nullopt;
  /// Pixels between a vision transformer's patches; unset = its patch size (TransReID: 12).
  TORCH_ARG(std::optional<int64_t>, patch_stride) = std::nullopt;
};

/// One registered head: what create_model puts on a backbone named as the model, with
/// ModelArgs::head (create_model("densenet121", ModelArgs().head("bnneck"))).
struct HeadEntry {
  /// The head for a backbone map of `input_dim` channels.
  std::function<AnyHead(int64_t input_dim, const ModelArgs&)> create;
  std::string description;
  /// The checkpoint layout the head's project uses: its state_dict prefixes, its file format,
  /// and whether the backbone keeps its unused ImageNet classifier (the baseline keeps it,
  /// fast-reid drops it).
  ReidModelLayout layout = {};
  CheckpointFormat checkpoint_format = CheckpointFormat::kStateDict;
  bool keep_backbone_classifier = true;
};

/// One registered model family.
struct ModelEntry {
  std::function<ReidModel(const ModelArgs&)> create;
  std::string description;
  /// The Python baseline's switch that picks this family (e.g. "use_dense"), as its opts.yaml
  /// key and flag spellings; empty = none (the family is picked by name).
  std::string switch_key = {};
  std::string switch_flags = {};
  /// Whether ModelArgs::backbone picks its backbone, so that a backbone's switch (--ibn)
  /// composes with this family.
  bool takes_backbone = false;
  /// The backbone the family is fixed to, where a backbone's switch names it.
  std::string fixed_backbone = {};
  /// The family's ModelConfig for these arguments (input size, normalisation, checkpoint
  /// layout), the one its models carry, without building one; empty = read from a built model.
  std::function<ModelConfig(const ModelArgs&)> config = {};
};

namespace detail {

inline void check_model_args(const ModelArgs& args) {
  TORCH_CHECK(args.class_num() > 0, "ModelArgs::class_num must be positive, got ", args.class_num());
  TORCH_CHECK(args.last_stride() == 1 || args.last_stride() == 2,
              "ModelArgs::last_stride must be 1 or 2, got ", args.last_stride());
  TORCH_CHECK(args.droprate() >= 0 && args.droprate() < 1,
              "ModelArgs::droprate must be in [0, 1), got ", args.droprate());
  TORCH_CHECK(args.linear_num() >= 0, "ModelArgs::linear_num must be >= 0, got ", args.linear_num());
  const auto drop_path = args.drop_path_rate().value_or(0.0);
  TORCH_CHECK(drop_path >= 0 && drop_path < 1, "ModelArgs::drop_path_rate must be in [0, 1), got ", drop_path);
  if (const auto& size = args.input_size()) {
    TORCH_CHECK((*size)[0] > 0 && (*size)[1] > 0, "ModelArgs::input_size must be positive, got ", (*size)[0], "x",
                (*size)[1]);
  }
  TORCH_CHECK(args.patch_stride().value_or(1) > 0, "ModelArgs::patch_stride must be positive, got ",
              *args.patch_stride());
}

/// The input size `backbone` is built for under `args`: the one asked for, else its own.
inline ImageSize input_size_for(const std::string& backbone, const ModelArgs& args) {
  return args.input_size().value_or(backbone_entry(backbone).default_input_size);
}

/// Families whose backbone has no class token refuse ModelArgs::pool token when built.
inline void refuse_token_pool(const ModelArgs& args, const char* family) {
  TORCH_CHECK(args.pool() != PoolType::kToken, "ModelArgs::pool token takes a transformer's class token; ", family,
              " has none");
}

inline ModelConfig config_for(const std::string& backbone, std::string prefix) {
  const auto entry = backbone_entry(backbone);
  return ModelConfig()
      .imagenet_prefix(std::move(prefix))
      .imagenet_key(entry.imagenet_key)
      .imagenet_adapt(entry.imagenet_adapt)
      .height(entry.default_input_size[0])
      .width(entry.default_input_size[1])
      .mean(entry.input_mean)
      .std(entry.input_std);
}

inline ClassBlock baseline_head(int64_t input_dim, const ModelArgs& args) {
  return ClassBlock(ClassBlockOptions(input_dim, args.class_num())
                        .droprate(args.droprate())
                        .linear_num(args.linear_num())
                        .pool(args.pool()),
                    KaimingHeadInit{}, ClassifierNormalInit{args.classifier_std().value_or(0.001)});
}

inline std::map<std::string, HeadEntry>& head_registry() {
  static std::map<std::string, HeadEntry> registry{
      {"class_block",
       {[](int64_t input_dim, const ModelArgs& args) { return AnyHead(baseline_head(input_dim, args).ptr()); },
        "the baseline's ClassBlock (Linear, BatchNorm, dropout, classifier), as model / classifier",
        ReidModelLayout("model", "classifier")}},
      {"bnneck",
       {[](int64_t input_dim, const ModelArgs& args) {
          return AnyHead(BNNeckHead(BNNeckHeadOptions(input_dim, args.class_num())
                                        .pool(args.pool())
                                        .classifier_std(args.classifier_std().value_or(0.01)))
                             .ptr());
        },
        "the strong baseline's BNNeck, in fast-reid's layout (backbone / heads)",
        ReidModelLayout("backbone", "heads"), CheckpointFormat::kFastReid, false}},
  };
  return registry;
}

inline const HeadEntry& head_entry(const std::string& name) {
  const auto& registry = head_registry();
  const auto found = registry.find(name.empty() ? std::string("class_block") : name);
  if (found == registry.end()) {
    std::string known;
    for (const auto& item : registry) known += (known.empty() ? "" : ", ") + item.first;
    TORCH_CHECK(false, "no head named \"", name, "\"; known: ", known);
  }
  return found->second;
}

/// The config of `backbone` under head `head` (the head's layout names the ImageNet prefix),
/// at the input size `args` builds it for.
inline ModelConfig head_model_config(const std::string& backbone, const std::string& head, const ModelArgs& args) {
  const auto& entry = head_entry(head);
  const auto size = input_size_for(backbone, args);
  return config_for(backbone, entry.layout.backbone() + ".")
      .checkpoint_format(entry.checkpoint_format)
      .height(size[0])
      .width(size[1]);
}

/// `backbone` with the registered head `head`, in that head's layout. The backbone keeps its
/// ImageNet classifier where both the head's project and the backbone's entry say so.
inline ReidModel head_model(const std::string& backbone, const std::string& head, const ModelArgs& args) {
  const auto& entry = head_entry(head);
  const auto trunk_entry = backbone_entry(backbone);
  const bool keep_classifier = entry.keep_backbone_classifier && trunk_entry.baseline_keeps_classifier;
  const bool class_token = args.pool() == PoolType::kToken;
  TORCH_CHECK(!class_token || trunk_entry.has_class_token,
              "ModelArgs::pool token takes a transformer's class token; ", backbone, " has none");
  auto trunk = create_backbone(backbone, BackboneArgs()
                                             .last_stride(args.last_stride())
                                             .keep_classifier(keep_classifier)
                                             .drop_path_rate(args.drop_path_rate())
                                             .input_size(input_size_for(backbone, args))
                                             .patch_stride(args.patch_stride())
                                             .class_token_feature(class_token));
  auto made = entry.create(trunk->num_features(), args);
  return ReidModel(std::move(trunk), std::move(made), entry.layout, head_model_config(backbone, head, args));
}

/// Whether `family`'s ModelArgs::backbone asks for IBN-Net's resnet50_ibn_a (else resnet50).
inline bool on_resnet50_ibn_a(const ModelArgs& args, const char* family) {
  const auto& backbone = args.backbone();
  TORCH_CHECK(backbone.empty() || backbone == "resnet50" || backbone == "resnet50_ibn_a", family,
              " is built on resnet50 or resnet50_ibn_a, not ", backbone);
  return backbone == "resnet50_ibn_a";
}

inline ReidModel ft_net_model(const ModelArgs& args, bool ibn) {
  refuse_token_pool(args, "ft_net");
  return ReidModel(std::shared_ptr<ReidModelImpl>(FtNet(FtNetOptions(args.class_num())
                   .droprate(args.droprate())
                   .last_stride(args.last_stride())
                   .linear_num(args.linear_num())
                   .classifier_std(args.classifier_std().value_or(0.001))
                   .ibn(ibn)
                   .pool(args.pool()))
      .ptr()));
}

/// FtNet's own config: ReidModelImpl's defaults.
inline ModelConfig ft_net_config(const ModelArgs& /*args*/) { return ModelConfig(); }

inline ModelConfig usam_config(const ModelArgs& args) {
  return config_for(on_resnet50_ibn_a(args, "ft_net_usam") ? "resnet50_ibn_a" : "resnet50", "model.");
}

/// ft_net with USAM; on resnet50_ibn_a (args.backbone) it is the baseline's
/// ft_net(ibn=True, usam=True).
inline ReidModel usam_model(const ModelArgs& args) {
  const bool ibn = on_resnet50_ibn_a(args, "ft_net_usam");
  refuse_token_pool(args, "ft_net_usam");
  auto trunk = UsamResNet(
      ResNetOptions().layers({3, 4, 6, 3}).last_stride(args.last_stride()).ibn_a(ibn));
  auto head = baseline_head(trunk->num_features(), args);
  // The baseline registers usam_1/usam_2 after its classifier.
  return ReidModel(trunk.ptr(), head.ptr(),
                   ReidModelLayout("", "classifier", {"model", "classifier", "usam_1", "usam_2"}),
                   usam_config(args));
}

inline ModelConfig pcb_config(const ModelArgs& /*args*/) {
  return config_for("resnet50", "model.").height(384).width(192);
}

inline ReidModel pcb_model(const ModelArgs& args) {
  auto trunk = resnet50(ResNetOptions().last_stride(1));
  auto head = PartHead(PartHeadOptions(trunk->num_features(), args.class_num())
                           .droprate(args.droprate())
                           .classifier_std(args.classifier_std().value_or(0.001)));
  return ReidModel(trunk.ptr(), head.ptr(), ReidModelLayout("model", ""), pcb_config(args));
}

inline std::string bnneck_backbone(const ModelArgs& args) {
  return args.backbone().empty() ? std::string("resnet50") : args.backbone();
}

inline std::map<std::string, ModelEntry>& model_registry() {
  // The switches are the Python baseline's (and --bnneck, the strong baseline's).
  static std::map<std::string, ModelEntry> registry{
      {"ft_net", {[](const ModelArgs& a) { return ft_net_model(a, on_resnet50_ibn_a(a, "ft_net")); },
                  "the baseline's ft_net: ResNet-50 + ClassBlock", "", "", /*takes_backbone=*/true,
                  "", ft_net_config}},
      {"ft_net_ibn", {[](const ModelArgs& a) { return ft_net_model(a, true); },
                      "ft_net on IBN-Net's resnet50_ibn_a (the baseline's --ibn)", "", "", false,
                      "resnet50_ibn_a", ft_net_config}},
      {"ft_net_usam", {usam_model, "ft_net with USAM attention after the stem and layer1 (--usam)",
                       "usam", "--usam", /*takes_backbone=*/true, "", usam_config}},
      {"ft_net_dense", {[](const ModelArgs& a) { return head_model("densenet121", "class_block", a); },
                        "the baseline's ft_net_dense: DenseNet-121 + ClassBlock (--use_dense)",
                        "use_dense", "--use-dense,--use_dense", false, "",
                        [](const ModelArgs& a) { return head_model_config("densenet121", "class_block", a); }}},
      {"pcb", {pcb_model, "PCB: six horizontal stripes, one ClassBlock each; 384x192 (--PCB)", "PCB",
               "--PCB,--pcb", false, "", pcb_config}},
      {"bnneck", {[](const ModelArgs& a) { return head_model(bnneck_backbone(a), "bnneck", a); },
                  "the strong baseline: BNNeck head in fast-reid's layout (--bnneck)",
                  "bnneck", "--bnneck", /*takes_backbone=*/true, "",
                  [](const ModelArgs& a) { return head_model_config(bnneck_backbone(a), "bnneck", a); }}},
  };
  return registry;
}

}  // namespace detail

/// Adds a model family (or replaces the one of that name): create_model, the programs and a
/// run's opts.yaml (`model: <name>`) then know it. Its ModelConfig says its input size,
/// normalisation and checkpoint layout; its head, its test-time rule. Returns true, so that a
/// header can register at namespace scope:
///
///     inline const bool kRegistered = reidnet::register_model("my_family", {create, "..."});
inline bool register_model(const std::string& name, ModelEntry entry) {
  TORCH_CHECK(entry.create, "register_model(\"", name, "\"): the entry has no factory");
  detail::model_registry()[name] = std::move(entry);
  return true;
}

/// Adds a head (or replaces the one of that name): create_model then puts it on any backbone
/// named as the model, with ModelArgs::head. Returns true, as register_model does.
inline bool register_head(const std::string& name, HeadEntry entry) {
  TORCH_CHECK(entry.create, "register_head(\"", name, "\"): the entry has no factory");
  detail::head_registry()[name] = std::move(entry);
  return true;
}

/// The registered heads by name.
inline const std::map<std::string, HeadEntry>& head_entries() { return detail::head_registry(); }

/// The names of head_entries().
inline std::vector<std::string> head_names() {
  std::vector<std::string> names;
  for (const auto& item : detail::head_registry()) names.push_back(item.first);
  return names;
}

/// The registered families by name (the backbones that create_model puts a registered head on
/// are not among them).
inline const std::map<std::string, ModelEntry>& model_entries() { return detail::model_registry(); }

/// The registered family `name`, or nullptr.
inline const ModelEntry* find_model_entry(const std::string& name) {
  const auto found = detail::model_registry().find(name);
  return found == detail::model_registry().end() ? nullptr : &found->second;
}

/// Every model name create_model knows: the families above and each registered backbone.
inline std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& item : detail::model_registry()) names.push_back(item.first);
  for (const auto& name : backbone_names()) {
    if (!detail::model_registry().count(name)) names.push_back(name);
  }
  return names;
}

/// One line per model name, for listings.
inline std::string model_description(const std::string& name) {
  const auto found = detail::model_registry().find(name);
  if (found != detail::model_registry().end()) return found->second.description;
  return backbone_entry(name).description + " + a registered head (ModelArgs::head; class_block)";
}

/// The ModelConfig that create_model(name, args) gives its model: the family's registered
/// config where it has one (nothing is built), else a built model's.
inline ModelConfig model_config(const std::string& name, const ModelArgs& args = {});

/// Whether `name` is one of model_names().
inline bool is_model_name(const std::string& name) {
  const auto names = model_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

namespace detail {
/// The family `name` builds with when it is a registered family and no head is asked for;
/// nullptr when create_model puts a registered head on the backbone `name` instead (a family
/// whose trunk is also a registered backbone of its name, as OSNet's, takes a head too).
inline const ModelEntry* family_entry_for(const std::string& name, const ModelArgs& args) {
  const auto* entry = find_model_entry(name);
  return entry != nullptr && args.head().empty() ? entry : nullptr;
}
}  // namespace detail

/// A new model of family `name` (see model_names()); throws naming the known names.
inline ReidModel create_model(const std::string& name, const ModelArgs& args = {}) {
  detail::check_model_args(args);
  std::function<ReidModel(const ModelArgs&)> create;
  if (const auto* family = detail::family_entry_for(name, args)) {
    create = family->create;
  } else if (find_model_entry(name) != nullptr && !is_backbone_name(name)) {
    TORCH_CHECK(false, "ModelArgs::head (", args.head(), ") puts a head on a backbone named as the "
                "model; the family ", name, " has its own head");
  } else if (is_model_name(name)) {
    detail::head_entry(args.head());  // refuses an unknown head before anything is built
    create = [name](const ModelArgs& a) { return detail::head_model(name, a.head(), a); };
  } else {
    std::string known;
    for (const auto& item : model_names()) known += (known.empty() ? "" : ", ") + item;
    TORCH_CHECK(false, "no model named \"", name, "\"; known: ", known);
  }
  auto model = create(args);
  model->set_factory([create, args] { return create(args).ptr(); });
  return model;
}

inline ModelConfig model_config(const std::string& name, const ModelArgs& args) {
  const auto* family = detail::family_entry_for(name, args);
  if (family != nullptr && family->config) return family->config(args);
  if (family == nullptr && is_backbone_name(name)) return detail::head_model_config(name, args.head(), args);
  return create_model(name, args)->config();
}

/// Loads published ImageNet weights of the model's backbone (torchvision's, IBN-Net's,
/// torchreid's) into it, through the family's key mapping. Every backbone tensor must come
/// from the file; head tensors under the prefix load where the file has them (OSNet's fc);
/// the file's entries the model lacks (an ImageNet classifier it dropped) are ignored.
inline LoadReport load_imagenet_weights(ReidModelImpl& model, const std::string& path) {
  const auto& config = model.config();
  const auto tensors = read_state_dict(path);
  StateDict mapped;
  for (const auto& item : tensors) {
    const auto key = config.imagenet_key() ? config.imagenet_key()(item.key()) : item.key();
    if (!key.empty()) mapped.insert(key, item.value());
  }
  return detail::with_file_context("cannot load ImageNet weights", path, [&] {
    if (config.imagenet_adapt()) mapped = config.imagenet_adapt()(mapped, *model.backbone().module());
    auto report = load_state_dict(model, mapped,
                                  LoadOptions().into(config.imagenet_prefix()).strict(false));
    // A missing entry matters where it is the backbone's: a flat layout (prefix "") also
    // reaches the head, whose classifier the file cannot fill.
    const auto& backbone = *model.backbone().module();
    auto backbone_tensors = backbone.parameters();
    for (const auto& buffer : backbone.buffers()) backbone_tensors.push_back(buffer);
    const auto model_state = state_dict(model);
    std::vector<std::string> uncovered;
    for (const auto& key : report.missing) {
      const auto* tensor = model_state.find(key);
      if (tensor && std::any_of(backbone_tensors.begin(), backbone_tensors.end(),
                                [&](const torch::Tensor& t) { return t.is_same(*tensor); })) {
        uncovered.push_back(key);
      }
    }
    if (!uncovered.empty() || !report.mismatched.empty()) {
      report.missing = uncovered;
      throw std::runtime_error("the backbone is not covered by the file (" + report.summary() + ")");
    }
    return report;
  });
}

/// Loads a fast-reid checkpoint ({'model': state_dict, 'optimizer': ..., ...}) into a
/// `bnneck` model, strictly. fast-reid normalises 0-255 input inside the model; older files
/// keep that mean and std as `pixel_mean`/`pixel_std`. They must be the model config's mean
/// and std on 0..255 (times max_pixel_value), which the data pipeline then applies.
inline LoadReport load_fastreid_checkpoint(ReidModelImpl& model, const std::string& path) {
  auto tensors = read_state_dict(path);
  StateDict weights;
  for (const auto& item : tensors) {
    const bool pixel_mean = item.key() == "pixel_mean";
    if (!pixel_mean && item.key() != "pixel_std") {
      weights.insert(item.key(), item.value());
      continue;
    }
    const auto& expected = pixel_mean ? model.config().mean() : model.config().std();
    const double to_levels = model.config().max_pixel_value();  // 255: config on 0..1; 1: on 0..255
    const auto values = item.value().to(torch::kDouble).flatten();
    bool same = values.numel() == static_cast<int64_t>(expected.size());
    for (int64_t i = 0; same && i < values.numel(); ++i) {
      same = std::abs(values[i].item<double>() - to_levels * expected[static_cast<size_t>(i)]) < 1e-3;
    }
    if (!same) {
      throw std::runtime_error(fmt::format(
          "cannot load fast-reid checkpoint {}: its {} differs from the model's input "
          "normalisation on 0..255; set ModelConfig's mean and std to it", path, item.key()));
    }
  }
  return detail::with_file_context("cannot load fast-reid checkpoint", path,
                                   [&] { return load_state_dict(model, weights); });
}

/// The identity count the weights file `path` of model `name` was trained with: the width of
/// its classifier, read from the first entry whose shape follows ModelArgs::class_num.
inline int64_t class_num_of_weights(const std::string& name, ModelArgs args, const std::string& path) {
  NoInitGuard no_init;  // only the shapes are read
  const auto one = state_dict(*create_model(name, args.class_num(1)));
  const auto two = state_dict(*create_model(name, args.class_num(2)));
  const auto file = read_state_dict(path);
  for (size_t i = 0; i < one.size(); ++i) {
    const auto& narrow = one[i].value();
    const auto& wide = two[i].value();
    if (narrow.sizes() == wide.sizes()) continue;
    const auto* entry = file.find(one[i].key());
    if (entry == nullptr || entry->dim() != narrow.dim()) {
      throw std::runtime_error(fmt::format("cannot read the class count of {}: a {} file needs {} {}, "
                                           "and {}", path, name, one[i].key(),
                                           detail::shape_text(narrow.sizes()),
                                           entry ? "it has " + detail::shape_text(entry->sizes())
                                                 : std::string("it has no such entry")));
    }
    for (int64_t d = 0; d < narrow.dim(); ++d) {
      if (narrow.size(d) != wide.size(d)) return entry->size(d);
    }
  }
  throw std::runtime_error(fmt::format("cannot read the class count of {}: no entry of {} depends on it",
                                       path, name));
}

/// Loads a trained model's file, strictly, in the layout its config names (a state_dict, or
/// fast-reid's checkpoint, whose input normalisation must match the config's).
inline LoadReport load_trained_weights(ReidModelImpl& model, const std::string& path) {
  if (model.config().checkpoint_format() == CheckpointFormat::kFastReid) {
    return load_fastreid_checkpoint(model, path);
  }
  return load_state_dict(model, path);
}

}  // namespace reidnet
