#pragma once
/// The translation of a traced TorchScript graph (aten ops, see batch_generic_trace.hpp) into an
/// ONNX graph, one aten op at a time: each op has one rule, written to ONNX's operator
/// definitions for opsets 17 and later. An op without a rule is refused with its name and the
/// parameters around it, never exported approximately.

#include <reidnet/core/errors.hpp>

#include <ATen/core/ivalue.h>
#include <c10/util/Exception.h>
#include <onnx/onnx_pb.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace reidnet::detail {

using JitNode = torch::jit::Node;
using JitValue = torch::jit::Value;

inline int32_t onnx_element_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return onnx::TensorProto_DataType_FLOAT;
    case at::kHalf: return onnx::TensorProto_DataType_FLOAT16;
    case at::kDouble: return onnx::TensorProto_DataType_DOUBLE;
    case at::kLong: return onnx::TensorProto_DataType_INT64;
    case at::kInt: return onnx::TensorProto_DataType_INT32;
    case at::kBool: return onnx::TensorProto_DataType_BOOL;
    default: throw InputError(std::string("ONNX export: no ONNX element type for ") + c10::toString(type));
  }
}

/// Writes one ONNX graph from one traced graph. `float_type` is the element type the graph
/// computes in (float32, or float16 with casts at the input and output).
class OnnxGraphTranslator {
 public:
  OnnxGraphTranslator(onnx::GraphProto& graph, int64_t opset, at::ScalarType float_type,
                      std::map<std::string, std::string> parameter_names, std::string what)
      : graph_(graph), opset_(opset), float_type_(float_type),
        parameter_names_(std::move(parameter_names)), what_(std::move(what)) {
    register_rules();
  }

  /// Translates `traced` (one image input, one output): its input becomes `input`, its output
  /// `output`.
  void translate(const torch::jit::Graph& traced, const std::string& input, const std::string& output) {
    std::string x = input;
    if (float_type_ != at::kFloat) x = cast(x, float_type_);
    names_[traced.inputs().at(0)] = x;
    for (const JitNode* node : traced.nodes()) {
      const std::string kind = node->kind().toQualString();
      if (node->kind() == c10::prim::Constant) continue;  // read where used
      if (node->kind() == c10::prim::ListConstruct) {
        list_items_[node->output()] = {node->inputs().begin(), node->inputs().end()};
        continue;
      }
      if (node->kind() == c10::prim::ListUnpack) {
        const auto items = tensor_list(node->input(0));
        for (size_t i = 0; i < node->outputs().size(); ++i) names_[node->output(i)] = items.at(i);
        continue;
      }
      const auto rule = rules_.find(kind);
      if (rule == rules_.end()) throw InputError(unsupported(traced, node));
      try {
        rule->second(node);
      } catch (const c10::Error& failure) {
        throw InputError(where(node) + ": " + failure.what_without_backtrace());
      }
    }
    std::string y = tensor(traced.outputs().at(0));
    if (float_type_ != at::kFloat) y = cast(y, at::kFloat);
    emit("Identity", {y}, {output});
  }

  /// The ONNX operators the graph uses, with how often.
  const std::map<std::string, int64_t>& operator_counts() const { return operator_counts_; }

 private:
  using Rule = std::function<void(const JitNode*)>;

  // --- the graph being written -----------------------------------------------------------

  onnx::NodeProto* emit(const std::string& op, const std::vector<std::string>& inputs,
                        std::vector<std::string> outputs = {}) {
    auto* node = graph_.add_node();
    node->set_op_type(op);
    node->set_name(op + "_" + std::to_string(graph_.node_size()));
    for (const auto& input : inputs) node->add_input(input);
    if (outputs.empty()) outputs.push_back(fresh(op));
    for (const auto& output : outputs) node->add_output(output);
    ++operator_counts_[op];
    return node;
  }
  std::string fresh(const std::string& hint) { return hint + "_" + std::to_string(next_name_++); }
  static std::string out(const onnx::NodeProto* node, int index = 0) { return node->output(index); }

  static void attribute(onnx::NodeProto* node, const std::string& name, int64_t value) {
    auto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_INT);
    a->set_i(value);
  }
  static void attribute(onnx::NodeProto* node, const std::string& name, double value) {
    auto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_FLOAT);
    a->set_f(static_cast<float>(value));
  }
  static void attribute(onnx::NodeProto* node, const std::string& name, const std::string& value) {
    auto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_STRING);
    a->set_s(value);
  }
  static void attribute(onnx::NodeProto* node, const std::string& name, const std::vector<int64_t>& values) {
    auto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_INTS);
    for (const auto v : values) a->add_ints(v);
  }
  static void attribute(onnx::NodeProto* node, const std::string& name, const at::Tensor& value) {
    auto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_TENSOR);
    fill_tensor_proto(*a->mutable_t(), value);
  }

  static void fill_tensor_proto(onnx::TensorProto& proto, const at::Tensor& value) {
    const auto contiguous = value.contiguous().cpu();
    proto.set_data_type(onnx_element_type(contiguous.scalar_type()));
    for (const auto size : contiguous.sizes()) proto.add_dims(size);
    proto.set_raw_data(std::string(static_cast<const char*>(contiguous.data_ptr()),
                                   contiguous.numel() * contiguous.element_size()));
  }

  /// An initializer holding `value` (float tensors in the graph's float type), named after
  /// the parameter it is where it is one; each tensor is stored once.
  std::string initializer(const at::Tensor& value, const std::string& hint = "constant",
                          bool keep_type = false) {
    at::Tensor stored = value.detach();
    if (stored.is_floating_point() && !keep_type) stored = stored.to(float_type_);
    // Keyed by the tensor given (a parameter used twice is one initializer, also where the
    // graph's float type makes `stored` a new copy each time).
    std::ostringstream key;
    key << tensor_key(value) << value.scalar_type() << '/' << stored.scalar_type();
    const auto known = initializers_.find(key.str());
    if (known != initializers_.end()) return known->second;
    const auto named = parameter_names_.find(tensor_key(value));
    std::string name = named != parameter_names_.end() ? named->second : fresh(hint);
    auto* proto = graph_.add_initializer();
    fill_tensor_proto(*proto, stored);
    proto->set_name(name);
    // Keep `value` alive so that its storage address cannot be reused by another constant.
    kept_.push_back(value);
    initializers_[key.str()] = name;
    return name;
  }

  std::string int64s(const std::vector<int64_t>& values) {
    return initializer(torch::tensor(values, torch::kLong), "ints");
  }
  std::string int64_scalar(int64_t value) {
    return initializer(torch::tensor(value, torch::kLong), "int");
  }
  std::string float_scalar(double value) {
    return initializer(torch::tensor(value, torch::kFloat), "float");
  }

  std::string cast(const std::string& x, at::ScalarType type) {
    auto* node = emit("Cast", {x});
    attribute(node, "to", static_cast<int64_t>(onnx_element_type(type)));
    return out(node);
  }

 public:
  /// The key of a parameter tensor in `parameter_names` (see initializer).
  static std::string tensor_key(const at::Tensor& tensor) {
    std::ostringstream key;
    key << tensor.data_ptr() << tensor.sizes() << tensor.strides();
    return key.str();
  }

 private:
  // --- reading the traced graph ----------------------------------------------------------

  std::string where(const JitNode* node) const {
    return what_ + " (" + node->kind().toQualString() + ")";
  }

  /// The value of a prim::Constant (toIValue also folds some lists, which are read item by item
  /// here).
  std::optional<c10::IValue> constant(const JitValue* value) const {
    if (value->node()->kind() != c10::prim::Constant) return std::nullopt;
    const auto folded = torch::jit::toIValue(value);
    return folded ? std::optional<c10::IValue>(*folded) : std::nullopt;
  }
  bool is_none(const JitValue* value) const {
    const auto c = constant(value);
    return c && c->isNone();
  }
  int64_t int_of(const JitNode* node, size_t i) const {
    const auto c = constant(node->input(i));
    if (!c || !c->isInt()) throw InputError(where(node) + ": argument " + std::to_string(i) + " must be a constant integer");
    return c->toInt();
  }
  double float_of(const JitNode* node, size_t i) const {
    const auto c = constant(node->input(i));
    if (!c || !(c->isDouble() || c->isInt())) throw InputError(where(node) + ": argument " + std::to_string(i) + " must be a constant number");
    return c->isDouble() ? c->toDouble() : static_cast<double>(c->toInt());
  }
  bool bool_of(const JitNode* node, size_t i) const {
    const auto c = constant(node->input(i));
    if (!c || !c->isBool()) throw InputError(where(node) + ": argument " + std::to_string(i) + " must be a constant flag");
    return c->toBool();
  }
  std::vector<int64_t> ints_of(const JitNode* node, size_t i) const {
    const auto* value = node->input(i);
    if (const auto c = constant(value)) {
      if (c->isIntList()) return c->toIntVector();
      if (c->isInt()) return {c->toInt()};
    }
    const auto items = list_items_.find(value);
    if (items != list_items_.end()) {
      std::vector<int64_t> values;
      for (const auto* item : items->second) {
        const auto c = constant(item);
        if (!c || !c->isInt()) throw InputError(where(node) + ": argument " + std::to_string(i) + " must be constant sizes");
        values.push_back(c->toInt());
      }
      return values;
    }
    throw InputError(where(node) + ": argument " + std::to_string(i) + " must be constant sizes");
  }
  std::string string_of(const JitNode* node, size_t i) const {
    const auto c = constant(node->input(i));
    if (!c || !c->isString()) throw InputError(where(node) + ": argument " + std::to_string(i) + " must be a constant string");
    return c->toStringRef();
  }

  static c10::TensorTypePtr tensor_type(const JitValue* value) { return value->type()->cast<c10::TensorType>(); }
  int64_t rank(const JitValue* value) const {
    const auto type = tensor_type(value);
    const auto dims = type ? type->dim() : c10::nullopt;
    TORCH_CHECK(dims.has_value(), "ONNX export: no rank recorded for ", value->debugName());
    return static_cast<int64_t>(*dims);
  }
  /// Sizes as traced; a dimension that follows the batch size is unknown (see
  /// batch_generic_trace.hpp).
  std::vector<std::optional<int64_t>> sizes_of(const JitValue* value) const {
    const auto type = tensor_type(value);
    const auto sizes = type ? type->sizes().sizes() : c10::nullopt;
    TORCH_CHECK(sizes.has_value(), "ONNX export: no sizes recorded for ", value->debugName());
    std::vector<std::optional<int64_t>> known;  // c10::optional is not std::optional in 1.x
    for (const auto& size : *sizes) known.push_back(size ? std::optional<int64_t>(*size) : std::nullopt);
    return known;
  }
  /// A size that does not follow the batch size.
  int64_t static_size(const JitNode* node, const JitValue* value, int64_t dim) const {
    const auto size = sizes_of(value).at(dim);
    if (!size) {
      throw InputError(where(node) + ": needs the size of dimension " + std::to_string(dim) +
                       ", which follows the batch size, as a constant");
    }
    return *size;
  }
  /// The sizes of a value none of whose dimensions follows the batch size (a weight).
  std::vector<int64_t> static_sizes(const JitNode* node, const JitValue* value) const {
    std::vector<int64_t> sizes;
    for (int64_t d = 0; d < rank(value); ++d) sizes.push_back(static_size(node, value, d));
    return sizes;
  }
  at::ScalarType scalar_type(const JitValue* value) const {
    const auto type = tensor_type(value);
    if (type && type->scalarType()) return *type->scalarType();
    if (value->type()->kind() == c10::TypeKind::IntType) return at::kLong;
    if (value->type()->kind() == c10::TypeKind::FloatType) return at::kDouble;
    if (value->type()->kind() == c10::TypeKind::BoolType) return at::kBool;
    TORCH_CHECK(false, "ONNX export: no element type recorded for ", value->debugName());
  }
  static int64_t normalized_dim(int64_t dim, int64_t rank) { return dim < 0 ? dim + rank : dim; }

  /// The ONNX tensor of a value: what a rule produced, or an initializer of its constant.
  /// A scalar constant takes the element type of `like` (the other operand).
  std::string tensor(const JitValue* value, const JitValue* like = nullptr) {
    const auto named = names_.find(value);
    if (named != names_.end()) return named->second;
    const auto c = constant(value);
    TORCH_CHECK(c.has_value(), "ONNX export: ", value->debugName(), " was not produced by a translated node");
    if (c->isTensor()) return initializer(c->toTensor());
    const bool like_float = like && !(like->type()->kind() == c10::TypeKind::IntType) &&
                            (!tensor_type(like) || at::isFloatingType(scalar_type(like)));
    if (c->isDouble() || (c->isInt() && like_float)) {
      return float_scalar(c->isDouble() ? c->toDouble() : static_cast<double>(c->toInt()));
    }
    if (c->isInt()) return int64_scalar(c->toInt());
    if (c->isBool()) return initializer(torch::tensor(c->toBool()), "flag");
    if (c->isIntList()) return int64s(c->toIntVector());
    TORCH_CHECK(false, "ONNX export: cannot store the constant ", value->debugName(), " as a tensor");
  }
  std::vector<std::string> tensor_list(const JitValue* list) {
    const auto produced = produced_lists_.find(list);
    if (produced != produced_lists_.end()) return produced->second;
    const auto items = list_items_.find(list);
    TORCH_CHECK(items != list_items_.end(), "ONNX export: the list ", list->debugName(), " is not known");
    std::vector<std::string> names;
    for (const auto* item : items->second) names.push_back(tensor(item));
    return names;
  }
  /// A list of sizes as a 1-D int64 tensor; items computed from the batch size are joined in.
  std::string shape_tensor(const JitValue* list) {
    if (const auto c = constant(list)) return int64s(c->toIntVector());
    const auto items = list_items_.find(list);
    TORCH_CHECK(items != list_items_.end(), "ONNX export: the sizes ", list->debugName(), " are not a list");
    std::vector<std::string> parts;
    for (const auto* item : items->second) {
      if (const auto c = constant(item)) {
        parts.push_back(int64s({c->toInt()}));
      } else {
        parts.push_back(unsqueeze(tensor(item), {0}));
      }
    }
    return concat(parts, 0);
  }
  std::string concat(const std::vector<std::string>& parts, int64_t axis) {
    auto* node = emit("Concat", parts);
    attribute(node, "axis", axis);
    return out(node);
  }
  std::string unsqueeze(const std::string& x, const std::vector<int64_t>& axes) {
    return out(emit("Unsqueeze", {x, int64s(axes)}));
  }
  std::string squeeze(const std::string& x, const std::vector<int64_t>& axes) {
    return out(emit("Squeeze", {x, int64s(axes)}));
  }
  std::string slice(const std::string& x, int64_t axis, int64_t start, int64_t end, int64_t step = 1) {
    return out(emit("Slice", {x, int64s({start}), int64s({end}), int64s({axis}), int64s({step})}));
  }
  /// ReduceMean, ReduceL2, ReduceMax and ReduceMin take their axes as an attribute up to opset 17 and as
  /// an input from 18 on (ReduceSum from 13 on).
  std::string reduce(const std::string& op, const std::string& x, const std::vector<int64_t>& axes,
                     bool keepdims) {
    const bool axes_input = op == "ReduceSum" || opset_ >= 18;
    std::vector<std::string> inputs{x};
    if (axes_input && !axes.empty()) inputs.push_back(int64s(axes));
    auto* node = emit(op, inputs);
    if (!axes_input && !axes.empty()) attribute(node, "axes", axes);
    attribute(node, "keepdims", static_cast<int64_t>(keepdims));
    return out(node);
  }

  void set(const JitValue* value, const std::string& name) { names_[value] = name; }
  void alias(const JitNode* node) { set(node->output(), tensor(node->input(0))); }
  void unary(const JitNode* node, const std::string& op) {
    set(node->output(), out(emit(op, {tensor(node->input(0))})));
  }
  void binary(const JitNode* node, const std::string& op) {
    const auto* a = node->input(0);
    const auto* b = node->input(1);
    set(node->output(), out(emit(op, {tensor(a, b), tensor(b, a)})));
  }

  std::string unsupported(const torch::jit::Graph& traced, const JitNode* node) const {
    // Where in the model: the parameters used last before the op and first after it.
    std::string before, after;
    bool passed = false;
    for (const JitNode* other : traced.nodes()) {
      if (other == node) {
        passed = true;
        continue;
      }
      for (const auto* input : other->inputs()) {
        const auto c = constant(input);
        if (!c || !c->isTensor()) continue;
        const auto named = parameter_names_.find(tensor_key(c->toTensor()));
        if (named == parameter_names_.end()) continue;
        if (!passed) before = named->second;
        if (passed && after.empty()) after = named->second;
      }
      if (passed && !after.empty()) break;
    }
    std::string text = what_ + ": the ONNX exporter has no rule for " + node->kind().toQualString();
    if (!before.empty() || !after.empty()) {
      text += ", called in the model";
      if (!before.empty()) text += " after " + before;
      if (!after.empty()) text += std::string(before.empty() ? "" : " and") + " before " + after;
    }
    return text + "; no file was written";
  }

  // --- the rules -------------------------------------------------------------------------

  void convolution(const JitNode* node, size_t stride, size_t padding, size_t dilation, size_t groups,
                   std::optional<size_t> transposed) {
    if (transposed && bool_of(node, *transposed)) {
      throw InputError(where(node) + ": transposed convolutions have no rule");
    }
    std::vector<std::string> inputs{tensor(node->input(0)), tensor(node->input(1))};
    if (!is_none(node->input(2))) inputs.push_back(tensor(node->input(2)));
    const auto kernel = static_sizes(node, node->input(1));
    const auto spatial = static_cast<size_t>(kernel.size() - 2);
    const auto expand = [&](std::vector<int64_t> values) {
      if (values.size() == 1) values.assign(spatial, values.front());
      return values;
    };
    std::vector<int64_t> pads;
    const auto dilations = expand(ints_of(node, dilation));
    const auto padding_value = constant(node->input(padding));
    if (padding_value && padding_value->isString()) {
      // "valid": none; "same": PyTorch puts the odd pixel at the end.
      pads.assign(2 * spatial, 0);
      if (padding_value->toStringRef() == "same") {
        for (size_t d = 0; d < spatial; ++d) {
          const int64_t total = dilations[d] * (kernel[2 + d] - 1);
          pads[d] = total / 2;
          pads[spatial + d] = total - total / 2;
        }
      }
    } else {
      const auto p = expand(ints_of(node, padding));
      pads = p;
      pads.insert(pads.end(), p.begin(), p.end());
    }
    auto* conv = emit("Conv", inputs);
    attribute(conv, "kernel_shape", std::vector<int64_t>(kernel.begin() + 2, kernel.end()));
    attribute(conv, "strides", expand(ints_of(node, stride)));
    attribute(conv, "pads", pads);
    attribute(conv, "dilations", dilations);
    attribute(conv, "group", int_of(node, groups));
    set(node->output(), out(conv));
  }

  std::string ones_or(const JitNode* node, size_t i, int64_t channels, double fill) {
    if (!is_none(node->input(i))) return tensor(node->input(i));
    return initializer(torch::full({channels}, fill, torch::kFloat), fill == 0 ? "zeros" : "ones");
  }

  void pool(const JitNode* node, const std::string& op, bool average) {
    // PyTorch takes one number for every spatial dimension; ONNX wants one each.
    const auto spatial = static_cast<size_t>(rank(node->input(0)) - 2);
    const auto per_dimension = [&](size_t i) {
      auto values = ints_of(node, i);
      if (values.size() == 1) values.assign(spatial, values.front());
      return values;
    };
    const auto kernel = per_dimension(1);
    const auto strides = ints_of(node, 2).empty() ? kernel : per_dimension(2);
    auto pads = per_dimension(3);
    pads.insert(pads.end(), pads.begin(), pads.end());
    auto* pool_node = emit(op, {tensor(node->input(0))});
    attribute(pool_node, "kernel_shape", kernel);
    attribute(pool_node, "strides", strides);
    attribute(pool_node, "pads", pads);
    if (average) {
      attribute(pool_node, "ceil_mode", static_cast<int64_t>(bool_of(node, 4)));
      attribute(pool_node, "count_include_pad", static_cast<int64_t>(bool_of(node, 5)));
      if (!is_none(node->input(6))) throw InputError(where(node) + ": divisor_override has no rule");
    } else {
      attribute(pool_node, "dilations", per_dimension(4));
      attribute(pool_node, "ceil_mode", static_cast<int64_t>(bool_of(node, 5)));
    }
    set(node->output(), out(pool_node));
  }

  void adaptive_pool(const JitNode* node, const std::string& global_op, const std::string& op,
                     const std::string& reduce_op) {
    const auto output_size = ints_of(node, 1);
    std::vector<int64_t> in(rank(node->input(0)), 0);
    for (size_t d = in.size() - output_size.size(); d < in.size(); ++d) {
      in[d] = static_size(node, node->input(0), static_cast<int64_t>(d));
    }
    for (size_t i = 1; i < node->outputs().size(); ++i) {
      if (node->output(i)->hasUses()) throw InputError(where(node) + ": the pooling indices have no rule");
    }
    if (std::all_of(output_size.begin(), output_size.end(), [](int64_t s) { return s == 1; })) {
      set(node->output(0), out(emit(global_op, {tensor(node->input(0))})));
      return;
    }
    const size_t first = in.size() - output_size.size();
    bool fixed_window = true;
    std::vector<int64_t> kernel;
    for (size_t d = 0; d < output_size.size(); ++d) {
      fixed_window = fixed_window && in[first + d] % output_size[d] == 0;
      kernel.push_back(in[first + d] / output_size[d]);
    }
    if (fixed_window) {
      auto* pool_node = emit(op, {tensor(node->input(0))});
      attribute(pool_node, "kernel_shape", kernel);
      attribute(pool_node, "strides", kernel);
      set(node->output(0), out(pool_node));
      return;
    }
    // PyTorch's windows [floor(i in / out), ceil((i + 1) in / out)) overlap where out does not
    // divide in: pool them one by one, a dimension at a time (exact for averages of rectangles).
    std::string x = tensor(node->input(0));
    for (size_t d = 0; d < output_size.size(); ++d) {
      const auto axis = static_cast<int64_t>(first + d);
      const int64_t size = in[axis], cells = output_size[d];
      if (size == cells) continue;
      std::vector<std::string> parts;
      for (int64_t i = 0; i < cells; ++i) {
        const int64_t start = i * size / cells, end = ((i + 1) * size + cells - 1) / cells;
        parts.push_back(reduce(reduce_op, slice(x, axis, start, end), {axis}, true));
      }
      x = concat(parts, axis);
    }
    set(node->output(0), x);
  }

  void split(const JitNode* node, const std::vector<int64_t>& sizes, int64_t axis, bool squeeze_items) {
    std::vector<std::string> outputs;
    for (size_t i = 0; i < sizes.size(); ++i) outputs.push_back(fresh("split"));
    auto* node_proto = emit("Split", {tensor(node->input(0)), int64s(sizes)}, outputs);
    attribute(node_proto, "axis", axis);
    if (squeeze_items) {
      for (auto& item : outputs) item = squeeze(item, {axis});
    }
    produced_lists_[node->output()] = outputs;
  }

  void pad(const JitNode* node, const std::string& mode, std::optional<size_t> value_index) {
    const auto torch_pads = ints_of(node, 1);
    const int64_t r = rank(node->input(0));
    std::vector<int64_t> pads(2 * r, 0);
    for (size_t i = 0; i * 2 < torch_pads.size(); ++i) {
      const int64_t dim = r - 1 - static_cast<int64_t>(i);
      pads[dim] = torch_pads[2 * i];
      pads[r + dim] = torch_pads[2 * i + 1];
    }
    std::vector<std::string> inputs{tensor(node->input(0)), int64s(pads)};
    if (mode == "constant") {
      const double value = value_index && !is_none(node->input(*value_index)) ? float_of(node, *value_index) : 0.0;
      inputs.push_back(float_scalar(value));
    }
    auto* pad_node = emit("Pad", inputs);
    attribute(pad_node, "mode", mode);
    set(node->output(), out(pad_node));
  }

  static std::string pad_mode(const std::string& torch_mode, const std::string& where_text) {
    if (torch_mode == "constant") return "constant";
    if (torch_mode == "reflect") return "reflect";
    if (torch_mode == "replicate") return "edge";
    throw InputError(where_text + ": padding mode " + torch_mode + " has no rule");
  }

  void gelu(const JitNode* node) {
    const std::string approximate = node->inputs().size() > 1 ? string_of(node, 1) : "none";
    const auto x = tensor(node->input(0));
    if (opset_ >= 20) {
      auto* g = emit("Gelu", {x});
      attribute(g, "approximate", approximate);
      set(node->output(), out(g));
      return;
    }
    std::string inner;
    if (approximate == "tanh") {  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
      const auto cube = out(emit("Mul", {out(emit("Mul", {x, x})), x}));
      const auto sum = out(emit("Add", {x, out(emit("Mul", {cube, float_scalar(0.044715)}))}));
      inner = out(emit("Tanh", {out(emit("Mul", {sum, float_scalar(std::sqrt(2.0 / M_PI))}))}));
    } else {  // 0.5 x (1 + erf(x / sqrt 2))
      inner = out(emit("Erf", {out(emit("Div", {x, float_scalar(std::sqrt(2.0))}))}));
    }
    const auto one_plus = out(emit("Add", {inner, float_scalar(1.0)}));
    set(node->output(), out(emit("Mul", {out(emit("Mul", {x, one_plus})), float_scalar(0.5)})));
  }

  void attention(const JitNode* node) {
    // softmax(q k^T * scale + mask) v, as PyTorch's math kernel computes it.
    if (node->inputs().size() > 5 && bool_of(node, 5)) throw InputError(where(node) + ": causal attention has no rule");
    const double scale =
        node->inputs().size() > 6 && !is_none(node->input(6))
            ? float_of(node, 6)
            : 1.0 / std::sqrt(static_cast<double>(static_size(node, node->input(0), rank(node->input(0)) - 1)));
    const int64_t r = rank(node->input(1));
    std::vector<int64_t> perm(r);
    for (int64_t i = 0; i < r; ++i) perm[i] = i;
    std::swap(perm[r - 1], perm[r - 2]);
    auto* kt = emit("Transpose", {tensor(node->input(1))});
    attribute(kt, "perm", perm);
    const auto q = out(emit("Mul", {tensor(node->input(0)), float_scalar(scale)}));
    std::string scores = out(emit("MatMul", {q, out(kt)}));
    if (!is_none(node->input(3))) {
      if (scalar_type(node->input(3)) == at::kBool) throw InputError(where(node) + ": a boolean attention mask has no rule");
      scores = out(emit("Add", {scores, tensor(node->input(3))}));
    }
    auto* softmax = emit("Softmax", {scores});
    attribute(softmax, "axis", int64_t{-1});
    set(node->output(), out(emit("MatMul", {out(softmax), tensor(node->input(2))})));
  }

  void register_rules() {
    auto& r = rules_;
    r["aten::_convolution"] = [this](const JitNode* n) { convolution(n, 3, 4, 5, 8, 6); };
    r["aten::convolution"] = [this](const JitNode* n) { convolution(n, 3, 4, 5, 8, 6); };
    r["aten::conv2d"] = [this](const JitNode* n) { convolution(n, 3, 4, 5, 6, std::nullopt); };
    r["aten::batch_norm"] = [this](const JitNode* n) {
      if (bool_of(n, 5)) throw InputError(where(n) + ": a BatchNorm in training mode; export the model in eval()");
      const int64_t channels = static_size(n, n->input(3), 0);
      auto* bn = emit("BatchNormalization", {tensor(n->input(0)), ones_or(n, 1, channels, 1.0),
                                             ones_or(n, 2, channels, 0.0), tensor(n->input(3)),
                                             tensor(n->input(4))});
      attribute(bn, "epsilon", float_of(n, 7));
      set(n->output(), out(bn));
    };
    r["aten::instance_norm"] = [this](const JitNode* n) {
      if (!bool_of(n, 5)) throw InputError(where(n) + ": an InstanceNorm on running statistics has no rule");
      const int64_t channels = static_size(n, n->input(0), 1);
      auto* norm = emit("InstanceNormalization", {tensor(n->input(0)), ones_or(n, 1, channels, 1.0),
                                                   ones_or(n, 2, channels, 0.0)});
      attribute(norm, "epsilon", float_of(n, 7));
      set(n->output(), out(norm));
    };
    r["aten::layer_norm"] = [this](const JitNode* n) {
      const auto shape = ints_of(n, 1);
      int64_t channels = 1;
      for (const auto s : shape) channels *= s;
      auto* norm = emit("LayerNormalization", {tensor(n->input(0)), ones_or(n, 2, channels, 1.0),
                                               ones_or(n, 3, channels, 0.0)});
      attribute(norm, "axis", -static_cast<int64_t>(shape.size()));
      attribute(norm, "epsilon", float_of(n, 4));
      set(n->output(), out(norm));
    };

    for (const auto& [torch_op, onnx_op] : std::vector<std::pair<std::string, std::string>>{
             {"relu", "Relu"}, {"sigmoid", "Sigmoid"}, {"tanh", "Tanh"}, {"exp", "Exp"},
             {"sin", "Sin"}, {"cos", "Cos"}, {"neg", "Neg"}, {"sqrt", "Sqrt"}, {"abs", "Abs"},
             {"log", "Log"}, {"erf", "Erf"}, {"hardswish", "HardSwish"}}) {
      r["aten::" + torch_op] = [this, op = onnx_op](const JitNode* n) { unary(n, op); };
      r["aten::" + torch_op + "_"] = r["aten::" + torch_op];
    }
    for (const auto& [torch_op, onnx_op] : std::vector<std::pair<std::string, std::string>>{
             {"mul", "Mul"}, {"div", "Div"}, {"pow", "Pow"}, {"matmul", "MatMul"},
             {"bmm", "MatMul"}, {"mm", "MatMul"}, {"minimum", "Min"}, {"maximum", "Max"}}) {
      r["aten::" + torch_op] = [this, op = onnx_op](const JitNode* n) {
        if (op == "Div" && n->inputs().size() > 2 && !is_none(n->input(2))) {
          throw InputError(where(n) + ": division with rounding has no rule");
        }
        binary(n, op);
      };
      r["aten::" + torch_op + "_"] = r["aten::" + torch_op];
    }
    for (const auto& [torch_op, onnx_op] : std::vector<std::pair<std::string, std::string>>{{"add", "Add"}, {"sub", "Sub"}}) {
      r["aten::" + torch_op] = [this, op = onnx_op](const JitNode* n) {
        const auto* a = n->input(0);
        const auto* b = n->input(1);
        std::string other = tensor(b, a);
        if (n->inputs().size() > 2 && float_of(n, 2) != 1.0) {
          other = out(emit("Mul", {other, tensor(n->input(2), a)}));
        }
        set(n->output(), out(emit(op, {tensor(a, b), other})));
      };
      r["aten::" + torch_op + "_"] = r["aten::" + torch_op];
    }
    r["aten::silu"] = [this](const JitNode* n) {
      const auto x = tensor(n->input(0));
      set(n->output(), out(emit("Mul", {x, out(emit("Sigmoid", {x}))})));
    };
    r["aten::silu_"] = r["aten::silu"];
    r["aten::leaky_relu"] = [this](const JitNode* n) {
      auto* node = emit("LeakyRelu", {tensor(n->input(0))});
      attribute(node, "alpha", float_of(n, 1));
      set(n->output(), out(node));
    };
    r["aten::leaky_relu_"] = r["aten::leaky_relu"];
    r["aten::hardsigmoid"] = [this](const JitNode* n) {
      auto* node = emit("HardSigmoid", {tensor(n->input(0))});
      attribute(node, "alpha", 1.0 / 6.0);
      attribute(node, "beta", 0.5);
      set(n->output(), out(node));
    };
    r["aten::hardtanh"] = [this](const JitNode* n) {
      set(n->output(), out(emit("Clip", {tensor(n->input(0)), float_scalar(float_of(n, 1)),
                                         float_scalar(float_of(n, 2))})));
    };
    r["aten::hardtanh_"] = r["aten::hardtanh"];
    r["aten::relu6"] = [this](const JitNode* n) {
      set(n->output(), out(emit("Clip", {tensor(n->input(0)), float_scalar(0), float_scalar(6)})));
    };
    r["aten::gelu"] = [this](const JitNode* n) { gelu(n); };
    r["aten::clamp_min"] = [this](const JitNode* n) { binary(n, "Max"); };
    r["aten::clamp_max"] = [this](const JitNode* n) { binary(n, "Min"); };
    r["aten::clamp"] = [this](const JitNode* n) {
      std::string x = tensor(n->input(0));
      if (!is_none(n->input(1))) x = out(emit("Max", {x, tensor(n->input(1), n->input(0))}));
      if (!is_none(n->input(2))) x = out(emit("Min", {x, tensor(n->input(2), n->input(0))}));
      set(n->output(), x);
    };
    r["aten::clamp_"] = r["aten::clamp"];

    r["aten::max_pool2d"] = [this](const JitNode* n) { pool(n, "MaxPool", false); };
    r["aten::avg_pool2d"] = [this](const JitNode* n) { pool(n, "AveragePool", true); };
    r["aten::adaptive_avg_pool2d"] = [this](const JitNode* n) { adaptive_pool(n, "GlobalAveragePool", "AveragePool", "ReduceMean"); };
    r["aten::adaptive_max_pool2d"] = [this](const JitNode* n) { adaptive_pool(n, "GlobalMaxPool", "MaxPool", "ReduceMax"); };

    for (const char* op : {"aten::contiguous", "aten::dropout", "aten::feature_dropout",
                           "aten::alpha_dropout", "aten::detach", "aten::clone", "aten::Int",
                           "prim::NumToTensor", "aten::ScalarImplicit"}) {
      r[op] = [this](const JitNode* n) { alias(n); };
    }
    r["aten::dropout_"] = r["aten::dropout"];
    r["aten::to"] = [this](const JitNode* n) {
      const auto from = scalar_type(n->input(0));
      const auto to = scalar_type(n->output());
      if (from == to) return alias(n);
      set(n->output(), cast(tensor(n->input(0)), at::isFloatingType(to) ? float_type_ : to));
    };
    r["aten::type_as"] = r["aten::to"];
    r["aten::size"] = [this](const JitNode* n) {
      const auto shape = out(emit("Shape", {tensor(n->input(0))}));
      set(n->output(), out(emit("Gather", {shape, int64_scalar(int_of(n, 1))})));
    };
    r["aten::flatten"] = [this](const JitNode* n) {
      const int64_t r0 = rank(n->input(0));
      const int64_t start = normalized_dim(int_of(n, 1), r0);
      const int64_t end = normalized_dim(int_of(n, 2), r0);
      if (start >= end) return alias(n);
      std::vector<int64_t> shape(start, 0);
      shape.push_back(-1);
      for (int64_t d = end + 1; d < r0; ++d) shape.push_back(static_size(n, n->input(0), d));
      set(n->output(), out(emit("Reshape", {tensor(n->input(0)), int64s(shape)})));
    };
    r["aten::view"] = [this](const JitNode* n) {
      set(n->output(), out(emit("Reshape", {tensor(n->input(0)), shape_tensor(n->input(1))})));
    };
    r["aten::reshape"] = r["aten::view"];
    r["aten::permute"] = [this](const JitNode* n) {
      auto dims = ints_of(n, 1);
      for (auto& d : dims) d = normalized_dim(d, rank(n->input(0)));
      auto* t = emit("Transpose", {tensor(n->input(0))});
      attribute(t, "perm", dims);
      set(n->output(), out(t));
    };
    r["aten::transpose"] = [this](const JitNode* n) {
      const int64_t r0 = rank(n->input(0));
      std::vector<int64_t> perm(r0);
      for (int64_t i = 0; i < r0; ++i) perm[i] = i;
      std::swap(perm[normalized_dim(int_of(n, 1), r0)], perm[normalized_dim(int_of(n, 2), r0)]);
      auto* t = emit("Transpose", {tensor(n->input(0))});
      attribute(t, "perm", perm);
      set(n->output(), out(t));
    };
    r["aten::t"] = [this](const JitNode* n) {
      if (rank(n->input(0)) < 2) return alias(n);
      auto* t = emit("Transpose", {tensor(n->input(0))});
      attribute(t, "perm", std::vector<int64_t>{1, 0});
      set(n->output(), out(t));
    };
    r["aten::unsqueeze"] = [this](const JitNode* n) {
      set(n->output(), unsqueeze(tensor(n->input(0)), {normalized_dim(int_of(n, 1), rank(n->input(0)) + 1)}));
    };
    r["aten::squeeze"] = [this](const JitNode* n) {
      // Only dimensions of size 1 whatever the batch size: a batch of one is not squeezed.
      const auto sizes = sizes_of(n->input(0));
      std::vector<int64_t> axes;
      if (n->inputs().size() > 1) {
        const int64_t d = normalized_dim(int_of(n, 1), static_cast<int64_t>(sizes.size()));
        if (sizes.at(d) == 1) axes.push_back(d);
      } else {
        for (size_t d = 0; d < sizes.size(); ++d) {
          if (sizes[d] == 1) axes.push_back(static_cast<int64_t>(d));
        }
      }
      if (axes.empty()) return alias(n);
      set(n->output(), squeeze(tensor(n->input(0)), axes));
    };
    r["aten::select"] = [this](const JitNode* n) {
      const int64_t dim = normalized_dim(int_of(n, 1), rank(n->input(0)));
      int64_t index = int_of(n, 2);
      if (index < 0) index += static_size(n, n->input(0), dim);
      auto* gather = emit("Gather", {tensor(n->input(0)), int64_scalar(index)});
      attribute(gather, "axis", dim);
      set(n->output(), out(gather));
    };
    r["aten::slice"] = [this](const JitNode* n) {
      const int64_t dim = normalized_dim(int_of(n, 1), rank(n->input(0)));
      const int64_t start = is_none(n->input(2)) ? 0 : int_of(n, 2);
      const int64_t end = is_none(n->input(3)) ? std::numeric_limits<int64_t>::max() : int_of(n, 3);
      set(n->output(), slice(tensor(n->input(0)), dim, start, end, int_of(n, 4)));
    };
    r["aten::narrow"] = [this](const JitNode* n) {
      const int64_t dim = normalized_dim(int_of(n, 1), rank(n->input(0)));
      const int64_t start = int_of(n, 2);
      set(n->output(), slice(tensor(n->input(0)), dim, start, start + int_of(n, 3)));
    };
    r["aten::cat"] = [this](const JitNode* n) {
      set(n->output(), concat(tensor_list(n->input(0)), normalized_dim(int_of(n, 1), rank(n->output()))));
    };
    r["aten::stack"] = [this](const JitNode* n) {
      const int64_t dim = normalized_dim(int_of(n, 1), rank(n->output()));
      std::vector<std::string> parts;
      for (const auto& item : tensor_list(n->input(0))) parts.push_back(unsqueeze(item, {dim}));
      set(n->output(), concat(parts, dim));
    };
    r["aten::chunk"] = [this](const JitNode* n) {
      const int64_t dim = normalized_dim(int_of(n, 2), rank(n->input(0)));
      const int64_t size = static_size(n, n->input(0), dim);
      const int64_t chunks = int_of(n, 1);
      const int64_t step = (size + chunks - 1) / chunks;
      std::vector<int64_t> sizes;
      for (int64_t begin = 0; begin < size; begin += step) sizes.push_back(std::min(step, size - begin));
      split(n, sizes, dim, false);
    };
    r["aten::split"] = [this](const JitNode* n) {
      const int64_t dim = normalized_dim(int_of(n, 2), rank(n->input(0)));
      const int64_t size = static_size(n, n->input(0), dim);
      const auto given = ints_of(n, 1);
      std::vector<int64_t> sizes = given;
      if (given.size() == 1) {
        sizes.clear();
        for (int64_t begin = 0; begin < size; begin += given[0]) sizes.push_back(std::min(given[0], size - begin));
      }
      split(n, sizes, dim, false);
    };
    r["aten::split_with_sizes"] = [this](const JitNode* n) {
      split(n, ints_of(n, 1), normalized_dim(int_of(n, 2), rank(n->input(0))), false);
    };
    r["aten::unbind"] = [this](const JitNode* n) {
      const int64_t dim = normalized_dim(int_of(n, 1), rank(n->input(0)));
      split(n, std::vector<int64_t>(static_size(n, n->input(0), dim), 1), dim, true);
    };
    r["aten::expand"] = [this](const JitNode* n) {
      // Expand broadcasts, so PyTorch's -1 (keep) is ONNX's 1.
      const JitValue* sizes = n->input(1);
      std::string shape;
      if (const auto c = constant(sizes)) {
        auto values = c->toIntVector();
        for (auto& v : values) v = v == -1 ? 1 : v;
        shape = int64s(values);
      } else {
        std::vector<std::string> parts;
        for (const auto* item : list_items_.at(sizes)) {
          const auto ci = constant(item);
          parts.push_back(ci ? int64s({ci->toInt() == -1 ? 1 : ci->toInt()}) : unsqueeze(tensor(item), {0}));
        }
        shape = concat(parts, 0);
      }
      set(n->output(), out(emit("Expand", {tensor(n->input(0)), shape})));
    };
    r["aten::expand_as"] = [this](const JitNode* n) {
      const auto shape = out(emit("Shape", {tensor(n->input(1))}));
      set(n->output(), out(emit("Expand", {tensor(n->input(0)), shape})));
    };
    r["aten::repeat"] = [this](const JitNode* n) {
      const auto repeats = ints_of(n, 1);
      std::string x = tensor(n->input(0));
      const int64_t missing = static_cast<int64_t>(repeats.size()) - rank(n->input(0));
      if (missing > 0) {
        std::vector<int64_t> axes(missing);
        for (int64_t i = 0; i < missing; ++i) axes[i] = i;
        x = unsqueeze(x, axes);
      }
      set(n->output(), out(emit("Tile", {x, int64s(repeats)})));
    };
    r["aten::roll"] = [this](const JitNode* n) {
      const auto shifts = ints_of(n, 1);
      const auto dims = ints_of(n, 2);
      if (shifts.size() != dims.size()) throw InputError(where(n) + ": a roll over the flattened tensor has no rule");
      std::string x = tensor(n->input(0));
      for (size_t i = 0; i < dims.size(); ++i) {
        const int64_t dim = normalized_dim(dims[i], rank(n->input(0)));
        const int64_t size = static_size(n, n->input(0), dim);
        const int64_t shift = ((shifts[i] % size) + size) % size;
        if (shift == 0) continue;
        x = concat({slice(x, dim, size - shift, size), slice(x, dim, 0, size - shift)}, dim);
      }
      set(n->output(), x);
    };
    r["aten::constant_pad_nd"] = [this](const JitNode* n) { pad(n, "constant", 2); };
    r["aten::_pad_enum"] = [this](const JitNode* n) {
      static const char* modes[] = {"reflect", "replicate", "circular", "constant"};  // at::padding_mode
      const int64_t mode = int_of(n, 2);
      if (mode < 0 || mode > 3) throw InputError(where(n) + ": unknown padding mode");
      pad(n, pad_mode(modes[mode], where(n)), 3);
    };
    r["aten::pad"] = [this](const JitNode* n) { pad(n, pad_mode(string_of(n, 2), where(n)), 3); };
    const auto resize = [this](const JitNode* n, const std::string& mode, bool align_corners) {
      std::vector<float> scales(rank(n->input(0)), 1.0f);
      for (int64_t d = 2; d < rank(n->input(0)); ++d) {
        scales[d] = static_cast<float>(static_size(n, n->output(), d)) /
                    static_cast<float>(static_size(n, n->input(0), d));
      }
      auto* node = emit("Resize", {tensor(n->input(0)), "", initializer(torch::tensor(scales), "scales", /*keep_type=*/true)});
      attribute(node, "mode", mode);
      if (mode == "nearest") {
        attribute(node, "coordinate_transformation_mode", std::string("asymmetric"));
        attribute(node, "nearest_mode", std::string("floor"));
      } else {
        attribute(node, "coordinate_transformation_mode",
                  std::string(align_corners ? "align_corners" : "pytorch_half_pixel"));
      }
      set(n->output(), out(node));
    };
    r["aten::upsample_nearest2d"] = [resize](const JitNode* n) { resize(n, "nearest", false); };
    r["aten::upsample_bilinear2d"] = [this, resize](const JitNode* n) { resize(n, "linear", bool_of(n, 2)); };
    r["aten::norm"] = [this](const JitNode* n) {
      if (float_of(n, 1) != 2.0) throw InputError(where(n) + ": only the 2-norm has a rule");
      auto axes = ints_of(n, 2);
      for (auto& a : axes) a = normalized_dim(a, rank(n->input(0)));
      set(n->output(), reduce("ReduceL2", tensor(n->input(0)), axes, bool_of(n, 3)));
    };
    r["aten::linalg_vector_norm"] = r["aten::norm"];
    const auto reduction = [this](const JitNode* n, const std::string& op) {
      std::vector<int64_t> axes;
      bool keepdim = false;
      if (n->inputs().size() > 2 && !is_none(n->input(1))) {
        axes = ints_of(n, 1);
        for (auto& a : axes) a = normalized_dim(a, rank(n->input(0)));
        keepdim = bool_of(n, 2);
      }
      set(n->output(), reduce(op, tensor(n->input(0)), axes, keepdim));
    };
    r["aten::sum"] = [reduction](const JitNode* n) { reduction(n, "ReduceSum"); };
    r["aten::amax"] = [reduction](const JitNode* n) { reduction(n, "ReduceMax"); };
    r["aten::amin"] = [reduction](const JitNode* n) { reduction(n, "ReduceMin"); };
    r["aten::mean"] = [reduction](const JitNode* n) { reduction(n, "ReduceMean"); };
    const auto filled = [this](const JitNode* n, const std::string& shape, double value) {
      const auto type = scalar_type(n->output());
      auto* node = emit("ConstantOfShape", {shape});
      attribute(node, "value", torch::full({1}, value, torch::TensorOptions().dtype(at::isFloatingType(type) ? float_type_ : type)));
      set(n->output(), out(node));
    };
    r["aten::zeros"] = [this, filled](const JitNode* n) { filled(n, shape_tensor(n->input(0)), 0.0); };
    r["aten::ones"] = [this, filled](const JitNode* n) { filled(n, shape_tensor(n->input(0)), 1.0); };
    r["aten::zeros_like"] = [this, filled](const JitNode* n) { filled(n, out(emit("Shape", {tensor(n->input(0))})), 0.0); };
    r["aten::ones_like"] = [this, filled](const JitNode* n) { filled(n, out(emit("Shape", {tensor(n->input(0))})), 1.0); };
    r["aten::fill"] = [this, filled](const JitNode* n) { filled(n, out(emit("Shape", {tensor(n->input(0))})), float_of(n, 1)); };
    r["aten::fill_"] = r["aten::fill"];
    r["aten::index_select"] = [this](const JitNode* n) {
      auto* gather = emit("Gather", {tensor(n->input(0)), tensor(n->input(2))});
      attribute(gather, "axis", normalized_dim(int_of(n, 1), rank(n->input(0))));
      set(n->output(), out(gather));
    };
    r["aten::addmm"] = [this](const JitNode* n) {
      auto* gemm = emit("Gemm", {tensor(n->input(1)), tensor(n->input(2)), tensor(n->input(0))});
      attribute(gemm, "beta", float_of(n, 3));
      attribute(gemm, "alpha", float_of(n, 4));
      set(n->output(), out(gemm));
    };
    r["aten::linear"] = [this](const JitNode* n) {
      const auto x = tensor(n->input(0));
      std::string weight_t;
      if (const auto w = constant(n->input(1))) {
        weight_t = initializer(w->toTensor().t().contiguous(), "weight_t");
      } else {
        auto* t = emit("Transpose", {tensor(n->input(1))});
        attribute(t, "perm", std::vector<int64_t>{1, 0});
        weight_t = out(t);
      }
      std::string y = out(emit("MatMul", {x, weight_t}));
      if (!is_none(n->input(2))) y = out(emit("Add", {y, tensor(n->input(2))}));
      set(n->output(), y);
    };
    r["aten::softmax"] = [this](const JitNode* n) {
      auto* softmax = emit("Softmax", {tensor(n->input(0))});
      attribute(softmax, "axis", normalized_dim(int_of(n, 1), rank(n->input(0))));
      set(n->output(), out(softmax));
    };
    r["aten::scaled_dot_product_attention"] = [this](const JitNode* n) { attention(n); };
  }

  onnx::GraphProto& graph_;
  int64_t opset_;
  at::ScalarType float_type_;
  std::map<std::string, std::string> parameter_names_;
  std::string what_;
  std::unordered_map<std::string, Rule> rules_;
  std::unordered_map<const JitValue*, std::string> names_;
  std::unordered_map<const JitValue*, std::vector<const JitValue*>> list_items_;
  std::unordered_map<const JitValue*, std::vector<std::string>> produced_lists_;
  std::unordered_map<std::string, std::string> initializers_;
  std::vector<at::Tensor> kept_;
  std::map<std::string, int64_t> operator_counts_;
  int64_t next_name_ = 0;
};

}  // namespace reidnet::detail
