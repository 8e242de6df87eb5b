#pragma once
/// The inference fast path: an eval-only snapshot of a model that runs under InferenceMode and
/// leaves the original module untouched. Outputs match the module in eval mode (float, on the
/// device). The backend is chosen per backbone:
/// - A backbone that describes itself as a residual trunk (DescribesResidualTrunk: every
///   ResNet without IBN, whichever family or head it serves): the fused path, with BatchNorm
///   folded into the convs, weights pre-cast and, on CPU, reordered once into oneDNN's layout
///   (cuDNN's fused convs on CUDA). The head then runs as a module on the trunk's map, in
///   float32, with the BatchNorm1d its modules declare after a Linear folded into it.
/// - Every other backbone: the module path, a copy of the model in eval mode with the
///   BatchNorms its modules declare after a conv or Linear folded into it (fold_batch_norms),
///   its weights in the requested dtype and NHWC memory format.
///
///     auto fast = reidnet::optimize_for_inference(net, reidnet::InferenceOptions().dtype(torch::kBFloat16));
///     torch::Tensor feature = fast.embed(images);   // what net->embed(images) returns in eval()

#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/inference/detail/inference_ops.hpp>
#include <reidnet/inference/int8_calibration.hpp>
#if defined(REIDNET_WITH_ONEDNN)
#include <reidnet/inference/detail/onednn_backbone.hpp>
#include <reidnet/inference/detail/onednn_omni_scale.hpp>
#endif
#include <reidnet/models/layers/residual_blocks.hpp>
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
class OnednnTrunk;  // detail/onednn_kernels.hpp, where the build has oneDNN
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
  /// Fold every BatchNorm2d into its conv, and BatchNorm1d into the Linear before it.
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
  /// int8: the trunk's convs on oneDNN's int8 kernels with these activation ranges (see
  /// Int8Calibrator); the trunk's last map and the head stay float32. Needs dtype float32 on
  /// the CPU, the direct oneDNN backend, a VNNI CPU (int8_unsupported_reason) and a model
  /// whose backbone describes a residual trunk or an omni-scale one.
  TORCH_ARG(std::shared_ptr<const Int8Calibration>, int8) = nullptr;
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
  // The fused trunk (unused on the module path).
  ConvBn stem;
  std::vector<ResidualBlockPlan> blocks;
  int64_t input_channels = 3;
  int64_t num_features = 0;
  std::shared_ptr<const OnednnTrunk> onednn;  // the onednn_direct backend's whole trunk
  std::shared_ptr<const Int8Calibration> int8;   // the trunk's convs in int8
  // After the fused trunk: a ReID model's head, an eval copy in float32 on the device; or,
  // for a plain ResNet, its fc on the pooled map.
  AnyHead head;
  at::Tensor classifier_weight, classifier_bias;
  int64_t feature_dim = 0;
  std::string name;
  // The module path: a copy of the model in eval mode (null on the fused path).
  std::shared_ptr<ReidModelImpl> module;
  // What folding the copy's BatchNorms did (the trunk's are folded into its plan alike).
  FoldReport folding;
};

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
  if (options.int8()) {
    if (!options.device().is_cpu() || options.dtype() != torch::kFloat32) {
      throw ConfigError("InferenceOptions::int8 runs on the CPU with dtype float32 (the layers "
                        "int8 leaves in float), not " + options.device().str() + " " +
                        c10::toString(options.dtype()));
    }
    if (const auto reason = int8_unsupported_reason(); !reason.empty()) {
      throw ConfigError("InferenceOptions::int8: " + reason);
    }
    if (config.backend != ConvBackend::kOnednnDirect) {
      throw ConfigError("InferenceOptions::int8 needs the direct oneDNN backend (fold_bn, fuse, "
                        "prepack and call_onednn_directly on)");
    }
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

/// The fused plan of a residual trunk; its convs and BatchNorms are only read.
inline void build_trunk(const ResidualTrunkView& trunk, InferencePlan& plan) {
  const auto& config = plan.config;
  plan.stem = make_conv_bn(trunk.stem, /*relu=*/true, config);
  plan.input_channels = trunk.stem.conv->options.in_channels();
  plan.num_features = trunk.num_features;
  for (const auto& block : trunk.blocks) {
    ResidualBlockPlan block_plan;
    for (size_t k = 0; k < block.main_path.size(); ++k) {
      // ReLU after each conv but the last, which comes before the residual add.
      block_plan.convs.push_back(
          make_conv_bn(block.main_path[k], k + 1 < block.main_path.size(), config));
    }
    if (block.shortcut) {
      block_plan.has_downsample = true;
      block_plan.downsample = make_conv_bn(*block.shortcut, /*relu=*/false, config);
    }
    plan.blocks.push_back(std::move(block_plan));
  }
  if (plan.int8) check_int8_weights(weight_sums(plan.blocks), *plan.int8);
#if defined(REIDNET_WITH_ONEDNN)
  if (config.backend == ConvBackend::kOnednnDirect) {
    // The convs move into oneDNN's trunk: one copy of the weights.
    plan.onednn = std::make_shared<const OnednnBackbone>(
        std::move(plan.stem), std::move(plan.blocks), config.dtype, plan.int8.get());
    plan.blocks.clear();
  }
#endif
}

/// The residual trunk `backbone` describes, where this backend runs it: IBN-a's InstanceNorm
/// halves run between the convs of the direct oneDNN trunk only.
inline std::optional<ResidualTrunkView> fused_residual_trunk(const torch::nn::Module& backbone,
                                                              const KernelConfig& config) {
  auto trunk = residual_trunk_of(backbone);
  if (trunk && needs_instance_norm(*trunk) && config.backend != ConvBackend::kOnednnDirect) return std::nullopt;
  return trunk;
}

/// The fused plan of an omni-scale trunk, where this build and backend have one (oneDNN's own
/// API: the gate between its convs has no counterpart among LibTorch's fused ops).
inline bool build_omni_scale_trunk(const OmniScaleTrunkView& trunk, InferencePlan& plan) {
#if defined(REIDNET_WITH_ONEDNN)
  if (plan.config.backend != ConvBackend::kOnednnDirect) return false;
  plan.input_channels = trunk.stem.conv->options.in_channels();
  plan.num_features = trunk.num_features;
  auto omni_scale = make_omni_scale_plan(trunk, plan.config);
  if (plan.int8) check_int8_weights(weight_sums(omni_scale), *plan.int8);
  plan.onednn = std::make_shared<const OnednnOmniScaleTrunk>(std::move(omni_scale), plan.config.dtype,
                                                             plan.int8.get());
  return true;
#else
  (void)trunk;
  (void)plan;
  return false;
#endif
}

/// An eval copy of the model on the device, its declared BatchNorms folded where asked.
inline std::shared_ptr<ReidModelImpl> eval_copy(const ReidModelImpl& model, InferencePlan& plan) {
  auto copy = std::dynamic_pointer_cast<ReidModelImpl>(model.clone(plan.config.device));
  copy->eval();
  if (plan.config.fold_bn) plan.folding = fold_batch_norms(*copy);
  return copy;
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
    const auto map = trunk(images);
    if (plan_->head) return plan_->head->embed_head(map);
    return pooled(map);
  }

  /// What the classifiers say: identity logits (ReID models) or ImageNet logits (ResNet); for a
  /// model with several classifiers (PCB), the sum of their softmaxes, whose argmax is the
  /// baseline's prediction.
  torch::Tensor forward(const torch::Tensor& images) const {
    c10::InferenceMode guard;
    std::vector<at::Tensor> logits;
    if (plan_->module) {
      logits = plan_->module->forward(module_input(images)).logits;
    } else if (plan_->head) {
      logits = plan_->head->forward_head(trunk(images)).logits;
    } else {
      return at::linear(pooled(trunk(images)), plan_->classifier_weight, plan_->classifier_bias);
    }
    if (logits.size() == 1) return logits.front().to(at::kFloat);
    auto scores = at::zeros_like(logits.front(), at::kFloat);
    for (const auto& part : logits) scores += at::softmax(part.to(at::kFloat), 1);
    return scores;
  }

  torch::Tensor operator()(const torch::Tensor& images) const { return forward(images); }

  /// The fused trunk's average-pooled map (B, num_features), float (the fused path only).
  torch::Tensor pooled_features(const torch::Tensor& images) const {
    c10::InferenceMode guard;
    TORCH_CHECK(!plan_->module, "InferenceModel::pooled_features: the module path has no fused "
                                "trunk; use embed");
    return pooled(trunk(images));
  }

  /// How many parts the embedding concatenates (see reidnet::Head::embedding_parts).
  int64_t embedding_parts() const {
    if (plan_->module) return plan_->module->embedding_parts();
    return plan_->head ? plan_->head->embedding_parts() : 1;
  }

  /// Width of `embed`'s output.
  int64_t feature_dim() const { return plan_->feature_dim; }

  /// What folding did to the copy that runs: the BatchNorms folded, and those left and why
  /// (on the fused path, the trunk's and the head's; empty for a plain ResNet, whose trunk
  /// plan folds every BatchNorm).
  const FoldReport& fold_report() const { return plan_->folding; }

  /// The path and the optimisations actually in effect (prepack falls back off where oneDNN
  /// cannot run).
  std::string describe() const {
    const auto& config = plan_->config;
    std::ostringstream out;
    out << plan_->name << " dtype=" << (plan_->int8 ? "int8" : c10::toString(config.dtype))
        << " device=" << config.device;
    if (plan_->module) {
      out << " path=module folded_bn=" << plan_->folding.folded.size()
          << " channels_last=" << config.channels_last;
      return out.str();
    }
    out << " path=fused_trunk fold_bn=" << config.fold_bn << " fuse=" << config.fuse
        << " prepack=" << config.prepack << " backend="
        << (config.backend == detail::ConvBackend::kOnednnFused     ? "onednn_fused"
            : config.backend == detail::ConvBackend::kOnednnBlocked ? "onednn_blocked"
            : config.backend == detail::ConvBackend::kCudnnFused    ? "cudnn_fused"
            : config.backend == detail::ConvBackend::kOnednnDirect  ? "onednn_direct"
                                                                    : "dense")
        << " channels_last="
        << (config.backend == detail::ConvBackend::kOnednnBlocked ? false : config.channels_last)
        << " head=" << (plan_->head ? "module" : "fc");
    if (plan_->head) out << " folded_bn=" << plan_->folding.folded.size();
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

  /// The fused trunk's unpooled map (B, num_features, h, w), float on the device.
  at::Tensor trunk(const at::Tensor& images) const {
    const auto& plan = *plan_;
    const auto& config = plan.config;
    TORCH_CHECK(images.dim() == 4 && images.size(1) == plan.input_channels,
                "InferenceModel expects images of shape (B, ", plan.input_channels,
                ", H, W), got ", images.sizes());
    TORCH_CHECK(images.is_floating_point(), "InferenceModel expects floating-point images, got ",
                images.scalar_type());
    // An empty channels_last batch has strides that LibTorch 1.13's bf16 ops cannot view.
    if (images.size(0) == 0) {
      return at::zeros({0, plan.num_features, 1, 1}, at::TensorOptions().dtype(at::kFloat).device(config.device));
    }
#if defined(REIDNET_WITH_ONEDNN)
    if (plan.onednn) return plan.onednn->run(images).to(at::kFloat);
#endif
    at::Tensor x;
    if (config.backend == detail::ConvBackend::kOnednnBlocked) {
      x = images.to(at::TensorOptions().dtype(at::kFloat).device(config.device))
              .contiguous()
              .to_mkldnn(config.dtype);
    } else {
      x = images.to(at::TensorOptions().dtype(config.dtype).device(config.device))
              .contiguous(config.memory_format());
    }
    x = detail::run_residual_trunk(plan.stem, plan.blocks, x, config);
    if (config.backend == detail::ConvBackend::kOnednnBlocked) x = x.to_dense();
    return x.to(at::kFloat);
  }

  static at::Tensor pooled(const at::Tensor& map) {
    return at::adaptive_avg_pool2d(map, {1, 1}).flatten(1);
  }

  std::shared_ptr<const inference_detail::InferencePlan> plan_;
};

/// An inference-ready snapshot of a ResNet: `embed` = pooled features, `forward` = logits.
template <class Block, class Init>
InferenceModel optimize_for_inference(ResNet<Block, Init>& net,
                                      const InferenceOptions& options = {}) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(net->fc, "optimize_for_inference(ResNet): the ResNet has no fc (class_num 0)");
  if (options.int8()) {
    throw ConfigError("optimize_for_inference(ResNet): int8 is calibrated on a ReID model; "
                      "optimise the ReID model built on this ResNet");
  }
  auto plan = std::make_shared<inference_detail::InferencePlan>();
  plan->config = inference_detail::make_kernel_config(options);
  const auto trunk = inference_detail::fused_residual_trunk(*net, plan->config);
  TORCH_CHECK(trunk, "optimize_for_inference(ResNet): an IBN-a ResNet runs fused only on the direct "
                     "oneDNN backend (its InstanceNorm halves run between the convs there); "
                     "optimise a ReID model on it instead");
  plan->name = "ResNet";
  inference_detail::build_trunk(*trunk, *plan);
  const auto fc = detail::linear_affine(*net->fc);
  plan->classifier_weight = inference_detail::to_head(fc.weight, plan->config);
  plan->classifier_bias = inference_detail::to_head(fc.bias, plan->config);
  plan->feature_dim = plan->num_features;
  return InferenceModel(std::move(plan));
}

/// An inference-ready snapshot of a ReID model: `embed` = its test-time feature, `forward` =
/// its classifiers' output. The fused path where its backbone describes a residual trunk (or,
/// on the direct oneDNN backend, an omni-scale one), with the head as a module after it; the
/// module path otherwise.
inline InferenceModel optimize_for_inference(ReidModelImpl& model, const InferenceOptions& options = {}) {
  torch::NoGradGuard no_grad;
  auto plan = std::make_shared<inference_detail::InferencePlan>();
  plan->config = inference_detail::make_kernel_config(options);
  plan->feature_dim = model.feature_dim();
  plan->name = "ReidModel";
  plan->int8 = options.int8();
  if (plan->int8) detail::require_int8_trunk(model);  // or why not
  const auto trunk = inference_detail::fused_residual_trunk(*model.backbone().module(), plan->config);
  const auto omni_scale = trunk ? std::nullopt : omni_scale_trunk_of(*model.backbone().module());
  // A copy, so that the caller's model keeps its mode, device and dtype.
  auto copy = inference_detail::eval_copy(model, *plan);
  // Both plans read the caller's model only.
  if (trunk || (omni_scale && inference_detail::build_omni_scale_trunk(*omni_scale, *plan))) {
    if (trunk) inference_detail::build_trunk(*trunk, *plan);
    copy->to(torch::kFloat32);
    plan->head = copy->head();  // the copy's trunk is freed with it
    return InferenceModel(std::move(plan));
  }
  plan->module = std::move(copy);
  if (plan->config.dtype != torch::kFloat32) plan->module->to(plan->config.dtype);
  if (plan->config.channels_last) {
    for (auto& parameter : plan->module->parameters()) {
      if (parameter.dim() == 4) parameter.set_data(parameter.contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
  return InferenceModel(std::move(plan));
}

template <class Impl, class = std::enable_if_t<std::is_base_of_v<ReidModelImpl, Impl>>>
InferenceModel optimize_for_inference(torch::nn::ModuleHolder<Impl>& model,
                                      const InferenceOptions& options = {}) {
  return optimize_for_inference(static_cast<ReidModelImpl&>(*model), options);
}

}  // inline namespace
}  // namespace reidnet
