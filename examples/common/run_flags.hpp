#pragma once
// The command line of a training run: one CLI11 flag per field of reidnet::run_fields() that
// has one, with its spelling and help; the bounds are checked by reidnet::check_run_config,
// for flags and opts.yaml alike.
#include <reidnet/engine/run_config.hpp>

#include <CLI/CLI.hpp>

#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace reidnet::examples {

class RunFlags {
 public:
  /// Adds the flags to `app`, storing into `config`. --preset applies its recipe as soon as it
  /// is parsed, so that the other flags override it wherever they stand.
  RunFlags(CLI::App& app, RunConfig& config) {
    for (const auto& field : run_fields()) {
      if (field.flags.empty()) continue;
      CLI::Option* option = visit_field_value(
          config, field, [&](auto& value) -> CLI::Option* {
            using T = std::decay_t<decltype(value)>;
            if constexpr (std::is_same_v<T, bool>) {
              return app.add_flag(field.flags, value, field.help);
            } else if constexpr (std::is_same_v<T, std::string>) {
              if (field.name != "preset") return app.add_option(field.flags, value, field.help);
              return app
                  .add_option_function<std::string>(
                      field.flags,
                      [&config](const std::string& name) {
                        config.preset = name;
                        if (const auto* preset = find_preset(name)) preset->apply(config);
                      },
                      field.help)
                  ->trigger_on_parse();
            } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
              return app.add_option(field.flags, value, field.help)->delimiter(',');
            } else {
              return app.add_option(field.flags, value, field.help);
            }
          });
      options_.emplace_back(option, field.name);
    }
  }

  /// The fields the command line set, after parsing.
  std::set<std::string> given() const {
    std::set<std::string> names;
    for (const auto& [option, name] : options_) {
      if (option->count() > 0) names.insert(name);
    }
    return names;
  }

 private:
  std::vector<std::pair<CLI::Option*, std::string>> options_;
};

}  // namespace reidnet::examples
