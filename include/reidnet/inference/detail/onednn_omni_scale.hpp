#pragma once
// The omni-scale trunk (OSNet's layout) on oneDNN's C++ API directly, in float32, bfloat16 or
// int8: every conv with its folded BatchNorm, its ReLU fused in, and each block's residual add
// and ReLU fused into its expanding conv (a `sum` post-op). The channel gate, a few hundred
// values per picture, and the gated sum of the streams run on LibTorch's ops, on the same
// buffers in oneDNN's layout (channel blocks at batch 2 and up in float32: 8-10% faster than
// NHWC at batch 16 here). In int8 the streams end in u8, the gated sum runs in float32 and a
// reorder quantises it for the expanding conv.

#include <reidnet/inference/detail/inference_ops.hpp>
#include <reidnet/inference/detail/onednn_kernels.hpp>
#include <reidnet/inference/int8_calibration.hpp>

#include <ATen/ATen.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace reidnet::detail {

class OnednnOmniScaleTrunk final : public OnednnTrunk {
 public:
  /// `plan` as built for the onednn_direct backend: folded weights in `dtype`, fp32 bias.
  /// With `int8` (dtype float32): every conv in int8 with those activation ranges; the last
  /// conv's output stays float32, for the head.
  OnednnOmniScaleTrunk(OmniScaleTrunkPlan plan, at::ScalarType dtype, const Int8Calibration* int8 = nullptr)
      : OnednnTrunk(dtype, int8 != nullptr) {
    stem_ = make_layer(std::move(plan.stem), /*sum=*/false);
    last_ = make_layer(std::move(plan.last), /*sum=*/false);
    for (auto& step : plan.steps) {
      Step layers;
      if (step.block) {
        layers.block = make_block(std::move(*step.block));
      } else {
        layers.transition = make_layer(std::move(step.transition), /*sum=*/false);
      }
      steps_.push_back(std::move(layers));
    }
    if (int8_) quantize(Int8RangeReader(*int8));
  }

  at::Tensor run(const at::Tensor& images) const override {
    const auto compiled = compiled_for<Compiled>(
        images.sizes().vec(), [this](const std::vector<int64_t>& shape) { return compile_shape(shape); });
    return run_compiled(*compiled, images, [&](Activation x, const Run& context) {
      x = run_stem(compiled->stem, x, context);
      for (size_t s = 0; s < steps_.size(); ++s) {
        const auto& step = compiled->steps[s];
        x = step.block ? run_block(*steps_[s].block, *step.block, std::move(x), context)
                       : pool(step.average_pool, apply(step.transition, x, context), context);
      }
      return apply(compiled->last, x, context);
    });
  }

 private:
  struct LightConv {
    Layer pointwise, depthwise;
  };

  struct Block {
    Layer squeeze;
    std::vector<std::vector<LightConv>> streams;
    // The gate's two 1x1 convs as float32 matrices (out, in), run on the pooled streams.
    at::Tensor gate_reduce_weight, gate_reduce_bias, gate_expand_weight, gate_expand_bias;
    Layer expand;  // adds the identity in its output buffer, then ReLU
    std::optional<Layer> shortcut;
    // (streams, 1, 1): the scale of each stream's output (int8: u8; 1 in float).
    at::Tensor stream_scales;
    QuantizedActivation mixed;  // int8: the gated sum, the expanding conv's input
  };

  struct Step {
    std::optional<Block> block;
    Layer transition;
  };

  struct CompiledBlock {
    CompiledConv squeeze;
    std::vector<std::vector<std::pair<CompiledConv, CompiledConv>>> streams;
    CompiledConv expand;
    std::optional<CompiledConv> shortcut;
    std::optional<Conversion> quantize_mixed;  // int8: the float32 gated sum to u8
  };

  struct CompiledStep {
    std::optional<CompiledBlock> block;
    CompiledConv transition;
    CompiledPool average_pool;
  };

  struct Compiled : CompiledShape {
    CompiledStem stem;
    std::vector<CompiledStep> steps;
    CompiledConv last;
  };

  static Block make_block(OmniScaleBlockPlan plan) {
    Block block;
    block.squeeze = make_layer(std::move(plan.squeeze), /*sum=*/false);
    for (auto& stream : plan.streams) {
      std::vector<LightConv> layers;
      for (auto& layer : stream) {
        layers.push_back({make_layer(std::move(layer.pointwise), false), make_layer(std::move(layer.depthwise), false)});
      }
      block.streams.push_back(std::move(layers));
    }
    const auto matrix = [](const ConvBn& conv) { return conv.weight.to(at::kFloat).flatten(1).contiguous(); };
    block.gate_reduce_weight = matrix(plan.gate_reduce);
    block.gate_reduce_bias = plan.gate_reduce.bias.to(at::kFloat);
    block.gate_expand_weight = matrix(plan.gate_expand);
    block.gate_expand_bias = plan.gate_expand.bias.to(at::kFloat);
    block.expand = make_layer(std::move(plan.expand), /*sum=*/true);
    block.stream_scales = at::ones({static_cast<int64_t>(block.streams.size()), 1, 1});
    if (plan.shortcut) block.shortcut = make_layer(std::move(*plan.shortcut), /*sum=*/false);
    return block;
  }

  CompiledBlock compile_block(const Block& block, const dnnl::memory::dims& input, size_t& scratchpad) const {
    CompiledBlock out;
    out.squeeze = compile(block.squeeze, input, scratchpad);
    const auto squeezed = onednn_api::dims_of(out.squeeze.dst);
    for (const auto& stream : block.streams) {
      std::vector<std::pair<CompiledConv, CompiledConv>> layers;
      for (const auto& layer : stream) {
        layers.emplace_back(compile(layer.pointwise, squeezed, scratchpad),
                            compile(layer.depthwise, squeezed, scratchpad));
      }
      out.streams.push_back(std::move(layers));
    }
    out.expand = compile(block.expand, squeezed, scratchpad);
    if (int8_) {
      out.quantize_mixed = conversion(activation_desc(squeezed, dnnl::memory::data_type::f32), out.expand.src,
                                      block.mixed.scale);
    }
    if (block.shortcut) out.shortcut = compile(*block.shortcut, input, scratchpad);
    return out;
  }

  /// Every primitive for one input shape.
  std::shared_ptr<const Compiled> compile_shape(const std::vector<int64_t>& input_shape) const {
    auto out = std::make_shared<Compiled>();
    size_t& scratchpad = out->scratchpad_bytes;
    out->stem = compile_stem(stem_, input_shape, scratchpad);
    auto dims = onednn_api::dims_of(out->stem.max_pool.dst);
    for (const auto& step : steps_) {
      CompiledStep compiled;
      if (step.block) {
        compiled.block = compile_block(*step.block, dims, scratchpad);
        dims = onednn_api::dims_of(compiled.block->expand.dst);
      } else {
        compiled.transition = compile(step.transition, dims, scratchpad);
        // The transition's average pool: 2x2, stride 2.
        compiled.average_pool = compile_pool(dnnl::algorithm::pooling_avg_include_padding,
                                             compiled.transition.dst, 2, 2, 0, scratchpad);
        dims = onednn_api::dims_of(compiled.average_pool.dst);
      }
      out->steps.push_back(std::move(compiled));
    }
    out->last = compile(last_, dims, scratchpad);
    compile_ends(*out, input_shape, out->stem.conv.src, stem_.int8 ? stem_.int8->input.scale : at::Tensor(),
                 onednn_api::dims_of(out->last.dst));
    return out;
  }

  /// relu(expand(sum_t gate(stream_t)) + identity), the gate shared by the streams: its pooled
  /// inputs go through its two convs as one batch. The gate's LibTorch ops read and write the
  /// activations in oneDNN's layout (channel_blocks), where padded channels stay zero. In
  /// int8, each stream's scale goes into its pooled values and its gates.
  Activation run_block(const Block& block, const CompiledBlock& compiled, Activation x,
                       const Run& context) const {
    Activation identity = compiled.shortcut ? apply(*compiled.shortcut, x, context) : x;
    const Activation squeezed = apply(compiled.squeeze, x, context);
    const auto dims = onednn_api::dims_of(squeezed.desc);
    const int64_t batch = dims[0], channels = dims[1];
    std::vector<at::Tensor> streams;
    std::vector<at::Tensor> pooled;
    for (const auto& stream : compiled.streams) {
      Activation y = squeezed;
      for (const auto& [pointwise, depthwise] : stream) y = apply(depthwise, apply(pointwise, y, context), context);
      streams.push_back(channel_blocks(y));
      pooled.push_back(streams.back().mean({2, 3}, /*keepdim=*/false, at::kFloat).view({batch, -1}).narrow(1, 0, channels));
    }
    context.stream.wait();  // LibTorch reads what oneDNN wrote
    const auto hidden = at::addmm(block.gate_reduce_bias, (at::stack(pooled) * block.stream_scales).flatten(0, 1),
                                  block.gate_reduce_weight.t())
                            .relu_();
    const auto& blocks = streams.front().sizes();  // (B, C / c, h, w, c)
    const auto gates = at::constant_pad_nd(at::addmm(block.gate_expand_bias, hidden, block.gate_expand_weight.t())
                                                   .sigmoid_()
                                                   .view({static_cast<int64_t>(streams.size()), batch, channels}) *
                                               block.stream_scales,
                                           {0, blocks[1] * blocks[4] - channels})
                           .to(scalar_type())
                           .view({static_cast<int64_t>(streams.size()), batch, blocks[1], 1, 1, blocks[4]});
    // Summed in the module's order: ((a + b) + c) + d (int8: u8 streams, float32 sum).
    auto mixed = streams[0] * gates[0];
    for (size_t t = 1; t < streams.size(); ++t) mixed.addcmul_(streams[t], gates[t]);
    mixed = mixed.contiguous();
    const Activation input =
        int8_ ? convert(*compiled.quantize_mixed, memory(activation_desc(dims, dnnl::memory::data_type::f32), mixed.data_ptr()), context)
              : Activation{mixed, compiled.expand.src};
    apply(compiled.expand, input, context, &identity);
    return identity;
  }

  /// The int8 form of every conv, from the calibrated ranges in the order they were measured
  /// (run_omni_scale_trunk): the stem reads the normalised picture in s8 and writes u8 for the
  /// max pool; the streams' pointwise convs, which have no ReLU, write s8.
  void quantize(Int8RangeReader ranges) {
    auto x = ranges.u8();
    stem_.int8 = quantize_conv(stem_.conv, ranges.input(), x);
    for (auto& step : steps_) {
      if (!step.block) {
        auto output = ranges.u8();  // the average pool keeps its scale
        step.transition.int8 = quantize_conv(step.transition.conv, x, output);
        x = std::move(output);
        continue;
      }
      auto& block = *step.block;
      const auto squeezed = ranges.u8();
      block.squeeze.int8 = quantize_conv(block.squeeze.conv, x, squeezed);
      std::vector<at::Tensor> stream_scales;
      for (auto& stream : block.streams) {
        auto y = squeezed;
        for (auto& layer : stream) {
          const auto linear = ranges.s8();
          layer.pointwise.int8 = quantize_conv(layer.pointwise.conv, y, linear);
          y = ranges.u8();
          layer.depthwise.int8 = quantize_conv(layer.depthwise.conv, linear, y);
        }
        stream_scales.push_back(y.scale);
      }
      block.stream_scales = at::cat(stream_scales).view({-1, 1, 1});
      block.mixed = ranges.u8();
      auto identity = x;
      if (block.shortcut) {
        identity = ranges.s8();
        block.shortcut->int8 = quantize_conv(block.shortcut->conv, x, identity);
      }
      auto output = ranges.u8();
      block.expand.int8 = quantize_conv(block.expand.conv, block.mixed, output, identity);
      x = std::move(output);
    }
    ranges.skip();  // the last conv writes float32 for the head
    last_.int8 = quantize_conv(last_.conv, x, QuantizedActivation::f32());
    ranges.expect_end();
  }

  Layer stem_, last_;
  std::vector<Step> steps_;
};

}  // namespace reidnet::detail
