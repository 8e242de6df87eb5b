#pragma once
// What the CPU inference trunks run on oneDNN's C++ API directly share (the `onednn_direct`
// backend of reidnet/inference/inference.hpp): the oneDNN 2.x/3.x spellings, int8 scales,
// activation layouts, and OnednnTrunk, which compiles convs and pools per input shape. Built
// only where REIDNET_WITH_ONEDNN is defined: CMake defines it when LibTorch itself runs on the
// system's oneDNN (2.x or 3.x), so that the process holds one copy.
//
// Against LibTorch's prepacked conv op this gains, per forward:
// - weights reordered once into the layout each conv kernel wants (LibTorch 1.13's op
//   re-reorders most channels_last weights on every call: ~6 of 33 ms at batch 1);
// - residual adds and activations fused into the convs (`sum` and eltwise post-ops);
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

/// An activation after the conv (eltwise_relu, eltwise_logistic: parameterless ones).
inline void append_eltwise(dnnl::post_ops& post_ops, dnnl::algorithm algorithm) {
#if DNNL_VERSION_MAJOR >= 3
  post_ops.append_eltwise(algorithm, 0.f, 0.f);
#else
  post_ops.append_eltwise(1.f, algorithm, 0.f, 0.f);
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

/// Calibrated ranges, read in the order the trunk's float run measured them
/// (Int8Calibration::activation_max); the int8 trunks quantise their layers in that order.
class Int8RangeReader {
 public:
  explicit Int8RangeReader(const Int8Calibration& ranges)
      : input_max_(ranges.input_max.item<float>()), values_(ranges.activation_max.contiguous()) {}

  /// The normalised picture, in s8.
  QuantizedActivation input() const { return QuantizedActivation::s8(input_max_); }
  QuantizedActivation u8() { return QuantizedActivation::u8(next()); }
  QuantizedActivation s8() { return QuantizedActivation::s8(next()); }
  /// A point measured where the int8 trunk stays float32.
  void skip() { next(); }
  /// Every range was read: the trunk and its calibration agree.
  void expect_end() const {
    TORCH_CHECK(next_ == values_.numel(), "int8 ranges: ", values_.numel(), " measured, ", next_,
                " read by the trunk");
  }

 private:
  float next() {
    TORCH_CHECK(next_ < values_.numel(), "int8 ranges: the trunk reads more than the ",
                values_.numel(), " measured");
    return values_[next_++].item<float>();
  }

  float input_max_;
  at::Tensor values_;
  int64_t next_ = 0;
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

/// A backbone's trunk on oneDNN's API: its primitives are compiled per input shape, from
/// layers whose weights stay in LibTorch tensors until then.
class OnednnTrunk {
 public:
  virtual ~OnednnTrunk() = default;

  /// The trunk's unpooled map (B, C, h, w), channels_last, in the model's dtype.
  virtual at::Tensor run(const at::Tensor& images) const = 0;

 protected:
  /// int8 keeps every activation in NHWC.
  OnednnTrunk(at::ScalarType dtype, bool int8)
      : engine_(dnnl::engine::kind::cpu, 0), data_type_(to_onednn(dtype)), int8_(int8) {
    TORCH_CHECK(!int8_ || dtype == at::kFloat, "int8 convs run beside float32, not ", dtype);
  }

  /// One conv as given: weights and bias stay in LibTorch tensors until a shape compiles.
  struct Layer {
    ConvBn conv;
    bool sum = false;  // relu(conv(x) + b + dst): the residual add
    // After the conv (and the sum): eltwise_relu, eltwise_logistic, or undef for none.
    dnnl::algorithm activation = dnnl::algorithm::undef;
    std::optional<Int8Conv> int8;
    // Weights already reordered for some shape, keyed by nothing but their layout: shapes
    // whose kernels want the same layout share one copy.
    mutable std::vector<dnnl::memory> packed_weights;
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

  /// A pool compiled for one input shape.
  struct CompiledPool {
    dnnl::pooling_forward primitive;
    dnnl::memory::desc dst;
  };

  /// A stem compiled for one input shape: its conv, then a 3x3 max pool of stride 2 and
  /// padding 1 (torchvision's ResNet and OSNet both start so).
  struct CompiledStem {
    CompiledConv conv;
    CompiledPool max_pool;
  };

  /// What every compiled shape has: the input as `run` passes it (dense NCHW float) and its
  /// conversion to the first conv's layout, the output as the head reads it (NHWC: LibTorch's
  /// channels_last) and the reorder to it, and the scratchpad its largest primitive needs.
  struct CompiledShape {
    std::vector<int64_t> input_shape;
    dnnl::memory::desc input;
    Conversion input_conversion;
    dnnl::memory::desc output;
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

  /// Runs `body` (Activation(Activation, const Run&)) on the images in the first conv's layout,
  /// and returns what it ends with as `compiled.output`.
  template <class Body>
  at::Tensor run_compiled(const CompiledShape& compiled, const at::Tensor& images, Body&& body) const {
    const auto input = images.to(at::TensorOptions().dtype(at::kFloat).device(at::kCPU)).contiguous();
    dnnl::stream stream(engine_);
    const auto bytes = static_cast<int64_t>(std::max<size_t>(compiled.scratchpad_bytes, 1));
    const auto scratchpad = at::empty({bytes}, at::kByte);
    const Run context{stream, memory(dnnl::memory::desc({bytes}, dnnl::memory::data_type::u8,
                                                        dnnl::memory::format_tag::a),
                                     scratchpad.data_ptr())};
    Activation x = convert(compiled.input_conversion, memory(compiled.input, input.data_ptr()), context);
    x = body(std::move(x), context);
    const auto dims = onednn_api::dims_of(compiled.output);
    auto map = at::empty({dims[0], dims[1], dims[2], dims[3]},
                         at::TensorOptions().dtype(scalar_type()).memory_format(at::MemoryFormat::ChannelsLast));
    context.execute(compiled.output_reorder,
                    {{DNNL_ARG_FROM, memory(x)}, {DNNL_ARG_TO, memory(compiled.output, map.data_ptr())}});
    stream.wait();
    return map;
  }

  /// The dense NCHW float input of `input_shape` and its conversion to `first_src` (int8:
  /// quantised with `scale`), and the NHWC output reorder from `last` (activation layout).
  void compile_ends(CompiledShape& out, const std::vector<int64_t>& input_shape,
                    const dnnl::memory::desc& first_src, const at::Tensor& scale,
                    const dnnl::memory::dims& last) const {
    out.input_shape = input_shape;
    out.input = dnnl::memory::desc(to_dims(input_shape), dnnl::memory::data_type::f32,
                                   dnnl::memory::format_tag::nchw);
    out.input_conversion = conversion(out.input, first_src, scale);
    out.output = dnnl::memory::desc(last, data_type_, dnnl::memory::format_tag::nhwc);
    out.output_reorder = dnnl::reorder(
        dnnl::reorder::primitive_desc(engine_, activation_desc(last), engine_, out.output));
  }

  /// The primitives for an input shape, compiled on first sight by `compile`; like
  /// PrepackedConvCache, only the most recent few shapes are kept.
  template <class Compiled, class Compile>
  std::shared_ptr<const Compiled> compiled_for(const std::vector<int64_t>& input_shape,
                                               Compile&& compile) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& compiled : compiled_) {
      if (compiled->input_shape == input_shape) return std::static_pointer_cast<const Compiled>(compiled);
    }
    if (compiled_.size() == PrepackedConvCache::kMaxShapes) compiled_.erase(compiled_.begin());
    std::shared_ptr<const Compiled> fresh = compile(input_shape);
    compiled_.push_back(fresh);
    return fresh;
  }

  static dnnl::memory::data_type to_onednn(at::ScalarType dtype) {
    switch (dtype) {
      case at::kFloat: return dnnl::memory::data_type::f32;
      case at::kBFloat16: return dnnl::memory::data_type::bf16;
      case at::kChar: return dnnl::memory::data_type::s8;
      default: TORCH_CHECK(false, "the direct oneDNN backend runs float32 or bfloat16, not ", dtype);
    }
  }

  static at::ScalarType scalar_type_of(dnnl::memory::data_type type) {
    switch (type) {
      case dnnl::memory::data_type::bf16: return at::kBFloat16;
      case dnnl::memory::data_type::u8: return at::kByte;
      case dnnl::memory::data_type::s8: return at::kChar;
      default: return at::kFloat;
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

  /// `sum`: the conv adds its destination's contents (the residual), then ReLU.
  static Layer make_layer(ConvBn conv, bool sum) {
    // make_conv_bn folds BatchNorm into a float bias for this backend.
    TORCH_INTERNAL_ASSERT(conv.bias.defined() && conv.bias.scalar_type() == at::kFloat);
    Layer layer;
    // An InstanceNorm half comes between the conv and its ReLU.
    layer.activation = (conv.relu && !conv.instance_norm) || sum ? dnnl::algorithm::eltwise_relu
                                                                 : dnnl::algorithm::undef;
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

  /// The activation layout at this batch: onednn_activation_layout's, or NHWC (int8, where
  /// oneDNN's VNNI and AMX int8 kernels are).
  dnnl::memory::format_tag activation_layout(int64_t batch) const {
    return int8_ ? dnnl::memory::format_tag::nhwc : onednn_activation_layout(scalar_type(), batch);
  }

  dnnl::memory::desc activation_desc(const dnnl::memory::dims& dims,
                                     std::optional<dnnl::memory::data_type> type = std::nullopt) const {
    return dnnl::memory::desc(dims, type.value_or(data_type_), activation_layout(dims[0]));
  }

  /// An activation (B, C, h, w) as a LibTorch tensor sharing its bytes, in its storage
  /// order: (B, C / c, h, w, c) for channel blocks of c (C rounded up: oneDNN pads the last
  /// block with zeros), (B, 1, h, w, C) for NHWC.
  at::Tensor channel_blocks(const Activation& activation) const {
    const auto dims = onednn_api::dims_of(activation.desc);
    const auto layout = activation_layout(dims[0]);
    const int64_t block = layout == dnnl::memory::format_tag::nhwc      ? dims[1]
                          : layout == dnnl::memory::format_tag::nChw16c ? 16
                                                                        : 8;
    return activation.storage.view(scalar_type_of(onednn_api::data_type_of(activation.desc)))
        .view({dims[0], (dims[1] + block - 1) / block, dims[2], dims[3], block});
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
    if (layer.activation != dnnl::algorithm::undef) onednn_api::append_eltwise(post_ops, layer.activation);
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

  /// `stem` for the dense input `input_shape`, whose layout oneDNN picks.
  CompiledStem compile_stem(const Layer& stem, const std::vector<int64_t>& input_shape,
                            size_t& scratchpad_bytes) const {
    CompiledStem out;
    out.conv = compile(stem, to_dims(input_shape), scratchpad_bytes, /*any_source=*/true);
    out.max_pool = compile_pool(dnnl::algorithm::pooling_max, out.conv.dst, 3, 2, 1, scratchpad_bytes);
    return out;
  }

  Activation run_stem(const CompiledStem& stem, const Activation& input, const Run& context) const {
    return pool(stem.max_pool, apply(stem.conv, input, context), context);
  }

  /// A square pool (PyTorch's kernel, stride and padding) whose output keeps the input's type
  /// and layout.
  CompiledPool compile_pool(dnnl::algorithm algorithm, const dnnl::memory::desc& src, int64_t kernel,
                            int64_t stride, int64_t padding, size_t& scratchpad_bytes) const {
    auto dims = onednn_api::dims_of(src);
    dnnl::memory::dims padding_right;
    for (size_t axis = 2; axis < 4; ++axis) {
      const auto spatial = window(dims[axis], kernel, stride, padding, /*dilation=*/1);
      dims[axis] = spatial.output;
      padding_right.push_back(spatial.padding_right);
    }
    CompiledPool out;
    out.dst = activation_desc(dims, onednn_api::data_type_of(src));
    dnnl::primitive_attr attributes;
    attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const auto primitive_desc = onednn_api::pooling_inference(
        engine_, algorithm, src, out.dst, {stride, stride}, {kernel, kernel}, {padding, padding},
        padding_right, attributes);
    scratchpad_bytes = std::max(scratchpad_bytes, primitive_desc.scratchpad_desc().get_size());
    out.primitive = dnnl::pooling_forward(primitive_desc);
    return out;
  }

  Activation pool(const CompiledPool& pool, const Activation& src, const Run& context) const {
    Activation dst = new_activation(pool.dst);
    context.execute(pool.primitive, {{DNNL_ARG_SRC, memory(src)}, {DNNL_ARG_DST, memory(dst)}});
    return dst;
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
  bool int8_ = false;  // the convs in int8, on NHWC activations

 private:
  mutable std::mutex mutex_;
  mutable std::vector<std::shared_ptr<const CompiledShape>> compiled_;  // oldest first
};

}  // namespace reidnet::detail
