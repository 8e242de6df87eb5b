#pragma once
/// Optimizer state in Python's `optimizer.state_dict()` layout, written and read with the
/// checkpoint code's whitelist pickler: no TorchScript, so loading a file never runs code.
/// SGD:
///
///     {'state': {0: {'momentum_buffer': tensor}, 1: {...}, ...},
///      'param_groups': [{'lr': 0.005, 'momentum': 0.9, 'dampening': 0, 'weight_decay': 0.0005,
///                        'nesterov': True, 'maximize': False, 'foreach': None,
///                        'differentiable': False, 'params': [0, 1, ...]}, ...]}
///
/// Adam and AdamW (reidnet::Adam, or torch::optim::Adam):
///
///     {'state': {0: {'step': tensor(3.), 'exp_avg': tensor, 'exp_avg_sq': tensor}, ...},
///      'param_groups': [{'lr': 0.00035, 'betas': (0.9, 0.999), 'eps': 1e-08,
///                        'weight_decay': 0.0005, 'amsgrad': False, 'maximize': False,
///                        'foreach': None, 'capturable': False, 'differentiable': False,
///                        'fused': None, 'params': [0, 1, ...]}, ...]}
///
/// Parameters are numbered in group order, as Python numbers them, so Python's
/// `optimizer.load_state_dict(torch.load("optimizer.pt"))` takes a file written here and the
/// other way round.
///
///     reidnet::save_optimizer_state(*sgd, "run/optimizer.pt");
///     reidnet::load_optimizer_state(*sgd, "run/optimizer.pt");   // all or nothing

#include <reidnet/io/checkpoint.hpp>
#include <reidnet/solver/optim.hpp>

#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace reidnet {

namespace detail {

using OptimizerStateKey =
    std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

/// The state of `parameter` in `optimizer`, or nullptr before its first step.
template <class State>
const State* parameter_state(const torch::optim::Optimizer& optimizer, const torch::Tensor& parameter) {
  const auto& state = optimizer.state();
  const auto found = state.find(optimizer_state_key<OptimizerStateKey>(parameter));
  return found == state.end() ? nullptr : &static_cast<const State&>(*found->second);
}

/// The momentum buffer of `parameter`, or an undefined tensor before its first step.
inline torch::Tensor momentum_buffer(const torch::optim::SGD& optimizer, const torch::Tensor& parameter) {
  const auto* state = parameter_state<torch::optim::SGDParamState>(optimizer, parameter);
  return state == nullptr ? torch::Tensor() : state->momentum_buffer();
}

inline const Value& dict_entry(const Value& dict, const std::string& key, const std::string& where) {
  const auto* found = dict.kind == Value::Kind::kDict ? dict.find(key) : nullptr;
  if (!found) throw CheckpointError(where + " has no '" + key + "'");
  return **found;
}

inline double finite_number(const Value& value, const std::string& where) {
  double number = 0;
  if (value.kind == Value::Kind::kInt) {
    number = static_cast<double>(value.integer);
  } else if (value.kind == Value::Kind::kFloat) {
    number = value.real;
  } else {
    throw CheckpointError(where + " is a " + kind_name(value.kind) + ", not a number");
  }
  if (!std::isfinite(number)) throw CheckpointError(where + " is " + std::to_string(number));
  return number;
}

inline bool flag(const Value& value, const std::string& where) {
  if (value.kind != Value::Kind::kBool) {
    throw CheckpointError(where + " is a " + kind_name(value.kind) + ", not True or False");
  }
  return value.integer != 0;
}

/// Refuses a group saved with maximize=True, which LibTorch's optimisers do not do.
inline void refuse_maximize(const Value& group, const std::string& where) {
  if (const auto* maximize = group.find("maximize")) {
    if (flag(**maximize, where + "['maximize']")) {
      throw CheckpointError(where + "['maximize'] is True, which LibTorch's optimisers do not do");
    }
  }
}

/// A number of a saved param group, at least 0.
inline double group_number(const Value& group, const char* key, const std::string& where) {
  const double number = finite_number(dict_entry(group, key, where), where + "['" + key + "']");
  if (number < 0) throw CheckpointError(where + "['" + key + "'] must not be negative");
  return number;
}

inline torch::optim::SGDOptions saved_sgd_options(const Value& group, const std::string& where) {
  refuse_maximize(group, where);
  return torch::optim::SGDOptions(group_number(group, "lr", where))
      .momentum(group_number(group, "momentum", where))
      .dampening(finite_number(dict_entry(group, "dampening", where), where + "['dampening']"))
      .weight_decay(group_number(group, "weight_decay", where))
      .nesterov(flag(dict_entry(group, "nesterov", where), where + "['nesterov']"));
}

inline torch::optim::AdamOptions saved_adam_options(const Value& group, const std::string& where) {
  refuse_maximize(group, where);
  const auto& betas = dict_entry(group, "betas", where);
  if ((betas.kind != Value::Kind::kTuple && betas.kind != Value::Kind::kList) || betas.items.size() != 2) {
    throw CheckpointError(where + "['betas'] is not a pair of numbers");
  }
  const double beta1 = finite_number(*betas.items[0], where + "['betas'][0]");
  const double beta2 = finite_number(*betas.items[1], where + "['betas'][1]");
  if (beta1 < 0 || beta1 >= 1 || beta2 < 0 || beta2 >= 1) {
    throw CheckpointError(where + "['betas'] must lie in [0, 1)");
  }
  return torch::optim::AdamOptions(group_number(group, "lr", where))
      .betas({beta1, beta2})
      .eps(group_number(group, "eps", where))
      .weight_decay(group_number(group, "weight_decay", where))
      .amsgrad(flag(dict_entry(group, "amsgrad", where), where + "['amsgrad']"));
}

/// A saved tensor of parameter `parameter`'s state, checked: float, of the parameter's shape;
/// copied into the parameter's device, dtype and memory format.
inline torch::Tensor saved_state_tensor(const LoadedArchive& archive, const Value& entry,
                                        const char* key, const torch::Tensor& parameter,
                                        const std::string& where) {
  const auto field = where + "['" + key + "']";
  const auto tensor = archive.tensor(dict_entry(entry, key, where));
  if (tensor.sizes() != parameter.sizes()) {
    throw CheckpointError(field + " has shape " + shape_text(tensor.sizes()) + ", its parameter " +
                          shape_text(parameter.sizes()));
  }
  if (!tensor.is_floating_point()) throw CheckpointError(field + " is not a float tensor");
  auto copy = torch::empty_like(parameter);  // keeps the parameter's memory format
  copy.copy_(tensor);
  return copy;
}

/// Writes `optimizer`'s state in Python's layout to `path` (atomically):
/// `write_state(archive, state, where)` writes the dict of one parameter's state (called only
/// for parameters that have one); `write_options(pickle, options)` writes a group's
/// hyperparameters as dict items, before its 'params'.
template <class State, class Options>
void write_optimizer_state(const torch::optim::Optimizer& optimizer, const std::string& path,
                           const std::function<void(ArchiveWriter&, const State&, const std::string&)>& write_state,
                           const std::function<void(PickleWriter&, const Options&)>& write_options) {
  with_file_context("cannot write optimizer state", path, [&] {
    ArchiveWriter archive;
    auto& pickle = archive.pickle();
    pickle.empty_dict();
    pickle.string("state");
    pickle.empty_dict();
    pickle.mark();
    int64_t index = 0;
    for (const auto& group : optimizer.param_groups()) {
      for (const auto& parameter : group.params()) {
        if (const auto* state = parameter_state<State>(optimizer, parameter)) {
          pickle.integer(index);
          write_state(archive, *state, "state of parameter " + std::to_string(index));
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
      pickle.empty_dict();
      pickle.mark();
      write_options(pickle, static_cast<const Options&>(group.options()));
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

/// Reads a file in Python's layout into `optimizer`, all or nothing:
/// `read_options(group, where)` reads a saved group's hyperparameters;
/// `read_state(archive, entry, parameter, options, where)` one parameter's state (`options`:
/// its saved group's), or nullptr where the entry holds none yet. The groups and their sizes must match; on error the optimizer is
/// unchanged, and the message names the file and the field.
template <class State, class Options>
void read_optimizer_state(
    torch::optim::Optimizer& optimizer, const std::string& path,
    const std::function<Options(const Value&, const std::string&)>& read_options,
    const std::function<std::unique_ptr<State>(const LoadedArchive&, const Value&, const torch::Tensor&,
                                               const Options&, const std::string&)>& read_state) {
  with_file_context("cannot read optimizer state", path, [&] {
    const LoadedArchive archive(path);
    const auto& root = archive.root();
    const auto& groups = dict_entry(root, "param_groups", "the file");
    if (groups.kind != Value::Kind::kList) throw CheckpointError("'param_groups' is not a list");
    auto& target_groups = optimizer.param_groups();
    if (groups.items.size() != target_groups.size()) {
      throw CheckpointError("it has " + std::to_string(groups.items.size()) +
                            " param groups, the optimizer " + std::to_string(target_groups.size()));
    }
    std::vector<Options> saved_options;
    std::map<int64_t, std::pair<torch::Tensor, size_t>> parameter_of;  // saved id -> parameter, group
    for (size_t g = 0; g < groups.items.size(); ++g) {
      const auto where = "param_groups[" + std::to_string(g) + "]";
      const auto& group = *groups.items[g];
      if (group.kind != Value::Kind::kDict) throw CheckpointError(where + " is not a dict");
      saved_options.push_back(read_options(group, where));
      const auto& ids = dict_entry(group, "params", where);
      if (ids.kind != Value::Kind::kList) throw CheckpointError(where + "['params'] is not a list");
      const auto& params = target_groups[g].params();
      if (ids.items.size() != params.size()) {
        throw CheckpointError(where + " has " + std::to_string(ids.items.size()) +
                              " parameters, the optimizer's " + std::to_string(params.size()));
      }
      for (size_t i = 0; i < params.size(); ++i) {
        if (ids.items[i]->kind != Value::Kind::kInt) {
          throw CheckpointError(where + "['params'] holds a non-integer");
        }
        if (!parameter_of.emplace(ids.items[i]->integer, std::make_pair(params[i], g)).second) {
          throw CheckpointError(where + " repeats parameter id " + std::to_string(ids.items[i]->integer));
        }
      }
    }
    const auto& state = dict_entry(root, "state", "the file");
    if (state.kind != Value::Kind::kDict) throw CheckpointError("'state' is not a dict");
    std::vector<std::pair<torch::Tensor, std::unique_ptr<State>>> states;  // parameter, new state
    for (const auto& [key, value] : state.entries) {
      if (key->kind != Value::Kind::kInt || !parameter_of.count(key->integer)) {
        throw CheckpointError("'state' has an entry for no parameter of the param groups");
      }
      const auto& [parameter, group] = parameter_of.at(key->integer);
      auto loaded = read_state(archive, *value, parameter, saved_options[group],
                               "state[" + std::to_string(key->integer) + "]");
      if (loaded) states.emplace_back(parameter, std::move(loaded));
    }
    // Everything is checked: now change the optimizer.
    auto& target_state = optimizer.state();
    for (const auto& group : target_groups) {
      for (const auto& parameter : group.params()) {
        target_state.erase(optimizer_state_key<OptimizerStateKey>(parameter));
      }
    }
    for (auto& [parameter, loaded] : states) {
      target_state[optimizer_state_key<OptimizerStateKey>(parameter)] = std::move(loaded);
    }
    for (size_t g = 0; g < target_groups.size(); ++g) {
      static_cast<Options&>(target_groups[g].options()) = saved_options[g];
    }
  });
}

}  // namespace detail

/// Writes the SGD optimizer's hyperparameters and momentum buffers to `path` (atomically) in
/// Python's `optimizer.state_dict()` layout.
inline void save_optimizer_state(const torch::optim::SGD& optimizer, const std::string& path) {
  using detail::ArchiveWriter;
  using detail::PickleWriter;
  detail::write_optimizer_state<torch::optim::SGDParamState, torch::optim::SGDOptions>(
      optimizer, path,
      [](ArchiveWriter& archive, const torch::optim::SGDParamState& state, const std::string& where) {
        auto& pickle = archive.pickle();
        pickle.empty_dict();
        pickle.string("momentum_buffer");
        archive.tensor(state.momentum_buffer(), "momentum_buffer of " + where);
        pickle.set_item();
      },
      [](PickleWriter& pickle, const torch::optim::SGDOptions& options) {
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
      });
}

/// Reads a file written by `save_optimizer_state` or by Python's
/// `torch.save(sgd.state_dict(), path)` into `optimizer`: the groups' hyperparameters and the
/// momentum buffers (on each parameter's device, dtype and memory format). The groups and
/// their sizes must match; every buffer must have its parameter's shape. All or nothing: on
/// error the optimizer is unchanged, and the message names the file and the field.
inline void load_optimizer_state(torch::optim::SGD& optimizer, const std::string& path) {
  using detail::Value;
  detail::read_optimizer_state<torch::optim::SGDParamState, torch::optim::SGDOptions>(
      optimizer, path, detail::saved_sgd_options,
      [](const detail::LoadedArchive& archive, const Value& entry, const torch::Tensor& parameter,
         const torch::optim::SGDOptions&, const std::string& where) -> std::unique_ptr<torch::optim::SGDParamState> {
        if (detail::dict_entry(entry, "momentum_buffer", where).kind == Value::Kind::kNone) {
          return nullptr;  // before its first step
        }
        auto state = std::make_unique<torch::optim::SGDParamState>();
        state->momentum_buffer(detail::saved_state_tensor(archive, entry, "momentum_buffer", parameter, where));
        return state;
      });
}

/// Writes an Adam or AdamW optimizer's hyperparameters and state (step, exp_avg, exp_avg_sq,
/// and max_exp_avg_sq with amsgrad) to `path` (atomically) in Python's layout, which
/// torch.optim.Adam and torch.optim.AdamW both read. The step is saved as Python saves it: a
/// float32 scalar tensor.
inline void save_optimizer_state(const torch::optim::Adam& optimizer, const std::string& path) {
  using detail::ArchiveWriter;
  using detail::PickleWriter;
  detail::write_optimizer_state<torch::optim::AdamParamState, torch::optim::AdamOptions>(
      optimizer, path,
      [](ArchiveWriter& archive, const torch::optim::AdamParamState& state, const std::string& where) {
        auto& pickle = archive.pickle();
        pickle.empty_dict();
        pickle.mark();
        pickle.string("step");
        archive.tensor(torch::tensor(static_cast<float>(state.step())), "step of " + where);
        for (const auto& [key, tensor] : {std::pair<const char*, torch::Tensor>{"exp_avg", state.exp_avg()},
                                          {"exp_avg_sq", state.exp_avg_sq()},
                                          {"max_exp_avg_sq", state.max_exp_avg_sq()}}) {
          if (!tensor.defined()) continue;
          pickle.string(key);
          archive.tensor(tensor, std::string(key) + " of " + where);
        }
        pickle.set_items();
      },
      [](PickleWriter& pickle, const torch::optim::AdamOptions& options) {
        const auto [beta1, beta2] = options.betas();
        pickle.string("lr");
        pickle.real(options.lr());
        pickle.string("betas");
        pickle.mark();
        pickle.real(beta1);
        pickle.real(beta2);
        pickle.tuple();
        pickle.string("eps");
        pickle.real(options.eps());
        pickle.string("weight_decay");
        pickle.real(options.weight_decay());
        pickle.string("amsgrad");
        pickle.boolean(options.amsgrad());
        for (const char* key : {"maximize", "foreach", "capturable", "differentiable", "fused"}) {
          pickle.string(key);
          if (std::string(key) == "foreach" || std::string(key) == "fused") {
            pickle.none();  // Python's default: it picks the kernels itself
          } else {
            pickle.boolean(false);
          }
        }
      });
}

/// Reads a file written by `save_optimizer_state` or by Python's
/// `torch.save(adam.state_dict(), path)` (torch.optim.Adam or AdamW) into `optimizer`: the
/// groups' hyperparameters, each parameter's step (a scalar tensor or a number, a whole number
/// of at least 0) and moments. With amsgrad, max_exp_avg_sq must be there. All or nothing, as
/// the SGD overload.
inline void load_optimizer_state(torch::optim::Adam& optimizer, const std::string& path) {
  using detail::CheckpointError;
  using detail::Value;
  detail::read_optimizer_state<torch::optim::AdamParamState, torch::optim::AdamOptions>(
      optimizer, path, detail::saved_adam_options,
      [](const detail::LoadedArchive& archive, const Value& entry, const torch::Tensor& parameter,
         const torch::optim::AdamOptions& options, const std::string& where)
          -> std::unique_ptr<torch::optim::AdamParamState> {
        const auto& saved_step = detail::dict_entry(entry, "step", where);
        double step = 0;
        if (saved_step.kind == Value::Kind::kTensor) {
          const auto tensor = archive.tensor(saved_step);
          if (tensor.numel() != 1 || !(tensor.is_floating_point() || tensor.scalar_type() == torch::kLong)) {
            throw CheckpointError(where + "['step'] is not a number or a one-element tensor");
          }
          step = tensor.to(torch::kDouble).item<double>();
        } else {
          step = detail::finite_number(saved_step, where + "['step']");
        }
        if (!std::isfinite(step) || step < 0 || step != std::floor(step) || step > 9.0e15) {
          throw CheckpointError(where + "['step'] is " + std::to_string(step) + ", not a whole number of steps");
        }
        auto state = std::make_unique<torch::optim::AdamParamState>();
        state->step(static_cast<int64_t>(step));
        state->exp_avg(detail::saved_state_tensor(archive, entry, "exp_avg", parameter, where));
        state->exp_avg_sq(detail::saved_state_tensor(archive, entry, "exp_avg_sq", parameter, where));
        if (options.amsgrad()) {  // its group's running maximum of exp_avg_sq
          state->max_exp_avg_sq(detail::saved_state_tensor(archive, entry, "max_exp_avg_sq", parameter, where));
        }
        return state;
      });
}

/// Either overload above, picked by the optimiser's type: SGD (ForeachSGD) or Adam
/// (reidnet::Adam). Throws std::invalid_argument for another optimiser.
inline void save_optimizer_state(const torch::optim::Optimizer& optimizer, const std::string& path) {
  if (const auto* sgd = dynamic_cast<const torch::optim::SGD*>(&optimizer)) return save_optimizer_state(*sgd, path);
  if (const auto* adam = dynamic_cast<const torch::optim::Adam*>(&optimizer)) return save_optimizer_state(*adam, path);
  throw std::invalid_argument("save_optimizer_state: only SGD and Adam state can be saved");
}

inline void load_optimizer_state(torch::optim::Optimizer& optimizer, const std::string& path) {
  if (auto* sgd = dynamic_cast<torch::optim::SGD*>(&optimizer)) return load_optimizer_state(*sgd, path);
  if (auto* adam = dynamic_cast<torch::optim::Adam*>(&optimizer)) return load_optimizer_state(*adam, path);
  throw std::invalid_argument("load_optimizer_state: only SGD and Adam state can be loaded");
}

}  // namespace reidnet
