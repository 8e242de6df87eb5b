#pragma once
/// The library's errors for bad input, which the programs report with exit code 2 (and any
/// other failure with exit code 1):
/// - InputError: a file, or a value read from one, that reidnet refuses; the message names the
///   file and the field at fault.
/// - ConfigError: a setting out of its bounds, from a flag or a run's opts.yaml; the message
///   names the flag or the file and key.
///
///     try { features = reidnet::read_pytorch_result(path); }
///     catch (const reidnet::InputError& refused) { /* the file is at fault, not the run */ }

#include <stdexcept>

namespace reidnet {

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ConfigError : InputError {
  using InputError::InputError;
};

}  // namespace reidnet
