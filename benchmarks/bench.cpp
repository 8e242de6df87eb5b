// reidnet-bench: speed of a ReID model's feature extraction and training (FtNet, ResNet-50 +
// ClassBlock, by default; --model any of reidnet::model_names()).
//
//   reidnet-bench --mode embed --dtype bf16 --batch-size 16 --iters 10
//   reidnet-bench --model pcb --mode embed --height 384 --width 192
//   reidnet-bench --mode train --dtype bf16 --no-channels-last
//   reidnet-bench --dtype int8 --data Market-1501   (calibrated on its training pictures)
//
// It warms up, then times each iteration; the last line is `throughput X img/s`.
// benchmarks/compare_speed.sh runs it side by side with benchmarks/reference_python.py.
#include "../examples/common/cli.hpp"
#include "../examples/common/int8_flags.hpp"

#include <reidnet/core/cpu_threads.hpp>
#include <reidnet/engine/evaluator.hpp>
#include <reidnet/engine/training_step.hpp>
#include <reidnet/reidnet.hpp>

#include <ATen/autocast_mode.h>
#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <sys/resource.h>

#ifdef REIDNET_BENCH_CUDA_MEMORY
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct BenchOptions {
  std::string model = "ft_net";
  std::string mode = "embed";
  std::string dtype = "fp32";
  std::string device = "cpu";
  int64_t batch_size = 16;
  int64_t iters = 10;
  int64_t warmup = 2;
  int threads = 2;
  int64_t height = 256;
  int64_t width = 128;
  int64_t stride = 2;
  int64_t linear_num = 512;
  int64_t class_num = 751;
  bool eager = false;
  bool no_fold_bn = false;
  bool no_fuse = false;
  bool no_prepack = false;
  bool no_direct_onednn = false;
  bool no_channels_last = false;
  bool no_reuse_memory = false;
  std::string data;  // int8: calibrate on its training pictures (else on random ones)
  reidnet::examples::Int8Flags int8;
  bool run_int8 = false;  // --dtype int8, where this CPU runs it
};

/// The vector extensions that matter for oneDNN, from /proc/cpuinfo (Linux).
std::string cpu_instruction_set() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  std::string model;
  std::set<std::string> flags;
  while (std::getline(cpuinfo, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::string word;
      while (words >> word) flags.insert(word);
      break;
    }
  }
  std::string out = model.empty() ? "unknown CPU" : model;
  out += " [";
  bool first = true;
  for (const char* flag : {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                           "avx512_fp16"}) {
    if (flags.count(flag) == 0) continue;
    out += (first ? "" : " ") + std::string(flag);
    first = false;
  }
  return out + "]";
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}


/// Peak bytes held by LibTorch's CUDA caching allocator since the last reset; -1 if unknown.
double cuda_peak_mib(const torch::Device& device) {
#ifdef REIDNET_BENCH_CUDA_MEMORY
  if (device.is_cuda()) {
    const auto index = device.has_index() ? device.index() : 0;
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);  // 0: all pools
  }
#endif
  (void)device;
  return -1;
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

struct Timing {
  std::vector<double> milliseconds;
  double total_seconds = 0;
};

template <class Step>
Timing time_iterations(const BenchOptions& options, const torch::Device& device, Step&& step) {
  for (int64_t i = 0; i < options.warmup; ++i) step();
  synchronize(device);
  Timing timing;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.iters; ++i) {
    const auto before = std::chrono::steady_clock::now();
    step();
    synchronize(device);
    const auto after = std::chrono::steady_clock::now();
    timing.milliseconds.push_back(std::chrono::duration<double, std::milli>(after - before).count());
  }
  timing.total_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return timing;
}

double percentile(std::vector<double> values, double fraction) {
  std::sort(values.begin(), values.end());
  const auto index = static_cast<size_t>(fraction * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

/// int8 ranges from --data's training pictures at the benchmark's input size, else from
/// random ones.
reidnet::Int8Calibration int8_ranges(const BenchOptions& options, reidnet::ReidModel& net) {
  if (!options.data.empty()) {
    const auto source = "--data " + options.data;
    const auto dataset = reidnet::read_dataset(options.data);
    return reidnet::calibrate_int8(*net, reidnet::calibration_pictures(dataset, source),
                                   reidnet::ImageSize{options.height, options.width}, source,
                                   reidnet::Int8CalibrationOptions().images(options.int8.calibration_images));
  }
  reidnet::Int8Calibrator calibrator(*net);
  torch::manual_seed(1);
  constexpr int64_t kCalibrationBatch = 32;
  for (int64_t seen = 0; seen < options.int8.calibration_images; seen += kCalibrationBatch) {
    const auto batch = std::min(kCalibrationBatch, options.int8.calibration_images - seen);
    calibrator.observe(torch::randn({batch, 3, options.height, options.width}));
  }
  return calibrator.finish();
}

std::string embed_path(const BenchOptions& options, reidnet::ReidModel& net,
                       const torch::Device& device, const torch::Tensor& images,
                       Timing& timing) {
  const auto dtype = options.dtype == "int8" ? torch::kFloat32 : reidnet::compute_dtype_from_name(options.dtype);
  if (options.eager) {
    // The unoptimised module, weights cast to the dtype, under InferenceMode.
    net->to(device, dtype);
    if (!options.no_channels_last) reidnet::to_channels_last(*net);
    const auto input = images.to(dtype).contiguous(options.no_channels_last
                                                       ? torch::MemoryFormat::Contiguous
                                                       : torch::MemoryFormat::ChannelsLast);
    timing = time_iterations(options, device, [&] {
      c10::InferenceMode guard;
      net->embed(input);
    });
    return fmt::format("eager module, {}, {}", options.dtype,
                       options.no_channels_last ? "NCHW" : "channels_last");
  }
  auto inference_options = reidnet::InferenceOptions()
                                     .dtype(dtype)
                                     .device(device)
                                     .fold_bn(!options.no_fold_bn)
                                     .fuse(!options.no_fuse)
                                     .prepack(!options.no_prepack)
                                     .call_onednn_directly(!options.no_direct_onednn)
                                     .channels_last(!options.no_channels_last);
  if (!options.run_int8) {
    const auto fast = reidnet::optimize_for_inference(net, inference_options);
    timing = time_iterations(options, device, [&] { fast.embed(images); });
    return "optimize_for_inference: " + fast.describe();
  }
  const auto float32 = reidnet::optimize_for_inference(net, inference_options);
  const auto ranges = std::make_shared<const reidnet::Int8Calibration>(int8_ranges(options, net));
  const auto fast = reidnet::optimize_for_inference(net, inference_options.int8(ranges));
  timing = time_iterations(options, device, [&] { fast.embed(images); });
  // Fidelity on the timed pictures, against the float32 fast path.
  const auto cosine = torch::cosine_similarity(fast.embed(images), float32.embed(images), 1);
  return fmt::format("optimize_for_inference: {}, calibrated on {} {} pictures; per-row cosine to "
                     "float32 min {:.5f} mean {:.5f}",
                     fast.describe(), ranges->images, options.data.empty() ? "random" : "training",
                     cosine.min().item<double>(), cosine.mean().item<double>());
}

std::string train_path(const BenchOptions& options, reidnet::ReidModel& net,
                       const torch::Device& device, const torch::Tensor& images,
                       Timing& timing) {
  net->to(device);
  net->train();
  const bool channels_last = !options.no_channels_last;
  if (channels_last) reidnet::to_channels_last(*net);
  const auto input = channels_last ? images.contiguous(torch::MemoryFormat::ChannelsLast) : images;
  // The baseline's recipe: backbone at 0.1 x lr, the head at lr.
  auto optimizer = reidnet::make_sgd(*net);
  const auto labels =
      torch::randint(options.class_num, {options.batch_size}, torch::TensorOptions(device).dtype(torch::kLong));
  const auto dtype = reidnet::compute_dtype_from_name(options.dtype);
  const bool autocast = dtype != torch::kFloat32;
  // reidnet-train's step: fp16 takes loss scaling (one host sync per step, as in Python).
  reidnet::TrainingStep train_step(net, *optimizer, reidnet::TrainingStepOptions().dtype(dtype));
  timing = time_iterations(options, device, [&] { train_step(input, labels); });
  return fmt::format("train step (SGD nesterov, 2 groups), {}{}{}", options.dtype,
                     autocast ? " autocast" : "", train_step.scaler().is_enabled() ? " + GradScaler" : "") +
         (channels_last ? ", channels_last" : ", NCHW");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Time a ReID model's feature extraction (optimize_for_inference) or a training step"};
  BenchOptions options;
  app.add_option("--model", options.model, "model name (reidnet-model-summary --list)");
  app.add_option("--mode", options.mode, "embed or train")->check(CLI::IsMember({"embed", "train"}));
  app.add_option("--dtype", options.dtype, "fp32, bf16 or fp16 (train: autocast dtype), or int8 "
                 "(embed: the ResNet or OSNet trunk's convs)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16", "int8"}));
  app.add_option("--data", options.data, "--dtype int8: calibrate on this data set's training "
                 "pictures (default: random pictures)")->check(CLI::ExistingDirectory);
  reidnet::examples::add_int8_flags(app, options.int8, "");
  app.add_option("--device", options.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--batch-size", options.batch_size, "images per batch")->check(CLI::PositiveNumber);
  app.add_option("--iters", options.iters, "timed iterations")->check(CLI::PositiveNumber);
  app.add_option("--warmup", options.warmup, "untimed iterations first")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", options.threads, "intra-op CPU threads")->check(CLI::PositiveNumber);
  app.add_option("--height", options.height, "input height")->check(CLI::PositiveNumber);
  app.add_option("--width", options.width, "input width")->check(CLI::PositiveNumber);
  app.add_option("--stride", options.stride, "FtNet layer4 stride")->check(CLI::IsMember({1, 2}));
  app.add_option("--linear-num", options.linear_num, "FtNet bottleneck width (0 = none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--class-num", options.class_num, "identities")->check(CLI::PositiveNumber);
  app.add_flag("--eager", options.eager, "embed: time the unoptimised module instead");
  app.add_flag("--no-fold-bn", options.no_fold_bn, "embed: keep BatchNorm separate");
  app.add_flag("--no-fuse", options.no_fuse, "embed: out-of-place ReLU and residual add");
  app.add_flag("--no-prepack", options.no_prepack, "embed: no oneDNN blocked weights (dense path)");
  app.add_flag("--no-direct-onednn", options.no_direct_onednn,
               "embed: LibTorch's oneDNN ops instead of calling oneDNN directly");
  app.add_flag("--no-channels-last", options.no_channels_last, "NCHW instead of channels_last");
  app.add_flag("--no-reuse-memory", options.no_reuse_memory,
               "leave glibc's malloc as is (fresh pages for every large tensor)");
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;

  try {
    if (options.dtype == "int8" && options.mode != "embed") {
      throw reidnet::examples::UsageError("--dtype int8 times --mode embed only");
    }
    if (options.dtype != "int8" && app.count("--data") > 0) {
      throw reidnet::examples::UsageError("--data needs --dtype int8");
    }
    options.run_int8 = reidnet::examples::int8_runs_here(app, options.dtype == "int8");
    const torch::Device device(options.device == "cuda" ? torch::kCUDA : torch::kCPU);
    if (device.is_cuda() && !torch::cuda::is_available()) {
      fmt::print(stderr, "reidnet-bench: --device cuda, but this LibTorch sees no CUDA device\n");
      return 1;
    }
    const auto cpu = reidnet::set_cpu_threads(options.threads);
    const bool reuse_memory = !options.no_reuse_memory && reidnet::reuse_freed_host_memory();
    // Let cuDNN time its algorithms for these fixed shapes, as Python's cudnn.benchmark does.
    if (device.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
    torch::manual_seed(0);
    auto net = reidnet::create_model(options.model, reidnet::ModelArgs()
                                                        .class_num(options.class_num)
                                                        .last_stride(options.stride)
                                                        .linear_num(options.linear_num)
                                                        .input_size(reidnet::ImageSize{options.height, options.width}));
    net->eval();
    const auto images =
        torch::randn({options.batch_size, 3, options.height, options.width}).to(device);
    Timing timing;
    const std::string path = options.mode == "embed"
                                 ? embed_path(options, net, device, images, timing)
                                 : train_path(options, net, device, images, timing);
    const double throughput =
        static_cast<double>(options.batch_size * options.iters) / timing.total_seconds;
    // ResNet-50 forward at 256x128 is ~5.3 GFLOP (multiply-add = 2); layer4 stride 1 adds ~0.9.
    const double gflop_per_image = (options.stride == 1 ? 6.2 : 5.3) *
                                   static_cast<double>(options.height * options.width) /
                                   (256.0 * 128.0);
    fmt::print("reidnet-bench  mode={} dtype={} batch={} iters={} threads={} input={}x{}\n",
               options.mode, options.dtype, options.batch_size, options.iters, options.threads,
               options.height, options.width);
    fmt::print("  path            {}{}\n", path, reuse_memory ? ", host memory reused" : "");
    fmt::print("  cpu threads     {}\n", cpu.describe());
    fmt::print("  LibTorch        {}\n", TORCH_VERSION);
    fmt::print("  device          {}\n", device.is_cuda() ? "cuda" : "cpu");
    fmt::print("  CPU             {}\n", cpu_instruction_set());
    fmt::print("  ms/batch p50    {:.1f}\n", percentile(timing.milliseconds, 0.5));
    fmt::print("  ms/batch p95    {:.1f}\n", percentile(timing.milliseconds, 0.95));
    fmt::print("  peak memory     {:.0f} MiB (host RSS)\n", peak_rss_mib());
    if (const double cuda_mib = cuda_peak_mib(device); cuda_mib >= 0) {
      fmt::print("  peak CUDA mem   {:.0f} MiB (caching allocator)\n", cuda_mib);
    }
    if (options.mode == "embed") {
      fmt::print("  forward GFLOP/s {:.0f}\n", throughput * gflop_per_image);
    }
    fmt::print("throughput {:.2f} img/s\n", throughput);
  } catch (const reidnet::InputError& error) {  // bad flags, data or files
    fmt::print(stderr, "reidnet-bench: {}\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    fmt::print(stderr, "reidnet-bench: {}\n", error.what());
    return 1;
  }
  return 0;
}
