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
    for (size_t b = 0; b < blocks.size(); ++b) {
      auto& block = blocks[b];
      Block layers;
      for (size_t k = 0; k < block.convs.size(); ++k) {
        // The block's last conv adds the identity (already in its output buffer), then ReLU.
        layers.convs.push_back(make_layer(std::move(block.convs[k]), k + 1 == block.convs.size()));
      }
      if (block.has_downsample) layers.downsample = make_layer(std::move(block.downsample), false);
      if (int8_) quantize_block(layers, *int8, b, b + 1 == blocks.size());
      blocks_.push_back(std::move(layers));
    }
    // The stem reads the normalised picture in s8 and writes u8 for the max pool, whose
    // largest value (the first block's input range) is the stem's own.
    if (int8_) {
      stem_.int8 = quantize_conv(stem_.conv, QuantizedActivation::s8(int8->input_max.item<float>()),
                                 QuantizedActivation::u8(int8->block_input_max[0].item<float>()));
    }
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
        for (size_t k = 0; k + 1 < block.convs.size(); ++k) out = apply(block.convs[k], out, context);
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
        compiled.convs.push_back(compile(layer, dims, scratchpad));
        dims = onednn_api::dims_of(compiled.convs.back().dst);
      }
      out->blocks.push_back(std::move(compiled));
    }
    compile_ends(*out, input_shape, out->stem.conv.src, stem_.int8 ? stem_.int8->input.scale : at::Tensor(), dims);
    return out;
  }

  /// The int8 form of block `b`'s convs, from the calibrated ranges: u8 inputs and inner
  /// outputs, an s8 shortcut, and the output u8 with the next block's input scale, or float32
  /// in the last block.
  static void quantize_block(Block& block, const Int8Calibration& ranges, size_t b, bool last) {
    const auto value = [](const at::Tensor& range) { return range.item<float>(); };
    block.input = QuantizedActivation::u8(value(ranges.block_input_max[b]));
    block.float_identity = last && !block.downsample;
    const auto output = last ? QuantizedActivation::f32()
                             : QuantizedActivation::u8(value(ranges.block_input_max[b + 1]));
    auto identity = last ? QuantizedActivation::f32() : block.input;
    if (block.downsample) {
      identity = last ? QuantizedActivation::f32()
                      : QuantizedActivation::s8(value(ranges.shortcut_max[b]));
      block.downsample->int8 = quantize_conv(block.downsample->conv, block.input, identity);
    }
    auto input = block.input;
    for (size_t k = 0; k < block.convs.size(); ++k) {
      if (k + 1 == block.convs.size()) {
        block.convs[k].int8 = quantize_conv(block.convs[k].conv, input, output, identity);
      } else {
        auto inner = QuantizedActivation::u8(value(ranges.inner_max[b][k]));
        block.convs[k].int8 = quantize_conv(block.convs[k].conv, input, inner);
        input = std::move(inner);
      }
    }
  }

  Layer stem_;
  std::vector<Block> blocks_;
};

}  // namespace reidnet::detail
