#pragma once
/// The OSNet family of torchreid (Zhou et al. 2019; the IBN and AIN variants of their 2021
/// follow-up) as reidnet models, registered under torchreid's names:
///
///   name              channels (conv1..conv4)  InstanceNorm
///   osnet_x1_0        64, 256, 384, 512        none
///   osnet_x0_75       48, 192, 288, 384        none
///   osnet_x0_5        32, 128, 192, 256        none
///   osnet_x0_25       16, 64, 96, 128          none
///   osnet_ibn_x1_0    64, 256, 384, 512        conv1, after the residual sum of conv2's blocks
///   osnet_ain_x1_0    64, 256, 384, 512        conv1, inside conv2.0/.1, conv3.1, conv4.0
///   osnet_ain_x0_75 / _x0_5 / _x0_25           as osnet_ain_x1_0, at those widths
///
///     auto model = reidnet::create_model("osnet_ain_x1_0", reidnet::ModelArgs().class_num(751));
///     torch::Tensor v = model->embed(images);   // (B, 512), eval mode: torchreid's feature
///
/// Keys are torchreid's, flat and in its order: conv1, conv2, [pool2,] conv3, [pool3,] conv4,
/// conv5, fc, classifier; so a torchreid checkpoint loads as it is. torchreid's save_checkpoint
/// writes {'state_dict': ..., 'epoch', 'rank1', 'optimizer', ...}, with a `module.` prefix on
/// every key when the model was wrapped in DataParallel; read_state_dict unwraps both.
///
/// ModelArgs: class_num is the classifier's width; linear_num the width of the fc block
/// (torchreid's feature_dim, 512 = the default; 0 leaves fc out); classifier_std the
/// classifier's init std (torchreid: 0.01). droprate is ignored: torchreid's OSNet has no
/// dropout, and ModelArgs' default (0.5) is the baseline's. pool, last_stride and backbone do
/// not apply and are refused unless at their defaults.
///
/// Each trunk is also a registered backbone of the same name, so that ModelArgs::head puts a
/// registered head on it (`--model osnet_x1_0 --head bnneck`: backbone.conv1..., heads.*).

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/backbones/osnet.hpp>
#include <reidnet/models/heads/osnet_head.hpp>
#include <reidnet/models/layers/pooling.hpp>
#include <reidnet/models/model_zoo.hpp>
#include <reidnet/models/reid_model.hpp>

#include <c10/util/Exception.h>

#include <string>
#include <vector>

namespace reidnet {

namespace detail {
// torchreid's ImageNet files are whole OSNets trained on 1000 classes: the classifier is
// dropped (a new one is trained), conv1..conv5 and fc load by name.
inline std::string osnet_imagenet_key(const std::string& key) {
  const std::string parallel = "module.";
  const auto name = key.rfind(parallel, 0) == 0 ? key.substr(parallel.size()) : key;
  return name.rfind("classifier.", 0) == 0 ? std::string() : name;
}
}  // namespace detail

/// torchreid's test-time input: Resize((256, 128)) with torchvision's default (bilinear)
/// filter, ToTensor (0..1), ImageNet mean and std.
inline ModelConfig osnet_config(const ModelArgs& /*args*/ = {}) {
  return ModelConfig()
      .height(256)
      .width(128)
      .mean({0.485, 0.456, 0.406})
      .std({0.229, 0.224, 0.225})
      .max_pixel_value(255)
      .interpolation("bilinear")
      .imagenet_prefix("")
      .imagenet_key(detail::osnet_imagenet_key)
      .checkpoint_format(CheckpointFormat::kStateDict);
}

/// torchreid's model `name` (one of osnet_variant_names()) for `args`.
inline ReidModel osnet_model(const std::string& name, const ModelArgs& args) {
  TORCH_CHECK(args.backbone().empty(), "ModelArgs::backbone (\"", args.backbone(),
              "\") does not apply to ", name, ": OSNet is its own backbone");
  TORCH_CHECK(args.pool() == PoolType::kAvg, "ModelArgs::pool (", pool_name(args.pool()),
              ") does not apply to ", name, ": torchreid's OSNet pools by global average");
  TORCH_CHECK(args.last_stride() == 2, "ModelArgs::last_stride (", args.last_stride(),
              ") does not apply to ", name,
              ": OSNet has no last stride; its map is at stride 16 (16x8 for 256x128)");
  auto trunk = OSNet(osnet_variant_options(name));
  auto head = OSNetHead(OSNetHeadOptions(trunk->num_features(), args.class_num())
                            .fc_dim(args.linear_num())
                            .classifier_std(args.classifier_std().value_or(0.01)));
  // Both parts flattened: conv1..conv5, then fc and classifier, as torchreid's keys.
  return ReidModel(trunk.ptr(), head.ptr(), ReidModelLayout("", ""), osnet_config(args));
}

inline const bool kOSNetRegistered = [] {
  for (const auto& name : osnet_variant_names()) {
    // The trunk alone, under the same name: create_model(name, ModelArgs().head("bnneck")) puts
    // a registered head on it, in that head's layout, instead of torchreid's fc and classifier.
    register_backbone(name, BackboneEntry{[name](const BackboneArgs& args) {
                                            TORCH_CHECK(args.last_stride() == 2, "BackboneArgs::last_stride (",
                                                        args.last_stride(), ") does not apply to ", name,
                                                        ": OSNet has no last stride");
                                            return AnyBackbone(OSNet(osnet_variant_options(name)).ptr());
                                          },
                                          detail::osnet_imagenet_key,
                                          "torchreid's " + name + " trunk (conv1..conv5), stride 16"});
    ModelEntry entry{[name](const ModelArgs& args) { return osnet_model(name, args); },
                     "torchreid's " + name + ": OSNet trunk + fc (512) + classifier; 256x128"};
    entry.config = osnet_config;  // the programs read its input size without building one
    register_model(name, entry);
  }
  return true;
}();

}  // namespace reidnet
