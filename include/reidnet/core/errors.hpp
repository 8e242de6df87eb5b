#pragma once
/// The library's error for bad input: a file, or a value read from one, that reidnet refuses.
/// The message names the file and the field at fault. The programs exit with code 2 on it
/// (bad input, as for bad flags) and with code 1 on any other failure.
///
///     try { features = reidnet::read_pytorch_result(path); }
///     catch (const reidnet::InputError& refused) { /* the file is at fault, not the run */ }

#include <stdexcept>

namespace reidnet {

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace reidnet
