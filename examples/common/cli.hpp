#pragma once
// What every example program does at its edges: parse flags with CLI11 and turn errors into
// messages and exit codes (2 = bad flags or bad input, 1 = failure while running).
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <optional>
#include <stdexcept>

namespace reidnet::examples {

/// A bad flag value or bad input data: reported with a usage hint and exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Parses the flags; on --help or a parse error returns the exit code to leave with.
inline std::optional<int> parse_flags(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : 2;
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
  } catch (const std::exception& error) {
    fmt::print(stderr, "{}: {}\n", program, error.what());
    return 1;
  }
}

}  // namespace reidnet::examples
