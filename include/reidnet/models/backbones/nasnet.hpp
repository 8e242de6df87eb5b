#pragma once
/// NASNet-A-Large as Cadene's pretrainedmodels builds it (pretrainedmodels/models/nasnet.py,
/// `nasnetalarge`), with the same state_dict keys, order and shapes, as a reidnet backbone
/// (registered as "nasnetalarge", and "nasnet_a_tiny" for tests).
///
///     auto net = reidnet::nasnetalarge(reidnet::NASNetOptions().class_num(0));
///     torch::Tensor map = net->forward_features(torch::randn({2, 3, 256, 128}));
///     // map: (2, 4032, 8, 4), cell_17's output
///
/// Keys, in upstream's order: conv0 (3x3 conv of stride 2 without padding, BN; no ReLU: every
/// cell starts with one), cell_stem_0, cell_stem_1, cell_0..cell_5, reduction_cell_0,
/// cell_6..cell_11, reduction_cell_1, cell_12..cell_17, last_linear (when class_num > 0).
/// cell_0, cell_6 and cell_12 are First cells (their x_prev is twice their x's size); after a
/// reduction cell, the First cell takes as x_prev the reduction cell's own x_prev (cell_4,
/// cell_10).
///
/// The Python baseline's ft_net_NAS pools `features(x)` (cell_17's output) directly, without
/// the ReLU that upstream's `logits` applies, and empties avg_pool, dropout and last_linear;
/// `forward_features` returns that map. Input sizes: the map at stride 8 (cells 0-5) must have
/// an even height and width (see reidnet/models/layers/nasnet_cells.hpp), as upstream's.

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/nasnet_cells.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace reidnet {

/// Options of `NASNet`: upstream's NASNetALarge constructor arguments. With
/// filters = penultimate_filters / 24 (rounded down), the stages run at filters, 2 x filters
/// and 4 x filters per branch, and the map has 24 x filters channels.
struct NASNetOptions {
  /// Channels of conv0.
  TORCH_ARG(int64_t, stem_filters) = 96;
  /// Channels of the final map (24 x filters); 4032 for NASNet-A-Large.
  TORCH_ARG(int64_t, penultimate_filters) = 4032;
  /// The stem cells run at filters / multiplier^2 and filters / multiplier; only 2 gives
  /// widths that fit together (upstream's default).
  TORCH_ARG(int64_t, filters_multiplier) = 2;
  /// Width of the ImageNet classifier `last_linear`; 0 leaves it out of the module.
  TORCH_ARG(int64_t, class_num) = 1000;
};

/// NASNet's conv0: a 3x3 conv of stride 2 without padding or bias, then BN. Keys: conv, bn.
class NASNetStemImpl : public torch::nn::Cloneable<NASNetStemImpl>, public DeclaresConvBatchNormPairs {
 public:
  explicit NASNetStemImpl(int64_t stem_filters) : stem_filters(stem_filters) { reset(); }

  void reset() override {
    conv = register_module(
        "conv", torch::nn::Conv2d(
                    torch::nn::Conv2dOptions(3, stem_filters, 3).stride(2).padding(0).bias(false)));
    bn = register_module("bn", detail::nasnet_batch_norm(stem_filters));
  }

  torch::Tensor forward(const torch::Tensor& x) { return bn(conv(x)); }

  std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const override { return {{"conv", "bn"}}; }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNetStem(" << stem_filters << ")";
  }

  int64_t stem_filters;
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d bn{nullptr};
};
TORCH_MODULE(NASNetStem);

/// pretrainedmodels' NASNetALarge as a reidnet backbone. Six cells per stage (one First and
/// five Normal cells), as upstream fixes them. Initialisation: PyTorch's defaults, which
/// upstream keeps (torch::nn's layers reproduce them).
class NASNetImpl : public torch::nn::Cloneable<NASNetImpl>, public Backbone {
 public:
  static constexpr int64_t kCellsPerStage = 6;
  static constexpr int64_t kStages = 3;

  explicit NASNetImpl(const NASNetOptions& options_ = {}) : options(options_) { reset(); }

  void reset() override {
    const auto stem = options.stem_filters();
    const auto m = options.filters_multiplier();
    TORCH_CHECK(stem > 0, "NASNetOptions::stem_filters must be positive, got ", stem);
    TORCH_CHECK(m > 0, "NASNetOptions::filters_multiplier must be positive, got ", m);
    const auto f = filters();
    // Upstream builds any widths but runs only where these hold (its convs refuse the others).
    TORCH_CHECK(f > 0 && 4 * (f / (m * m)) == f && 2 * (f / m) == f && (f / m) % 2 == 0,
                "NASNetOptions: filters = penultimate_filters / 24 (", f, " for ",
                options.penultimate_filters(), ") must fit the stem cells: 4 x (filters / ", m,
                "^2) == filters and 2 x (filters / ", m, ") == filters, with filters / ", m,
                " even; use filters_multiplier 2 and a penultimate_filters that is a multiple "
                "of 96 (e.g. 4032 or 96)");
    TORCH_CHECK(options.class_num() >= 0,
                "NASNetOptions::class_num is a width (0 = no classifier), got ", options.class_num());

    conv0 = register_module("conv0", NASNetStem(stem));
    cell_stem_0 =
        register_module("cell_stem_0", NASNetCellStem0(NASNetStemCellOptions(stem, f / (m * m))));
    cell_stem_1 = register_module("cell_stem_1", NASNetCellStem1(NASNetStemCellOptions(stem, f / m)));
    first_cells.clear();
    normal_cells.clear();
    reduction_cells.clear();
    int64_t index = 0;
    for (int64_t stage = 0; stage < kStages; ++stage) {
      // Branch width of the stage, and the channels of the maps the stage starts from.
      const int64_t width = f << stage;
      int64_t x_channels = 2 * f;  // cell_stem_1's output
      int64_t x_prev_channels = f;  // cell_stem_0's output
      if (stage > 0) {
        // The previous stage's cells output 6 x (width / 2); the reduction cell 4 x width.
        const int64_t previous = 6 * (width / 2);
        reduction_cells.push_back(register_module(
            "reduction_cell_" + std::to_string(stage - 1),
            NASNetReductionCell(NASNetReductionCellOptions(previous, width, previous, width)
                                    .shifted(stage == 1))));
        x_channels = 4 * width;
        x_prev_channels = previous;
      }
      first_cells.push_back(register_module(
          "cell_" + std::to_string(index++),
          NASNetFirstCell(NASNetCellOptions(x_prev_channels, width / 2, x_channels, width))));
      x_prev_channels = x_channels;
      x_channels = 6 * width;
      for (int64_t i = 1; i < kCellsPerStage; ++i) {
        normal_cells.push_back(register_module(
            "cell_" + std::to_string(index++),
            NASNetNormalCell(NASNetCellOptions(x_prev_channels, width, x_channels, width))));
        x_prev_channels = x_channels;
      }
    }
    last_linear = nullptr;
    if (options.class_num() > 0) {
      last_linear = register_module("last_linear", torch::nn::Linear(num_features(), options.class_num()));
    }
    apply_init(*this, NoInit{});
  }

  /// penultimate_filters / 24 (rounded down), upstream's `filters`.
  int64_t filters() const { return options.penultimate_filters() / 24; }

  /// Channels of cell_17's output: 24 x filters (4032).
  int64_t num_features() const override { return 24 * filters(); }

  /// cell_17's output without ReLU (the baseline's ft_net_NAS feature): 8x4 for 256x128.
  torch::Tensor forward_features(const torch::Tensor& images) override {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3,
                "NASNet expects images (B, 3, H, W), got ", images.sizes());
    const auto x_conv0 = conv0(images);
    auto x_prev = cell_stem_0(x_conv0);
    auto x = cell_stem_1(x_conv0, x_prev);
    size_t normal = 0;
    for (int64_t stage = 0; stage < kStages; ++stage) {
      // A reduction cell's output is x for the next cell, whose x_prev stays the reduction
      // cell's own x_prev.
      if (stage > 0) x = reduction_cells[static_cast<size_t>(stage - 1)](x, x_prev);
      auto next = first_cells[static_cast<size_t>(stage)](x, x_prev);
      x_prev = x;
      x = next;
      for (int64_t i = 1; i < kCellsPerStage; ++i) {
        next = normal_cells[normal++](x, x_prev);
        x_prev = x;
        x = next;
      }
    }
    return x;
  }

  /// Strides after conv0, cell_stem_0, cell_stem_1 (and cells 0-5), reduction_cell_0 (and
  /// cells 6-11), reduction_cell_1 (and cells 12-17). conv0 has no padding, so its map is one
  /// pixel short of H/2 (127x63 for 256x128).
  std::vector<int64_t> feature_strides() const override { return {2, 4, 8, 16, 32}; }

  /// ImageNet logits as upstream's forward: ReLU, a fixed 11x11 average pool of stride 1 (for
  /// upstream's 331x331 input), flatten, dropout 0.5 while training, last_linear. Without
  /// last_linear, the feature map.
  torch::Tensor forward(const torch::Tensor& images) {
    auto out = forward_features(images);
    if (last_linear.is_empty()) return out;
    out = torch::avg_pool2d(torch::relu(out), {11, 11}, {1, 1});
    out = torch::dropout(out.view({out.size(0), -1}), 0.5, is_training());
    return last_linear(out);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::NASNet(stem_filters=" << options.stem_filters()
           << ", penultimate_filters=" << options.penultimate_filters()
           << ", filters_multiplier=" << options.filters_multiplier()
           << ", class_num=" << options.class_num() << ")";
  }

  NASNetOptions options;
  NASNetStem conv0{nullptr};
  NASNetCellStem0 cell_stem_0{nullptr};
  NASNetCellStem1 cell_stem_1{nullptr};
  /// cell_0, cell_6, cell_12.
  std::vector<NASNetFirstCell> first_cells;
  /// cell_1..cell_5, cell_7..cell_11, cell_13..cell_17.
  std::vector<NASNetNormalCell> normal_cells;
  /// reduction_cell_0 (shifted), reduction_cell_1.
  std::vector<NASNetReductionCell> reduction_cells;
  torch::nn::Linear last_linear{nullptr};
};
TORCH_MODULE(NASNet);

/// pretrainedmodels' nasnetalarge: stem 96, penultimate 4032; `options` keeps its class_num.
inline NASNet nasnetalarge(NASNetOptions options = {}) {
  return NASNet(options.stem_filters(96).penultimate_filters(4032).filters_multiplier(2));
}

/// The same architecture at stem 8, penultimate 96 (96 channels, filters 4), for tests and
/// tiny models; `options` keeps its class_num.
inline NASNet nasnet_a_tiny(NASNetOptions options = {}) {
  return NASNet(options.stem_filters(8).penultimate_filters(96).filters_multiplier(2));
}

/// "nasnetalarge", "nasnet_a_tiny".
inline const std::vector<std::string>& nasnet_variant_names() {
  static const std::vector<std::string> names{"nasnetalarge", "nasnet_a_tiny"};
  return names;
}

/// The options of the registered variant `name` (one of nasnet_variant_names()).
inline NASNetOptions nasnet_variant_options(const std::string& name) {
  if (name == "nasnetalarge") return NASNetOptions().stem_filters(96).penultimate_filters(4032);
  if (name == "nasnet_a_tiny") return NASNetOptions().stem_filters(8).penultimate_filters(96);
  TORCH_CHECK(false, "no NASNet variant named \"", name, "\"; known: nasnetalarge, nasnet_a_tiny");
  return {};
}

// Cadene's published file (nasnetalarge-a1897284.pth) has these keys as they are (the identity
// map); its last_linear is 1001-way (background first), which pretrainedmodels trims to 1000
// after loading, so the file fills the trunk, not a kept 1000-way last_linear. NASNet has no
// stochastic depth: BackboneArgs::drop_path_rate is ignored.
inline const bool kNASNetRegistered = [] {
  for (const auto& name : nasnet_variant_names()) {
    const std::string description =
        name == "nasnetalarge"
            ? "pretrainedmodels' NASNet-A-Large, 4032 channels; cell_17's map without ReLU, as the "
              "baseline's ft_net_NAS"
            : "NASNet-A at stem 8 / penultimate 96 (96 channels), for tests and tiny models";
    register_backbone(
        name, BackboneEntry{[name](const BackboneArgs& args) {
                              TORCH_CHECK(args.last_stride() == 2, "BackboneArgs::last_stride (",
                                          args.last_stride(), ") does not apply to ", name,
                                          ": NASNet's last reduction cell is at stride 32");
                              return AnyBackbone(NASNet(nasnet_variant_options(name).class_num(
                                                            args.keep_classifier() ? 1000 : 0))
                                                     .ptr());
                            },
                            {}, description, "", "", /*baseline_keeps_classifier=*/false});
  }
  return true;
}();

}  // namespace reidnet
