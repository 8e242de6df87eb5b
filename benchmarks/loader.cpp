// reidnet-loader: training-input throughput (decode + train transform, N threads) of reidnet's
// DataLoader against the Python baseline's torchvision DataLoader (num_workers = N) on the same
// pictures, interleaved round by round so that both see the same machine load.
//
//   reidnet-toy-data --out toy --ids 100
//   reidnet-loader --data toy --workers 2 --rounds 3
#include "../examples/common/cli.hpp"

#include <reidnet/data.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

struct Measure {
  double images = 0, seconds = 0;
  double rate() const { return images / seconds; }
};

Measure time_reidnet(const reidnet::DataLoader& loader, int epochs, int64_t first_epoch) {
  Measure measure;
  const auto start = std::chrono::steady_clock::now();
  for (int e = 0; e < epochs; ++e) {
    for (const auto& batch : loader.epoch(first_epoch + e)) measure.images += batch.images.size(0);
  }
  measure.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return measure;
}

Measure time_python(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + command);
  std::string output;
  char buffer[4096];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  if (pclose(pipe) != 0) throw std::runtime_error("the Python reference failed: " + command);
  const auto result = nlohmann::json::parse(output.substr(output.rfind('{')));
  return {result["images"].get<double>(), result["seconds"].get<double>()};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Loader throughput: reidnet vs torchvision's DataLoader, side by side"};
  std::string data, python = "/usr/bin/python3";
  std::string reference =
      (std::filesystem::path(__FILE__).parent_path() / "loader_reference.py").string();
  int workers = 2, batch_size = 32, epochs = 2, rounds = 3, height = 256, width = 128;
  bool skip_python = false;
  app.add_option("--data", data, "Market-1501-style data set (its bounding_box_train is read)")
      ->required()->check(CLI::ExistingDirectory);
  app.add_option("--workers", workers, "loader threads / Python worker processes")->check(CLI::Range(0, 64));
  app.add_option("--batch-size", batch_size)->check(CLI::Range(1, 4096));
  app.add_option("--epochs", epochs, "timed epochs per round")->check(CLI::Range(1, 1000));
  app.add_option("--rounds", rounds, "alternating reidnet / Python rounds")->check(CLI::Range(1, 100));
  app.add_option("--height", height)->check(CLI::Range(8, 2048));
  app.add_option("--width", width)->check(CLI::Range(8, 2048));
  app.add_option("--python", python, "Python with torch and torchvision");
  app.add_option("--reference", reference, "loader_reference.py")->check(CLI::ExistingFile);
  app.add_flag("--no-python", skip_python, "time reidnet only");
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  try {
    const auto dataset = reidnet::read_dataset(data);
    if (dataset.train_all.empty()) throw std::runtime_error("no training pictures in " + data);
    const auto folder = std::filesystem::path(dataset.train_all.front().path).parent_path().string();
    reidnet::DataLoader loader(
        dataset.train_all,
        reidnet::make_train_transform(reidnet::TrainTransformOptions().height(height).width(width)),
        reidnet::LoaderOptions().batch_size(batch_size).workers(workers).shuffle(true).drop_last(true));
    const std::string command =
        fmt::format("'{}' '{}' --data '{}' --workers {} --batch-size {} --epochs {} --height {} --width {}",
                    python, reference, folder, workers, batch_size, epochs, height, width);
    fmt::print("{} pictures from {}, batch {}, {} workers, train transform to {}x{}, {} epochs per round\n",
               dataset.train_all.size(), folder, batch_size, workers, height, width, epochs);
    fmt::print("{:>5} {:>16} {:>16} {:>8}\n", "round", "reidnet img/s", "python img/s", "ratio");
    time_reidnet(loader, 1, 1000);  // warm-up, as the Python side does
    std::vector<double> ratios;
    for (int round = 0; round < rounds; ++round) {
      const auto ours = time_reidnet(loader, epochs, round * epochs);
      if (skip_python) {
        fmt::print("{:>5} {:>16.1f} {:>16} {:>8}\n", round, ours.rate(), "-", "-");
        continue;
      }
      const auto theirs = time_python(command);
      ratios.push_back(ours.rate() / theirs.rate());
      fmt::print("{:>5} {:>16.1f} {:>16.1f} {:>7.2f}x\n", round, ours.rate(), theirs.rate(), ratios.back());
      std::fflush(stdout);
    }
    if (!ratios.empty()) {
      std::sort(ratios.begin(), ratios.end());
      fmt::print("median speed-up of reidnet over Python: {:.2f}x (goal >= 2x)\n", ratios[ratios.size() / 2]);
    }
  } catch (const std::exception& error) {
    fmt::print(stderr, "error: {}\n", error.what());
    return 1;
  }
  return 0;
}
