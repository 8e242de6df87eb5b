#pragma once
/// SGD optimizer state in Python's `optimizer.state_dict()` layout, written and read with the
/// checkpoint code's whitelist pickler: no TorchScript, so loading a file never runs code.
///
///     {'state': {0: {'momentum_buffer': tensor}, 1: {...}, ...},
///      'param_groups': [{'lr': 0.005, 'momentum': 0.9, 'dampening': 0, 'weight_decay': 0.0005,
///                        'nesterov': True, 'maximize': False, 'foreach': None,
///                        'differentiable': False, 'params': [0, 1, ...]}, ...]}
///
/// Parameters are numbered in group order, as Python numbers them, so Python's
/// `optimizer.load_state_dict(torch.load("optimizer.pt"))` takes a file written here and the
/// other way round.
///
///     reidnet::save_optimizer_state(*sgd, "run/optimizer.pt");
///     reidnet::load_optimizer_state(*sgd, "run/optimizer.pt");   // all or nothing

#include <reidnet/checkpoint.hpp>
#include <reidnet/optim.hpp>

#include <torch/optim/sgd.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace reidnet {

namespace detail {

using SgdStateKey = std::decay_t<decltype(std::declval<torch::optim::SGD&>().state())>::key_type;

/// The momentum buffer of `parameter`, or an undefined tensor before its first step.
inline torch::Tensor momentum_buffer(const torch::optim::SGD& optimizer, const torch::Tensor& parameter) {
  const auto& state = optimizer.state();
  const auto found = state.find(optimizer_state_key<SgdStateKey>(parameter));
  if (found == state.end()) return {};
  return static_cast<const torch::optim::SGDParamState&>(*found->second).momentum_buffer();
}

/// The fields of one saved param group, checked.
struct SavedGroup {
  torch::optim::SGDOptions options{0.0};
  std::vector<int64_t> params;
};

inline const Value& dict_entry(const Value& dict, const std::string& key, const std::string& where) {
  const auto* found = dict.kind == Value::Kind::Dict ? dict.find(key) : nullptr;
  if (!found) throw CheckpointError(where + " has no '" + key + "'");
  return **found;
}

inline double finite_number(const Value& value, const std::string& where) {
  double number = 0;
  if (value.kind == Value::Kind::Int) {
    number = static_cast<double>(value.integer);
  } else if (value.kind == Value::Kind::Float) {
    number = value.real;
  } else {
    throw CheckpointError(where + " is a " + kind_name(value.kind) + ", not a number");
  }
  if (!std::isfinite(number)) throw CheckpointError(where + " is " + std::to_string(number));
  return number;
}

inline bool flag(const Value& value, const std::string& where) {
  if (value.kind != Value::Kind::Bool) {
    throw CheckpointError(where + " is a " + kind_name(value.kind) + ", not True or False");
  }
  return value.integer != 0;
}

inline SavedGroup saved_group(const Value& group, const std::string& where) {
  if (group.kind != Value::Kind::Dict) throw CheckpointError(where + " is not a dict");
  SavedGroup saved;
  const auto number = [&](const char* key) {
    return finite_number(dict_entry(group, key, where), where + "['" + key + "']");
  };
  const double lr = number("lr"), momentum = number("momentum"), dampening = number("dampening"),
               weight_decay = number("weight_decay");
  if (lr < 0 || momentum < 0 || weight_decay < 0) {
    throw CheckpointError(where + ": lr, momentum and weight_decay must not be negative");
  }
  saved.options.lr(lr).momentum(momentum).dampening(dampening).weight_decay(weight_decay);
  saved.options.nesterov(flag(dict_entry(group, "nesterov", where), where + "['nesterov']"));
  if (const auto* maximize = group.find("maximize")) {
    if (flag(**maximize, where + "['maximize']")) {
      throw CheckpointError(where + "['maximize'] is True, which LibTorch's SGD does not do");
    }
  }
  const auto& params = dict_entry(group, "params", where);
  if (params.kind != Value::Kind::List) throw CheckpointError(where + "['params'] is not a list");
  for (const auto& id : params.items) {
    if (id->kind != Value::Kind::Int) throw CheckpointError(where + "['params'] holds a non-integer");
    saved.params.push_back(id->integer);
  }
  return saved;
}

}  // namespace detail

/// Writes the optimizer's hyperparameters and momentum buffers to `path` (atomically) in
/// Python's `optimizer.state_dict()` layout.
inline void save_optimizer_state(const torch::optim::SGD& optimizer, const std::string& path) {
  detail::with_file_context("cannot write optimizer state", path, [&] {
    detail::ArchiveWriter archive;
    auto& pickle = archive.pickle();
    pickle.empty_dict();
    pickle.string("state");
    pickle.empty_dict();
    pickle.mark();
    int64_t index = 0;
    for (const auto& group : optimizer.param_groups()) {
      for (const auto& parameter : group.params()) {
        const auto buffer = detail::momentum_buffer(optimizer, parameter);
        if (buffer.defined()) {
          pickle.integer(index);
          pickle.empty_dict();
          pickle.string("momentum_buffer");
          archive.tensor(buffer, "momentum_buffer of parameter " + std::to_string(index));
          pickle.set_item();
        }
        ++index;
      }
    }
    pickle.set_items();
    pickle.set_item();
    pickle.string("param_groups");
    pickle.empty_list();
    pickle.mark();
    index = 0;
    for (const auto& group : optimizer.param_groups()) {
      const auto& options = static_cast<const torch::optim::SGDOptions&>(group.options());
      pickle.empty_dict();
      pickle.mark();
      for (const auto& [key, value] : {std::pair<const char*, double>{"lr", options.lr()},
                                       {"momentum", options.momentum()},
                                       {"dampening", options.dampening()},
                                       {"weight_decay", options.weight_decay()}}) {
        pickle.string(key);
        pickle.real(value);
      }
      pickle.string("nesterov");
      pickle.boolean(options.nesterov());
      pickle.string("maximize");
      pickle.boolean(false);
      pickle.string("foreach");
      pickle.none();
      pickle.string("differentiable");
      pickle.boolean(false);
      pickle.string("params");
      pickle.empty_list();
      pickle.mark();
      for (size_t i = 0; i < group.params().size(); ++i) pickle.integer(index++);
      pickle.appends();
      pickle.set_items();
    }
    pickle.appends();
    pickle.set_item();
    archive.write(path);
  });
}

/// Reads a file written by `save_optimizer_state` or by Python's
/// `torch.save(sgd.state_dict(), path)` into `optimizer`: the groups' hyperparameters and the
/// momentum buffers (on each parameter's device, dtype and memory format). The groups and
/// their sizes must match; every buffer must have its parameter's shape. All or nothing: on
/// error the optimizer is unchanged, and the message names the file and the field.
inline void load_optimizer_state(torch::optim::SGD& optimizer, const std::string& path) {
  detail::with_file_context("cannot read optimizer state", path, [&] {
    using detail::CheckpointError;
    const detail::LoadedArchive archive(path);
    const auto& root = archive.root();
    const auto& groups = detail::dict_entry(root, "param_groups", "the file");
    if (groups.kind != detail::Value::Kind::List) throw CheckpointError("'param_groups' is not a list");
    auto& target_groups = optimizer.param_groups();
    if (groups.items.size() != target_groups.size()) {
      throw CheckpointError("it has " + std::to_string(groups.items.size()) +
                            " param groups, the optimizer " + std::to_string(target_groups.size()));
    }
    std::vector<detail::SavedGroup> saved;
    std::map<int64_t, torch::Tensor> parameter_of;  // saved id -> parameter, by position
    for (size_t g = 0; g < groups.items.size(); ++g) {
      const auto where = "param_groups[" + std::to_string(g) + "]";
      saved.push_back(detail::saved_group(*groups.items[g], where));
      const auto& params = target_groups[g].params();
      if (saved.back().params.size() != params.size()) {
        throw CheckpointError(where + " has " + std::to_string(saved.back().params.size()) +
                              " parameters, the optimizer's " + std::to_string(params.size()));
      }
      for (size_t i = 0; i < params.size(); ++i) {
        if (!parameter_of.emplace(saved.back().params[i], params[i]).second) {
          throw CheckpointError(where + " repeats parameter id " + std::to_string(saved.back().params[i]));
        }
      }
    }
    const auto& state = detail::dict_entry(root, "state", "the file");
    if (state.kind != detail::Value::Kind::Dict) throw CheckpointError("'state' is not a dict");
    std::vector<std::pair<torch::Tensor, torch::Tensor>> buffers;  // parameter, new buffer
    for (const auto& [key, value] : state.entries) {
      if (key->kind != detail::Value::Kind::Int || !parameter_of.count(key->integer)) {
        throw CheckpointError("'state' has an entry for no parameter of the param groups");
      }
      const auto where = "state[" + std::to_string(key->integer) + "]['momentum_buffer']";
      const auto& parameter = parameter_of.at(key->integer);
      const auto& saved_buffer = detail::dict_entry(*value, "momentum_buffer",
                                                    "state[" + std::to_string(key->integer) + "]");
      if (saved_buffer.kind == detail::Value::Kind::None) continue;  // before its first step
      const auto buffer = archive.tensor(saved_buffer);
      if (buffer.sizes() != parameter.sizes()) {
        throw CheckpointError(where + " has shape " + detail::shape_text(buffer.sizes()) +
                              ", its parameter " + detail::shape_text(parameter.sizes()));
      }
      if (!buffer.is_floating_point()) throw CheckpointError(where + " is not a float tensor");
      auto copy = torch::empty_like(parameter);  // keeps the parameter's memory format
      copy.copy_(buffer);
      buffers.emplace_back(parameter, std::move(copy));
    }
    // Everything is checked: now change the optimizer.
    auto& target_state = optimizer.state();
    for (const auto& group : target_groups) {
      for (const auto& parameter : group.params()) {
        target_state.erase(detail::optimizer_state_key<detail::SgdStateKey>(parameter));
      }
    }
    for (auto& [parameter, buffer] : buffers) {
      auto entry = std::make_unique<torch::optim::SGDParamState>();
      entry->momentum_buffer(std::move(buffer));
      target_state[detail::optimizer_state_key<detail::SgdStateKey>(parameter)] = std::move(entry);
    }
    for (size_t g = 0; g < target_groups.size(); ++g) {
      auto& options = static_cast<torch::optim::SGDOptions&>(target_groups[g].options());
      options.lr(saved[g].options.lr())
          .momentum(saved[g].options.momentum())
          .dampening(saved[g].options.dampening())
          .weight_decay(saved[g].options.weight_decay())
          .nesterov(saved[g].options.nesterov());
    }
  });
}

}  // namespace reidnet
