// reidnet-train: fine-tune a ReID model (any of reidnet::model_names(): the baseline's ft_net,
// ft_net_dense, PCB, IBN-a, USAM, or the strong baseline's BNNeck) on a Market-1501-style
// data set with the Python baseline's recipe. The run folder changes only through RunFolder
// commits, one per epoch.
//
//   reidnet-train --data Market-1501 --out model/ft_ResNet50 --weights resnet50.pth
//   reidnet-train --data Market-1501 --PCB --weights resnet50.pth
//   reidnet-train --data toy --out runs/toy --height 128 --width 64 --total-epoch 10
//   reidnet-train --nproc-per-node 2 --data toy --out runs/toy2 --preset scratch
//   torchrun --nproc-per-node 2 --no-python reidnet-train --data toy --out runs/toy2
//
// With torchrun's environment (WORLD_SIZE, RANK, ...) each process trains on its shard of every
// epoch and gradients are averaged over the processes (reidnet/distributed/distributed.hpp); rank 0 alone
// writes the run folder. --batch-size is per process, as in the baseline's DDP script.
#include "common/cli.hpp"
#include "common/curves.hpp"
#include "common/opts_yaml.hpp"
#include "common/progress.hpp"

#include <reidnet/io/checkpoint.hpp>
#include <reidnet/data.hpp>
#include <reidnet/distributed/distributed.hpp>
#include <reidnet/distributed/local_launcher.hpp>
#include <reidnet/solver/optimizer_state.hpp>
#include <reidnet/reidnet.hpp>
#include <reidnet/engine/run_folder.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include <csignal>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <set>

namespace fs = std::filesystem;
using reidnet::examples::TrainConfig;
using reidnet::examples::UsageError;

namespace {

/// Per-epoch figures, kept across --resume in trainer_state.yaml.
struct History {
  std::vector<double> train_loss, train_error, val_loss, val_error;
};

struct PhaseResult {
  double loss = 0, error = 0;
  int64_t images = 0;
};

void add_flags(CLI::App& app, TrainConfig& c, std::string& name) {
  // Value ranges are checked by check_train_config, for flags and opts.yaml alike.
  // --preset is applied as soon as it is parsed, before any other flag is stored: flags
  // override the preset, wherever they stand on the command line.
  std::string presets;
  for (const auto& preset : reidnet::examples::kPresets) {
    presets += fmt::format("\n  {}: {}", preset.name, preset.summary);
  }
  app.add_option_function<std::string>(
         "--preset", [&c](const std::string& name) {
           c.preset = name;
           reidnet::examples::find_preset(name)->apply(c);
         },
         "named recipe; the flags given override it:" + presets)
      ->check(CLI::IsMember(reidnet::examples::preset_names()))
      ->trigger_on_parse();
  app.add_option("--data,--data_dir", c.data, "data set root (Market-1501, DukeMTMC-reID, MSMT17 "
                 "or the baseline's folder-per-id layout); with --resume, opts.yaml's by default");
  app.add_option("--out", c.out, "output folder (net_last.pth, opts.yaml, train.log, train.jpg)");
  app.add_option("--name", name, "baseline spelling: output folder model/NAME");
  app.add_flag("--train-all,--train_all", c.train_all, "train on every image (no val split)");
  app.add_option("--height", c.height, "input height (up to 4096)");
  app.add_option("--width", c.width, "input width (up to 4096)");
  app.add_option("--workers", c.workers, "decoding threads");
  app.add_option("--model", c.model, "model family (reidnet-model-summary --list)");
  app.add_flag("--use-dense,--use_dense", c.use_dense, "DenseNet-121 backbone (ft_net_dense)");
  app.add_flag("--PCB,--pcb", c.pcb, "PCB: six stripes, six classifiers; 384x192 by default");
  app.add_flag("--ibn", c.ibn, "IBN-Net's resnet50_ibn_a backbone (with ft_net or --bnneck)");
  app.add_flag("--usam", c.usam, "USAM attention after the stem and layer1 (ft_net_usam)");
  app.add_flag("--bnneck", c.bnneck, "the strong baseline's BNNeck head in fast-reid's layout");
  app.add_option("--pool", c.pool, "global pooling: avg, max, gem (learnable p) or gem_fixed");
  app.add_option("--stride", c.last_stride, "stride of the last stage (1 or 2)");
  app.add_option("--droprate", c.droprate, "dropout before the classifier (0 to 0.99)");
  app.add_option("--linear-num,--linear_num", c.linear_num, "bottleneck width (0 = none)");
  app.add_option("--weights", c.weights, "ImageNet weights of the backbone (torchvision's "
                 "resnet50/densenet121, IBN-Net's resnet50_ibn_a)")
      ->check(CLI::ExistingFile);
  app.add_option("--batch-size,--batchsize", c.batch_size, "images per batch (up to 4096)");
  app.add_option("--optimizer", c.optimizer, "sgd (Nesterov momentum 0.9), adam or adamw");
  app.add_option("--lr", c.lr, "learning rate of the head");
  app.add_option("--weight-decay", c.weight_decay, "weight decay (adamw: decoupled)");
  app.add_option("--total-epoch,--total_epoch", c.total_epoch, "epochs (0 writes the initial model)");
  app.add_option("--warm-epoch,--warm_epoch", c.warm_epoch, "loss warm-up epochs");
  app.add_flag("--cosine", c.cosine, "cosine schedule instead of StepLR");
  app.add_option("--milestones", c.milestones, "MultiStepLR: epochs at which the lr drops "
                 "tenfold, e.g. 40,70 (default: StepLR at 2/3 of the epochs)")
      ->delimiter(',');
  app.add_option("--lr-warmup-epochs", c.lr_warmup_epochs, "linear lr warm-up, per iteration, "
                 "over this many epochs");
  app.add_option("--lr-warmup-factor", c.lr_warmup_factor, "the lr warm-up's first factor (0 to 1]");
  app.add_option("--backbone-lr-ratio", c.backbone_lr_ratio, "backbone lr = ratio x lr (0 to 10)");
  app.add_option("--erasing-p,--erasing_p", c.erasing_p, "random erasing probability");
  app.add_flag("--color-jitter,--color_jitter", c.color_jitter, "ColorJitter(0.1, 0.1, 0.1)");
  app.add_option("--label-smoothing", c.label_smoothing, "cross-entropy label smoothing");
  app.add_flag("--triplet", c.triplet, "add batch-hard triplet loss (margin 0.3), P x K batches");
  app.add_flag("--circle", c.circle, "add circle loss (m 0.25, gamma 32)");
  app.add_option("--instances-per-id", c.instances_per_id, "K of the P x K sampler (with --triplet)");
  app.add_option("--device", c.device, "cpu or cuda");
  app.add_flag("--fp16", c.fp16, "float16 autocast");
  app.add_flag("--bf16", c.bf16, "bfloat16 autocast");
  app.add_flag("--channels-last,!--no-channels-last", c.channels_last,
               "channels_last memory format (default: on, faster on CPU and GPU)");
  app.add_option("--seed", c.seed, "random seed");
  app.add_option("--threads", c.threads, "CPU threads (per process)");
  app.add_option("--dist-backend", c.dist_backend, "multi-process communication: gloo or nccl "
                 "(default: nccl with --device cuda, else gloo)")
      ->check(CLI::IsMember({"gloo", "nccl"}));
  app.add_option("--dist-timeout", c.dist_timeout, "seconds a process waits for the others "
                 "(joining, and every collective)")
      ->check(CLI::Range(1, 86400));
  app.add_flag("--sync-bn,!--no-sync-bn", c.sync_bn, "with several processes, BatchNorm "
               "statistics over all their batches (SyncBatchNorm)");
}

fs::path checkpoint_name(int64_t epoch) { return fmt::format("net_{:03d}.pth", epoch); }

void write_text(const std::string& path, const std::string& text) {
  reidnet::detail::write_file_atomically(path, std::vector<unsigned char>(text.begin(), text.end()));
}

/// train.log (CSV) and train.jpg (the curves), into the commit.
void stage_history(reidnet::RunFolder::Commit& commit, const History& history) {
  std::string csv = "epoch,train_loss,train_top1_error,val_loss,val_top1_error\n";
  for (size_t e = 0; e < history.train_loss.size(); ++e) {
    auto value = [e](const std::vector<double>& v) {
      return e < v.size() ? fmt::format("{:.6f}", v[e]) : std::string();
    };
    csv += fmt::format("{},{},{},{},{}\n", e + 1, value(history.train_loss),
                       value(history.train_error), value(history.val_loss), value(history.val_error));
  }
  write_text(commit.stage("train.log"), csv);
  if (history.train_loss.empty()) return;
  const auto picture = reidnet::examples::render_training_curves(
      history.train_loss, history.val_loss, history.train_error, history.val_error);
  reidnet::write_jpeg(commit.stage("train.jpg"), picture);
}

/// trainer_state.yaml: where the run stands, besides the weights and the optimizer.
struct TrainerState {
  int64_t next_epoch = 0;
  History history;
  reidnet::GradScalerState loss_scale;
};

std::string trainer_state_yaml(const TrainerState& state) {
  YAML::Emitter yaml;
  yaml << YAML::BeginMap << YAML::Key << "next_epoch" << YAML::Value << state.next_epoch;
  yaml << YAML::Key << "train_loss" << YAML::Value << YAML::Flow << state.history.train_loss;
  yaml << YAML::Key << "train_error" << YAML::Value << YAML::Flow << state.history.train_error;
  yaml << YAML::Key << "val_loss" << YAML::Value << YAML::Flow << state.history.val_loss;
  yaml << YAML::Key << "val_error" << YAML::Value << YAML::Flow << state.history.val_error;
  yaml << YAML::Key << "loss_scale" << YAML::Value << state.loss_scale.scale;
  yaml << YAML::Key << "loss_scale_growth_tracker" << YAML::Value << state.loss_scale.growth_tracker;
  yaml << YAML::EndMap;
  return std::string(yaml.c_str()) + "\n";
}

/// Reads and checks trainer_state.yaml against the run's recipe; UsageError names the key.
TrainerState read_trainer_state(const fs::path& path, const TrainConfig& config, bool has_val) {
  const auto node = reidnet::examples::read_yaml_map(path);
  TrainerState state;
  state.next_epoch = -1;
  const auto get = [&](const char* key, auto& value) {
    if (!node[key]) throw UsageError(fmt::format("{}: key '{}' is missing", path.string(), key));
    reidnet::examples::read_yaml_field(node, path, key, value);
  };
  get("next_epoch", state.next_epoch);
  if (state.next_epoch < 0 || state.next_epoch > config.total_epoch) {
    throw UsageError(fmt::format("{}: key 'next_epoch' is {}; expected 0 to total_epoch ({})",
                                 path.string(), state.next_epoch, config.total_epoch));
  }
  const auto per_epoch = [&](const char* key, std::vector<double>& values, bool present) {
    get(key, values);
    const auto expected = static_cast<size_t>(present ? state.next_epoch : 0);
    if (values.size() != expected) {
      throw UsageError(fmt::format("{}: key '{}' has {} values; next_epoch {} needs {}",
                                   path.string(), key, values.size(), state.next_epoch, expected));
    }
    for (const double value : values) {
      if (!std::isfinite(value)) {
        throw UsageError(fmt::format("{}: key '{}' holds {}", path.string(), key, value));
      }
    }
  };
  per_epoch("train_loss", state.history.train_loss, true);
  per_epoch("train_error", state.history.train_error, true);
  per_epoch("val_loss", state.history.val_loss, has_val);
  per_epoch("val_error", state.history.val_error, has_val);
  get("loss_scale", state.loss_scale.scale);
  get("loss_scale_growth_tracker", state.loss_scale.growth_tracker);
  if (!std::isfinite(state.loss_scale.scale) || state.loss_scale.scale <= 0) {
    throw UsageError(fmt::format("{}: key 'loss_scale' is {}; expected a positive number",
                                 path.string(), state.loss_scale.scale));
  }
  if (state.loss_scale.growth_tracker < 0) {
    throw UsageError(fmt::format("{}: key 'loss_scale_growth_tracker' is {}; expected a count",
                                 path.string(), state.loss_scale.growth_tracker));
  }
  return state;
}

/// The files --resume needs, each checked to exist before anything is read.
void check_resume_folder(const fs::path& dir) {
  for (const char* file : {"trainer_state.yaml", "optimizer.pt", "net_last.pth", "opts.yaml"}) {
    if (!fs::exists(dir / file)) {
      throw UsageError(fmt::format("--resume {}: {} is missing; resume needs a folder written "
                                   "by reidnet-train", dir.string(), file));
    }
  }
}

/// Crash testing: with REIDNET_KILL_AT=<epoch>:<step> the process kills itself (SIGKILL, as
/// `kill -9` does) right after that step of that epoch's commit (epoch 0 = the run's first
/// commit; steps as RunFolder::Commit::publish names them).
reidnet::RunFolder::Commit::StepObserver kill_at_step(int64_t epoch) {
  const char* target = std::getenv("REIDNET_KILL_AT");
  if (target == nullptr) return {};
  const std::string wanted = target;
  return [wanted, epoch](const std::string& step) {
    if (wanted == fmt::format("{}:{}", epoch, step)) std::raise(SIGKILL);
  };
}

/// Crash testing of multi-process runs: with REIDNET_KILL_RANK_AT=<rank>:<epoch>:<step> the
/// process of that rank kills itself (SIGKILL) after that training step (counted from 1) of
/// that epoch (as printed, from 1).
void kill_at_training_step(int64_t rank, int64_t epoch, int64_t step) {
  static const char* target = std::getenv("REIDNET_KILL_RANK_AT");
  if (target != nullptr && fmt::format("{}:{}:{}", rank, epoch, step) == target) std::raise(SIGKILL);
}

/// Cross-entropy summed over the model's classifiers (one; PCB's six stripes, as the baseline).
torch::Tensor identity_loss(torch::nn::CrossEntropyLoss& cross_entropy,
                            const std::vector<torch::Tensor>& logits, const torch::Tensor& labels) {
  torch::Tensor loss;
  for (const auto& part : logits) {
    const auto term = cross_entropy(part.to(torch::kFloat), labels);
    loss = loss.defined() ? loss + term : term;
  }
  return loss;
}

/// What the prediction is the argmax of: the logits, or for several classifiers the sum of
/// their softmaxes (the baseline's PCB).
torch::Tensor identity_scores(const std::vector<torch::Tensor>& logits) {
  if (logits.size() == 1) return logits.front().to(torch::kFloat).detach();
  torch::Tensor scores;
  for (const auto& part : logits) {
    const auto probabilities = torch::softmax(part.to(torch::kFloat).detach(), 1);
    scores = scores.defined() ? scores + probabilities : probabilities;
  }
  return scores;
}

/// Runs `body`; a failure to read a file it was given (weights, a resumed run's state) is
/// bad input: exit code 2, not 1.
template <class Body>
decltype(auto) as_usage_error(Body&& body) {
  try {
    return body();
  } catch (const UsageError&) {
    throw;
  } catch (const std::exception& error) {
    throw UsageError(error.what());
  }
}

/// One training run, set up and checked completely (flags, data, weights, resumed state) before
/// `run` writes anything into the run folder.
class Trainer {
 public:
  /// `group`: the job's other processes, or nullptr to train alone.
  Trainer(TrainConfig config, reidnet::Dataset dataset, std::string resume,
          const reidnet::ProcessGroup* group)
      : c_(std::move(config)),
        data_(std::move(dataset)),
        resume_(std::move(resume)),
        group_(group),
        is_main_(group == nullptr || group->is_main()),
        // Each process on a machine takes the GPU of its LOCAL_RANK.
        device_(c_.device == "cuda"
                    ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(group ? group->local_rank() : 0))
                    : torch::Device(torch::kCPU)),
        dtype_(c_.bf16 ? torch::kBFloat16 : c_.fp16 ? torch::kHalf : torch::kFloat),
        // fp16 gradients underflow without loss scaling; bf16 has fp32's range.
        scaler_(reidnet::GradScalerOptions().enabled(c_.fp16)),
        train_samples_(c_.train_all ? data_.train_all : data_.train),
        has_val_(!c_.train_all && !data_.val.empty()),
        net_(nullptr) {
    if (device_.is_cuda() && !torch::cuda::is_available()) {
      throw UsageError("--device cuda: no CUDA device is available to this LibTorch");
    }
    if (train_samples_.empty()) throw UsageError("--data " + c_.data + ": no training images found");
    if (!resume_.empty() && c_.class_num != data_.class_num()) {
      throw UsageError(fmt::format("--resume {}: the run trains {} ids (opts.yaml nclasses), but "
                                   "--data {} has {}", resume_, c_.class_num, c_.data,
                                   data_.class_num()));
    }
    c_.class_num = data_.class_num();
    if (c_.triplet) {
      const auto k = c_.instances_per_id;
      if (c_.batch_size % k != 0) {
        throw UsageError(fmt::format("--batch-size {} is not a multiple of --instances-per-id {} "
                                     "(P x K batches)", c_.batch_size, k));
      }
      if (c_.batch_size / k > c_.class_num) {
        throw UsageError(fmt::format("--batch-size {} / --instances-per-id {}: P x K sampling needs at "
                                     "least P = {} identities, --data {} has {}", c_.batch_size, k,
                                     c_.batch_size / k, c_.data, c_.class_num));
      }
    }
    const auto loader_options = reidnet::LoaderOptions()
                                    .batch_size(c_.batch_size)
                                    .workers(c_.workers)
                                    .shuffle(true)
                                    .drop_last(true)
                                    .seed(c_.seed)
                                    .pin_memory(device_.is_cuda())
                                    .instances_per_identity(c_.triplet ? c_.instances_per_id : 0)
                                    .shard(group_ ? std::optional<reidnet::Shard>(
                                                        {group_->rank(), group_->size()})
                                                  : std::nullopt);
    torch::manual_seed(c_.seed);
    auto [model_name, model_args] = reidnet::examples::resolve_model(
        c_, [](const char*, const char* flag) { return std::string(flag); });
    net_ = reidnet::create_model(model_name, model_args.class_num(c_.class_num));
    // The family's own normalisation (mean, std, pixel range) feeds both pipelines.
    const auto normalization = reidnet::normalization_of(net_->config());
    train_loader_.emplace(
        train_samples_,
        reidnet::make_train_transform(reidnet::TrainTransformOptions()
                                          .height(c_.height)
                                          .width(c_.width)
                                          .color_jitter(c_.color_jitter ? 0.1 : 0.0)
                                          .erasing_probability(c_.erasing_p)
                                          .normalization(normalization)),
        loader_options);
    val_loader_.emplace(data_.val, reidnet::make_eval_transform(c_.height, c_.width, normalization),
                        reidnet::LoaderOptions().batch_size(c_.batch_size).workers(c_.workers));
    batches_per_epoch_ = static_cast<int64_t>(train_loader_->plan(0).size());
    if (batches_per_epoch_ == 0) {
      throw UsageError(fmt::format("--batch-size {} is larger than the {} training images{}",
                                   c_.batch_size, train_samples_.size(),
                                   group_ ? fmt::format(" of this process's shard (1 in {})", group_->size())
                                          : std::string()));
    }
    // opts.yaml records the family resolved, with the baseline's switches to match.
    c_.model = model_name;
    c_.ibn = model_name == "ft_net_ibn" || model_args.backbone() == "resnet50_ibn_a";
    say("model {}: {} parameters, {}-d embedding\n", model_name,
               reidnet::count_parameters(*net_), net_->feature_dim());
    if (!c_.weights.empty() && !resume_.empty()) {
      say("resuming: the weights come from {}/net_last.pth, not --weights\n", resume_);
    } else if (!c_.weights.empty()) {
      const auto report = as_usage_error([&] { return reidnet::load_imagenet_weights(*net_, c_.weights); });
      say("loaded {} backbone tensors from {}\n", report.loaded.size(), c_.weights);
    } else if (resume_.empty()) {
      say("no --weights: training from scratch, so the backbone learns at the full lr "
          "(backbone ratio 1.0 instead of {})\n", c_.backbone_lr_ratio);
      c_.backbone_lr_ratio = 1.0;
    }
    if (!resume_.empty()) {
      as_usage_error([&] {
        reidnet::load_state_dict(*net_, (fs::path(resume_) / "net_last.pth").string());
      });
    }
    net_->to(device_);
    if (c_.channels_last) reidnet::to_channels_last(*net_);
    // Rank 0's weights and buffers everywhere; from here on, averaged gradients. Some
    // families keep parameters they never use (ft_net: torchvision's fc, for its keys).
    if (group_) {
      averager_.emplace(*net_, *group_, reidnet::GradientAveragerOptions().find_unused_parameters(true));
      if (c_.sync_bn) {
        const auto layers = reidnet::synchronize_batch_norm(*net_, *group_);
        say("SyncBatchNorm: {} BatchNorm layers normalise over all {} processes' batches\n", layers,
            group_->size());
      }
    }
    if (c_.optimizer == "sgd") {
      optimizer_ = reidnet::make_sgd(*net_, reidnet::SgdRecipe()
                                                .lr(c_.lr)
                                                .backbone_lr_ratio(c_.backbone_lr_ratio)
                                                .weight_decay(c_.weight_decay));
    } else {
      optimizer_ = reidnet::make_adam(*net_, reidnet::AdamRecipe()
                                                 .lr(c_.lr)
                                                 .backbone_lr_ratio(c_.backbone_lr_ratio)
                                                 .weight_decay(c_.weight_decay)
                                                 .decoupled_weight_decay(c_.optimizer == "adamw"));
    }
    base_rates_ = reidnet::learning_rates(*optimizer_);
    if (!resume_.empty()) {
      const fs::path folder(resume_);
      state_ = read_trainer_state(folder / "trainer_state.yaml", c_, has_val_);
      as_usage_error([&] { reidnet::load_optimizer_state(*optimizer_, (folder / "optimizer.pt").string()); });
      scaler_.load_state(state_.loss_scale);
    }
  }

  /// Trains into `folder` (locked by the caller; nullptr on the ranks other than 0, which
  /// write nothing); a new run first commits its opts.yaml and initial state, so that the
  /// folder is a resumable run from the start.
  int run(reidnet::RunFolder* folder) {
    const fs::path out = c_.out;
    if (resume_.empty()) {
      if (folder != nullptr) {
        auto commit = folder->begin();
        reidnet::examples::write_opts_yaml(c_, commit.stage("opts.yaml"));
        stage_epoch(commit, /*epoch=*/0);
        commit.publish(kill_at_step(0));
      }
      if (c_.total_epoch == 0) {
        say("--total-epoch 0: wrote the initialised model to {}\n", (out / "net_last.pth").string());
        return 0;
      }
    } else if (state_.next_epoch >= c_.total_epoch) {
      say("{} has finished all {} epochs: nothing to resume\n", resume_, c_.total_epoch);
      return 0;
    } else {
      say("resuming {} at epoch {}\n", resume_, state_.next_epoch + 1);
    }
    // Warm-up counts this process's steps: an epoch of its shard (DistributedSampler's size).
    const auto images = static_cast<int64_t>(train_samples_.size());
    const auto warmup = reidnet::LossWarmup::for_data(
        c_.warm_epoch, group_ ? (images + group_->size() - 1) / group_->size() : images, c_.batch_size);
    say("training {} images of {} ids ({} val), {} batches of {} per epoch{}, {} epochs\n",
        train_samples_.size(), c_.class_num, data_.val.size(), batches_per_epoch_, c_.batch_size,
        group_ ? fmt::format(" on each of {} processes ({} backend)", group_->size(),
                             group_->backend_name())
               : std::string(),
        c_.total_epoch);

    const int64_t first_epoch = state_.next_epoch;
    const int64_t last_epoch = c_.epochs_this_run > 0
        ? std::min(c_.total_epoch, first_epoch + c_.epochs_this_run) : c_.total_epoch;
    for (int64_t epoch = first_epoch; epoch < last_epoch; ++epoch) {
      const auto rates = c_.cosine ? reidnet::CosineSchedule{c_.total_epoch, 0.01 * c_.lr}.rates(base_rates_, epoch)
          : !c_.milestones.empty() ? reidnet::MultiStepSchedule{c_.milestones, 0.1}.rates(base_rates_, epoch)
          : reidnet::StepSchedule::for_epochs(c_.total_epoch).rates(base_rates_, epoch);
      reidnet::set_learning_rates(*optimizer_, rates);
      // Dropout draws from the global generator: seeding it per epoch makes a resumed run
      // take the same random path as an uninterrupted one.
      torch::manual_seed(c_.seed * 1000003 + static_cast<uint64_t>(epoch));
      const auto train = train_epoch(warmup, epoch, rates);
      PhaseResult val;
      if (std::isfinite(train.loss) && has_val_ && is_main_) val = evaluate_val();
      if (!std::isfinite(train.loss) || !std::isfinite(val.loss)) {
        if (!is_main_) return 1;
        fmt::print(stderr, "epoch {}: the loss became {} in {} (try a lower --lr or --warm-epoch); "
                   "stopping, {} holds the last good epoch ({})\n", epoch + 1,
                   std::isfinite(train.loss) ? val.loss : train.loss,
                   std::isfinite(train.loss) ? "validation" : "training",
                   (out / "net_last.pth").string(), epoch);
        return 1;
      }
      state_.history.train_loss.push_back(train.loss);
      state_.history.train_error.push_back(train.error);
      std::string val_text;
      if (has_val_) {
        state_.history.val_loss.push_back(val.loss);
        state_.history.val_error.push_back(val.error);
        val_text = fmt::format(" val loss {:.4f} top1err {:.4f}", val.loss, val.error);
      }
      say("epoch {}/{} lr {:.5f} train loss {:.4f} top1err {:.4f}{}\n", epoch + 1,
          c_.total_epoch, rates.back(), train.loss, train.error, val_text);
      state_.next_epoch = epoch + 1;
      state_.loss_scale = scaler_.state();
      if (folder != nullptr) {
        auto commit = folder->begin();
        stage_epoch(commit, epoch + 1);
        commit.publish(kill_at_step(epoch + 1));
      }
    }
    if (last_epoch < c_.total_epoch) {
      say("stopped after epoch {} of {}: continue with --resume {}\n", last_epoch,
          c_.total_epoch, out.string());
      return 0;
    }
    say("done: {}\n", (out / "net_last.pth").string());
    return 0;
  }

 private:
  /// What one process prints: rank 0 speaks for the job.
  template <class... Args>
  void say(fmt::format_string<Args...> format, Args&&... args) const {
    if (is_main_) fmt::print(format, std::forward<Args>(args)...);
  }

  torch::Tensor to_device(const torch::Tensor& images) const {
    auto moved = images.to(device_, /*non_blocking=*/true);
    return c_.channels_last ? moved.contiguous(torch::MemoryFormat::ChannelsLast) : moved;
  }

  /// The files of the state after `epoch` epochs, staged into `commit`.
  void stage_epoch(reidnet::RunFolder::Commit& commit, int64_t epoch) {
    reidnet::save_state_dict(*net_, commit.stage("net_last.pth"));
    if (epoch > 0 && epoch % 10 == 0) reidnet::save_state_dict(*net_, commit.stage(checkpoint_name(epoch)));
    reidnet::save_optimizer_state(*optimizer_, commit.stage("optimizer.pt"));
    write_text(commit.stage("trainer_state.yaml"), trainer_state_yaml(state_));
    stage_history(commit, state_.history);
  }

  /// One epoch at the schedule's `rates` (per parameter group), under the linear warm-up of
  /// the learning rate in its first iterations.
  PhaseResult train_epoch(const reidnet::LossWarmup& warmup, int64_t epoch,
                          const std::vector<double>& rates) {
    auto& net = *net_;
    auto& optimizer = *optimizer_;
    const int64_t batches = batches_per_epoch_;
    const reidnet::LinearWarmup lr_warmup{c_.lr_warmup_epochs * batches, c_.lr_warmup_factor};
    net.train();
    torch::nn::CrossEntropyLoss cross_entropy(
        torch::nn::CrossEntropyLossOptions().label_smoothing(c_.label_smoothing));
    reidnet::TripletLoss triplet;
    reidnet::CircleLoss circle;
    std::optional<reidnet::examples::Progress> progress;
    if (is_main_) progress.emplace(fmt::format("epoch {}", epoch + 1), batches);
    PhaseResult result;
    double loss_sum = 0;
    int64_t correct = 0, step = 0;
    auto run = train_loader_->epoch(epoch);
    while (auto batch = run.next()) {
      const auto images = to_device(batch->images);
      const auto labels = batch->labels.to(device_, /*non_blocking=*/true);
      reidnet::clear_gradients(optimizer);
      if (averager_) averager_->before_forward();
      torch::Tensor loss, logits;
      {
        reidnet::AutocastGuard autocast(device_, dtype_);
        auto output = net.forward(images);
        loss = identity_loss(cross_entropy, output.logits, labels);
        logits = identity_scores(output.logits);
        if (c_.triplet || c_.circle) {
          const auto features = torch::nn::functional::normalize(
              output.metric_feature.to(torch::kFloat),
              torch::nn::functional::NormalizeFuncOptions().dim(1));
          if (c_.triplet) loss = loss + triplet(features, labels);
          if (c_.circle) loss = loss + circle(features, labels) / labels.size(0);
        }
      }
      // One sync per step for the figures (the baseline does the same with .item()); with
      // several processes, the job's figures: every rank then stops on the same step.
      auto figures = torch::tensor({loss.item<double>() * static_cast<double>(labels.size(0)),
                                    logits.argmax(1).eq(labels).sum().item<double>(),
                                    static_cast<double>(labels.size(0))}, torch::kDouble);
      if (group_) group_->all_reduce_sum(figures);
      const auto* figure = figures.data_ptr<double>();
      if (!std::isfinite(figure[0])) {
        result.loss = figure[0];
        return result;
      }
      const int64_t iteration = epoch * batches + step;
      if (iteration <= lr_warmup.iterations) {  // at its end, back to the epoch's rates
        reidnet::set_learning_rates(optimizer, lr_warmup.rates(rates, iteration));
      }
      if (averager_) averager_->before_backward({loss});
      scaler_.scale(loss * warmup.factor(epoch, iteration)).backward();
      scaler_.step(optimizer);  // skipped when fp16 gradients overflowed
      scaler_.update();
      loss_sum += figure[0];
      correct += static_cast<int64_t>(figure[1]);
      result.images += static_cast<int64_t>(figure[2]);
      ++step;
      kill_at_training_step(group_ ? group_->rank() : 0, epoch + 1, step);
      if (progress) {
        progress->update(step, result.images,
                         fmt::format("loss {:.4f} acc {:.3f}", loss_sum / result.images,
                                     static_cast<double>(correct) / result.images));
      }
    }
    result.loss = loss_sum / std::max<int64_t>(result.images, 1);
    result.error = 1.0 - static_cast<double>(correct) / std::max<int64_t>(result.images, 1);
    return result;
  }

  PhaseResult evaluate_val() {
    auto& net = *net_;
    net.eval();
    torch::NoGradGuard no_grad;
    torch::nn::CrossEntropyLoss cross_entropy;
    PhaseResult result;
    double loss_sum = 0;
    int64_t correct = 0;
    auto run = val_loader_->epoch(0);
    while (auto batch = run.next()) {
      const auto labels = batch->labels.to(device_);
      torch::Tensor logits, loss;
      {
        reidnet::AutocastGuard autocast(device_, dtype_);
        const auto output = net.forward(to_device(batch->images));
        loss = identity_loss(cross_entropy, output.logits, labels);
        logits = identity_scores(output.logits);
      }
      loss_sum += loss.item<double>() * static_cast<double>(labels.size(0));
      correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
      result.images += labels.size(0);
    }
    result.loss = loss_sum / std::max<int64_t>(result.images, 1);
    result.error = 1.0 - static_cast<double>(correct) / std::max<int64_t>(result.images, 1);
    return result;
  }

  TrainConfig c_;
  reidnet::Dataset data_;
  std::string resume_;
  const reidnet::ProcessGroup* group_;
  bool is_main_;
  torch::Device device_;
  torch::ScalarType dtype_;
  reidnet::GradScaler scaler_;
  const std::vector<reidnet::Sample>& train_samples_;
  bool has_val_;
  std::optional<reidnet::DataLoader> train_loader_, val_loader_;
  int64_t batches_per_epoch_ = 0;
  reidnet::ReidModel net_;
  std::optional<reidnet::GradientAverager> averager_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<double> base_rates_;
  TrainerState state_;
};

/// The run in `folder`, as its opts.yaml records it, for --resume. Flags that only say how to
/// run (where the data is now, device, threads, ...) may be given again; a recipe flag may not,
/// since the resumed run would silently differ from the one that was started.
TrainConfig resumed_config(const CLI::App& app, const TrainConfig& command_line,
                           const std::string& folder) {
  const std::set<std::string> run_flags{"--resume", "--data", "--device", "--threads", "--workers",
                                        "--epochs-this-run", "--channels-last", "--dist-backend",
                                        "--dist-timeout", "--sync-bn"};
  for (const auto* option : app.get_options()) {
    if (option->count() > 0 && run_flags.count(option->get_name()) == 0) {
      throw UsageError(fmt::format("{} cannot be combined with --resume: the run continues with "
                                   "the options in {}/opts.yaml", option->get_name(), folder));
    }
  }
  auto config = as_usage_error([&] { return reidnet::examples::read_opts_yaml(fs::path(folder) / "opts.yaml"); });
  config.out = folder;
  if (!command_line.data.empty()) config.data = command_line.data;
  config.device = command_line.device;
  config.threads = command_line.threads;
  config.workers = command_line.workers;
  config.epochs_this_run = command_line.epochs_this_run;
  config.dist_backend = command_line.dist_backend;
  config.dist_timeout = command_line.dist_timeout;
  if (app.count("--channels-last") > 0) config.channels_last = command_line.channels_last;
  if (app.count("--sync-bn") > 0) config.sync_bn = command_line.sync_bn;
  return config;
}

/// Checks everything, then locks the run folder and trains. A rejected command leaves the
/// folder as it was: nothing is written before the flags, the data set and every file read
/// have been checked. (--resume locks its folder first, so that the state it reads cannot
/// change under it; that may finish a commit a killed run had already published.)
int train(CLI::App& app, TrainConfig config, const std::string& resume,
          const std::optional<reidnet::LaunchEnvironment>& launch) {
  // With several processes, rank 0 alone locks and writes the run folder.
  const bool is_main = !launch || launch->rank == 0;
  std::optional<reidnet::ProcessGroup> group;
  const auto join = [&] {
    if (!launch || group) return;
    group = reidnet::ProcessGroup::connect(
        *launch, config.device == "cuda" ? torch::kCUDA : torch::kCPU,
        reidnet::ProcessGroupOptions()
            .backend(config.dist_backend)
            .timeout(std::chrono::seconds(config.dist_timeout)));
  };
  std::optional<reidnet::RunFolder> folder;
  const auto lock = [&folder](const std::string& path) {
    try {
      folder.emplace(path);
    } catch (const reidnet::RunFolderBusy& error) {
      throw UsageError(error.what());
    }
  };
  if (!resume.empty()) {
    join();
    if (is_main) lock(resume);  // first: it finishes a commit that a killed run had published
    if (group) group->barrier();  // the others read the folder once rank 0 holds it
    check_resume_folder(resume);
    config = resumed_config(app, config, resume);
  } else if (config.data.empty()) {
    throw UsageError("--data is required (the data set root)");
  }
  if (resume.empty() && app.count("--model") == 0 &&
      (config.use_dense || config.pcb || config.usam || config.bnneck || config.ibn)) {
    config.model = "ft_net";  // a family switch on the command line overrides a preset's model
  }
  reidnet::examples::check_train_config(config, [](const char*, const char* flag) { return flag; });
  torch::set_num_threads(static_cast<int>(config.threads));
  // Without --height/--width the size is the default's, unless the preset chose one.
  const bool size_given = app.count("--height") > 0 || app.count("--width") > 0 ||
                          config.height != TrainConfig{}.height ||
                          config.width != TrainConfig{}.width;
  if (resume.empty() && !size_given) {
    // The family's own input size (PCB: 384x192), as the baseline picks it.
    const auto [name, args] = reidnet::examples::resolve_model(
        config, [](const char*, const char* flag) { return std::string(flag); });
    const auto& model_config = reidnet::create_model(name, args)->config();
    config.height = model_config.height();
    config.width = model_config.width();
  }
  reidnet::reuse_freed_host_memory();  // ~10% per step: no fresh pages for every activation
  auto dataset = as_usage_error([&] { return reidnet::read_dataset(config.data); });
  join();
  Trainer trainer(config, std::move(dataset), resume, group ? &*group : nullptr);
  if (is_main && !folder) lock(config.out);
  try {
    return trainer.run(folder ? &*folder : nullptr);
  } catch (const UsageError&) {
    throw;
  } catch (const reidnet::InputError&) {  // a picture or file this rank refused
    throw;
  } catch (const std::exception& error) {
    if (!group) throw;
    // Most often another process died: its peers see their connections close (Gloo's
    // errors are c10::Error or its own exceptions).
    const auto* c10_error = dynamic_cast<const c10::Error*>(&error);
    const std::string what = c10_error != nullptr ? c10_error->what_without_backtrace() : error.what();
    throw std::runtime_error(fmt::format(
        "a collective failed, so this process stops: {}. Another process of the job has most "
        "likely stopped (see its message); {} holds the last finished epoch",
        what.substr(0, what.find('\n')), (fs::path(config.out) / "net_last.pth").string()));
  }
}

/// The command line of --nproc-per-node's workers: this one without that flag.
std::vector<std::string> worker_arguments(int argc, char** argv) {
  std::vector<std::string> arguments;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument == "--nproc-per-node" || argument == "--nproc_per_node") {
      ++i;  // and its value
    } else if (argument.rfind("--nproc-per-node=", 0) != 0 && argument.rfind("--nproc_per_node=", 0) != 0) {
      arguments.push_back(argument);
    }
  }
  return arguments;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fine-tune reidnet's FtNet (ResNet-50 + ClassBlock) on a ReID data set"};
  TrainConfig config;
  std::string name, resume;
  add_flags(app, config, name);
  app.add_option("--resume", resume, "continue the run saved in this folder, with its opts.yaml")
      ->check(CLI::ExistingDirectory);
  app.add_option("--epochs-this-run", config.epochs_this_run,
                 "stop after this many epochs (continue later with --resume), e.g. for time-limited jobs")
      ->check(CLI::PositiveNumber);
  int64_t nproc = 0;
  app.add_option("--nproc-per-node,--nproc_per_node", nproc,
                 "start and supervise this many worker processes on this machine (as torchrun "
                 "does); --batch-size is per process")
      ->check(CLI::Range(1, 1024));
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  if (!name.empty()) config.out = (fs::path("model") / name).string();
  if (nproc > 0) {
    return reidnet::examples::run_reporting_errors("reidnet-train", [&] {
      if (std::getenv("WORLD_SIZE") != nullptr) {
        throw UsageError("--nproc-per-node starts its own workers, but WORLD_SIZE is set: this "
                         "process is already one worker of a launcher (torchrun); drop one of the two");
      }
      return reidnet::run_local_workers("/proc/self/exe", worker_arguments(argc, argv), nproc);
    });
  }
  std::optional<reidnet::LaunchEnvironment> launch;
  try {
    launch = reidnet::LaunchEnvironment::from_environment();
  } catch (const std::exception& error) {
    fmt::print(stderr, "reidnet-train: {}\n", error.what());
    return 2;
  }
  const auto program = launch ? fmt::format("reidnet-train (rank {} of {})", launch->rank, launch->world_size)
                              : std::string("reidnet-train");
  return reidnet::examples::run_reporting_errors(program.c_str(), [&] { return train(app, config, resume, launch); });
}
