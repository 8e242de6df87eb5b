#pragma once
/// Folding each BatchNorm2d into the convolution that feeds it, and each BatchNorm1d into the
/// Linear that feeds it, for inference: the layer's weight and bias absorb the BatchNorm's
/// affine map of its running statistics, and the BatchNorm then passes its input through (and
/// refuses training).
///
/// The pairs are declared by the modules that own them, as torch.ao.quantization.fuse_modules
/// is given them, never guessed from a graph: a module implements DeclaresConvBatchNormPairs
/// (or DeclaresLinearBatchNormPairs) and names each layer and the BatchNorm that takes its
/// output, with nothing in between.
///
///     auto copy = std::dynamic_pointer_cast<reidnet::ReidModelImpl>(model->clone());
///     copy->eval();
///     const auto report = reidnet::fold_batch_norms(*copy);   // the copy only
///     std::cout << report.summary() << '\n';   // "folded 53 BatchNorms; skipped 8 (...)"
///
/// optimize_for_inference runs it on its eval copy of a model; the user's model is never
/// changed.

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/ibn.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace reidnet {

/// A conv and the BatchNorm2d applied to its output, as paths below the declaring module
/// ("conv", "bn"; "downsample.0", "downsample.1").
struct ConvBatchNormPair {
  std::string conv;
  std::string batch_norm;
};

/// A Linear and the BatchNorm1d applied to its output ("add_block.0", "add_block.1").
struct LinearBatchNormPair {
  std::string linear;
  std::string batch_norm;
};

/// A conv and the BatchNorm2d that takes its output (none: a conv without one), read by
/// inference plans that fold them. IBN-a's pair (see Ibn): `instance_norm` normalises the first
/// channels per image, and `norm` the rest.
struct ConvNormView {
  const torch::nn::Conv2dImpl* conv = nullptr;
  const BatchNorm2dImpl* norm = nullptr;
  const torch::nn::InstanceNorm2dImpl* instance_norm = nullptr;
};

/// Implemented by a conv of its own kind (not a torch::nn::Conv2d) that a BatchNorm can fold
/// into: its weight (output channels first) and the bias its forward adds, which folding
/// defines where it was undefined.
class FoldableConv {
 public:
  virtual ~FoldableConv() = default;
  virtual torch::Tensor& conv_weight() = 0;
  virtual torch::Tensor& conv_bias() = 0;
};

/// Implemented by modules that own conv -> BatchNorm2d pairs.
class DeclaresConvBatchNormPairs {
 public:
  virtual ~DeclaresConvBatchNormPairs() = default;
  /// The pairs this module owns (an IBN half or a BatchNorm that precedes its conv is none).
  virtual std::vector<ConvBatchNormPair> conv_batch_norm_pairs() const = 0;
};

/// Implemented by modules that own Linear -> BatchNorm1d pairs (the baseline's ClassBlock).
class DeclaresLinearBatchNormPairs {
 public:
  virtual ~DeclaresLinearBatchNormPairs() = default;
  virtual std::vector<LinearBatchNormPair> linear_batch_norm_pairs() const = 0;
};

/// What fold_batch_norms did: the BatchNorms it folded, and those it left, with the reason.
struct FoldReport {
  std::vector<std::string> folded;
  std::vector<std::string> skipped;  ///< "path (why)"

  std::string summary() const {
    std::string text = "folded " + std::to_string(folded.size()) + " BatchNorms";
    if (skipped.empty()) return text;
    text += "; skipped " + std::to_string(skipped.size()) + " (";
    for (size_t i = 0; i < skipped.size(); ++i) text += (i ? ", " : "") + skipped[i];
    return text + ")";
  }
};

namespace detail {

inline std::shared_ptr<torch::nn::Module> child_at(torch::nn::Module& module, const std::string& path) {
  torch::nn::Module* current = &module;
  std::shared_ptr<torch::nn::Module> found;
  size_t start = 0;
  while (start <= path.size()) {
    const auto end = std::min(path.find('.', start), path.size());
    const auto name = path.substr(start, end - start);
    const auto children = current->named_children();
    const auto* child = children.find(name);
    TORCH_CHECK(child != nullptr, "fold_batch_norms: ", module.name(), " declares ", path,
                ", which it does not have");
    found = *child;
    current = found.get();
    start = end + 1;
  }
  return found;
}

// torch::nn::Module's parameter table is protected; a member pointer taken through a derived
// class reaches it.
struct ParameterTable : torch::nn::Module {
  static torch::Tensor& entry(torch::nn::Module& module, const std::string& name) {
    return (module.*(&ParameterTable::parameters_))[name];
  }
};

/// An eval-mode BatchNorm as the affine map y = x * scale + shift (exact: running statistics),
/// in float64 so that folding adds no rounding beyond the final cast. `Norm` is
/// BatchNorm1dImpl or BatchNorm2dImpl; its tensors are only read.
struct BatchNormAffine {
  torch::Tensor scale;
  torch::Tensor shift;
};

template <class Norm>
BatchNormAffine batch_norm_affine(const Norm& norm) {
  TORCH_CHECK(norm.options.track_running_stats(),
              "a BatchNorm without running statistics cannot be folded");
  const auto variance = norm.running_var.detach().to(torch::kDouble);
  const auto mean = norm.running_mean.detach().to(torch::kDouble);
  auto scale = torch::rsqrt(variance + norm.options.eps());
  if (norm.options.affine()) scale = scale * norm.weight.detach().to(torch::kDouble);
  auto shift = -mean * scale;
  if (norm.options.affine()) shift = shift + norm.bias.detach().to(torch::kDouble);
  return {scale, shift};
}

// weight' = weight * scale (per output channel), bias' = bias * scale + shift, then back to
// the layer's dtype. `weight` (output channels first) and `bias` are the members that the
// layer module's forward reads.
template <class Norm>
void fold_into_layer(torch::nn::Module& layer, torch::Tensor& weight, torch::Tensor& bias_member,
                     Norm& norm) {
  const auto dtype = weight.scalar_type();
  const auto affine = batch_norm_affine(norm);
  std::vector<int64_t> per_output(static_cast<size_t>(weight.dim()), 1);
  per_output[0] = -1;
  weight.set_data((weight.to(torch::kDouble) * affine.scale.view(per_output)).to(dtype));
  const auto bias = bias_member.defined() ? bias_member.to(torch::kDouble) * affine.scale + affine.shift
                                          : affine.shift;
  if (bias_member.defined()) {
    bias_member.set_data(bias.to(dtype));
  } else {
    // A bias-free layer holds an undefined "bias" entry, which register_parameter cannot
    // replace: the entry is set in the module's table and in the member its forward reads.
    bias_member = bias.to(dtype);
    ParameterTable::entry(layer, "bias") = bias_member;
  }
  norm.mark_folded();
}

/// Whether `norm` can be folded: not yet folded, and with running statistics (else noted).
template <class Norm>
bool foldable(const Norm& norm, const std::string& path, FoldReport& report) {
  if (norm.folded()) return false;
  if (!norm.running_mean.defined()) {
    report.skipped.push_back(path + " (no running statistics)");
    return false;
  }
  return true;
}

inline void fold_linear_pairs(torch::nn::Module& module, const std::string& prefix, FoldReport& report) {
  auto* declares = dynamic_cast<DeclaresLinearBatchNormPairs*>(&module);
  if (declares == nullptr) return;
  for (const auto& pair : declares->linear_batch_norm_pairs()) {
    const auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(child_at(module, pair.linear));
    const auto norm = std::dynamic_pointer_cast<BatchNorm1dImpl>(child_at(module, pair.batch_norm));
    TORCH_CHECK(linear && norm, "fold_batch_norms: ", prefix + pair.linear, " and ", prefix + pair.batch_norm,
                " are declared a Linear and its BatchNorm, but are not a torch::nn::Linear and a "
                "reidnet::BatchNorm1d");
    if (!foldable(*norm, prefix + pair.batch_norm, report)) continue;
    TORCH_CHECK(linear->weight.size(0) == norm->options.num_features(), "fold_batch_norms: ",
                prefix + pair.linear, " gives ", linear->weight.size(0), " features, ",
                prefix + pair.batch_norm, " takes ", norm->options.num_features());
    fold_into_layer(*linear, linear->weight, linear->bias, *norm);
    report.folded.push_back(prefix + pair.batch_norm);
  }
}

inline void fold_tree(torch::nn::Module& module, const std::string& path, FoldReport& report,
                      const torch::nn::Module* parent) {
  const auto prefix = path.empty() ? std::string() : path + ".";
  if (auto* declares = dynamic_cast<DeclaresConvBatchNormPairs*>(&module)) {
    for (const auto& pair : declares->conv_batch_norm_pairs()) {
      const auto conv = child_at(module, pair.conv);
      auto* plain = dynamic_cast<torch::nn::Conv2dImpl*>(conv.get());
      auto* own_kind = dynamic_cast<FoldableConv*>(conv.get());
      auto norm = std::dynamic_pointer_cast<BatchNorm2dImpl>(child_at(module, pair.batch_norm));
      TORCH_CHECK((plain || own_kind) && norm, "fold_batch_norms: ", prefix + pair.conv, " and ",
                  prefix + pair.batch_norm, " are declared a conv and its BatchNorm, but are not a Conv2d (or "
                  "FoldableConv) and a reidnet::BatchNorm2d");
      if (!foldable(*norm, prefix + pair.batch_norm, report)) continue;
      auto& weight = plain ? plain->weight : own_kind->conv_weight();
      auto& bias = plain ? plain->bias : own_kind->conv_bias();
      TORCH_CHECK(weight.dim() == 4 && weight.size(0) == norm->options.num_features(), "fold_batch_norms: ",
                  prefix + pair.conv, " gives ", weight.size(0), " channels, ", prefix + pair.batch_norm,
                  " takes ", norm->options.num_features());
      fold_into_layer(*conv, weight, bias, *norm);
      report.folded.push_back(prefix + pair.batch_norm);
    }
  }
  fold_linear_pairs(module, prefix, report);
  for (const auto& child : module.named_children()) {
    fold_tree(*child.value(), prefix + child.key(), report, &module);
  }
  // What stays a BatchNorm, and why.
  if (auto* norm = dynamic_cast<BatchNorm2dImpl*>(&module)) {
    if (norm->folded()) return;
    const bool ibn_half = parent != nullptr && dynamic_cast<const IbnImpl*>(parent) != nullptr;
    report.skipped.push_back(path + (ibn_half ? " (an IBN half: its InstanceNorm half cannot fold)"
                                              : " (no conv declared before it)"));
  } else if (auto* norm_1d = dynamic_cast<BatchNorm1dImpl*>(&module)) {
    if (!norm_1d->folded()) report.skipped.push_back(path + " (no Linear declared before it)");
  } else if (dynamic_cast<torch::nn::BatchNorm2dImpl*>(&module) != nullptr ||
             dynamic_cast<torch::nn::BatchNorm1dImpl*>(&module) != nullptr) {
    report.skipped.push_back(path + " (a torch::nn BatchNorm: only reidnet's BatchNorms fold)");
  }
}

}  // namespace detail

/// Folds every declared conv -> BatchNorm2d and Linear -> BatchNorm1d pair below `root`, in place; `root` should be an
/// eval-mode copy (the folded BatchNorms refuse training).
inline FoldReport fold_batch_norms(torch::nn::Module& root) {
  torch::NoGradGuard no_grad;
  FoldReport report;
  detail::fold_tree(root, "", report, nullptr);
  return report;
}

}  // namespace reidnet
