#pragma once
// --dtype int8's flags (reidnet-test, reidnet-bench): how many training pictures calibrate the
// activation ranges, and the file that keeps them; and the fallback where the CPU cannot.
#include "cli.hpp"

#include <reidnet/inference/int8_calibration.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <cstdint>
#include <string>

namespace reidnet::examples {

struct Int8Flags {
  int64_t calibration_images = 256;
  std::string ranges_file;
};

/// `default_file` empty: no --int8-calibration (a program that calibrates on every run).
inline void add_int8_flags(CLI::App& app, Int8Flags& flags, const std::string& default_file) {
  app.add_option("--calibration-images", flags.calibration_images,
                 fmt::format("--dtype int8: training pictures (of --data) that calibrate the "
                             "activation ranges, at least {} (default 256)", kMinCalibrationImages))
      ->check(CLI::Range(kMinCalibrationImages, int64_t{1} << 20));
  if (default_file.empty()) return;
  app.add_option("--int8-calibration", flags.ranges_file,
                 "--dtype int8: the file that keeps the calibrated ranges, read where it exists, "
                 "else written (default: " + default_file + ")");
}

/// Refuses the int8 flags without --dtype int8; with it, where this CPU or build cannot run
/// int8, says why and returns false: the program then runs float32.
inline bool int8_runs_here(const CLI::App& app, bool int8) {
  if (!int8) {
    for (const char* flag : {"--calibration-images", "--int8-calibration"}) {
      if (app.get_option_no_throw(flag) != nullptr && app.count(flag) > 0) {
        throw UsageError(std::string(flag) + " needs --dtype int8");
      }
    }
    return false;
  }
  const auto reason = int8_unsupported_reason();
  if (reason.empty()) return true;
  fmt::print("--dtype int8: {}; running float32 instead\n", reason);
  return false;
}

}  // namespace reidnet::examples
