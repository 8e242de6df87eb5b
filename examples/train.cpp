// reidnet-train: train a ReID model (any of reidnet::model_names(), or the Python baseline's
// switches) on a Market-1501-style data set with the baseline's recipe or a preset. The run
// folder changes only through RunFolder commits, one per epoch.
//
//   reidnet-train --data Market-1501 --out model/ft_ResNet50 --weights resnet50.pth
//   reidnet-train --data Market-1501 --preset bot --weights resnet50.pth
//   reidnet-train --nproc-per-node 2 --data toy --out runs/toy2 --preset scratch
//   torchrun --nproc-per-node 2 --no-python reidnet-train --data toy --out runs/toy2
//
// With torchrun's environment (WORLD_SIZE, RANK, ...) each process trains on its shard of every
// epoch and gradients are averaged over the processes; rank 0 alone writes the run folder.
// --batch-size is per process, as in the baseline's DDP script.
#include "common/cli.hpp"
#include "common/curves.hpp"
#include "common/progress.hpp"
#include "common/run_flags.hpp"

#include <reidnet/distributed/local_launcher.hpp>
#include <reidnet/engine/trainer.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <optional>

namespace {

/// The progress bar of each epoch (rank 0), and crash testing: with
/// REIDNET_KILL_RANK_AT=<rank>:<epoch>:<step> that rank kills itself (SIGKILL) after that
/// training step (from 1) of that epoch (from 1).
class ProgressHook : public reidnet::TrainerHook {
 public:
  void after_step(reidnet::Trainer& trainer, const reidnet::StepReport& report) override {
    static const char* kill_at = std::getenv("REIDNET_KILL_RANK_AT");
    if (kill_at != nullptr &&
        fmt::format("{}:{}:{}", trainer.rank(), report.epoch, report.step) == kill_at) {
      std::raise(SIGKILL);
    }
    if (!trainer.is_main()) return;
    if (report.step == 1) bar_.emplace(fmt::format("epoch {}", report.epoch), report.steps);
    bar_->update(report.step, report.images,
                 fmt::format("loss {:.4f} acc {:.3f}", report.mean_loss, report.accuracy));
  }

 private:
  std::optional<reidnet::examples::Progress> bar_;
};

/// Crash testing: with REIDNET_KILL_AT=<epoch>:<step> the process kills itself (SIGKILL) right
/// after that step of that epoch's commit (epoch 0 = the run's first commit; steps as
/// RunFolder::Commit::publish names them).
reidnet::RunFolder::Commit::StepObserver kill_at_commit_step(int64_t epoch) {
  const char* target = std::getenv("REIDNET_KILL_AT");
  if (target == nullptr) return {};
  return [wanted = std::string(target), epoch](const std::string& step) {
    if (wanted == fmt::format("{}:{}", epoch, step)) std::raise(SIGKILL);
  };
}

int report(const reidnet::TrainResult& result, bool is_main) {
  const auto weights = (std::filesystem::path(result.folder) / "net_last.pth").string();
  if (!is_main) return result.outcome == reidnet::TrainOutcome::kDiverged ? 1 : 0;
  switch (result.outcome) {
    case reidnet::TrainOutcome::kDiverged:
      fmt::print(stderr, "epoch {}: the loss became {} in {} (try a lower --lr or --warm-epoch); "
                 "stopping, {} holds the last good epoch ({})\n", result.diverged_epoch,
                 result.diverged_value, result.diverged_phase, weights, result.diverged_epoch - 1);
      return 1;
    case reidnet::TrainOutcome::kStopped:
      fmt::print("stopped after epoch {} of {}: continue with --resume {}\n", result.epochs_done,
                 result.total_epochs, result.folder);
      return 0;
    case reidnet::TrainOutcome::kFinished:
      if (result.total_epochs > 0) fmt::print("done: {}\n", weights);
      return 0;
    case reidnet::TrainOutcome::kAlreadyDone:
      return 0;
  }
  return 0;
}

/// The command line of --nproc-per-node's workers: this one without that flag.
std::vector<std::string> worker_arguments(int argc, char** argv) {
  std::vector<std::string> arguments;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument == "--nproc-per-node" || argument == "--nproc_per_node") {
      ++i;  // and its value
    } else if (argument.rfind("--nproc-per-node=", 0) != 0 &&
               argument.rfind("--nproc_per_node=", 0) != 0) {
      arguments.push_back(argument);
    }
  }
  return arguments;
}

}  // namespace

int main(int argc, char** argv) {
  using reidnet::examples::UsageError;
  CLI::App app{"Train a ReID model (reidnet-model-summary --list) on a ReID data set"};
  reidnet::TrainJob job;
  reidnet::examples::RunFlags flags(app, job.config);
  std::string name;
  app.add_option("--name", name, "baseline spelling: output folder model/NAME");
  app.add_option("--resume", job.resume, "continue the run in this folder, with its opts.yaml")
      ->check(CLI::ExistingDirectory);
  int64_t nproc = 0;
  app.add_option("--nproc-per-node,--nproc_per_node", nproc,
                 "start and supervise this many worker processes on this machine (as torchrun "
                 "does); --batch-size is per process")
      ->check(CLI::Range(1, 1024));
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  if (nproc > 0) {
    return reidnet::examples::run_reporting_errors("reidnet-train", [&] {
      if (std::getenv("WORLD_SIZE") != nullptr) {
        throw UsageError("--nproc-per-node starts its own workers, but WORLD_SIZE is set: "
                         "this process is a launcher's worker (torchrun); drop one of the two");
      }
      return reidnet::run_local_workers("/proc/self/exe", worker_arguments(argc, argv), nproc);
    });
  }
  try {
    job.launch = reidnet::LaunchEnvironment::from_environment();
  } catch (const std::exception& error) {
    fmt::print(stderr, "reidnet-train: {}\n", error.what());
    return 2;
  }
  const auto program = job.launch ? fmt::format("reidnet-train (rank {} of {})", job.launch->rank,
                                                job.launch->world_size)
                                  : std::string("reidnet-train");
  return reidnet::examples::run_reporting_errors(program.c_str(), [&] {
    job.given = flags.given();
    if (!name.empty()) {
      if (!job.resume.empty()) throw UsageError("--name cannot be combined with --resume");
      job.config.out = (std::filesystem::path("model") / name).string();
    }
    job.hooks.push_back(std::make_shared<ProgressHook>());
    job.checkpointer.observe_commit(kill_at_commit_step)
        .render_curves([](const reidnet::TrainingHistory& history) {
          return reidnet::examples::render_training_curves(history.train_loss, history.val_loss,
                                                           history.train_error, history.val_error);
        });
    const bool is_main = !job.launch || job.launch->rank == 0;
    return report(reidnet::train_run(std::move(job)), is_main);
  });
}
