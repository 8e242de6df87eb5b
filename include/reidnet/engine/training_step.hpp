#pragma once
/// One training step of a ReID model as the recipes take it: cross-entropy summed over the
/// model's classifiers (PCB: six), plus batch-hard triplet and circle losses on the
/// L2-normalised metric feature, under autocast, with loss scaling for fp16 and gradient
/// averaging over processes. The trainer runs it; so can a loop of your own:
///
///     auto optimizer = reidnet::make_sgd(*net);
///     reidnet::TrainingStep step(net, *optimizer, reidnet::TrainingStepOptions().triplet(true));
///     for (auto& batch : batches) {
///       const auto loss = step(batch.images, batch.labels);
///       std::cout << loss.loss.item<double>() << "\n";
///     }
///
/// forward() and backward() split the step, for a caller that looks at the loss in between
/// (the trainer stops on a NaN before it reaches the weights).
#include <reidnet/core/autocast.hpp>
#include <reidnet/distributed/distributed.hpp>
#include <reidnet/models/reid_model.hpp>
#include <reidnet/solver/grad_scaler.hpp>
#include <reidnet/solver/losses.hpp>
#include <reidnet/solver/optim.hpp>

#include <torch/torch.h>

#include <vector>

namespace reidnet {

struct TrainingStepOptions {
  /// Cross-entropy label smoothing.
  TORCH_ARG(double, label_smoothing) = 0.0;
  /// Add batch-hard triplet loss (margin 0.3); the batches should be P x K.
  TORCH_ARG(bool, triplet) = false;
  /// Add circle loss (m 0.25, gamma 32), divided by the batch size.
  TORCH_ARG(bool, circle) = false;
  /// Autocast precision: kFloat (none), kBFloat16 or kHalf (with loss scaling: fp16
  /// gradients underflow without it; bf16 has fp32's range).
  TORCH_ARG(torch::ScalarType, dtype) = torch::kFloat;
};

/// The loss of one batch, before its backward pass.
struct StepLoss {
  torch::Tensor loss;    // scalar
  torch::Tensor scores;  // (B, classes), float, detached: the prediction is their argmax
};

class TrainingStep {
 public:
  /// `averager`: the gradient averager of a multi-process run, or nullptr; it and `optimizer`
  /// must outlive the step.
  TrainingStep(ReidModel model, torch::optim::Optimizer& optimizer,
               TrainingStepOptions options = {}, GradientAverager* averager = nullptr)
      : model_(std::move(model)),
        optimizer_(optimizer),
        options_(options),
        averager_(averager),
        scaler_(GradScalerOptions().enabled(options.dtype() == torch::kHalf)),
        cross_entropy_(torch::nn::CrossEntropyLossOptions().label_smoothing(options.label_smoothing())) {}

  /// Clears the gradients and computes the batch's loss in train mode.
  StepLoss forward(const torch::Tensor& images, const torch::Tensor& labels) {
    model_->train();
    clear_gradients(optimizer_);
    if (averager_ != nullptr) averager_->before_forward();
    AutocastGuard autocast(images.device(), options_.dtype());
    const auto output = model_->forward(images);
    StepLoss step;
    step.loss = identity_loss(cross_entropy_, output.logits, labels);
    step.scores = identity_scores(output.logits);
    if (options_.triplet() || options_.circle()) {
      const auto features = torch::nn::functional::normalize(
          at_least_float(output.metric_feature),
          torch::nn::functional::NormalizeFuncOptions().dim(1));
      if (options_.triplet()) step.loss = step.loss + triplet_(features, labels);
      if (options_.circle()) step.loss = step.loss + circle_(features, labels) / labels.size(0);
    }
    return step;
  }

  /// Back-propagates `loss_factor` x the loss (a loss warm-up's factor) and steps the
  /// optimiser, unless fp16 gradients overflowed (the scaler then lowers its scale).
  void backward(const StepLoss& step, double loss_factor = 1.0) {
    if (averager_ != nullptr) averager_->before_backward({step.loss});
    scaler_.scale(loss_factor == 1.0 ? step.loss : step.loss * loss_factor).backward();
    scaler_.step(optimizer_);
    scaler_.update();
  }

  StepLoss operator()(const torch::Tensor& images, const torch::Tensor& labels) {
    auto step = forward(images, labels);
    backward(step);
    return step;
  }

  /// The loss scale and its growth tracker, saved and restored with a run.
  GradScaler& scaler() { return scaler_; }

  /// Cross-entropy summed over the model's classifiers (one; PCB's six stripes, as the
  /// baseline), in float32 or wider.
  static torch::Tensor identity_loss(torch::nn::CrossEntropyLoss& cross_entropy,
                                     const std::vector<torch::Tensor>& logits,
                                     const torch::Tensor& labels) {
    torch::Tensor loss;
    for (const auto& part : logits) {
      const auto term = cross_entropy(at_least_float(part), labels);
      loss = loss.defined() ? loss + term : term;
    }
    return loss;
  }

  /// What the prediction is the argmax of: the logits, or for several classifiers the sum of
  /// their softmaxes (the baseline's PCB).
  static torch::Tensor identity_scores(const std::vector<torch::Tensor>& logits) {
    if (logits.size() == 1) return at_least_float(logits.front()).detach();
    torch::Tensor scores;
    for (const auto& part : logits) {
      const auto probabilities = torch::softmax(at_least_float(part).detach(), 1);
      scores = scores.defined() ? scores + probabilities : probabilities;
    }
    return scores;
  }

 private:
  /// Losses in fp32 under autocast; a float64 model stays in float64.
  static torch::Tensor at_least_float(const torch::Tensor& values) {
    return values.scalar_type() == torch::kHalf || values.scalar_type() == torch::kBFloat16
               ? values.to(torch::kFloat)
               : values;
  }

  ReidModel model_;
  torch::optim::Optimizer& optimizer_;
  TrainingStepOptions options_;
  GradientAverager* averager_;
  GradScaler scaler_;
  torch::nn::CrossEntropyLoss cross_entropy_;
  TripletLoss triplet_;
  CircleLoss circle_;
};

}  // namespace reidnet
