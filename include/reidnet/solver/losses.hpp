#pragma once
/// Metric losses of the ReID recipe, added to cross-entropy on
/// L2-normalised features. Cross-entropy itself is LibTorch's, with label smoothing:
///
///     torch::nn::CrossEntropyLoss ce(torch::nn::CrossEntropyLossOptions().label_smoothing(0.1));
///     reidnet::TripletLoss triplet(reidnet::TripletLossOptions().margin(0.3));
///     auto loss = ce(logits, labels) + triplet(torch::nn::functional::normalize(f), labels);

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/torch.h>

#include <ostream>

namespace reidnet {

namespace detail {
// Same-label mask of a batch (B, B), bool.
inline torch::Tensor same_label_mask(const torch::Tensor& labels) {
  return labels.unsqueeze(1) == labels.unsqueeze(0);
}

inline void check_metric_inputs(const char* loss, const torch::Tensor& features,
                                const torch::Tensor& labels) {
  TORCH_CHECK(features.dim() == 2, loss, " needs features of shape (B, D), got ",
              features.sizes());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == features.size(0), loss,
              " needs one label per feature row: features ", features.sizes(), ", labels ",
              labels.sizes());
}
}  // namespace detail

struct TripletLossOptions {
  /// Margin between the hardest positive and the hardest negative distance.
  TORCH_ARG(double, margin) = 0.3;
};

/// Batch-hard triplet loss (Hermans et al. 2017): for each anchor, the farthest same-id
/// sample against the nearest other-id sample, in Euclidean distance. Anchors without a
/// positive or a negative in the batch are left out; a batch with none gives 0. Use it
/// with the P×K identity sampler so every anchor has positives.
class TripletLossImpl : public torch::nn::Cloneable<TripletLossImpl> {
 public:
  explicit TripletLossImpl(const TripletLossOptions& options_ = {}) : options(options_) {}
  void reset() override {}

  torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& labels) {
    detail::check_metric_inputs("TripletLoss", features, labels);
    // Clamped before the sqrt so that the gradient at zero distance stays finite.
    const auto squared = (features.unsqueeze(1) - features.unsqueeze(0)).pow(2).sum(-1);
    const auto distance = squared.clamp_min(1e-12).sqrt();
    const auto same = detail::same_label_mask(labels);
    const auto self = torch::eye(labels.size(0), same.options());
    const auto positives = same & ~self;
    const auto negatives = ~same;
    const auto hardest_positive =
        distance.masked_fill(~positives, -std::numeric_limits<float>::infinity()).amax(1);
    const auto hardest_negative =
        distance.masked_fill(~negatives, std::numeric_limits<float>::infinity()).amin(1);
    const auto valid = positives.any(1) & negatives.any(1);
    if (!valid.any().item<bool>()) return features.sum() * 0;
    const auto per_anchor =
        torch::relu(hardest_positive - hardest_negative + options.margin()).masked_select(valid);
    return per_anchor.mean();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::TripletLoss(margin=" << options.margin() << ")";
  }

  TripletLossOptions options;
};
TORCH_MODULE(TripletLoss);

struct CircleLossOptions {
  /// Relaxation margin m.
  TORCH_ARG(double, m) = 0.25;
  /// Scale gamma.
  TORCH_ARG(double, gamma) = 32;
};

/// Circle loss (Sun et al. 2020) over all pairs of the batch, on L2-normalised features:
/// positive pairs are same-id pairs (i < j), negative pairs the others. The baseline divides
/// the result by the batch size; `forward` returns the loss before that division.
class CircleLossImpl : public torch::nn::Cloneable<CircleLossImpl> {
 public:
  explicit CircleLossImpl(const CircleLossOptions& options_ = {}) : options(options_) {}
  void reset() override {}

  torch::Tensor forward(const torch::Tensor& normalized_features, const torch::Tensor& labels) {
    detail::check_metric_inputs("CircleLoss", normalized_features, labels);
    const auto similarity = normalized_features.matmul(normalized_features.t());
    const auto same = detail::same_label_mask(labels);
    const auto upper = torch::ones_like(same).triu(1);
    const auto positive = similarity.masked_select(same & upper);
    const auto negative = similarity.masked_select(~same & upper);
    const double m = options.m();
    // The weights alpha_p and alpha_n are not differentiated, as in the paper.
    const auto alpha_p = torch::clamp_min(1 + m - positive.detach(), 0);
    const auto alpha_n = torch::clamp_min(negative.detach() + m, 0);
    const auto logit_p = -alpha_p * (positive - (1 - m)) * options.gamma();
    const auto logit_n = alpha_n * (negative - m) * options.gamma();
    return torch::nn::functional::softplus(torch::logsumexp(logit_n, 0) +
                                           torch::logsumexp(logit_p, 0));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::CircleLoss(m=" << options.m() << ", gamma=" << options.gamma() << ")";
  }

  CircleLossOptions options;
};
TORCH_MODULE(CircleLoss);

}  // namespace reidnet
