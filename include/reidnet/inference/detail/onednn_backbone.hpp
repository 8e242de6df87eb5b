#pragma once
// The CPU inference backbone run on oneDNN's C++ API directly (the `onednn_direct` backend of
// reidnet/inference/inference.hpp). Built only where REIDNET_WITH_ONEDNN is defined: CMake defines it
// when LibTorch itself runs on the system's oneDNN (2.x or 3.x), so that the process holds
// one copy.
//
// Against LibTorch's prepacked conv op this gains, per forward:
// - weights reordered once into the layout each conv kernel wants (LibTorch 1.13's op
//   re-reorders most channels_last weights on every call: ~6 of 33 ms at batch 1);
// - the residual add and ReLU fused into the block's last conv (a `sum` post-op);
// - no dispatcher, IValue or per-call primitive lookup (~100k instructions per conv).

#include <reidnet/inference/detail/inference_ops.hpp>
#include <reidnet/inference/int8_calibration.hpp>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace reidnet::detail {

static_assert(DNNL_VERSION_MAJOR == 2 || DNNL_VERSION_MAJOR == 3,
              "reidnet's direct oneDNN backend is written for oneDNN 2.x and 3.x");

/// The calls whose spelling changed in oneDNN 3.0: primitive descriptors are built straight
/// from the engine (no operation descriptor), eltwise post-ops lost their scale, and a memory
/// descriptor's dims and data type became get_dims() and get_data_type().
namespace onednn_api {

inline dnnl::memory::dims dims_of(const dnnl::memory::desc& desc) {
#if DNNL_VERSION_MAJOR >= 3
  return desc.get_dims();
#else
  return desc.dims();
#endif
}

inline dnnl::memory::data_type data_type_of(const dnnl::memory::desc& desc) {
#if DNNL_VERSION_MAJOR >= 3
  return desc.get_data_type();
#else
  return desc.data_type();
#endif
}

inline void append_relu(dnnl::post_ops& post_ops) {
#if DNNL_VERSION_MAJOR >= 3
  post_ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
#else
  post_ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
#endif
}

inline dnnl::convolution_forward::primitive_desc convolution_inference(
    const dnnl::engine& engine, const dnnl::memory::desc& src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc& bias, const dnnl::memory::desc& dst, const dnnl::memory::dims& strides,
    const dnnl::memory::dims& dilates, const dnnl::memory::dims& padding_left,
    const dnnl::memory::dims& padding_right, const dnnl::primitive_attr& attributes) {
  const auto prop = dnnl::prop_kind::forward_inference;
  const auto algorithm = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  return {engine, prop, algorithm, src, weights, bias, dst, strides, dilates, padding_left,
          padding_right, attributes};
#else
  const dnnl::convolution_forward::desc description(prop, algorithm, src, weights, bias, dst,
                                                    strides, dilates, padding_left, padding_right);
  return {description, attributes, engine};
#endif
}

inline dnnl::pooling_forward::primitive_desc pooling_inference(
    const dnnl::engine& engine, dnnl::algorithm algorithm, const dnnl::memory::desc& src,
    const dnnl::memory::desc& dst, const dnnl::memory::dims& strides,
    const dnnl::memory::dims& kernel, const dnnl::memory::dims& padding_left,
    const dnnl::memory::dims& padding_right, const dnnl::primitive_attr& attributes) {
  const auto prop = dnnl::prop_kind::forward_inference;
#if DNNL_VERSION_MAJOR >= 3
  const dnnl::memory::dims no_dilation(kernel.size(), 0);
  return {engine, prop, algorithm, src, dst, strides, kernel, no_dilation, padding_left,
          padding_right, attributes};
#else
  const dnnl::pooling_forward::desc description(prop, algorithm, src, dst, strides, kernel,
                                                padding_left, padding_right);
  return {description, attributes, engine};
#endif
}

/// Quantisation scales, as each version takes them: oneDNN 3.x per argument (src, weights,
/// dst; real = scale * q), given at execution; 2.x as one output scale per channel fixed when
/// the primitive is built, which also scales the bias (added before it).
inline void set_int8_scales(dnnl::primitive_attr& attributes, int64_t groups, bool scaled_output,
                            const at::Tensor& output_scales) {
#if DNNL_VERSION_MAJOR >= 3
  (void)output_scales;
  attributes.set_scales_mask(DNNL_ARG_SRC, 0);
  attributes.set_scales_mask(DNNL_ARG_WEIGHTS, groups > 1 ? 3 : 1);  // per output channel
  if (scaled_output) attributes.set_scales_mask(DNNL_ARG_DST, 0);
#else
  (void)groups;
  (void)scaled_output;
  const auto* begin = output_scales.data_ptr<float>();
  attributes.set_output_scales(1 << 1, std::vector<float>(begin, begin + output_scales.numel()));
#endif
}

/// Adds the scales of `argument` to a primitive's execution arguments on oneDNN 3.x; 2.x has
/// them fixed in the primitive already.
inline void add_scales(std::unordered_map<int, dnnl::memory>& arguments, int argument,
                       const dnnl::memory& scales) {
#if DNNL_VERSION_MAJOR >= 3
  arguments.emplace(DNNL_ARG_ATTR_SCALES | argument, scales);
#else
  (void)arguments;
  (void)argument;
  (void)scales;
#endif
}

/// The attribute of a reorder between float32 and u8 whose `argument` (DNNL_ARG_DST: it
/// quantises; DNNL_ARG_SRC: it dequantises) has `scale` (real = scale * q).
inline dnnl::primitive_attr scaling_reorder(int argument, const at::Tensor& scale) {
  dnnl::primitive_attr attributes;
#if DNNL_VERSION_MAJOR >= 3
  (void)scale;
  attributes.set_scales_mask(argument, 0);
#else
  const auto value = scale.item<float>();
  attributes.set_output_scales(0, {argument == DNNL_ARG_DST ? 1.f / value : value});
#endif
  return attributes;
}

/// The residual sum: `scale` * the destination's old contents, read as `type` (undef: the
/// destination's own type).
inline void append_sum(dnnl::post_ops& post_ops, float scale, dnnl::memory::data_type type) {
#if DNNL_VERSION_MAJOR >= 3
  post_ops.append_sum(scale, 0, type);
#else
  post_ops.append_sum(scale, type);
#endif
}

}  // namespace onednn_api

/// An int8 activation: its type and scale (real = scale * q); float32 has no scale.
struct QuantizedActivation {
  dnnl::memory::data_type type = dnnl::memory::data_type::f32;
  at::Tensor scale;  // (1,)

  /// After a ReLU: [0, largest] onto u8's 0..255. A range of 0 (a dead layer) keeps a
  /// positive scale.
  static QuantizedActivation u8(float largest) {
    return {dnnl::memory::data_type::u8, at::full({1}, std::max(largest, 1e-8f) / 255.f)};
  }
  /// Signed (a shortcut, before the sum's ReLU): [-largest, largest] onto s8's -127..127.
  static QuantizedActivation s8(float largest) {
    return {dnnl::memory::data_type::s8, at::full({1}, std::max(largest, 1e-8f) / 127.f)};
  }
  static QuantizedActivation f32() { return {}; }
  bool is_float() const { return type == dnnl::memory::data_type::f32; }
  float scale_value() const { return is_float() ? 1.f : scale.item<float>(); }
};

/// A conv of the int8 trunk: s8 weights with a scale per output channel, u8 input with one
/// scale (s8: the stem's). Its output is u8 after a ReLU, s8 for a shortcut, and float32 in
/// the last block, whose map goes to the head; the block's last conv adds the identity
/// (`identity`: u8, s8 or float32) in its sum post-op, so that the residual stream stays int8
/// between blocks.
struct Int8Conv {
  at::Tensor weight;          // s8, (O, I/g, kh, kw)
  at::Tensor weight_scales;   // (O,)
  QuantizedActivation input, output, identity;
  at::Tensor bias;            // float32, as the primitive takes it (see set_int8_scales)
  at::Tensor output_scales;   // oneDNN 2.x: input * weight / output scale, per channel

  /// The sum post-op's scale: the identity's (3.x scales the sum before the output scale;
  /// 2.x after it).
  float sum_scale() const {
#if DNNL_VERSION_MAJOR >= 3
    return identity.scale_value();
#else
    return identity.scale_value() / output.scale_value();
#endif
  }
};

inline Int8Conv quantize_conv(const ConvBn& conv, QuantizedActivation input, QuantizedActivation output,
                              QuantizedActivation identity = {}) {
  const auto weight = conv.weight.to(at::kFloat).contiguous();
  Int8Conv q;
  q.weight_scales = (weight.abs().amax({1, 2, 3}) / 127.f).clamp_min(1e-12f);
  q.weight = (weight / q.weight_scales.view({-1, 1, 1, 1})).round_().clamp_(-127, 127).to(at::kChar);
  q.input = std::move(input);
  q.output = std::move(output);
  q.identity = std::move(identity);
  const auto accumulator_scale = q.input.scale * q.weight_scales;
#if DNNL_VERSION_MAJOR >= 3
  q.bias = conv.bias.to(at::kFloat).contiguous();
#else
  q.bias = (conv.bias.to(at::kFloat) / accumulator_scale).contiguous();
  q.output_scales = (q.output.is_float() ? accumulator_scale : accumulator_scale / q.output.scale).contiguous();
#endif
  return q;
}

/// oneDNN's channel-blocked layout for this CPU's vector width: 16 float channels on AVX-512,
/// 8 on AVX2 and older. A block its kernels do not take sends every conv to oneDNN's
/// reference implementation, a hundred times slower.
inline dnnl::memory::format_tag onednn_blocked_layout() {
  static const auto tag = [] {
    const auto isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
    const auto avx512 = static_cast<unsigned>(dnnl_cpu_isa_avx512_core);
    return (isa & avx512) == avx512 ? dnnl::memory::format_tag::nChw16c
                                    : dnnl::memory::format_tag::nChw8c;
  }();
  return tag;
}

/// The layout of every activation between convs, by measurement on AVX-512 (FtNet, 2 cores,
/// img/s): fp32 runs best on oneDNN's channel blocks from batch 2 on (batch 16: 49.8 vs
/// 45.5 NHWC; batch 2: 35.1 vs 31.6), but on NHWC at batch 1, where the blocked kernels split
/// the work badly over threads (kernel time 31.5 vs 24.6 ms); bf16 on NHWC, where the AMX
/// kernels are (200 vs 33 img/s blocked at batch 16).
inline dnnl::memory::format_tag onednn_activation_layout(at::ScalarType dtype, int64_t batch) {
  return dtype == at::kBFloat16 || batch == 1 ? dnnl::memory::format_tag::nhwc
                                              : onednn_blocked_layout();
}

class OnednnBackbone {
 public:
  /// `stem` and `blocks` as built for the onednn_direct backend: folded weights in `dtype`
  /// (any strides), fp32 bias. With `int8` (dtype float32): every conv in int8 with those
  /// activation ranges, and the residual stream in u8 between blocks; the last block's output
  /// stays float32, for the head.
  OnednnBackbone(ConvBn stem, std::vector<ResidualBlockPlan> blocks, at::ScalarType dtype,
                 const Int8Calibration* int8 = nullptr)
      : engine_(dnnl::engine::kind::cpu, 0), data_type_(to_onednn(dtype)), int8_(int8 != nullptr) {
    TORCH_CHECK(!int8_ || dtype == at::kFloat, "int8 convs run beside float32, not ", dtype);
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

  /// The trunk's unpooled map (B, C, h, w), channels_last, in the model's dtype.
  at::Tensor run(const at::Tensor& images) const {
    const auto input = images.to(at::TensorOptions().dtype(at::kFloat).device(at::kCPU)).contiguous();
    const auto compiled = compiled_for(input.sizes().vec());
    dnnl::stream stream(engine_);
    const auto bytes = static_cast<int64_t>(std::max<size_t>(compiled->scratchpad_bytes, 1));
    const auto scratchpad = at::empty({bytes}, at::kByte);
    const Run context{stream, memory(dnnl::memory::desc({bytes}, dnnl::memory::data_type::u8,
                                                        dnnl::memory::format_tag::a),
                                     scratchpad.data_ptr())};

    Activation x = convert(compiled->input_conversion, memory(compiled->input, input.data_ptr()), context);
    x = apply(compiled->stem, x, context);
    Activation pooled = new_activation(compiled->max_pool_dst);
    context.execute(compiled->max_pool, {{DNNL_ARG_SRC, memory(x)}, {DNNL_ARG_DST, memory(pooled)}});
    x = std::move(pooled);
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
    const auto dims = onednn_api::dims_of(compiled->output);
    auto map = at::empty({dims[0], dims[1], dims[2], dims[3]},
                         at::TensorOptions().dtype(scalar_type()).memory_format(at::MemoryFormat::ChannelsLast));
    context.execute(compiled->output_reorder,
                    {{DNNL_ARG_FROM, memory(x)}, {DNNL_ARG_TO, memory(compiled->output, map.data_ptr())}});
    stream.wait();
    return map;
  }

 private:
  /// One conv as given: weights and bias stay in LibTorch tensors until a shape compiles.
  struct Layer {
    ConvBn conv;
    bool sum = false;  // relu(conv(x) + b + dst): the residual add
    std::optional<Int8Conv> int8;
    // Weights already reordered for some shape, keyed by nothing but their layout: shapes
    // whose kernels want the same layout share one copy.
    mutable std::vector<dnnl::memory> packed_weights;
  };

  struct Block {
    std::vector<Layer> convs;
    std::optional<Layer> downsample;
    // int8: the block's u8 input, and whether its identity is that input in float32 (the
    // last block's, without a shortcut conv).
    QuantizedActivation input;
    bool float_identity = false;
  };

  /// A reorder of an activation; where it converts between float32 and int8, with its scale.
  struct Conversion {
    dnnl::reorder primitive;
    dnnl::memory::desc dst;
    std::unordered_map<int, dnnl::memory> scales;  // oneDNN 3.x (see add_scales)
  };

  /// A conv compiled for one input shape.
  struct CompiledConv {
    dnnl::convolution_forward primitive;
    dnnl::memory::desc src, dst;
    dnnl::memory weights, bias;
    std::unordered_map<int, dnnl::memory> scales;  // int8 on oneDNN 3.x (see add_scales)
  };

  struct CompiledBlock {
    std::vector<CompiledConv> convs;
    std::optional<CompiledConv> downsample;
    std::optional<Conversion> dequantize;  // int8: the u8 input to a float32 identity
  };

  /// Every primitive of one input shape, with the weights their kernels want.
  struct Compiled {
    std::vector<int64_t> input_shape;
    dnnl::memory::desc input;  // dense NCHW float, as `run` passes it
    Conversion input_conversion;  // to the stem's layout (int8: quantised to s8)
    CompiledConv stem;
    dnnl::pooling_forward max_pool;
    dnnl::memory::desc max_pool_dst;
    std::vector<CompiledBlock> blocks;
    dnnl::memory::desc output;  // NHWC: LibTorch's channels_last, as the head reads it
    dnnl::reorder output_reorder;
    size_t scratchpad_bytes = 0;
  };

  /// An activation: a LibTorch byte buffer (so LibTorch's allocator owns it) and its layout.
  struct Activation {
    at::Tensor storage;
    dnnl::memory::desc desc;
  };

  /// What every primitive of one forward shares: the stream and one scratchpad buffer, sized
  /// for the largest need (user-managed scratchpads also make concurrent forwards safe).
  struct Run {
    dnnl::stream& stream;
    dnnl::memory scratchpad;

    void execute(const dnnl::primitive& primitive,
                 std::unordered_map<int, dnnl::memory> arguments) const {
      arguments.emplace(DNNL_ARG_SCRATCHPAD, scratchpad);
      primitive.execute(stream, arguments);
    }
  };

  static dnnl::memory::data_type to_onednn(at::ScalarType dtype) {
    switch (dtype) {
      case at::kFloat: return dnnl::memory::data_type::f32;
      case at::kBFloat16: return dnnl::memory::data_type::bf16;
      case at::kChar: return dnnl::memory::data_type::s8;
      default: TORCH_CHECK(false, "the direct oneDNN backend runs float32 or bfloat16, not ", dtype);
    }
  }

  at::ScalarType scalar_type() const {
    return data_type_ == dnnl::memory::data_type::bf16 ? at::kBFloat16 : at::kFloat;
  }

  static dnnl::memory::dims to_dims(at::IntArrayRef values) {
    return dnnl::memory::dims(values.begin(), values.end());
  }

  /// A tensor's layout as oneDNN sees it: sizes, strides and element type.
  static dnnl::memory::desc tensor_desc(const at::Tensor& tensor) {
    return dnnl::memory::desc(to_dims(tensor.sizes()), to_onednn(tensor.scalar_type()),
                              to_dims(tensor.strides()));
  }

  /// Grouped weights (O, I/g, kh, kw) seen as oneDNN's (g, O/g, I/g, kh, kw).
  static dnnl::memory::desc weights_desc(const at::Tensor& weight, int64_t groups) {
    if (groups == 1) return tensor_desc(weight);
    auto dims = to_dims(weight.sizes());
    auto strides = to_dims(weight.strides());
    dims[0] /= groups;
    dims.insert(dims.begin(), groups);
    strides.insert(strides.begin(), strides[0] * dims[1]);
    return dnnl::memory::desc(dims, to_onednn(weight.scalar_type()), strides);
  }

  static Layer make_layer(ConvBn conv, bool sum) {
    // make_conv_bn folds BatchNorm into a float bias for this backend.
    TORCH_INTERNAL_ASSERT(conv.bias.defined() && conv.bias.scalar_type() == at::kFloat);
    Layer layer;
    layer.conv = std::move(conv);
    layer.sum = sum;
    return layer;
  }

  dnnl::memory memory(const dnnl::memory::desc& desc, void* data) const {
    return dnnl::memory(desc, engine_, data);
  }
  dnnl::memory memory(const Activation& activation) const {
    return memory(activation.desc, activation.storage.data_ptr());
  }

  Activation new_activation(const dnnl::memory::desc& desc) const {
    return {at::empty({static_cast<int64_t>(desc.get_size())}, at::kByte), desc};
  }

  /// int8 runs every activation in NHWC, where oneDNN's VNNI and AMX int8 kernels are.
  dnnl::memory::desc activation_desc(const dnnl::memory::dims& dims,
                                     std::optional<dnnl::memory::data_type> type = std::nullopt) const {
    return dnnl::memory::desc(dims, type.value_or(data_type_),
                              int8_ ? dnnl::memory::format_tag::nhwc
                                    : onednn_activation_layout(scalar_type(), dims[0]));
  }

  dnnl::memory scale_memory(const at::Tensor& scales) const {
    return memory(dnnl::memory::desc({scales.numel()}, dnnl::memory::data_type::f32,
                                     dnnl::memory::format_tag::a),
                  scales.data_ptr());
  }

  /// Output size and the right padding that makes oneDNN's size equation hold (PyTorch
  /// pads symmetrically and floors; oneDNN wants the padding that is actually read).
  struct Window {
    int64_t output = 0;
    int64_t padding_right = 0;
  };
  static Window window(int64_t input, int64_t kernel, int64_t stride, int64_t padding,
                       int64_t dilation) {
    const int64_t extent = dilation * (kernel - 1) + 1;
    Window out;
    out.output = (input + 2 * padding - extent) / stride + 1;
    out.padding_right = (out.output - 1) * stride + extent - input - padding;
    return out;
  }

  /// `any_source`: let oneDNN pick the input layout (the stem, whose 3 channels the
  /// activation layout may not suit).
  CompiledConv compile(const Layer& layer, const dnnl::memory::dims& src_dims,
                       size_t& scratchpad_bytes, bool any_source = false) const {
    const auto& conv = layer.conv;
    const auto& weight = conv.weight;
    dnnl::memory::dims dst_dims{src_dims[0], weight.size(0), 0, 0};
    dnnl::memory::dims strides, dilates, padding_left, padding_right;
    for (size_t axis = 0; axis < 2; ++axis) {
      const auto spatial = window(src_dims[2 + axis], weight.size(2 + axis), conv.stride[axis],
                                  conv.padding[axis], conv.dilation[axis]);
      dst_dims[2 + axis] = spatial.output;
      strides.push_back(conv.stride[axis]);
      dilates.push_back(conv.dilation[axis] - 1);  // oneDNN counts the gaps
      padding_left.push_back(conv.padding[axis]);
      padding_right.push_back(spatial.padding_right);
    }
    const auto& int8 = layer.int8;
    const auto& stored_weight = int8 ? int8->weight : weight;
    const auto& bias = int8 ? int8->bias : conv.bias;
    const auto user_weights = weights_desc(stored_weight, conv.groups);
    const auto any_weights = dnnl::memory::desc(onednn_api::dims_of(user_weights),
                                                to_onednn(stored_weight.scalar_type()),
                                                dnnl::memory::format_tag::any);
    const auto bias_desc = tensor_desc(bias);
    CompiledConv out;
    out.src = int8         ? activation_desc(src_dims, int8->input.type)
              : any_source ? dnnl::memory::desc(src_dims, data_type_, dnnl::memory::format_tag::any)
                           : activation_desc(src_dims);
    out.dst = int8 ? activation_desc(dst_dims, int8->output.type) : activation_desc(dst_dims);

    dnnl::post_ops post_ops;
    if (layer.sum && int8) {
      const auto identity = int8->identity.type;
      onednn_api::append_sum(post_ops, int8->sum_scale(),
                             identity == int8->output.type ? dnnl::memory::data_type::undef : identity);
    } else if (layer.sum) {
      post_ops.append_sum(1.f);
    }
    if (conv.relu || layer.sum) onednn_api::append_relu(post_ops);
    dnnl::primitive_attr attributes;
    attributes.set_post_ops(post_ops);
    attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (int8) {
      const bool scaled_output = !int8->output.is_float();
      onednn_api::set_int8_scales(attributes, conv.groups, scaled_output, int8->output_scales);
      onednn_api::add_scales(out.scales, DNNL_ARG_SRC, scale_memory(int8->input.scale));
      onednn_api::add_scales(out.scales, DNNL_ARG_WEIGHTS, scale_memory(int8->weight_scales));
      if (scaled_output) onednn_api::add_scales(out.scales, DNNL_ARG_DST, scale_memory(int8->output.scale));
    }
    const auto primitive_desc = onednn_api::convolution_inference(
        engine_, out.src, any_weights, bias_desc, out.dst, strides, dilates, padding_left,
        padding_right, attributes);
    out.primitive = dnnl::convolution_forward(primitive_desc);
    out.src = primitive_desc.src_desc();
    scratchpad_bytes = std::max(scratchpad_bytes, primitive_desc.scratchpad_desc().get_size());
    out.weights = packed_weights(layer, user_weights, primitive_desc.weights_desc());
    out.bias = memory(bias_desc, bias.data_ptr());
    return out;
  }

  /// The layer's weights in `wanted` layout: reordered once, then shared by every shape whose
  /// kernel wants that layout.
  dnnl::memory packed_weights(const Layer& layer, const dnnl::memory::desc& user,
                              const dnnl::memory::desc& wanted) const {
    for (const auto& packed : layer.packed_weights) {
      if (packed.get_desc() == wanted) return packed;
    }
    dnnl::memory packed(wanted, engine_);  // owned by oneDNN, freed with the last handle
    dnnl::stream stream(engine_);
    auto source = memory(user, (layer.int8 ? layer.int8->weight : layer.conv.weight).data_ptr());
    dnnl::reorder(source, packed).execute(stream, source, packed);
    stream.wait();
    layer.packed_weights.push_back(packed);
    return packed;
  }

  dnnl::pooling_forward compile_pool(dnnl::algorithm algorithm, const dnnl::memory::desc& src,
                                     const dnnl::memory::desc& dst, int64_t kernel_h,
                                     int64_t kernel_w, int64_t stride, int64_t padding,
                                     size_t& scratchpad_bytes) const {
    const auto src_dims = onednn_api::dims_of(src);
    const auto dst_dims = onednn_api::dims_of(dst);
    dnnl::memory::dims padding_right;
    for (size_t axis = 0; axis < 2; ++axis) {
      const auto spatial = window(src_dims[2 + axis], axis == 0 ? kernel_h : kernel_w, stride,
                                  padding, /*dilation=*/1);
      TORCH_INTERNAL_ASSERT(spatial.output == dst_dims[2 + axis]);
      padding_right.push_back(spatial.padding_right);
    }
    dnnl::primitive_attr attributes;
    attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const auto primitive_desc = onednn_api::pooling_inference(
        engine_, algorithm, src, dst, {stride, stride}, {kernel_h, kernel_w}, {padding, padding},
        padding_right, attributes);
    scratchpad_bytes = std::max(scratchpad_bytes, primitive_desc.scratchpad_desc().get_size());
    return dnnl::pooling_forward(primitive_desc);
  }

  std::shared_ptr<const Compiled> compile(const std::vector<int64_t>& input_shape) const {
    auto out = std::make_shared<Compiled>();
    out->input_shape = input_shape;
    size_t& scratchpad = out->scratchpad_bytes;
    out->stem = compile(stem_, to_dims(input_shape), scratchpad, /*any_source=*/true);
    out->input = dnnl::memory::desc(to_dims(input_shape), dnnl::memory::data_type::f32,
                                    dnnl::memory::format_tag::nchw);
    out->input_conversion =
        conversion(out->input, out->stem.src, stem_.int8 ? stem_.int8->input.scale : at::Tensor());

    // torchvision's max pool: 3x3, stride 2, padding 1 (int8: u8 in, u8 out).
    auto dims = onednn_api::dims_of(out->stem.dst);
    for (size_t axis = 2; axis < 4; ++axis) dims[axis] = window(dims[axis], 3, 2, 1, 1).output;
    out->max_pool_dst = activation_desc(dims, onednn_api::data_type_of(out->stem.dst));
    out->max_pool = compile_pool(dnnl::algorithm::pooling_max, out->stem.dst, out->max_pool_dst,
                                 3, 3, 2, 1, scratchpad);

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
    out->output = dnnl::memory::desc(dims, data_type_, dnnl::memory::format_tag::nhwc);
    out->output_reorder = dnnl::reorder(
        dnnl::reorder::primitive_desc(engine_, activation_desc(dims), engine_, out->output));
    return out;
  }

  /// The primitives for this input shape, compiled on first sight; like PrepackedConvCache,
  /// only the most recent few shapes are kept.
  std::shared_ptr<const Compiled> compiled_for(const std::vector<int64_t>& input_shape) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& compiled : compiled_) {
      if (compiled->input_shape == input_shape) return compiled;
    }
    if (compiled_.size() == PrepackedConvCache::kMaxShapes) compiled_.erase(compiled_.begin());
    compiled_.push_back(compile(input_shape));
    return compiled_.back();
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

  /// A reorder from `from` to `to`; where one of them is int8, `scale` is its scale.
  Conversion conversion(const dnnl::memory::desc& from, const dnnl::memory::desc& to,
                        const at::Tensor& scale = {}) const {
    Conversion out;
    out.dst = to;
    if (!scale.defined()) {
      out.primitive = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, from, engine_, to));
      return out;
    }
    const int scaled = onednn_api::data_type_of(from) == dnnl::memory::data_type::f32 ? DNNL_ARG_DST : DNNL_ARG_SRC;
    out.primitive = dnnl::reorder(dnnl::reorder::primitive_desc(
        engine_, from, engine_, to, onednn_api::scaling_reorder(scaled, scale)));
    onednn_api::add_scales(out.scales, scaled, scale_memory(scale));
    return out;
  }

  Activation convert(const Conversion& conversion, const dnnl::memory& src, const Run& context) const {
    Activation dst = new_activation(conversion.dst);
    auto arguments = conversion.scales;
    arguments.insert({{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, memory(dst)}});
    context.execute(conversion.primitive, std::move(arguments));
    return dst;
  }

  /// Runs one conv on `src`; into `accumulate` (the residual sum) when given, else a new buffer.
  Activation apply(const CompiledConv& conv, const Activation& src, const Run& context,
                   Activation* accumulate = nullptr) const {
    // The sum reads the identity in its own type (the post-op says which) from the same bytes.
    Activation dst = accumulate != nullptr ? Activation{accumulate->storage, conv.dst}
                                           : new_activation(conv.dst);
    auto arguments = conv.scales;
    arguments.insert({{DNNL_ARG_SRC, memory(src)},
                      {DNNL_ARG_WEIGHTS, conv.weights},
                      {DNNL_ARG_BIAS, conv.bias},
                      {DNNL_ARG_DST, memory(dst)}});
    context.execute(conv.primitive, std::move(arguments));
    return dst;
  }

  dnnl::engine engine_;
  dnnl::memory::data_type data_type_;
  bool int8_ = false;  // the blocks' convs in int8
  Layer stem_;
  std::vector<Block> blocks_;
  mutable std::mutex mutex_;
  mutable std::vector<std::shared_ptr<const Compiled>> compiled_;  // oldest first
};

}  // namespace reidnet::detail
