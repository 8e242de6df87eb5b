#pragma once
// What every example program does at its edges: parse flags with CLI11 and turn errors into
// messages and exit codes (2 = bad flags or bad input, 1 = failure while running).
#include <reidnet/core/errors.hpp>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <cmath>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>

namespace reidnet::examples {

/// A bad flag value or bad input data: reported with a usage hint and exit code 2.
using UsageError = reidnet::ConfigError;

/// Refuses NaN and infinities: CLI11's Range lets NaN through (every comparison with it is
/// false), and a NaN rate or probability would otherwise reach the trainer silently.
inline const CLI::Validator kFiniteNumber(
    [](std::string& text) {
      try {
        size_t used = 0;
        const double value = std::stod(text, &used);
        if (used == text.size() && std::isfinite(value)) return std::string();
      } catch (const std::exception&) {
      }
      return "expected a finite number, got " + text;
    },
    "FINITE");

/// Parses the flags; on --help or a parse error returns the exit code to leave with.
inline std::optional<int> parse_flags(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : 2;
  }
}

/// Refuses the first of `flags` the command line gave: UsageError "<flag> <why>".
inline void refuse_flags(const CLI::App& app, std::initializer_list<const char*> flags,
                         const std::string& why) {
  for (const char* flag : flags) {
    if (app.count(flag) > 0) throw UsageError(std::string(flag) + " " + why);
  }
}

/// Runs the program body, printing errors as `<program>: <message>`.
template <class Body>
int run_reporting_errors(const char* program, Body&& body) {
  try {
    return body();
  } catch (const UsageError& error) {
    fmt::print(stderr, "{}: {}\nRun with --help for the flags.\n", program, error.what());
    return 2;
  } catch (const InputError& error) {  // a file the library refused; the message names it
    fmt::print(stderr, "{}: {}\n", program, error.what());
    return 2;
  } catch (const c10::Error& error) {  // LibTorch's own message, without its C++ backtrace
    fmt::print(stderr, "{}: {}\n", program, error.what_without_backtrace());
    return 1;
  } catch (const std::exception& error) {
    fmt::print(stderr, "{}: {}\n", program, error.what());
    return 1;
  }
}

}  // namespace reidnet::examples
