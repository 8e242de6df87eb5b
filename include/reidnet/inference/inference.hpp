#pragma once
/// The inference fast path: an eval-only snapshot of a model that runs under InferenceMode and
/// leaves the original module untouched. Outputs match the module in eval mode (float, on the
/// device).
/// - A ResNet, or a ReID model of a plain ResNet and the baseline's ClassBlock on average
///   pooling (FtNet): the fused path, with BatchNorm folded into the convs (and BatchNorm1d
///   into the bottleneck Linear), weights pre-cast and, on CPU, reordered once into oneDNN's
///   layout.
/// - Every other ReID model: the module path, a copy of the model in eval mode with the
///   BatchNorms its modules declare after a conv folded into it (fold_batch_norms), its weights
///   in the requested dtype and NHWC memory format.
///
///     auto fast = reidnet::optimize_for_inference(net, reidnet::InferenceOptions().dtype(torch::kBFloat16));
///     torch::Tensor feature = fast.embed(images);   // what net->embed(images) returns in eval()

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/inference/detail/inference_ops.hpp>
#if defined(REIDNET_WITH_ONEDNN)
#include <reidnet/inference/detail/onednn_backbone.hpp>
#endif
#include <reidnet/models/ft_net.hpp>
#include <reidnet/models/reid_model.hpp>
#include <reidnet/models/backbones/resnet.hpp>

#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>
#include <torch/nn/modules/activation.h>
#include <torch/types.h>
#include <torch/version.h>

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

namespace detail {
class OnednnBackbone;  // detail/onednn_backbone.hpp, where the build has oneDNN
}  // namespace detail

// The types and functions below differ between builds with and without REIDNET_WITH_ONEDNN;
// the tag gives each build its own names, so that translation units built both ways fail to
// link instead of sharing one definition by accident.
#if defined(REIDNET_WITH_ONEDNN)
inline namespace with_direct_onednn {
#else
inline namespace without_direct_onednn {
#endif

/// How `optimize_for_inference` prepares the model. Every optimisation can be switched off,
/// so that reidnet-bench can show what each one is worth.
struct InferenceOptions {
  /// Weights and activations: torch::kFloat32, torch::kBFloat16 or torch::kFloat16.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
  TORCH_ARG(torch::Device, device) = torch::Device(torch::kCPU);
  /// NHWC activations and weights on the dense path (CUDA, or CPU without prepack).
  TORCH_ARG(bool, channels_last) = true;
  /// Fold every BatchNorm2d into its conv, and BatchNorm1d into the bottleneck Linear.
  TORCH_ARG(bool, fold_bn) = true;
  /// ReLU (and on CUDA the residual add) fused into the conv by oneDNN (CPU with prepack) or
  /// cuDNN; residual add and ReLU in place elsewhere.
  TORCH_ARG(bool, fuse) = true;
  /// CPU: weights prepacked once for oneDNN (needs fold_bn and a LibTorch built with oneDNN;
  /// ignored on CUDA and for fp16). With fuse: the direct oneDNN backbone (see below), or
  /// channels_last activations and LibTorch's fused conv+ReLU op; without: LibTorch's oneDNN
  /// convs on activations in the blocked layout.
  TORCH_ARG(bool, prepack) = true;
  /// CPU, with prepack and fuse, float32 or bfloat16: run the backbone on oneDNN's own API
  /// (weights reordered once per kernel, residual add fused into the conv), where reidnet
  /// was built with it (REIDNET_WITH_ONEDNN, see docs/speed.md); LibTorch's oneDNN ops otherwise.
  TORCH_ARG(bool, call_onednn_directly) = true;
};

/// Whether this build can call oneDNN directly (InferenceOptions::call_onednn_directly).
constexpr bool direct_onednn_built() {
#if defined(REIDNET_WITH_ONEDNN)
  return true;
#else
  return false;
#endif
}

namespace inference_detail {
using namespace ::reidnet::detail;

/// Everything the optimised forward needs; immutable once built.
struct InferencePlan {
  KernelConfig config;
  ConvBn stem;
  std::vector<ResidualBlockPlan> blocks;
  int64_t input_channels = 3;
  int64_t num_features = 0;
  // Head (fp32 on the device): embed = [Linear] [BatchNorm1d affine] [LeakyReLU].
  bool has_linear = false;
  at::Tensor linear_weight, linear_bias;
  bool has_norm = false;
  at::Tensor norm_scale, norm_shift;
  bool leaky_relu = false;
  double leaky_slope = 0.1;
  at::Tensor classifier_weight, classifier_bias;
  int64_t feature_dim = 0;
  std::string name;
  std::shared_ptr<const OnednnBackbone> onednn;  // the onednn_direct backend's whole backbone
  // The module path: a copy of the model in eval mode (null on the fused path), and what
  // folding its BatchNorms did.
  std::shared_ptr<ReidModelImpl> module;
  FoldReport folding;
};

/// The `index`-th layer of a Sequential as a `T` (Sequential::ptr<T> does not compile for
/// BatchNorm in LibTorch 1.13, whose forward is declared in a base class).
template <class T>
const T& child(const torch::nn::SequentialImpl& sequential, size_t index) {
  const auto* layer = dynamic_cast<const T*>(sequential.ptr(index).get());
  TORCH_CHECK(layer != nullptr, "optimize_for_inference: unexpected layer ", index, " (",
              sequential.ptr(index)->name(), ") in a Sequential");
  return *layer;
}

inline KernelConfig make_kernel_config(const InferenceOptions& options) {
  TORCH_CHECK(options.dtype() == torch::kFloat32 || options.dtype() == torch::kBFloat16 ||
                  options.dtype() == torch::kFloat16,
              "InferenceOptions::dtype must be float32, bfloat16 or float16, got ",
              options.dtype());
  TORCH_CHECK(!options.device().is_cuda() || torch::cuda::is_available(),
              "InferenceOptions::device is ", options.device(),
              " but this LibTorch sees no CUDA device; use torch::kCPU");
  KernelConfig config;
  config.dtype = options.dtype();
  config.device = options.device();
  config.channels_last = options.channels_last();
  config.fold_bn = options.fold_bn();
  config.fuse = options.fuse();
  config.prepack = options.prepack() && options.fold_bn() && options.device().is_cpu() &&
                   options.dtype() != torch::kFloat16 && onednn_available() &&
                   (options.dtype() != torch::kBFloat16 || onednn_runs_bf16());
  if (config.prepack) {
    if (options.fuse() && direct_onednn_built() && options.call_onednn_directly()) {
      config.backend = ConvBackend::kOnednnDirect;
    } else if (options.fuse() && PrepackedConvOps::get().available()) {
      config.backend = ConvBackend::kOnednnFused;
    } else {
      config.backend = ConvBackend::kOnednnBlocked;
    }
    if (config.backend != ConvBackend::kOnednnBlocked) config.channels_last = true;
  }
  if (options.device().is_cuda() && options.fold_bn() && options.fuse() &&
      cudnn_fusion_available(config)) {
    config.backend = ConvBackend::kCudnnFused;
  }
#if TORCH_VERSION_MAJOR < 2
  TORCH_CHECK(!(options.device().is_cpu() && options.dtype() == torch::kFloat16),
              "InferenceOptions::dtype float16 on CPU needs LibTorch 2.x (1.x has no fp16 CPU "
              "convolution); use torch::kBFloat16 on CPU");
#endif
  return config;
}

inline at::Tensor to_head(const at::Tensor& tensor, const KernelConfig& config) {
  return tensor.to(at::TensorOptions().dtype(at::kFloat).device(config.device));
}

inline std::vector<std::pair<const torch::nn::Conv2dImpl*, const BatchNorm2dImpl*>>
conv_bn_pairs(const BottleneckImpl& block) {
  TORCH_CHECK(block.bn1, "optimize_for_inference: an IBN block has no BatchNorm to fold; "
                         "optimise the ReID model instead (its module path)");
  return {{block.conv1.get(), block.bn1.get()},
          {block.conv2.get(), block.bn2.get()},
          {block.conv3.get(), block.bn3.get()}};
}

inline std::vector<std::pair<const torch::nn::Conv2dImpl*, const BatchNorm2dImpl*>>
conv_bn_pairs(const BasicBlockImpl& block) {
  return {{block.conv1.get(), block.bn1.get()}, {block.conv2.get(), block.bn2.get()}};
}

template <class Block, class Init>
void build_backbone(ResNetImpl<Block, Init>& net, InferencePlan& plan) {
  using BlockImpl = typename Block::Impl;
  const auto& config = plan.config;
  plan.stem = make_conv_bn(*net.conv1, *net.bn1, /*relu=*/true, config);
  plan.input_channels = net.conv1->options.in_channels();
  plan.num_features = net.num_features();
  for (size_t stage = 1; stage <= 4; ++stage) {
    auto& layer = net.layer(stage);
    for (size_t i = 0; i < layer->size(); ++i) {
      const auto& block = layer->template at<BlockImpl>(i);
      ResidualBlockPlan block_plan;
      const auto pairs = conv_bn_pairs(block);
      for (size_t k = 0; k < pairs.size(); ++k) {
        // ReLU after each conv but the last, which comes before the residual add.
        block_plan.convs.push_back(
            make_conv_bn(*pairs[k].first, *pairs[k].second, k + 1 < pairs.size(), config));
      }
      if (block.downsample) {
        block_plan.has_downsample = true;
        block_plan.downsample =
            make_conv_bn(child<torch::nn::Conv2dImpl>(*block.downsample, 0),
                         child<BatchNorm2dImpl>(*block.downsample, 1),
                         /*relu=*/false, config);
      }
      plan.blocks.push_back(std::move(block_plan));
    }
  }
#if defined(REIDNET_WITH_ONEDNN)
  if (config.backend == ConvBackend::kOnednnDirect) {
    // The convs move into oneDNN's backbone: one copy of the weights.
    plan.onednn = std::make_shared<const OnednnBackbone>(
        std::move(plan.stem), std::move(plan.blocks), config.dtype);
    plan.blocks.clear();
  }
#endif
}

template <class AddBlockInit, class ClassifierInit>
void build_head(ClassBlockImpl<AddBlockInit, ClassifierInit>& head, InferencePlan& plan) {
  const auto& config = plan.config;
  const auto& add_block = head.add_block;
  size_t index = 0;
  DenseAffine linear;
  if (head.options.linear_num() > 0) {
    plan.has_linear = true;
    linear = linear_affine(child<torch::nn::LinearImpl>(*add_block, index++));
  }
  if (head.options.bnorm()) {
    const auto affine =
        batch_norm_affine(child<BatchNorm1dImpl>(*add_block, index++));
    if (plan.has_linear && config.fold_bn) {
      // Linear then BatchNorm1d, nothing between: one Linear with rows scaled (exact in eval).
      linear.weight = linear.weight * affine.scale.unsqueeze(1);
      linear.bias = linear.bias * affine.scale + affine.shift;
    } else {
      plan.has_norm = true;
      plan.norm_scale = to_head(affine.scale, config);
      plan.norm_shift = to_head(affine.shift, config);
    }
  }
  if (head.options.relu()) {
    plan.leaky_relu = true;
    plan.leaky_slope =
        child<torch::nn::LeakyReLUImpl>(*add_block, index).options.negative_slope();
  }
  if (plan.has_linear) {
    plan.linear_weight = to_head(linear.weight, config);
    plan.linear_bias = to_head(linear.bias, config);
  }
  const auto classifier = linear_affine(child<torch::nn::LinearImpl>(*head.classifier, 0));
  plan.classifier_weight = to_head(classifier.weight, config);
  plan.classifier_bias = to_head(classifier.bias, config);
  plan.feature_dim = head.feature_dim();
}

}  // namespace inference_detail

/// The optimised model; cheap to copy (shares its immutable weights). Not a torch::nn::Module:
/// it cannot be trained, only run. Outputs are inference tensors (no autograd history).
class InferenceModel {
 public:
  explicit InferenceModel(std::shared_ptr<const inference_detail::InferencePlan> plan)
      : plan_(std::move(plan)) {}

  /// The test-time feature: the ReID model's `embed` (B, feature_dim), or ResNet's pooled
  /// features.
  torch::Tensor embed(const torch::Tensor& images) const {
    c10::InferenceMode guard;
    if (plan_->module) return plan_->module->embed(module_input(images)).to(at::kFloat);
    return embed_from_features(backbone(images));
  }

  /// What the classifiers say: identity logits (ReID models) or ImageNet logits (ResNet); for a
  /// model with several classifiers (PCB), the sum of their softmaxes, whose argmax is the
  /// baseline's prediction.
  torch::Tensor forward(const torch::Tensor& images) const {
    c10::InferenceMode guard;
    if (plan_->module) {
      const auto logits = plan_->module->forward(module_input(images)).logits;
      if (logits.size() == 1) return logits.front().to(at::kFloat);
      auto scores = at::zeros_like(logits.front(), at::kFloat);
      for (const auto& part : logits) scores += at::softmax(part.to(at::kFloat), 1);
      return scores;
    }
    return at::linear(embed_from_features(backbone(images)), plan_->classifier_weight,
                      plan_->classifier_bias);
  }

  torch::Tensor operator()(const torch::Tensor& images) const { return forward(images); }

  /// Pooled backbone output (B, num_features), float (the fused path only).
  torch::Tensor pooled_features(const torch::Tensor& images) const {
    c10::InferenceMode guard;
    TORCH_CHECK(!plan_->module, "InferenceModel::pooled_features: the module path has no pooled "
                                "backbone output; use embed");
    return backbone(images);
  }

  /// How many parts the embedding concatenates (see reidnet::Head::embedding_parts).
  int64_t embedding_parts() const { return plan_->module ? plan_->module->embedding_parts() : 1; }

  /// Width of `embed`'s output.
  int64_t feature_dim() const { return plan_->feature_dim; }

  /// The module path's BatchNorm folding: what was folded, and what was left and why (empty on
  /// the fused path, which folds every BatchNorm of its ResNet).
  const FoldReport& fold_report() const { return plan_->folding; }

  /// The optimisations actually in effect (prepack falls back off where oneDNN cannot run).
  std::string describe() const {
    const auto& config = plan_->config;
    std::ostringstream out;
    if (plan_->module) {
      out << plan_->name << " dtype=" << c10::toString(config.dtype) << " device=" << config.device
          << " path=module folded_bn=" << plan_->folding.folded.size()
          << " channels_last=" << config.channels_last;
      return out.str();
    }
    out << plan_->name << " dtype=" << c10::toString(config.dtype) << " device=" << config.device
        << " fold_bn=" << config.fold_bn << " fuse=" << config.fuse
        << " prepack=" << config.prepack << " backend="
        << (config.backend == detail::ConvBackend::kOnednnFused     ? "onednn_fused"
            : config.backend == detail::ConvBackend::kOnednnBlocked ? "onednn_blocked"
            : config.backend == detail::ConvBackend::kCudnnFused    ? "cudnn_fused"
            : config.backend == detail::ConvBackend::kOnednnDirect  ? "onednn_direct"
                                                                    : "dense")
        << " channels_last="
        << (config.backend == detail::ConvBackend::kOnednnBlocked ? false : config.channels_last);
    return out.str();
  }

  torch::Device device() const { return plan_->config.device; }
  torch::Dtype dtype() const { return plan_->config.dtype; }

 private:
  at::Tensor module_input(const at::Tensor& images) const {
    const auto& config = plan_->config;
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3,
                "InferenceModel expects images of shape (B, 3, H, W), got ", images.sizes());
    TORCH_CHECK(images.is_floating_point(), "InferenceModel expects floating-point images, got ",
                images.scalar_type());
    return images.to(at::TensorOptions().dtype(config.dtype).device(config.device))
        .contiguous(config.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  }

  at::Tensor backbone(const at::Tensor& images) const {
    const auto& plan = *plan_;
    const auto& config = plan.config;
    TORCH_CHECK(images.dim() == 4 && images.size(1) == plan.input_channels,
                "InferenceModel expects images of shape (B, ", plan.input_channels,
                ", H, W), got ", images.sizes());
    TORCH_CHECK(images.is_floating_point(), "InferenceModel expects floating-point images, got ",
                images.scalar_type());
#if defined(REIDNET_WITH_ONEDNN)
    if (plan.onednn) return plan.onednn->run(images).to(at::kFloat);
#endif
    // An empty channels_last batch has strides that LibTorch 1.13's bf16 ops cannot view.
    if (images.size(0) == 0) {
      return at::empty({0, plan.num_features}, at::TensorOptions().dtype(at::kFloat).device(config.device));
    }
    at::Tensor x;
    if (config.backend == detail::ConvBackend::kOnednnBlocked) {
      x = images.to(at::TensorOptions().dtype(at::kFloat).device(config.device))
              .contiguous()
              .to_mkldnn(config.dtype);
    } else {
      x = images.to(at::TensorOptions().dtype(config.dtype).device(config.device))
              .contiguous(config.memory_format());
    }
    x = plan.stem.run(x, config);
    x = at::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
    for (const auto& block : plan.blocks) {
      const at::Tensor identity = block.has_downsample ? block.downsample.run(x, config) : x;
      at::Tensor out = x;
      for (size_t k = 0; k + 1 < block.convs.size(); ++k) out = block.convs[k].run(out, config);
      x = block.convs.back().run_add_relu(out, identity, config);
    }
    x = at::adaptive_avg_pool2d(x, {1, 1});
    if (config.backend == detail::ConvBackend::kOnednnBlocked) x = x.to_dense();
    return x.flatten(1).to(at::kFloat);
  }

  at::Tensor embed_from_features(at::Tensor features) const {
    const auto& plan = *plan_;
    if (plan.has_linear) features = at::linear(features, plan.linear_weight, plan.linear_bias);
    if (plan.has_norm) features = features * plan.norm_scale + plan.norm_shift;
    if (plan.leaky_relu) features = at::leaky_relu(features, plan.leaky_slope);
    return features;
  }

  std::shared_ptr<const inference_detail::InferencePlan> plan_;
};

/// An inference-ready snapshot of a ResNet: `embed` = pooled features, `forward` = logits.
template <class Block, class Init>
InferenceModel optimize_for_inference(ResNet<Block, Init>& net,
                                      const InferenceOptions& options = {}) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(net->fc, "optimize_for_inference(ResNet): the ResNet has no fc (class_num 0)");
  auto plan = std::make_shared<inference_detail::InferencePlan>();
  plan->config = inference_detail::make_kernel_config(options);
  plan->name = "ResNet";
  inference_detail::build_backbone(*net, *plan);
  const auto fc = detail::linear_affine(*net->fc);
  plan->classifier_weight = inference_detail::to_head(fc.weight, plan->config);
  plan->classifier_bias = inference_detail::to_head(fc.bias, plan->config);
  plan->feature_dim = plan->num_features;
  return InferenceModel(std::move(plan));
}

/// An inference-ready snapshot of a ReID model: `embed` = its test-time feature, `forward` =
/// its classifiers' output. The fused path where the model is an FtNet on a plain ResNet-50
/// with average pooling; the module path otherwise.
inline InferenceModel optimize_for_inference(ReidModelImpl& model, const InferenceOptions& options = {}) {
  torch::NoGradGuard no_grad;
  auto plan = std::make_shared<inference_detail::InferencePlan>();
  plan->config = inference_detail::make_kernel_config(options);
  auto* ft_net = dynamic_cast<FtNetImpl*>(&model);
  if (ft_net && !ft_net->options.ibn() && ft_net->options.pool().type() == PoolType::kAvg) {
    plan->name = "FtNet";
    inference_detail::build_backbone(*ft_net->model, *plan);
    inference_detail::build_head(*ft_net->classifier, *plan);
    return InferenceModel(std::move(plan));
  }
  // The module path: a copy, so that the caller's model keeps its mode, device and dtype.
  plan->name = "ReidModel";
  plan->module = std::dynamic_pointer_cast<ReidModelImpl>(model.clone(plan->config.device));
  plan->module->eval();
  if (plan->config.fold_bn) plan->folding = fold_batch_norms(*plan->module);
  if (plan->config.dtype != torch::kFloat32) plan->module->to(plan->config.dtype);
  if (plan->config.channels_last) {
    for (auto& parameter : plan->module->parameters()) {
      if (parameter.dim() == 4) parameter.set_data(parameter.contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
  plan->feature_dim = model.feature_dim();
  return InferenceModel(std::move(plan));
}

template <class Impl, class = std::enable_if_t<std::is_base_of_v<ReidModelImpl, Impl>>>
InferenceModel optimize_for_inference(torch::nn::ModuleHolder<Impl>& model,
                                      const InferenceOptions& options = {}) {
  return optimize_for_inference(static_cast<ReidModelImpl&>(*model), options);
}

}  // inline namespace
}  // namespace reidnet
