#pragma once
/// ONNX export of a ReID model, written in C++ through the ONNX library (libonnx): a file that
/// ONNX Runtime, TensorRT, OpenVINO and OpenCV DNN load.
///
///     reidnet::export_onnx(*model, "model.onnx", reidnet::OnnxExportOptions().model_name("bnneck"));
///
/// The graph has one input, `images` (N x 3 x H x W, N free, H x W the model's input size), and
/// one output, `features` (N x feature_dim): the model's `embed`, the test-time feature before
/// the flip. The file's metadata says how a runtime prepares the pixels, once: the input size,
/// mean and std, pixel scale, resize filter, channel order, whether the graph normalises the
/// pixels itself (OnnxExportOptions::normalize_in_graph) and whether the feature is
/// L2-normalised (it is not: the evaluation normalises after embedding).
///
/// How: LibTorch's tracer records the aten ops of `embed` on a copy of the model in eval mode
/// with its BatchNorms folded as the fast path folds them (fold_batch_norms); the batch size is
/// made a variable (detail/batch_generic_trace.hpp) and each aten op is written as ONNX
/// operators by one rule (detail/aten_to_onnx.hpp). So no module needs an exporter of its own,
/// and any model built of the ops that have rules exports; an op without one is refused with
/// its name and the parameters around it. The model is checked with ONNX's checker before the
/// file is written, atomically.
///
/// Needs the reidnet::onnx target (Debian: libonnx-dev).

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/core/errors.hpp>
#include <reidnet/core/version.hpp>
#include <reidnet/export/detail/aten_to_onnx.hpp>
#include <reidnet/export/detail/batch_generic_trace.hpp>
#include <reidnet/models/layers/batch_norm_folding.hpp>
#include <reidnet/models/reid_model.hpp>

#include <c10/util/Exception.h>
#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

namespace reidnet {

/// The opset written by default: the newest that Debian 12's ONNX library (1.12) checks, and
/// one that every current runtime runs.
inline constexpr int64_t kDefaultOnnxOpset = 17;
/// The oldest opset the rules are written for (LayerNormalization is an operator from 17 on).
inline constexpr int64_t kMinimumOnnxOpset = 17;

/// The newest opset this build's ONNX library knows.
inline int64_t newest_onnx_opset() {
  const auto& ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  return ranges.at(onnx::ONNX_DOMAIN).second;
}

struct OnnxExportOptions {
  TORCH_ARG(int64_t, opset) = kDefaultOnnxOpset;
  /// The graph's arithmetic: torch::kFloat32, or torch::kFloat16 (weights stored in float16;
  /// the input and output stay float32, cast at the graph's ends).
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
  /// Fold each BatchNorm that a conv feeds into that conv, as the fast path does.
  TORCH_ARG(bool, fold_batch_norms) = true;
  /// The graph takes RGB levels (0 to 255, as float) and normalises them itself with the
  /// model's mean, std and pixel scale; otherwise it takes the normalised images `embed` takes.
  TORCH_ARG(bool, normalize_in_graph) = false;
  /// The model's name (model_names()), recorded in the metadata.
  TORCH_ARG(std::string, model_name) = "";
};

/// What an export did.
struct OnnxExportReport {
  FoldReport folding;
  std::map<std::string, int64_t> operators;  ///< ONNX operator: how many nodes
  int64_t nodes = 0;
  int64_t initializers = 0;
  int64_t opset = 0;

  std::string summary() const {
    std::ostringstream text;
    text << nodes << " nodes, " << initializers << " initializers, opset " << opset << "; "
         << folding.summary() << "; operators:";
    for (const auto& [op, count] : operators) text << ' ' << op << " x" << count;
    return text.str();
  }
};

namespace detail {

inline std::string join_numbers(const std::vector<double>& values) {
  std::ostringstream text;
  text.precision(9);
  for (size_t i = 0; i < values.size(); ++i) text << (i ? "," : "") << values[i];
  return text.str();
}

inline void add_metadata(onnx::ModelProto& model, const std::string& key, const std::string& value) {
  auto* entry = model.add_metadata_props();
  entry->set_key(key);
  entry->set_value(value);
}

inline void set_tensor_type(onnx::ValueInfoProto& info, const std::string& name,
                            const std::vector<int64_t>& dims) {
  info.set_name(name);
  auto* type = info.mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  auto* shape = type->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  for (const auto dim : dims) shape->add_dim()->set_dim_value(dim);
}

/// The IR version of a file of `opset`: the oldest that holds it, so that older runtimes read it.
inline int64_t onnx_ir_version(int64_t opset) {
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

}  // namespace detail

/// The ONNX model of `model`'s embed (see the top of this header). `model` is not changed.
/// Throws InputError naming the op, the opset or the dtype at fault.
inline onnx::ModelProto to_onnx_model(const ReidModelImpl& model, const OnnxExportOptions& options = {},
                                      OnnxExportReport* report = nullptr) {
  const std::string what = "ONNX export" + (options.model_name().empty() ? std::string() : " of " + options.model_name());
  if (options.opset() < kMinimumOnnxOpset || options.opset() > newest_onnx_opset()) {
    throw ConfigError(what + ": --opset " + std::to_string(options.opset()) + " is outside " +
                      std::to_string(kMinimumOnnxOpset) + " to " + std::to_string(newest_onnx_opset()) +
                      " (the newest this build's ONNX library knows)");
  }
  if (options.dtype() != torch::kFloat32 && options.dtype() != torch::kFloat16) {
    throw ConfigError(what + ": --dtype must be fp32 or fp16");
  }
  torch::NoGradGuard no_grad;
  auto copy = std::dynamic_pointer_cast<ReidModelImpl>(model.clone(torch::Device(torch::kCPU)));
  TORCH_CHECK(copy, "ONNX export: the model's clone is not a ReidModel");
  copy->to(torch::kFloat);
  copy->eval();
  OnnxExportReport local;
  auto& result = report ? *report : local;
  result = OnnxExportReport{};
  if (options.fold_batch_norms()) result.folding = fold_batch_norms(*copy);
  std::map<std::string, std::string> parameter_names;
  for (const auto& item : copy->named_parameters()) {
    item.value().set_requires_grad(false);
    parameter_names[detail::OnnxGraphTranslator::tensor_key(item.value())] = item.key();
  }
  for (const auto& item : copy->named_buffers()) {
    parameter_names[detail::OnnxGraphTranslator::tensor_key(item.value())] = item.key();
  }

  const auto& config = copy->config();
  const auto mean = torch::tensor(config.mean(), torch::kFloat).view({1, 3, 1, 1});
  const auto std = torch::tensor(config.std(), torch::kFloat).view({1, 3, 1, 1});
  const double pixel_scale = config.max_pixel_value();
  const bool normalize = options.normalize_in_graph();
  const auto graph = detail::trace_batch_generic(
      [&](const torch::Tensor& images) {
        return copy->embed(normalize ? (images / pixel_scale - mean) / std : images);
      },
      config.height(), config.width(), what);

  onnx::ModelProto proto;
  proto.set_ir_version(detail::onnx_ir_version(options.opset()));
  proto.set_producer_name("reidnet");
  proto.set_producer_version(reidnet::version);
  auto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset());
  auto* onnx_graph = proto.mutable_graph();
  onnx_graph->set_name(options.model_name().empty() ? "reidnet" : options.model_name());
  detail::set_tensor_type(*onnx_graph->add_input(), "images", {3, config.height(), config.width()});
  detail::set_tensor_type(*onnx_graph->add_output(), "features", {copy->feature_dim()});
  detail::OnnxGraphTranslator translator(*onnx_graph, options.opset(), options.dtype(),
                                         std::move(parameter_names), what);
  translator.translate(*graph, "images", "features");

  detail::add_metadata(proto, "model", options.model_name());
  detail::add_metadata(proto, "input_height", std::to_string(config.height()));
  detail::add_metadata(proto, "input_width", std::to_string(config.width()));
  detail::add_metadata(proto, "channel_order", "RGB");
  detail::add_metadata(proto, "mean", detail::join_numbers(config.mean()));
  detail::add_metadata(proto, "std", detail::join_numbers(config.std()));
  detail::add_metadata(proto, "max_pixel_value", detail::join_numbers({config.max_pixel_value()}));
  detail::add_metadata(proto, "interpolation", config.interpolation());
  detail::add_metadata(proto, "normalized_in_graph", normalize ? "true" : "false");
  detail::add_metadata(proto, "input_description",
                       normalize ? "RGB levels 0 to 255 as float; the graph normalises them"
                                 : "(RGB levels / max_pixel_value - mean) / std");
  detail::add_metadata(proto, "feature_dim", std::to_string(copy->feature_dim()));
  detail::add_metadata(proto, "embedding_parts", std::to_string(copy->embedding_parts()));
  detail::add_metadata(proto, "feature_l2_normalized", "false");
  detail::add_metadata(proto, "dtype", options.dtype() == torch::kFloat16 ? "fp16" : "fp32");

  result.operators = translator.operator_counts();
  result.nodes = onnx_graph->node_size();
  result.initializers = onnx_graph->initializer_size();
  result.opset = options.opset();
  try {
    onnx::checker::check_model(proto);
    // Strict shape and type inference: what the checker's full check and a runtime's loader
    // do. It also records every intermediate shape in the graph (value_info).
    onnx::shape_inference::InferShapes(proto, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true, /*error_mode=*/1));
  } catch (const std::exception& failure) {
    throw std::runtime_error(what + ": ONNX's checker refused the graph written: " + failure.what());
  }
  return proto;
}

/// Writes `to_onnx_model(model, options)` to `path`, atomically; returns what it did.
inline OnnxExportReport export_onnx(const ReidModelImpl& model, const std::string& path,
                                    const OnnxExportOptions& options = {}) {
  OnnxExportReport report;
  const auto proto = to_onnx_model(model, options, &report);
  detail::write_file_atomically(path, [&](std::ostream& file) {
    if (!proto.SerializeToOstream(&file)) throw std::runtime_error("cannot write " + path + ": serialisation failed");
  });
  return report;
}

}  // namespace reidnet
