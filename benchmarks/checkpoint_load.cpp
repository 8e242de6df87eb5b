// reidnet-checkpoint-load: times one reidnet::read_state_dict of a checkpoint and measures the
// peak memory it adds, for comparison with Python's torch.load on the same file
// (benchmarks/checkpoint_load_compare.py runs both sides, interleaved).
//
//   reidnet-checkpoint-load --file resnet50.pth
//   -> reidnet load_s=0.0812 peak_extra_mb=97.9 file_mb=97.8 tensors=320
#include "../examples/common/cli.hpp"

#include <reidnet/reidnet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

// VmRSS or VmHWM of this process, in MiB (Linux /proc).
double process_memory_mb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024.0;
  }
  return 0;
}

// Resets VmHWM to the current RSS, so that the peak measured afterwards is the load's.
void reset_peak_memory() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Time reidnet::read_state_dict on a checkpoint and measure its peak memory"};
  std::string path;
  app.add_option("--file", path, "checkpoint to load (.pth or .safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  try {
    torch::empty({1});  // LibTorch's lazy start-up is not part of the load
    reset_peak_memory();
    const double before_mb = process_memory_mb("VmRSS");
    const auto start = std::chrono::steady_clock::now();
    const auto tensors = reidnet::read_state_dict(path);
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    const double peak_extra_mb = process_memory_mb("VmHWM") - before_mb;
    fmt::print("reidnet load_s={:.4f} peak_extra_mb={:.1f} file_mb={:.1f} tensors={}\n",
               elapsed.count(), peak_extra_mb,
               static_cast<double>(std::filesystem::file_size(path)) / (1024.0 * 1024.0),
               tensors.size());
  } catch (const std::exception& error) {
    fmt::print(stderr, "reidnet-checkpoint-load: {}\n", error.what());
    return 1;
  }
  return 0;
}
