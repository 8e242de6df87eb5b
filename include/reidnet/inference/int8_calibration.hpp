#pragma once
/// int8 inference's activation ranges: post-training static quantisation of a residual trunk
/// (reidnet/inference/inference.hpp runs it on oneDNN's int8 convolutions).
///
/// Each conv of the trunk's blocks reads u8 activations (the block's input and its inner
/// convs' outputs, all after a ReLU, so never negative) with one scale, the largest value
/// seen on calibration pictures over 255, and s8 weights with a scale per output channel; a
/// projection shortcut writes s8 (its largest magnitude over 127), which the block's last conv
/// adds before its ReLU, writing the next block's u8 input. The stem reads the normalised
/// picture in s8. The last block's output and the head stay in float32: the head's neck and
/// embedding layer are what ReID embeddings lose most in int8.
///
///     reidnet::Int8Calibrator calibrator(*net);
///     for (auto& batch : loader.epoch(0)) calibrator.observe(batch.images);
///     auto ranges = std::make_shared<const reidnet::Int8Calibration>(calibrator.finish());
///     reidnet::save_int8_calibration(*ranges, "run/int8_calibration.pth");
///     auto fast = reidnet::optimize_for_inference(net, reidnet::InferenceOptions().int8(ranges));

#include <reidnet/core/errors.hpp>
#include <reidnet/inference/detail/inference_ops.hpp>
#include <reidnet/io/checkpoint.hpp>
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

/// What a residual trunk's int8 convs need from calibration, for one model's weights.
struct Int8Calibration {
  /// (1,): the largest magnitude of the normalised pictures, the stem's input.
  at::Tensor input_max;
  /// (blocks,): the largest value of each block's input.
  at::Tensor block_input_max;
  /// (blocks, convs per block - 1): the largest output of each main-path conv but the last
  /// (the next conv's input).
  at::Tensor inner_max;
  /// (blocks,): the largest magnitude of each projection shortcut's output (0 without one).
  at::Tensor shortcut_max;
  /// (convs,), float64: the sum of each folded conv weight of the blocks (main path, then
  /// shortcut), so that ranges measured on other weights are refused.
  at::Tensor weight_sums;
  /// How many pictures were observed.
  int64_t images = 0;
};

namespace detail {

/// The blocks of `trunk` with BatchNorm folded, in float32 on the CPU: the calibration pass
/// runs them on LibTorch's ops, and the fingerprint is taken from the same weights the int8
/// build quantises.
inline KernelConfig float_config() {
  KernelConfig config;
  config.prepack = false;
  return config;
}

inline std::vector<ResidualBlockPlan> float_blocks(const ResidualTrunkView& trunk) {
  const auto config = float_config();
  std::vector<ResidualBlockPlan> blocks;
  for (const auto& block : trunk.blocks) {
    ResidualBlockPlan plan;
    for (size_t k = 0; k < block.main_path.size(); ++k) {
      plan.convs.push_back(make_conv_bn(block.main_path[k],
                                        k + 1 < block.main_path.size(), config));
    }
    if (block.shortcut) {
      plan.has_downsample = true;
      plan.downsample = make_conv_bn(*block.shortcut, false, config);
    }
    blocks.push_back(std::move(plan));
  }
  return blocks;
}

inline at::Tensor weight_sums(const std::vector<ResidualBlockPlan>& blocks) {
  std::vector<double> sums;
  for (const auto& block : blocks) {
    for (const auto& conv : block.convs) sums.push_back(conv.weight.sum(at::kDouble).item<double>());
    if (block.has_downsample) sums.push_back(block.downsample.weight.sum(at::kDouble).item<double>());
  }
  return at::tensor(sums, at::kDouble);
}

inline bool same_weights(const at::Tensor& expected, const at::Tensor& found) {
  return expected.sizes() == found.sizes() &&
         at::allclose(expected, found, /*rtol=*/1e-6, /*atol=*/1e-9);
}

/// The trunk a ReID model's backbone describes; ConfigError where it has none.
inline ResidualTrunkView int8_trunk(const ReidModelImpl& model) {
  auto trunk = residual_trunk_of(*model.backbone().module());
  if (!trunk) {
    throw ConfigError("int8 runs the fused residual trunk (ResNet backbones without IBN); this "
                      "model's backbone runs as a module");
  }
  return *trunk;
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
  explicit Int8Calibrator(const ReidModelImpl& model) {
    const auto trunk = detail::int8_trunk(model);
    torch::NoGradGuard no_grad;
    stem_ = detail::make_conv_bn(trunk.stem, /*relu=*/true, config_);
    blocks_ = detail::float_blocks(trunk);
    input_max_ = at::zeros({1});
    block_input_max_ = at::zeros({static_cast<int64_t>(blocks_.size())});
    inner_max_ = at::zeros({static_cast<int64_t>(blocks_.size()),
                            static_cast<int64_t>(blocks_.front().convs.size()) - 1});
    shortcut_max_ = at::zeros({static_cast<int64_t>(blocks_.size())});
  }

  /// Runs the trunk in float32 on `images` (B, 3, H, W), normalised as the model reads them.
  void observe(const at::Tensor& images) {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.is_floating_point(),
                "Int8Calibrator::observe expects float images (B, 3, H, W), got ", images.sizes());
    c10::InferenceMode guard;
    input_max_.fill_(std::max(input_max_.item<float>(), images.abs().max().item<float>()));
    const auto shortcut = blocks_.front().convs.size();
    const auto input = images.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
    const auto record = [&](size_t block, size_t point, const at::Tensor& value) {
      auto slot = point == 0          ? block_input_max_[block]  // a view
                  : point == shortcut ? shortcut_max_[block]
                                      : inner_max_[block][point - 1];
      slot.fill_(std::max(slot.item<float>(), value.abs().max().item<float>()));
    };
    detail::run_residual_trunk(stem_, blocks_, input, config_, record);
    images_ += images.size(0);
  }

  int64_t images() const { return images_; }

  /// The ranges; InputError with fewer than `minimum_images` pictures observed.
  Int8Calibration finish(int64_t minimum_images = kMinCalibrationImages) const {
    if (images_ < minimum_images) {
      throw InputError(fmt::format("int8 calibration needs at least {} pictures, got {}",
                                   minimum_images, images_));
    }
    return {input_max_.clone(), block_input_max_.clone(), inner_max_.clone(), shortcut_max_.clone(),
            detail::weight_sums(blocks_), images_};
  }

 private:
  detail::KernelConfig config_ = detail::float_config();
  detail::ConvBn stem_;
  std::vector<detail::ResidualBlockPlan> blocks_;
  at::Tensor input_max_, block_input_max_, inner_max_, shortcut_max_;
  int64_t images_ = 0;
};

/// Writes the ranges as a torch.save file (atomically): input_max, block_input_max, inner_max,
/// shortcut_max, weight_sums and images.
inline void save_int8_calibration(const Int8Calibration& ranges, const std::string& path) {
  StateDict tensors;
  tensors.insert("input_max", ranges.input_max);
  tensors.insert("block_input_max", ranges.block_input_max);
  tensors.insert("inner_max", ranges.inner_max);
  tensors.insert("shortcut_max", ranges.shortcut_max);
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
  const auto blocks = detail::float_blocks(detail::int8_trunk(model));
  const auto expected_sums = detail::weight_sums(blocks);
  const auto block_count = static_cast<int64_t>(blocks.size());
  const auto get = [&](const std::string& key, at::ScalarType dtype,
                       std::vector<int64_t> shape) {
    const auto* found = tensors.find(key);
    if (found == nullptr) throw InputError(fmt::format("{}: no '{}' in the file", path, key));
    if (found->scalar_type() != dtype || found->sizes() != at::IntArrayRef(shape)) {
      throw InputError(fmt::format("{}: '{}' is {} {}, expected {} {}", path, key,
                                   c10::toString(found->scalar_type()), detail::shape_text(found->sizes()),
                                   c10::toString(dtype), detail::shape_text(shape)));
    }
    return found->clone();
  };
  Int8Calibration ranges;
  ranges.input_max = get("input_max", at::kFloat, {1});
  ranges.block_input_max = get("block_input_max", at::kFloat, {block_count});
  ranges.inner_max = get("inner_max", at::kFloat,
                         {block_count, static_cast<int64_t>(blocks.front().convs.size()) - 1});
  ranges.shortcut_max = get("shortcut_max", at::kFloat, {block_count});
  ranges.weight_sums = get("weight_sums", at::kDouble, {expected_sums.numel()});
  ranges.images = get("images", at::kLong, {}).item<int64_t>();
  for (const auto& [key, values] : {std::pair{"input_max", ranges.input_max},
                                    {"block_input_max", ranges.block_input_max},
                                    {"inner_max", ranges.inner_max},
                                    {"shortcut_max", ranges.shortcut_max}}) {
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
