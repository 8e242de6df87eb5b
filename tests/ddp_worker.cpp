// One rank of the distributed topic's equality tests, started by tests/test_distributed.cpp
// with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):
//
//   reidnet_ddp_worker ddp FIXTURE OUT
//     ft_net from FIXTURE/init.pth, then 3 steps of 6 pictures of FIXTURE/data.pt per rank,
//     from this rank's shard of epoch 0 (LoaderOptions::shard, seed 7), with GradientAverager
//     and SGD as tests/python/distributed_reference.py has them; writes OUT/rank<r>.pth.
#include <reidnet/checkpoint.hpp>
#include <reidnet/data_loader.hpp>
#include <reidnet/distributed.hpp>
#include <reidnet/reidnet.hpp>

#include <fmt/core.h>

#include <chrono>
#include <optional>
#include <cstdio>
#include <string>
#include <vector>

namespace {

/// `group`: nullptr for one plain process.
int run_steps(const reidnet::ProcessGroup* group, const std::string& fixture,
              const std::string& out) {
  const int64_t rank = group != nullptr ? group->rank() : 0;
  const int64_t world_size = group != nullptr ? group->size() : 1;
  auto net = reidnet::create_model("ft_net", reidnet::ModelArgs().class_num(8).droprate(0.0));
  reidnet::load_state_dict(*net, fixture + "/init.pth");
  net->train();
  const auto data = reidnet::read_state_dict(fixture + "/data.pt");
  const auto& images = data["images"];
  const auto& labels = data["labels"];
  const std::vector<reidnet::Sample> samples(static_cast<size_t>(images.size(0)));
  const auto batches = reidnet::plan_batches(
      samples,
      reidnet::LoaderOptions().batch_size(12 / world_size).shuffle(true).seed(7).shard(
          reidnet::Shard{rank, world_size}),
      /*epoch=*/0);
  std::optional<reidnet::GradientAverager> averager;
  if (group != nullptr) {
    averager.emplace(*net, *group, reidnet::GradientAveragerOptions().find_unused_parameters(true));
  }
  torch::optim::SGD sgd(net->parameters(),
                        torch::optim::SGDOptions(0.001).momentum(0.9).weight_decay(5e-4).nesterov(true));
  for (size_t step = 0; step < 3; ++step) {
    const auto batch = torch::tensor(batches.at(step), torch::kInt64);
    if (averager) averager->before_forward();
    const auto logits = net->forward(images.index_select(0, batch)).logits.at(0);
    const auto loss = torch::nn::functional::cross_entropy(logits, labels.index_select(0, batch));
    sgd.zero_grad();
    if (averager) averager->before_backward({logits});
    loss.backward();
    sgd.step();
  }
  reidnet::save_state_dict(*net, fmt::format("{}/rank{}.pth", out, rank));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    torch::set_num_threads(1);
    const auto launch = reidnet::LaunchEnvironment::from_environment();
    const std::string mode = argc == 4 ? argv[1] : "";
    if (!launch || mode != "ddp") {
      std::fprintf(stderr, "usage: with torchrun's environment, %s ddp FIXTURE OUT\n", argv[0]);
      return 2;
    }
    if (launch->world_size == 1) return run_steps(nullptr, argv[2], argv[3]);
    const auto group = reidnet::ProcessGroup::connect(
        *launch, torch::kCPU, reidnet::ProcessGroupOptions().timeout(std::chrono::seconds(60)));
    return run_steps(&group, argv[2], argv[3]);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "reidnet_ddp_worker: %s\n", error.what());
    return 1;
  }
}
