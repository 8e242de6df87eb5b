// reidnet-distributed: training throughput of ft_net on one process or, with torchrun's
// environment, data-parallel on several (GradientAverager on c10d). Synthetic pictures, fp32,
// SGD; rank 0 prints the job's images per second. benchmarks/distributed.sh runs it beside
// PyTorch DDP.
//
//   reidnet-distributed --height 128 --width 64 --batch-size 16 --steps 10 --threads 2
//   WORLD_SIZE=2 RANK=0 ... reidnet-distributed --threads 1   (one command per rank)
#include <reidnet/distributed/distributed.hpp>
#include <reidnet/reidnet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <chrono>
#include <optional>

int main(int argc, char** argv) {
  CLI::App app{"Training throughput of ft_net on one or several processes"};
  int64_t height = 128, width = 64, batch_size = 16, steps = 10, warmup = 2, threads = 1, classes = 751;
  std::string model = "ft_net";
  bool sync_bn = false;
  app.add_option("--model", model, "model family");
  app.add_flag("--sync-bn", sync_bn, "BatchNorm statistics over all processes (SyncBatchNorm)");
  app.add_option("--height", height, "input height")->check(CLI::Range(32, 1024));
  app.add_option("--width", width, "input width")->check(CLI::Range(32, 1024));
  app.add_option("--batch-size", batch_size, "pictures per process per step")->check(CLI::Range(1, 1024));
  app.add_option("--steps", steps, "timed steps")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", warmup, "untimed steps first")->check(CLI::Range(0, 1000));
  app.add_option("--threads", threads, "CPU threads per process")->check(CLI::Range(1, 1024));
  app.add_option("--classes", classes, "identities")->check(CLI::Range(2, 100000));
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(static_cast<int>(threads));
    const auto launch = reidnet::LaunchEnvironment::from_environment();
    std::optional<reidnet::ProcessGroup> group;
    if (launch) group = reidnet::ProcessGroup::connect(*launch, torch::kCPU);
    torch::manual_seed(0);
    auto net = reidnet::create_model(model, reidnet::ModelArgs().class_num(classes).droprate(0.0));
    reidnet::to_channels_last(*net);
    net->train();
    std::optional<reidnet::GradientAverager> averager;
    if (group) {
      averager.emplace(*net, *group, reidnet::GradientAveragerOptions().find_unused_parameters(true));
      if (sync_bn) reidnet::synchronize_batch_norm(*net, *group);
    }
    torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    const auto images = torch::randn({batch_size, 3, height, width}).contiguous(torch::MemoryFormat::ChannelsLast);
    const auto labels = torch::randint(classes, {batch_size}, torch::kInt64);
    const auto step = [&] {
      if (averager) averager->before_forward();
      const auto logits = net->forward(images).logits.at(0);
      const auto loss = torch::nn::functional::cross_entropy(logits, labels);
      sgd.zero_grad();
      if (averager) averager->before_backward({logits});
      loss.backward();
      sgd.step();
    };
    for (int64_t i = 0; i < warmup; ++i) step();
    if (group) group->barrier();
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) step();
    if (group) group->barrier();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int64_t world = group ? group->size() : 1;
    if (!group || group->is_main()) {
      fmt::print("reidnet{} {} processes x {} threads: {:.2f} img/s ({} steps of {} per process, {:.3f} s per step)\n",
                 sync_bn ? "-sync-bn" : "", world, threads, static_cast<double>(world * batch_size * steps) / seconds, steps,
                 batch_size, seconds / static_cast<double>(steps));
    }
    return 0;
  } catch (const std::exception& error) {
    fmt::print(stderr, "reidnet-distributed: {}\n", error.what());
    return 1;
  }
}
