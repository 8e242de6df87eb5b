#pragma once
/// A module's state_dict in Python's order.
///
/// LibTorch lists all parameters of a tree, then all buffers; Python's `state_dict()` walks
/// the tree and lists each module's own parameters, then its own buffers, then its
/// children's. Checkpoints and parity checks need Python's order:
///
///     for (const auto& item : reidnet::state_dict(*net)) std::cout << item.key() << '\n';

#include <torch/nn/module.h>
#include <torch/ordered_dict.h>

#include <cstdint>
#include <string>

namespace reidnet {

/// Name -> tensor in Python registration order (the tensors alias the module's storage).
using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

namespace detail {
inline void append_state(const torch::nn::Module& module, const std::string& prefix,
                         StateDict& out) {
  for (const auto& item : module.named_parameters(/*recurse=*/false)) {
    out.insert(prefix + item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/false)) {
    out.insert(prefix + item.key(), item.value());
  }
  for (const auto& child : module.named_children()) {
    append_state(*child.value(), prefix + child.key() + ".", out);
  }
}
}  // namespace detail

/// The module's parameters and buffers, keyed and ordered as Python's `state_dict()`.
inline StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  detail::append_state(module, "", out);
  return out;
}

/// Total number of parameter elements (buffers excluded), as `sum(p.numel())` in Python.
inline int64_t count_parameters(const torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& parameter : module.parameters()) total += parameter.numel();
  return total;
}

}  // namespace reidnet
