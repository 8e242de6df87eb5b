#pragma once
/// A TorchScript trace of a function of one image batch in which the batch size is a variable:
/// LibTorch's tracer records the aten ops a C++ forward calls, but the sizes the C++ code reads
/// (x.size(0), x.sizes()) are plain integers to it, baked into the graph. Tracing at three batch
/// sizes and comparing the graphs finds each integer that follows the batch (B, 4 * B, B * 64),
/// which is then computed from the input's shape, a * size(0) + c; anything else that differs
/// between the traces is refused. Then every node whose inputs are all constants (position
/// tables, relative-position biases, transposed weights) is evaluated once. Last, the graph is
/// run at a batch size not traced and held to the function: a trace cannot follow a write into
/// a view of another tensor, nor control flow on tensor values, and these show there.

#include <reidnet/core/errors.hpp>

#include <ATen/core/ivalue.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace reidnet::detail {

/// The batch sizes traced: their differences tell a * B + c apart from any other dependence.
inline constexpr std::array<int64_t, 3> kTracedBatchSizes{2, 3, 5};
/// The batch size the finished graph is checked at, and how closely (relative to the largest
/// output; the same kernels run, so only summation order may differ).
inline constexpr int64_t kCheckedBatchSize = 4;
inline constexpr double kTraceTolerance = 1e-5;

inline std::shared_ptr<torch::jit::Graph> trace_batch(
    const std::function<torch::Tensor(const torch::Tensor&)>& function, const torch::Tensor& batch) {
  auto traced = torch::jit::tracer::trace(
      {batch},
      [&](torch::jit::Stack inputs) -> torch::jit::Stack {
        return {function(inputs.at(0).toTensor())};
      },
      [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/false,
      /*force_outplace=*/true);
  return traced.first->graph;
}

inline std::string describe_node(const torch::jit::Node* node) {
  std::ostringstream text;
  text << *node;
  auto line = text.str();
  if (!line.empty() && line.back() == '\n') line.pop_back();
  return line;
}

/// Traces `function` on images of shape (B, 3, height, width) and returns the graph of the
/// first trace, its batch size made a variable and its constant subgraphs folded. The graph's
/// one input is the image batch and its one output the function's result.
inline std::shared_ptr<torch::jit::Graph> trace_batch_generic(
    const std::function<torch::Tensor(const torch::Tensor&)>& function, int64_t height,
    int64_t width, const std::string& what) {
  // One untraced run first, so that what the model computes once and keeps (DINOv3's rotary
  // table) is a constant in every trace rather than ops in the first one only.
  function(torch::rand({1, 3, height, width}));
  std::vector<std::shared_ptr<torch::jit::Graph>> graphs;
  for (const auto batch_size : kTracedBatchSizes) {
    graphs.push_back(trace_batch(function, torch::rand({batch_size, 3, height, width})));
  }
  auto& graph = graphs.front();
  std::vector<std::vector<torch::jit::Node*>> nodes(graphs.size());
  for (size_t i = 0; i < graphs.size(); ++i) {
    for (auto* node : graphs[i]->nodes()) nodes[i].push_back(node);
  }
  for (size_t i = 1; i < graphs.size(); ++i) {
    if (nodes[i].size() != nodes[0].size()) {
      throw InputError(what + ": the model runs other operations at another batch size (" +
                       std::to_string(nodes[0].size()) + " at batch " +
                       std::to_string(kTracedBatchSizes[0]) + ", " +
                       std::to_string(nodes[i].size()) + " at batch " +
                       std::to_string(kTracedBatchSizes[i]) + "); it cannot be exported with a "
                       "variable batch size");
    }
  }
  torch::jit::Value* batch_size = nullptr;
  const auto batch_size_value = [&]() {
    if (!batch_size) {
      torch::jit::WithInsertPoint start(graph->nodes().front());
      batch_size = graph->insert(c10::aten::size, {graph->inputs().at(0), int64_t{0}});
    }
    return batch_size;
  };
  const auto b0 = kTracedBatchSizes[0], b1 = kTracedBatchSizes[1], b2 = kTracedBatchSizes[2];
  for (size_t n = 0; n < nodes[0].size(); ++n) {
    auto* node = nodes[0][n];
    for (size_t i = 1; i < graphs.size(); ++i) {
      if (nodes[i][n]->kind() != node->kind()) {
        throw InputError(what + ": the model runs other operations at another batch size (" +
                         describe_node(node) + " against " + describe_node(nodes[i][n]) + ")");
      }
    }
    if (node->kind() != c10::prim::Constant || node->outputs().size() != 1) continue;
    const auto value = torch::jit::toIValue(node->output());
    if (!value) continue;
    if (value->isInt()) {
      const int64_t v0 = value->toInt();
      const int64_t v1 = torch::jit::toIValue(nodes[1][n]->output())->toInt();
      const int64_t v2 = torch::jit::toIValue(nodes[2][n]->output())->toInt();
      if (v0 == v1 && v1 == v2) continue;
      const int64_t slope = (v1 - v0) / (b1 - b0);
      const int64_t offset = v0 - slope * b0;
      if (slope * (b1 - b0) != v1 - v0 || slope * b2 + offset != v2) {
        throw InputError(what + ": an integer of the model's forward follows the batch size in no "
                         "linear way (" + std::to_string(v0) + ", " + std::to_string(v1) + ", " +
                         std::to_string(v2) + " at batch " + std::to_string(b0) + ", " +
                         std::to_string(b1) + ", " + std::to_string(b2) + ")");
      }
      torch::jit::WithInsertPoint here(node);
      torch::jit::Value* computed = batch_size_value();
      if (slope != 1) computed = graph->insert(c10::aten::mul, {computed, slope});
      if (offset != 0) computed = graph->insert(c10::aten::add, {computed, offset});
      node->output()->replaceAllUsesWith(computed);
    } else if (value->isTensor()) {
      for (size_t i = 1; i < graphs.size(); ++i) {
        const auto other = torch::jit::toIValue(nodes[i][n]->output())->toTensor();
        if (other.sizes() != value->toTensor().sizes()) {
          throw InputError(what + ": the model holds a tensor whose shape follows the batch size (" +
                           describe_node(node) + "); it cannot be exported with a variable batch "
                           "size");
        }
      }
    } else if (value->isIntList()) {
      for (size_t i = 1; i < graphs.size(); ++i) {
        if (torch::jit::toIValue(nodes[i][n]->output())->toIntVector() != value->toIntVector()) {
          throw InputError(what + ": a list of sizes follows the batch size (" + describe_node(node) +
                           "); it cannot be exported with a variable batch size");
        }
      }
    }
  }
  // The dimensions whose size differs between the traces follow the batch size: unknown in the
  // graph's types, so that nothing reads them as constants.
  std::vector<std::vector<torch::jit::Value*>> values(graphs.size());
  for (size_t i = 0; i < graphs.size(); ++i) {
    values[i].assign(graphs[i]->inputs().begin(), graphs[i]->inputs().end());
    for (auto* node : nodes[i]) values[i].insert(values[i].end(), node->outputs().begin(), node->outputs().end());
  }
  for (size_t v = 0; v < values[0].size(); ++v) {
    const auto type = values[0][v]->type()->cast<c10::TensorType>();
    const auto sizes = type ? type->sizes().concrete_sizes() : c10::nullopt;
    if (!sizes) continue;
    std::vector<c10::optional<int64_t>> shape(sizes->begin(), sizes->end());
    bool varies = false;
    for (size_t i = 1; i < graphs.size(); ++i) {
      const auto other = values[i].at(v)->type()->cast<c10::TensorType>();
      const auto other_sizes = other ? other->sizes().concrete_sizes() : c10::nullopt;
      for (size_t d = 0; d < shape.size(); ++d) {
        if (!other_sizes || other_sizes->size() != shape.size() || (*other_sizes)[d] != (*sizes)[d]) {
          shape[d] = c10::nullopt;
          varies = true;
        }
      }
    }
    if (varies) values[0][v]->setType(type->withSymbolicShapes(c10::SymbolicShape(shape)));
  }
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);

  const auto images = torch::rand({kCheckedBatchSize, 3, height, width});
  const auto expected = function(images);
  torch::jit::GraphExecutor executor(graph->copy(), "batch_generic_trace");
  torch::jit::Stack stack{images};
  executor.run(stack);
  const auto traced = stack.at(0).toTensor();
  const double scale = std::max(expected.abs().max().item<double>(), 1e-12);
  const double difference = traced.sizes() == expected.sizes()
                                ? (traced - expected).abs().max().item<double>() / scale
                                : std::numeric_limits<double>::infinity();
  if (!(difference <= kTraceTolerance)) {
    throw InputError(what + ": the traced graph differs from the model at batch " +
                     std::to_string(kCheckedBatchSize) + " (relative difference " +
                     std::to_string(difference) + "): its forward does what a trace cannot "
                     "record, such as writing into a view of another tensor");
  }
  return graph;
}

}  // namespace reidnet::detail
