// One rank of the distributed topic's equality tests, started by tests/test_distributed.cpp
// with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). The test binary
// runs it when its first argument is --ddp-worker (main.cpp), so that it needs no build of its
// own:
//
//   reidnet_tests --ddp-worker ddp FIXTURE OUT
//     ft_net from FIXTURE/init.pth, then 3 steps of 6 pictures of FIXTURE/data.pt per rank,
//     from this rank's shard of epoch 0 (LoaderOptions::shard, seed 7), with GradientAverager
//     and SGD as tests/python/distributed_reference.py has them; writes OUT/rank<r>.pth.
//   reidnet_tests --ddp-worker sync-bn|local-bn FIXTURE OUT [float32|float64]
//     the same model and SGD, 3 steps of 12 pictures in all: step s takes pictures 12s to
//     12s + 11, split in rank order, with BatchNorm statistics over all ranks (sync-bn) or
//     each rank's own (local-bn), in float32 (default) or float64. One rank (WORLD_SIZE=1)
//     is the one-process run at batch 12.
#include <reidnet/io/checkpoint.hpp>
#include <reidnet/data/data_loader.hpp>
#include <reidnet/distributed/distributed.hpp>
#include <reidnet/engine/training_step.hpp>
#include <reidnet/reidnet.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

namespace reidnet::test::ddp_worker {

constexpr int64_t kPicturesPerStep = 12;

/// `group`: nullptr for one plain process.
int run_steps(const std::string& mode, torch::Dtype dtype, const reidnet::ProcessGroup* group,
              const std::string& fixture, const std::string& out) {
  const int64_t rank = group != nullptr ? group->rank() : 0;
  const int64_t world_size = group != nullptr ? group->size() : 1;
  auto net = reidnet::create_model("ft_net", reidnet::ModelArgs().class_num(8).droprate(0.0));
  reidnet::load_state_dict(*net, fixture + "/init.pth");
  net->train();
  if (dtype != torch::kFloat) net->to(dtype);  // (every buffer, num_batches_tracked too)
  const auto data = reidnet::read_state_dict(fixture + "/data.pt");
  const auto images = data["images"].to(dtype);
  const auto& labels = data["labels"];
  const int64_t per_rank = kPicturesPerStep / world_size;
  std::vector<std::vector<int64_t>> batches;
  if (mode == "ddp") {
    const std::vector<reidnet::Sample> samples(static_cast<size_t>(images.size(0)));
    batches = reidnet::plan_batches(
        samples,
        reidnet::LoaderOptions().batch_size(per_rank).shuffle(true).seed(7).shard(
            reidnet::Shard{rank, world_size}),
        /*epoch=*/0);
  } else {
    for (int64_t step = 0; step < 3; ++step) {
      const int64_t first = step * kPicturesPerStep + rank * per_rank;
      batches.emplace_back(static_cast<size_t>(per_rank));
      std::iota(batches.back().begin(), batches.back().end(), first);
    }
  }
  std::optional<reidnet::GradientAverager> averager;
  if (group != nullptr) {
    averager.emplace(*net, *group, reidnet::GradientAveragerOptions().find_unused_parameters(true));
    if (mode == "sync-bn") reidnet::synchronize_batch_norm(*net, *group);
  }
  torch::optim::SGD sgd(net->parameters(),
                        torch::optim::SGDOptions(0.001).momentum(0.9).weight_decay(5e-4).nesterov(true));
  reidnet::TrainingStep train_step(net, sgd, {}, averager ? &*averager : nullptr);
  for (size_t step = 0; step < 3; ++step) {
    const auto batch = torch::tensor(batches.at(step), torch::kInt64);
    train_step(images.index_select(0, batch), labels.index_select(0, batch));
  }
  reidnet::save_state_dict(*net, fmt::format("{}/rank{}.pth", out, rank));
  return 0;
}

/// argv[0] is --ddp-worker, then the mode, FIXTURE, OUT and the precision.
int main(int argc, char** argv) {
  try {
    torch::set_num_threads(1);
    const auto launch = reidnet::LaunchEnvironment::from_environment();
    const std::string mode = argc == 4 || argc == 5 ? argv[1] : "";
    const std::string precision = argc == 5 ? argv[4] : "float32";
    if (!launch || (mode != "ddp" && mode != "sync-bn" && mode != "local-bn") ||
        (precision != "float32" && precision != "float64")) {
      std::fprintf(stderr, "usage: with torchrun's environment, reidnet_tests --ddp-worker "
                   "ddp|sync-bn|local-bn FIXTURE OUT [float32|float64]\n");
      return 2;
    }
    const auto dtype = precision == "float64" ? torch::kDouble : torch::kFloat;
    if (launch->world_size == 1) return run_steps(mode, dtype, nullptr, argv[2], argv[3]);
    const auto group = reidnet::ProcessGroup::connect(
        *launch, torch::kCPU, reidnet::ProcessGroupOptions().timeout(std::chrono::seconds(60)));
    return run_steps(mode, dtype, &group, argv[2], argv[3]);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "reidnet_tests --ddp-worker: %s\n", error.what());
    return 1;
  }
}

}  // namespace reidnet::test::ddp_worker
