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
/// descriptor's dims became get_dims().
namespace onednn_api {

inline dnnl::memory::dims dims_of(const dnnl::memory::desc& desc) {
#if DNNL_VERSION_MAJOR >= 3
  return desc.get_dims();
#else
  return desc.dims();
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

}  // namespace onednn_api

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
  /// (any strides), fp32 bias.
  OnednnBackbone(ConvBn stem, std::vector<ResidualBlockPlan> blocks, at::ScalarType dtype)
      : engine_(dnnl::engine::kind::cpu, 0), data_type_(to_onednn(dtype)) {
    stem_ = make_layer(std::move(stem), /*sum=*/false);
    for (auto& block : blocks) {
      Block layers;
      for (size_t k = 0; k < block.convs.size(); ++k) {
        // The block's last conv adds the identity (already in its output buffer), then ReLU.
        const bool last = k + 1 == block.convs.size();
        layers.convs.push_back(make_layer(std::move(block.convs[k]), last));
      }
      if (block.has_downsample) layers.downsample = make_layer(std::move(block.downsample), false);
      blocks_.push_back(std::move(layers));
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

    Activation x = new_activation(compiled->stem.src);
    context.execute(compiled->input_reorder,
                    {{DNNL_ARG_FROM, memory(compiled->input, input.data_ptr())},
                     {DNNL_ARG_TO, memory(x)}});
    x = apply(compiled->stem, x, context);
    Activation pooled = new_activation(compiled->max_pool_dst);
    context.execute(compiled->max_pool, {{DNNL_ARG_SRC, memory(x)}, {DNNL_ARG_DST, memory(pooled)}});
    x = std::move(pooled);
    for (const auto& block : compiled->blocks) {
      // The last conv accumulates into the identity's buffer: when that is `x` itself, `x`
      // is no longer needed by then (the first conv has read it).
      Activation identity = block.downsample ? apply(*block.downsample, x, context) : x;
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
    // Weights already reordered for some shape, keyed by nothing but their layout: shapes
    // whose kernels want the same layout share one copy.
    mutable std::vector<dnnl::memory> packed_weights;
  };

  struct Block {
    std::vector<Layer> convs;
    std::optional<Layer> downsample;
  };

  /// A conv compiled for one input shape.
  struct CompiledConv {
    dnnl::convolution_forward primitive;
    dnnl::memory::desc src, dst;
    dnnl::memory weights, bias;
  };

  struct CompiledBlock {
    std::vector<CompiledConv> convs;
    std::optional<CompiledConv> downsample;
  };

  /// Every primitive of one input shape, with the weights their kernels want.
  struct Compiled {
    std::vector<int64_t> input_shape;
    dnnl::memory::desc input;  // dense NCHW float, as `run` passes it
    dnnl::reorder input_reorder;
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

  dnnl::memory::desc activation_desc(const dnnl::memory::dims& dims) const {
    return dnnl::memory::desc(dims, data_type_, onednn_activation_layout(scalar_type(), dims[0]));
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
    const auto user_weights = weights_desc(weight, conv.groups);
    const auto any_weights = dnnl::memory::desc(onednn_api::dims_of(user_weights), data_type_,
                                                dnnl::memory::format_tag::any);
    const auto bias_desc = tensor_desc(conv.bias);
    CompiledConv out;
    out.src = any_source ? dnnl::memory::desc(src_dims, data_type_, dnnl::memory::format_tag::any)
                         : activation_desc(src_dims);
    out.dst = activation_desc(dst_dims);

    dnnl::post_ops post_ops;
    if (layer.sum) post_ops.append_sum(1.f);
    if (conv.relu || layer.sum) onednn_api::append_relu(post_ops);
    dnnl::primitive_attr attributes;
    attributes.set_post_ops(post_ops);
    attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const auto primitive_desc = onednn_api::convolution_inference(
        engine_, out.src, any_weights, bias_desc, out.dst, strides, dilates, padding_left,
        padding_right, attributes);
    out.primitive = dnnl::convolution_forward(primitive_desc);
    out.src = primitive_desc.src_desc();
    scratchpad_bytes = std::max(scratchpad_bytes, primitive_desc.scratchpad_desc().get_size());
    out.weights = packed_weights(layer, user_weights, primitive_desc.weights_desc());
    out.bias = memory(bias_desc, conv.bias.data_ptr());
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
    auto source = memory(user, layer.conv.weight.data_ptr());
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
    out->input_reorder =
        dnnl::reorder(dnnl::reorder::primitive_desc(engine_, out->input, engine_, out->stem.src));

    // torchvision's max pool: 3x3, stride 2, padding 1.
    auto dims = onednn_api::dims_of(out->stem.dst);
    for (size_t axis = 2; axis < 4; ++axis) dims[axis] = window(dims[axis], 3, 2, 1, 1).output;
    out->max_pool_dst = activation_desc(dims);
    out->max_pool = compile_pool(dnnl::algorithm::pooling_max, out->stem.dst, out->max_pool_dst,
                                 3, 3, 2, 1, scratchpad);

    for (const auto& block : blocks_) {
      CompiledBlock compiled;
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

  /// Runs one conv on `src`; into `accumulate` (the residual sum) when given, else a new buffer.
  Activation apply(const CompiledConv& conv, const Activation& src, const Run& context,
                   Activation* accumulate = nullptr) const {
    Activation dst = accumulate != nullptr ? *accumulate : new_activation(conv.dst);
    context.execute(conv.primitive, {{DNNL_ARG_SRC, memory(src)},
                                     {DNNL_ARG_WEIGHTS, conv.weights},
                                     {DNNL_ARG_BIAS, conv.bias},
                                     {DNNL_ARG_DST, memory(dst)}});
    return dst;
  }

  dnnl::engine engine_;
  dnnl::memory::data_type data_type_;
  Layer stem_;
  std::vector<Block> blocks_;
  mutable std::mutex mutex_;
  mutable std::vector<std::shared_ptr<const Compiled>> compiled_;  // oldest first
};

}  // namespace reidnet::detail
