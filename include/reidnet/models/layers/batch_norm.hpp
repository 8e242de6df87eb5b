#pragma once
/// BatchNorm1d and BatchNorm2d with torch::nn's keys, options and numerics, and one addition:
/// the batch statistics can be shared by the processes of a data-parallel job (SyncBatchNorm).
///
///     reidnet::BatchNorm2d norm(64);   // the same module as torch::nn::BatchNorm2d(64)
///     norm->share_statistics(sum);     // sum(t): t summed over the processes, in place
///
/// Every family builds its BatchNorms from these, so that reidnet::synchronize_batch_norm
/// (reidnet/distributed/distributed.hpp) can switch a whole model to statistics over the global batch.
/// Until share_statistics is called, forward is torch::nn::BatchNorm's forward: the same
/// at::batch_norm call with the same arguments.
///
/// Shared statistics, in training mode: each process computes its batch's per-channel count,
/// mean and sum of squared deviations, one all-reduce (in float64) combines them, and the
/// input is normalised with the global mean and biased variance. The backward pass sums the
/// statistics' gradients over the processes too, so that averaging gradients over P processes
/// at batch B equals one process at batch P x B. The running statistics take the global mean
/// and unbiased variance, as PyTorch's SyncBatchNorm does.

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/batchnorm.h>
#include <torch/nn/init.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <ios>
#include <ostream>
#include <vector>

namespace reidnet {

/// Sums a tensor over the processes of a job, in place (an all-reduce).
using ProcessSum = std::function<void(torch::Tensor&)>;

namespace detail {

/// `local` summed over the processes, with a gradient that is summed over them too: the
/// gradient of the global sum with respect to each process's term is the sum of every
/// process's upstream gradient.
inline torch::Tensor differentiable_process_sum(const torch::Tensor& local, const ProcessSum& sum) {
  auto total = local.detach().clone();
  sum(total);
  // The value of `total`, the gradient path of `local`.
  auto global = local + (total - local.detach());
  if (global.requires_grad()) {
    global.register_hook([sum](const torch::Tensor& gradient) {
      auto summed = gradient.clone();
      sum(summed);
      return summed;
    });
  }
  return global;
}

}  // namespace detail

/// `D` is 1 (BatchNorm1d: (N, C) or (N, C, L)) or 2 (BatchNorm2d: (N, C, H, W)).
template <size_t D, class Derived>
class BatchNormBase : public torch::nn::Cloneable<Derived> {
 public:
  explicit BatchNormBase(const torch::nn::BatchNormOptions& options_) : options(options_) {
    // Not reset() here: it is virtual, and Derived is not constructed yet.
    BatchNormBase::reset();
  }

  void reset() override {
    const auto features = options.num_features();
    TORCH_CHECK(features > 0, "BatchNorm", D, "d needs num_features > 0, got ", features);
    if (options.affine()) {
      weight = this->register_parameter("weight", torch::empty({features}));
      bias = this->register_parameter("bias", torch::empty({features}));
    } else {
      weight = this->register_parameter("weight", torch::Tensor(), /*requires_grad=*/false);
      bias = this->register_parameter("bias", torch::Tensor(), /*requires_grad=*/false);
    }
    if (options.track_running_stats()) {
      running_mean = this->register_buffer("running_mean", torch::zeros({features}));
      running_var = this->register_buffer("running_var", torch::ones({features}));
      num_batches_tracked =
          this->register_buffer("num_batches_tracked", torch::tensor(0, torch::kLong));
    } else {
      running_mean = this->register_buffer("running_mean", torch::Tensor());
      running_var = this->register_buffer("running_var", torch::Tensor());
      num_batches_tracked = this->register_buffer("num_batches_tracked", torch::Tensor());
    }
    reset_parameters();
  }

  void reset_running_stats() {
    if (!options.track_running_stats()) return;
    running_mean.zero_();
    running_var.fill_(1);
    num_batches_tracked.zero_();
  }

  void reset_parameters() {
    reset_running_stats();
    if (!options.affine()) return;
    torch::nn::init::ones_(weight);
    torch::nn::init::zeros_(bias);
  }

  /// From now on, training-mode forwards normalise with statistics summed over processes by
  /// `sum`; an empty function goes back to this process's batch alone.
  void share_statistics(ProcessSum sum) { process_sum_ = std::move(sum); }
  bool shares_statistics() const { return static_cast<bool>(process_sum_); }

  /// Marks the layer as folded into the conv or Linear before it (reidnet::fold_batch_norms, on an
  /// inference copy): forward then passes its input through, and refuses training.
  void mark_folded() { folded_ = true; }
  bool folded() const { return folded_; }

  torch::Tensor forward(const torch::Tensor& input) {
    if (folded_) {
      TORCH_CHECK(!this->is_training(), "BatchNorm", D, "d(", options.num_features(),
                  ") was folded into the layer before it for inference; that copy cannot train");
      return input;
    }
    const bool ok = D == 1 ? input.dim() == 2 || input.dim() == 3 : input.dim() == 4;
    TORCH_CHECK(ok, "BatchNorm", D, "d expects ", D == 1 ? "(N, C) or (N, C, L)" : "(N, C, H, W)",
                " input, got ", input.sizes());
    const bool tracking = this->is_training() && options.track_running_stats();
    double average_factor = options.momentum().has_value() ? *options.momentum() : 0.0;
    if (tracking && num_batches_tracked.defined()) {
      num_batches_tracked += 1;
      // Without a momentum, the running statistics are a cumulative average.
      if (!options.momentum().has_value()) {
        average_factor = 1.0 / num_batches_tracked.item<double>();
      }
    }
    if (process_sum_ && this->is_training()) return forward_shared(input, tracking, average_factor);
    return torch::nn::functional::detail::batch_norm(
        input, running_mean, running_var, weight, bias,
        this->is_training() || !options.track_running_stats(), average_factor, options.eps());
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "reidnet::BatchNorm" << D << "d(" << options.num_features() << ", eps=" << options.eps();
    if (options.momentum().has_value()) stream << ", momentum=" << *options.momentum();
    stream << std::boolalpha << ", affine=" << options.affine()
           << ", track_running_stats=" << options.track_running_stats() << (folded_ ? ", folded" : "") << ")";
  }

  torch::nn::BatchNormOptions options;
  torch::Tensor weight, bias;
  torch::Tensor running_mean, running_var, num_batches_tracked;

 private:
  torch::Tensor forward_shared(const torch::Tensor& input, bool tracking, double average_factor) {
    const auto channels = input.size(1);
    std::vector<int64_t> reduced{0};
    for (int64_t dim = 2; dim < input.dim(); ++dim) reduced.push_back(dim);
    std::vector<int64_t> broadcast(static_cast<size_t>(input.dim()), 1);
    broadcast[1] = channels;
    // Per process: count n, sum n * mean and n * mean^2 + M2 (squared deviations from its own
    // mean, accurate in the input's precision). Summed, and in float64, they give the global
    // variance without cancelling large squares in float32.
    const double count = static_cast<double>(input.numel() / channels);
    const auto mean = input.mean(reduced);
    const auto deviations = (input - mean.view(broadcast)).square().sum(reduced);
    const auto mean64 = mean.to(torch::kDouble);
    const auto local = torch::cat({torch::full({1}, count, mean64.options()), count * mean64,
                                   count * mean64.square() + deviations.to(torch::kDouble)});
    const auto global = detail::differentiable_process_sum(local, process_sum_);
    const auto total = global[0].item<double>();
    TORCH_CHECK(total > 1 || !tracking, "BatchNorm", D,
                "d: training needs more than one value per channel over all processes, got ",
                input.sizes());
    const auto global_mean = global.slice(0, 1, 1 + channels) / total;
    const auto global_var = global.slice(0, 1 + channels) / total - global_mean.square();
    if (tracking) {
      torch::NoGradGuard no_grad;
      const auto unbiased = global_var * (total / (total - 1));
      running_mean.mul_(1 - average_factor).add_(global_mean.to(running_mean.dtype()), average_factor);
      running_var.mul_(1 - average_factor).add_(unbiased.to(running_var.dtype()), average_factor);
    }
    // Centred before scaling, as at::batch_norm: x * scale + shift would cancel large terms
    // in float32 wherever a channel's mean is large against its spread, forward and backward.
    const auto dtype = input.scalar_type();
    auto output = (input - global_mean.to(dtype).view(broadcast)) *
                  torch::rsqrt(global_var + options.eps()).to(dtype).view(broadcast);
    if (options.affine()) output = output * weight.view(broadcast) + bias.view(broadcast);
    return output;
  }

  ProcessSum process_sum_;
  bool folded_ = false;
};

class BatchNorm1dImpl : public BatchNormBase<1, BatchNorm1dImpl> {
 public:
  explicit BatchNorm1dImpl(const torch::nn::BatchNormOptions& options_) : BatchNormBase(options_) {}
  explicit BatchNorm1dImpl(int64_t num_features)
      : BatchNorm1dImpl(torch::nn::BatchNormOptions(num_features)) {}
};

class BatchNorm2dImpl : public BatchNormBase<2, BatchNorm2dImpl> {
 public:
  explicit BatchNorm2dImpl(const torch::nn::BatchNormOptions& options_) : BatchNormBase(options_) {}
  explicit BatchNorm2dImpl(int64_t num_features)
      : BatchNorm2dImpl(torch::nn::BatchNormOptions(num_features)) {}
};

TORCH_MODULE(BatchNorm1d);
TORCH_MODULE(BatchNorm2d);

}  // namespace reidnet
