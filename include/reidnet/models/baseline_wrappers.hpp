#pragma once
/// The Python baseline's wrappers of other projects' networks: the upstream network as `model`,
/// the baseline's ClassBlock as `classifier`, each picked by the baseline's switch:
///
///   name               switch          model: the upstream network (its keys)             feature
///   ft_net_swin        use_swin        timm's swin_base_patch4_window7_224 at 224x224     1024
///   ft_net_swinv2      use_swinv2      timm's swinv2_base_window8_256 built for 256x128    1024
///   ft_net_dino        use_dino        timm's vit_base_patch16_dinov3 at 256x128           768
///   ft_net_convnext    use_convnext    timm's convnext_base, head removed                  1024
///   ft_net_hr          use_hr          timm's hrnet_w18, classifier removed                2048
///   ft_net_efficient   use_efficient   efficientnet_pytorch's efficientnet-b4, _fc kept    1792
///   ft_net_nas         use_NAS         pretrainedmodels' nasnetalarge, last_linear removed  4032
///
/// Each is its backbone under the registered ClassBlock head (create_model("convnext_base") is
/// the same model): the baseline average-pools the network's own feature call
/// (forward_features, extract_features, features); for DINOv3 that is every token, the class
/// and register tokens included. The baseline's wrappers take no stride: a run's `stride` is
/// ignored, as the baseline ignores it, so that its opts.yaml files load as they are; the
/// backbones by name refuse last stride 1. The transformers are built for the run's input
/// size (ModelArgs::input_size; Swin's own is 224x224, as the baseline's test.py resizes).
///
///     auto model = reidnet::create_model("ft_net_swin", reidnet::ModelArgs().class_num(751));
///
/// Stochastic depth (ModelArgs::drop_path_rate) is the baseline's 0.2 unless set, for the
/// networks that have it (the transformers, ConvNeXt, EfficientNet's drop connect).

#include <reidnet/models/backbones/convnext.hpp>
#include <reidnet/models/backbones/efficientnet.hpp>
#include <reidnet/models/backbones/eva.hpp>
#include <reidnet/models/backbones/hrnet.hpp>
#include <reidnet/models/backbones/nasnet.hpp>
#include <reidnet/models/backbones/swin.hpp>
#include <reidnet/models/backbones/swinv2.hpp>
#include <reidnet/models/model_zoo.hpp>
#include <reidnet/models/reid_model.hpp>

#include <string>
#include <vector>

namespace reidnet {

/// One of the baseline's wrappers of a registered backbone.
struct BaselineWrapperFamily {
  std::string name;
  std::string backbone;
  /// The baseline's opts.yaml key and flag spellings.
  std::string switch_key;
  std::string switch_flags;
  std::string description;
};

/// The families of this header.
inline const std::vector<BaselineWrapperFamily>& baseline_wrapper_families() {
  static const std::vector<BaselineWrapperFamily> families{
      {"ft_net_swin", "swin_base_patch4_window7_224", "use_swin", "--use-swin,--use_swin",
       "the baseline's ft_net_swin: timm's Swin-B + ClassBlock, 224x224 (--use_swin)"},
      {"ft_net_swinv2", "swinv2_base_window8_256", "use_swinv2", "--use-swinv2,--use_swinv2",
       "the baseline's ft_net_swinv2: timm's SwinV2-B (window 8) + ClassBlock (--use_swinv2)"},
      {"ft_net_dino", "vit_base_patch16_dinov3", "use_dino", "--use-dino,--use_dino",
       "the baseline's ft_net_dino: timm's DINOv3 ViT-B/16, every token pooled, + ClassBlock (--use_dino)"},
      {"ft_net_convnext", "convnext_base", "use_convnext", "--use-convnext,--use_convnext",
       "the baseline's ft_net_convnext: timm's ConvNeXt-B + ClassBlock (--use_convnext)"},
      {"ft_net_hr", "hrnet_w18", "use_hr", "--use-hr,--use_hr",
       "the baseline's ft_net_hr: timm's HRNet-W18 + ClassBlock (--use_hr)"},
      {"ft_net_efficient", "efficientnet-b4", "use_efficient", "--use-efficient,--use_efficient",
       "the baseline's ft_net_efficient: efficientnet_pytorch's EfficientNet-B4 + ClassBlock "
       "(--use_efficient)"},
      {"ft_net_nas", "nasnetalarge", "use_NAS", "--use-nas,--use_NAS",
       "the baseline's ft_net_NAS: pretrainedmodels' NASNet-A-Large + ClassBlock (--use_NAS)"},
  };
  return families;
}

inline const bool kBaselineWrappersRegistered = [] {
  for (const auto& family : baseline_wrapper_families()) {
    ModelEntry entry{[backbone = family.backbone](const ModelArgs& args) {
                       auto unstrided = args;  // the baseline's wrappers have no stride
                       return detail::head_model(backbone, "class_block", unstrided.last_stride(2));
                     },
                     family.description, family.switch_key, family.switch_flags};
    entry.config = [backbone = family.backbone](const ModelArgs& args) {
      return detail::head_model_config(backbone, "class_block", args);
    };
    register_model(family.name, entry);
  }
  return true;
}();

}  // namespace reidnet
