#pragma once
/// int8 inference's activation ranges: post-training static quantisation of a fused trunk
/// (reidnet/inference/inference.hpp runs it on oneDNN's int8 convolutions): a residual trunk
/// (ResNets without IBN) or an omni-scale one (plain OSNets).
///
/// Each conv reads int8 activations with one scale, the largest magnitude seen on calibration
/// pictures over 255 (u8: after a ReLU, so never negative) or 127 (s8: a projection shortcut,
/// or an OSNet pointwise conv, which have no ReLU), and s8 weights with a scale per output
/// channel. The stem reads the normalised picture in s8. OSNet's channel gate and its gated
/// sum run in float32 between int8 convs. The trunk's last map and the head stay in float32:
/// the head's neck and embedding layer are what ReID embeddings lose most in int8.
///
///     reidnet::Int8Calibrator calibrator(*net);
///     for (auto& batch : loader.epoch(0)) calibrator.observe(batch.images);
///     auto ranges = std::make_shared<const reidnet::Int8Calibration>(calibrator.finish());
///     reidnet::save_int8_calibration(*ranges, "run/int8_calibration.pth");
///     auto fast = reidnet::optimize_for_inference(net, reidnet::InferenceOptions().int8(ranges));

#include <reidnet/core/errors.hpp>
#include <reidnet/inference/detail/inference_ops.hpp>
#include <reidnet/io/checkpoint.hpp>
#include <reidnet/models/layers/omni_scale.hpp>
#include <reidnet/models/layers/residual_blocks.hpp>
#include <reidnet/models/reid_model.hpp>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/types.h>

#if defined(REIDNET_WITH_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include <fmt/core.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace reidnet {

/// Fewer calibration pictures than this are refused: a handful of pictures misses the
/// activations' range and clips the rest.
inline constexpr int64_t kMinCalibrationImages = 16;

/// What a fused trunk's int8 convs need from calibration, for one model's weights.
struct Int8Calibration {
  /// (1,): the largest magnitude of the normalised pictures, the stem's input.
  at::Tensor input_max;
  /// (points,): the largest magnitude of each activation the trunk quantises, in the order
  /// its float run computes them: the pooled stem first; per residual block, its projection
  /// shortcut's output (where it has one), each main-path conv's output but the last, and the
  /// block's output; per omni-scale block, see detail::run_omni_scale_trunk. The trunk's last
  /// map is measured too, though it stays float32.
  at::Tensor activation_max;
  /// (convs,), float64: the sum of each folded conv weight of the trunk, so that ranges
  /// measured on other weights are refused.
  at::Tensor weight_sums;
  /// How many pictures were observed.
  int64_t images = 0;
};

namespace detail {

/// BatchNorm folded, float32 on the CPU, LibTorch's ops: the calibration pass runs such a
/// plan, and the fingerprint is taken from the same weights the int8 build quantises.
inline KernelConfig float_config() {
  KernelConfig config;
  config.prepack = false;
  return config;
}

inline void add_weight_sum(std::vector<double>& sums, const ConvBn& conv) {
  sums.push_back(conv.weight.sum(at::kDouble).item<double>());
}

/// The residual blocks' folded convs (main path, then shortcut), block by block.
inline at::Tensor weight_sums(const std::vector<ResidualBlockPlan>& blocks) {
  std::vector<double> sums;
  for (const auto& block : blocks) {
    for (const auto& conv : block.convs) add_weight_sum(sums, conv);
    if (block.has_downsample) add_weight_sum(sums, block.downsample);
  }
  return at::tensor(sums, at::kDouble);
}

/// Every conv of an omni-scale trunk, the gates' included, in the order it runs them.
inline at::Tensor weight_sums(const OmniScaleTrunkPlan& plan) {
  std::vector<double> sums;
  add_weight_sum(sums, plan.stem);
  for (const auto& step : plan.steps) {
    if (!step.block) {
      add_weight_sum(sums, step.transition);
      continue;
    }
    const auto& block = *step.block;
    add_weight_sum(sums, block.squeeze);
    for (const auto& stream : block.streams) {
      for (const auto& layer : stream) {
        add_weight_sum(sums, layer.pointwise);
        add_weight_sum(sums, layer.depthwise);
      }
    }
    add_weight_sum(sums, block.gate_reduce);
    add_weight_sum(sums, block.gate_expand);
    add_weight_sum(sums, block.expand);
    if (block.shortcut) add_weight_sum(sums, *block.shortcut);
  }
  add_weight_sum(sums, plan.last);
  return at::tensor(sums, at::kDouble);
}

inline bool same_weights(const at::Tensor& expected, const at::Tensor& found) {
  return expected.sizes() == found.sizes() &&
         at::allclose(expected, found, /*rtol=*/1e-6, /*atol=*/1e-9);
}

/// InputError where `ranges` were measured on other weights than those summed in `sums`.
inline void check_int8_weights(const at::Tensor& sums, const Int8Calibration& ranges) {
  if (!same_weights(sums, ranges.weight_sums)) {
    throw InputError("InferenceOptions::int8: the ranges were calibrated on other weights than "
                     "this model's; calibrate again");
  }
}

/// A trunk as int8 quantises it, in float32 on LibTorch's ops (float_config): what
/// calibration runs.
class Int8Trunk {
 public:
  virtual ~Int8Trunk() = default;
  /// How many activations `run` shows its observer.
  virtual int64_t points() const = 0;
  virtual void run(const at::Tensor& images, const ActivationObserver& observe) const = 0;
  virtual at::Tensor weight_sums() const = 0;
};

class ResidualInt8Trunk final : public Int8Trunk {
 public:
  explicit ResidualInt8Trunk(const ResidualTrunkView& trunk) {
    stem_ = make_conv_bn(trunk.stem, /*relu=*/true, config_);
    for (const auto& block : trunk.blocks) {
      ResidualBlockPlan plan;
      for (size_t k = 0; k < block.main_path.size(); ++k) {
        plan.convs.push_back(make_conv_bn(block.main_path[k], k + 1 < block.main_path.size(), config_));
      }
      if (block.shortcut) {
        plan.has_downsample = true;
        plan.downsample = make_conv_bn(*block.shortcut, false, config_);
      }
      blocks_.push_back(std::move(plan));
    }
  }
  int64_t points() const override {
    int64_t points = 1;  // the pooled stem
    for (const auto& block : blocks_) points += static_cast<int64_t>(block.convs.size()) + block.has_downsample;
    return points;
  }
  void run(const at::Tensor& images, const ActivationObserver& observe) const override {
    run_residual_trunk(stem_, blocks_, images, config_, observe);
  }
  at::Tensor weight_sums() const override { return detail::weight_sums(blocks_); }

 private:
  KernelConfig config_ = float_config();
  ConvBn stem_;
  std::vector<ResidualBlockPlan> blocks_;
};

class OmniScaleInt8Trunk final : public Int8Trunk {
 public:
  explicit OmniScaleInt8Trunk(const OmniScaleTrunkView& trunk)
      : plan_(make_omni_scale_plan(trunk, config_)) {}
  int64_t points() const override {
    int64_t points = 2;  // the pooled stem and the last conv
    for (const auto& step : plan_.steps) {
      if (!step.block) {
        points += 1;
        continue;
      }
      // squeeze, gated sum, output, shortcut; two per lite conv
      points += 3 + step.block->shortcut.has_value();
      for (const auto& stream : step.block->streams) points += 2 * static_cast<int64_t>(stream.size());
    }
    return points;
  }
  void run(const at::Tensor& images, const ActivationObserver& observe) const override {
    run_omni_scale_trunk(plan_, images, config_, observe);
  }
  at::Tensor weight_sums() const override { return detail::weight_sums(plan_); }

 private:
  KernelConfig config_ = float_config();
  OmniScaleTrunkPlan plan_;
};

/// ConfigError where `model`'s backbone describes no trunk that int8 runs.
inline void require_int8_trunk(const ReidModelImpl& model) {
  const auto& backbone = *model.backbone().module();
  const auto residual = residual_trunk_of(backbone);
  if (residual && needs_instance_norm(*residual)) {
    throw ConfigError("int8 runs the fused trunks of ResNets without IBN and plain OSNets; this "
                      "model's IBN-a InstanceNorm halves run in float32 only");
  }
  if (!residual && !omni_scale_trunk_of(backbone)) {
    throw ConfigError("int8 runs the fused trunks (ResNet backbones without IBN, plain OSNets); "
                      "this model's backbone runs as a module");
  }
}

/// The trunk int8 quantises in `model`, its BatchNorms folded; ConfigError where it has none.
inline std::unique_ptr<const Int8Trunk> int8_trunk(const ReidModelImpl& model) {
  require_int8_trunk(model);
  const auto& backbone = *model.backbone().module();
  if (const auto residual = residual_trunk_of(backbone)) return std::make_unique<ResidualInt8Trunk>(*residual);
  return std::make_unique<OmniScaleInt8Trunk>(*omni_scale_trunk_of(backbone));
}

}  // namespace detail

/// Whether oneDNN's int8 convolutions have their VNNI kernels on this CPU (AVX-512 VNNI,
/// AVX-VNNI or AMX); empty when they do, else why not. Without VNNI, int8 is slower than
/// float32 there.
inline std::string int8_unsupported_reason() {
#if defined(REIDNET_WITH_ONEDNN)
  const auto isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
  const auto has = [isa](dnnl_cpu_isa_t wanted) {
    return (isa & static_cast<unsigned>(wanted)) == static_cast<unsigned>(wanted);
  };
  if (has(dnnl_cpu_isa_avx512_core_vnni) || has(dnnl_cpu_isa_avx2_vnni)) return "";
  return "this CPU has no VNNI instructions (AVX-512 VNNI or AVX-VNNI), which oneDNN's int8 "
         "convolutions need to beat float32";
#else
  return "reidnet was built without direct oneDNN calls (REIDNET_WITH_ONEDNN), which int8 "
         "inference runs on";
#endif
}

/// Measures a ReID model's trunk activations on calibration pictures. The model is only
/// read; its BatchNorms are folded as inference folds them.
class Int8Calibrator {
 public:
  explicit Int8Calibrator(const ReidModelImpl& model) : trunk_(detail::int8_trunk(model)) {
    input_max_ = at::zeros({1});
    activation_max_ = at::zeros({trunk_->points()});
  }

  /// Runs the trunk in float32 on `images` (B, 3, H, W), normalised as the model reads them.
  void observe(const at::Tensor& images) {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.is_floating_point(),
                "Int8Calibrator::observe expects float images (B, 3, H, W), got ", images.sizes());
    c10::InferenceMode guard;
    input_max_ = at::maximum(input_max_, images.abs().max().to(at::kFloat));
    std::vector<at::Tensor> maxima;
    trunk_->run(images.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast),
                [&maxima](const at::Tensor& value) { maxima.push_back(value.abs().max().to(at::kFloat)); });
    TORCH_INTERNAL_ASSERT(static_cast<int64_t>(maxima.size()) == activation_max_.numel());
    activation_max_ = at::maximum(activation_max_, at::stack(maxima));
    images_ += images.size(0);
  }

  int64_t images() const { return images_; }

  /// The ranges; InputError with fewer than `minimum_images` pictures observed.
  Int8Calibration finish(int64_t minimum_images = kMinCalibrationImages) const {
    if (images_ < minimum_images) {
      throw InputError(fmt::format("int8 calibration needs at least {} pictures, got {}",
                                   minimum_images, images_));
    }
    return {input_max_.clone(), activation_max_.clone(), trunk_->weight_sums(), images_};
  }

 private:
  std::unique_ptr<const detail::Int8Trunk> trunk_;
  at::Tensor input_max_, activation_max_;
  int64_t images_ = 0;
};

/// Writes the ranges as a torch.save file (atomically): input_max, activation_max, weight_sums
/// and images.
inline void save_int8_calibration(const Int8Calibration& ranges, const std::string& path) {
  StateDict tensors;
  tensors.insert("input_max", ranges.input_max);
  tensors.insert("activation_max", ranges.activation_max);
  tensors.insert("weight_sums", ranges.weight_sums);
  tensors.insert("images", at::scalar_tensor(ranges.images, at::kLong));
  save_tensors(tensors, path);
}

/// Reads ranges that save_int8_calibration wrote for `model`'s weights. InputError naming the
/// file and the key where one is missing or malformed, or where they were measured on other
/// weights.
inline Int8Calibration load_int8_calibration(const std::string& path, const ReidModelImpl& model) {
  StateDict tensors;
  try {
    tensors = read_state_dict(path);
  } catch (const std::exception& error) {  // unreadable or not a checkpoint: bad input
    throw InputError(std::string("int8 ranges: ") + error.what());
  }
  const auto trunk = detail::int8_trunk(model);
  const auto expected_sums = trunk->weight_sums();
  const auto get = [&](const std::string& key, at::ScalarType dtype,
                       std::vector<int64_t> shape) {
    const auto* found = tensors.find(key);
    if (found == nullptr) {
      throw InputError(fmt::format("{}: no '{}' in the file; delete it to calibrate again", path, key));
    }
    if (found->scalar_type() != dtype || found->sizes() != at::IntArrayRef(shape)) {
      throw InputError(fmt::format("{}: '{}' is {} {}, expected {} {}", path, key,
                                   c10::toString(found->scalar_type()), detail::shape_text(found->sizes()),
                                   c10::toString(dtype), detail::shape_text(shape)));
    }
    return found->clone();
  };
  Int8Calibration ranges;
  ranges.input_max = get("input_max", at::kFloat, {1});
  ranges.activation_max = get("activation_max", at::kFloat, {trunk->points()});
  ranges.weight_sums = get("weight_sums", at::kDouble, {expected_sums.numel()});
  ranges.images = get("images", at::kLong, {}).item<int64_t>();
  for (const auto& [key, values] : {std::pair{"input_max", ranges.input_max},
                                    {"activation_max", ranges.activation_max}}) {
    if (!at::isfinite(values).all().item<bool>() || (values < 0).any().item<bool>()) {
      throw InputError(fmt::format("{}: '{}' holds a negative or non-finite range", path, key));
    }
  }
  if (!detail::same_weights(expected_sums, ranges.weight_sums)) {
    throw InputError(fmt::format("{}: calibrated on other weights than this model's; calibrate "
                                 "again (delete the file)", path));
  }
  return ranges;
}

}  // namespace reidnet
