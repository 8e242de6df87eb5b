#pragma once
// The residual trunk (torchvision's ResNet layout) on oneDNN's C++ API directly: the stem, max
// pool and residual blocks, with each block's add and ReLU fused into its last conv, in
// float32, bfloat16 or int8 (see detail/onednn_kernels.hpp).

#include <reidnet/inference/detail/inference_ops.hpp>
#include <reidnet/inference/detail/onednn_kernels.hpp>
#include <reidnet/inference/int8_calibration.hpp>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace reidnet::detail {

class OnednnBackbone final : public OnednnTrunk {
 public:
  /// `stem` and `blocks` as built for the onednn_direct backend: folded weights in `dtype`
  /// (any strides), fp32 bias. With `int8` (dtype float32): every conv in int8 with those
  /// activation ranges, and the residual stream in u8 between blocks; the last block's output
  /// stays float32, for the head.
  OnednnBackbone(ConvBn stem, std::vector<ResidualBlockPlan> blocks, at::ScalarType dtype,
                 const Int8Calibration* int8 = nullptr)
      : OnednnTrunk(dtype, int8 != nullptr) {
    stem_ = make_layer(std::move(stem), /*sum=*/false);
    for (auto& block : blocks) {
      Block layers;
      for (size_t k = 0; k < block.convs.size(); ++k) {
        // The block's last conv adds the identity (already in its output buffer), then ReLU.
        layers.convs.push_back(make_layer(std::move(block.convs[k]), k + 1 == block.convs.size()));
      }
      if (block.has_downsample) layers.downsample = make_layer(std::move(block.downsample), false);
      blocks_.push_back(std::move(layers));
    }
    if (int8_) quantize(Int8RangeReader(*int8));
  }

  at::Tensor run(const at::Tensor& images) const override {
    const auto compiled = compiled_for<Compiled>(
        images.sizes().vec(), [this](const std::vector<int64_t>& shape) { return compile_shape(shape); });
    return run_compiled(*compiled, images, [&](Activation x, const Run& context) {
      x = run_stem(compiled->stem, x, context);
      for (const auto& block : compiled->blocks) {
        // The last conv accumulates into the identity's buffer: when that is the input itself,
        // the input is no longer needed by then (the first conv has read it). int8's last block
        // adds a float32 identity, for its float32 output.
        Activation identity = block.downsample  ? apply(*block.downsample, x, context)
                              : block.dequantize ? convert(*block.dequantize, memory(x), context)
                                                 : x;
        Activation out = x;
        for (size_t k = 0; k + 1 < block.convs.size(); ++k) {
          out = apply(block.convs[k], out, context);
          if (const auto* part = block.instance_norms[k]) normalize_instances(out, *part, context);
        }
        apply(block.convs.back(), out, context, &identity);
        x = std::move(identity);
      }
      return x;
    });
  }

 private:
  struct Block {
    std::vector<Layer> convs;
    std::optional<Layer> downsample;
    // int8: the block's u8 input, and whether its identity is that input in float32 (the
    // last block's, without a shortcut conv).
    QuantizedActivation input;
    bool float_identity = false;
  };

  struct CompiledBlock {
    std::vector<CompiledConv> convs;
    std::vector<const InstanceNormPart*> instance_norms;  // per conv: IBN-a's, or null
    std::optional<CompiledConv> downsample;
    std::optional<Conversion> dequantize;  // int8: the u8 input to a float32 identity
  };

  /// Every primitive of one input shape, with the weights their kernels want.
  struct Compiled : CompiledShape {
    CompiledStem stem;
    std::vector<CompiledBlock> blocks;
  };

  /// Every primitive for one input shape.
  std::shared_ptr<const Compiled> compile_shape(const std::vector<int64_t>& input_shape) const {
    auto out = std::make_shared<Compiled>();
    size_t& scratchpad = out->scratchpad_bytes;
    out->stem = compile_stem(stem_, input_shape, scratchpad);

    // torchvision's max pool: 3x3, stride 2, padding 1 (int8: u8 in, u8 out).
    auto dims = onednn_api::dims_of(out->stem.max_pool.dst);

    for (const auto& block : blocks_) {
      CompiledBlock compiled;
      if (block.float_identity) {
        compiled.dequantize = conversion(activation_desc(dims, dnnl::memory::data_type::u8),
                                         activation_desc(dims), block.input.scale);
      }
      if (block.downsample) compiled.downsample = compile(*block.downsample, dims, scratchpad);
      for (const auto& layer : block.convs) {
        compiled.instance_norms.push_back(layer.conv.instance_norm ? &*layer.conv.instance_norm : nullptr);
        compiled.convs.push_back(compile(layer, dims, scratchpad));
        dims = onednn_api::dims_of(compiled.convs.back().dst);
      }
      out->blocks.push_back(std::move(compiled));
    }
    compile_ends(*out, input_shape, out->stem.conv.src, stem_.int8 ? stem_.int8->input.scale : at::Tensor(), dims);
    return out;
  }

  /// IBN-a's InstanceNorm half, then the pair's ReLU, in place on LibTorch's ops over the
  /// activation in oneDNN's layout (channel_blocks): each image's statistics over its map for
  /// the blocks that hold the first `part.channels` channels, a scale and shift that normalise
  /// those channels and leave the rest (whose BatchNorm the conv absorbed) as they are.
  void normalize_instances(const Activation& x, const InstanceNormPart& part, const Run& context) const {
    context.stream.wait();  // LibTorch reads what oneDNN wrote
    const auto blocks = channel_blocks(x);  // (B, C / c, h, w, c); NHWC: c = C
    const int64_t lanes = blocks.size(4);
    const auto region = blocks.size(1) == 1 ? blocks.narrow(4, 0, part.channels)
                                            : blocks.narrow(1, 0, (part.channels + lanes - 1) / lanes);
    const int64_t count = region.size(1) * region.size(4);
    const std::vector<int64_t> per_channel{1, region.size(1), 1, 1, region.size(4)};
    const auto [variance, mean] = at::var_mean(region.to(at::kFloat), {2, 3}, /*unbiased=*/false, /*keepdim=*/true);
    const auto padded = [&](const at::Tensor& values) {
      return at::constant_pad_nd(values, {0, count - part.channels}).view(per_channel);
    };
    const auto normalised = at::arange(count).view(per_channel) < part.channels;
    const auto scale = at::where(normalised, padded(part.weight) * (variance + part.eps).rsqrt(), 1.0);
    const auto shift = at::where(normalised, padded(part.bias) - mean * scale, 0.0);
    region.mul_(scale.to(region.scalar_type())).add_(shift.to(region.scalar_type()));
    blocks.relu_();
  }

  /// The int8 form of every conv, from the calibrated ranges in the order they were measured:
  /// the stem reads the normalised picture in s8 and writes u8 for the max pool, whose
  /// largest value (the first block's input range) is the stem's own.
  void quantize(Int8RangeReader ranges) {
    auto input = ranges.u8();
    stem_.int8 = quantize_conv(stem_.conv, ranges.input(), input);
    for (size_t b = 0; b < blocks_.size(); ++b) {
      input = quantize_block(blocks_[b], ranges, std::move(input), b + 1 == blocks_.size());
    }
    ranges.expect_end();
  }

  /// The int8 form of a block's convs reading `input`: u8 inner outputs, an s8 shortcut, and
  /// the output u8 (returned: the next block's input), or float32 in the last block.
  static QuantizedActivation quantize_block(Block& block, Int8RangeReader& ranges,
                                            QuantizedActivation input, bool last) {
    block.input = input;
    block.float_identity = last && !block.downsample;
    auto identity = last ? QuantizedActivation::f32() : input;
    if (block.downsample) {
      const auto shortcut = ranges.s8();
      if (!last) identity = shortcut;
      block.downsample->int8 = quantize_conv(block.downsample->conv, input, identity);
    }
    for (size_t k = 0; k + 1 < block.convs.size(); ++k) {
      auto inner = ranges.u8();
      block.convs[k].int8 = quantize_conv(block.convs[k].conv, input, inner);
      input = std::move(inner);
    }
    const auto measured = ranges.u8();
    const auto output = last ? QuantizedActivation::f32() : measured;
    block.convs.back().int8 = quantize_conv(block.convs.back().conv, input, output, identity);
    return output;
  }

  Layer stem_;
  std::vector<Block> blocks_;
};

}  // namespace reidnet::detail
