#pragma once
/// Training a run that a RunConfig describes: alone or as one process of several (c10d), from
/// scratch or resumed from its run folder, reporting through hooks.
///
///     reidnet::RunConfig config;                    // the baseline's recipe
///     config.data = "Market-1501";
///     config.weights = "resnet50.pth";
///     reidnet::Trainer trainer(config, reidnet::read_dataset(config.data));
///     reidnet::RunFolder folder(config.out);
///     trainer.add_hook(std::make_shared<reidnet::Checkpointer>(folder));
///     const auto result = trainer.train();          // finished, stopped or diverged
///
/// train_run() does what reidnet-train does: the resume rules, the folder lock, the process
/// group, then the trainer with a checkpointer. Needs the reidnet::engine target.
#include <reidnet/core/autocast.hpp>
#include <reidnet/core/errors.hpp>
#include <reidnet/core/files.hpp>
#include <reidnet/core/host_memory.hpp>
#include <reidnet/core/memory_format.hpp>
#include <reidnet/data/data_loader.hpp>
#include <reidnet/data/datasets.hpp>
#include <reidnet/data/image.hpp>
#include <reidnet/data/model_input.hpp>
#include <reidnet/data/transforms.hpp>
#include <reidnet/distributed/distributed.hpp>
#include <reidnet/engine/run_config.hpp>
#include <reidnet/engine/run_folder.hpp>
#include <reidnet/engine/training_step.hpp>
#include <reidnet/io/checkpoint.hpp>
#include <reidnet/models/model_zoo.hpp>
#include <reidnet/solver/grad_scaler.hpp>
#include <reidnet/solver/losses.hpp>
#include <reidnet/solver/optim.hpp>
#include <reidnet/solver/optimizer_state.hpp>
#include <reidnet/solver/schedules.hpp>

#include <fmt/core.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace reidnet {

/// Loss and top-1 error of one phase of an epoch.
struct PhaseFigures {
  double loss = 0, error = 0;
  int64_t images = 0;
};

/// Per-epoch figures, kept across resumes in trainer_state.yaml.
struct TrainingHistory {
  std::vector<double> train_loss, train_error, val_loss, val_error;
};

/// Where a run stands, besides its weights and optimiser (trainer_state.yaml).
struct TrainerState {
  int64_t next_epoch = 0;
  TrainingHistory history;
  GradScalerState loss_scale;
};

/// After each training step: the running figures of its epoch (epochs count from 1).
struct StepReport {
  int64_t epoch = 0, step = 0, steps = 0, images = 0;
  double mean_loss = 0, accuracy = 0;
};

/// After each epoch (counted from 1): its rate, training and validation figures.
struct EpochReport {
  int64_t epoch = 0;
  double lr = 0;
  PhaseFigures train;
  std::optional<PhaseFigures> val;
};

enum class TrainOutcome {
  kFinished,  // every epoch of total_epoch is done
  kStopped,   // epochs_this_run ended it early: continue with a resume
  kDiverged,  // a loss became NaN or infinite; the last good epoch stays committed
  kAlreadyDone,  // a resumed run had finished every epoch: nothing was trained
};

struct TrainResult {
  TrainOutcome outcome = TrainOutcome::kFinished;
  int64_t epochs_done = 0;  // of total_epochs, this run's included
  int64_t total_epochs = 0;
  std::string folder;       // the run's folder (RunConfig::out)
  // kDiverged: the epoch (from 1), "training" or "validation", and the loss it reached.
  int64_t diverged_epoch = 0;
  std::string diverged_phase;
  double diverged_value = 0;
};

class Trainer;

/// What a trainer calls at its seams; override what you need. Hooks run in every process of
/// a multi-process run (Trainer::is_main() says whether this is rank 0).
class TrainerHook {
 public:
  virtual ~TrainerHook() = default;
  /// Before the first epoch of this run (and before total_epoch 0 returns).
  virtual void before_train(Trainer&) {}
  virtual void after_step(Trainer&, const StepReport&) {}
  /// After an epoch's figures are in the trainer's state (its next_epoch counts it).
  virtual void after_epoch(Trainer&, const EpochReport&) {}
  virtual void after_train(Trainer&, const TrainResult&) {}
};

struct TrainerOptions {
  using GroupPointer = const ProcessGroup*;
  /// A run folder to continue: its net_last.pth, optimizer.pt and trainer_state.yaml.
  TORCH_ARG(std::string, resume) = "";
  /// The job's other processes, or nullptr to train alone; must outlive the trainer.
  TORCH_ARG(GroupPointer, group) = nullptr;
  /// Where rank 0's progress lines go (default: stdout).
  TORCH_ARG(std::function<void(const std::string&)>, log) = nullptr;
};

namespace detail {

/// Runs `body`; a failure to read a file it was given (weights, data, a resumed run's state) is
/// bad input, not a failed run.
template <class Body>
decltype(auto) as_input_error(Body&& body) {
  try {
    return body();
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& error) {
    throw InputError(error.what());
  }
}

inline std::string trainer_state_yaml(const TrainerState& state) {
  YAML::Emitter yaml;
  yaml << YAML::BeginMap << YAML::Key << "next_epoch" << YAML::Value << state.next_epoch;
  yaml << YAML::Key << "train_loss" << YAML::Value << YAML::Flow << state.history.train_loss;
  yaml << YAML::Key << "train_error" << YAML::Value << YAML::Flow << state.history.train_error;
  yaml << YAML::Key << "val_loss" << YAML::Value << YAML::Flow << state.history.val_loss;
  yaml << YAML::Key << "val_error" << YAML::Value << YAML::Flow << state.history.val_error;
  yaml << YAML::Key << "loss_scale" << YAML::Value << state.loss_scale.scale;
  yaml << YAML::Key << "loss_scale_growth_tracker" << YAML::Value
       << state.loss_scale.growth_tracker;
  yaml << YAML::EndMap;
  return std::string(yaml.c_str()) + "\n";
}

}  // namespace detail

/// Reads and checks trainer_state.yaml against the run's total_epoch; `has_val` says whether
/// the run validates. ConfigError names the file and key.
inline TrainerState read_trainer_state(const std::filesystem::path& path, int64_t total_epoch,
                                       bool has_val) {
  const auto node = read_yaml_map(path);
  TrainerState state;
  state.next_epoch = -1;
  const auto fail = [&](const std::string& message) {
    throw ConfigError(fmt::format("{}: {}", path.string(), message));
  };
  const auto get = [&](const char* key, auto& value) {
    if (!node[key]) fail(fmt::format("key '{}' is missing", key));
    read_yaml_field(node, path, key, value);
  };
  get("next_epoch", state.next_epoch);
  if (state.next_epoch < 0 || state.next_epoch > total_epoch) {
    fail(fmt::format("key 'next_epoch' is {}; expected 0 to total_epoch ({})", state.next_epoch,
                     total_epoch));
  }
  const auto per_epoch = [&](const char* key, std::vector<double>& values, bool present) {
    get(key, values);
    const auto expected = static_cast<size_t>(present ? state.next_epoch : 0);
    if (values.size() != expected) {
      fail(fmt::format("key '{}' has {} values; next_epoch {} needs {}", key, values.size(),
                       state.next_epoch, expected));
    }
    for (const double value : values) {
      if (!std::isfinite(value)) fail(fmt::format("key '{}' holds {}", key, value));
    }
  };
  per_epoch("train_loss", state.history.train_loss, true);
  per_epoch("train_error", state.history.train_error, true);
  per_epoch("val_loss", state.history.val_loss, has_val);
  per_epoch("val_error", state.history.val_error, has_val);
  get("loss_scale", state.loss_scale.scale);
  get("loss_scale_growth_tracker", state.loss_scale.growth_tracker);
  if (!std::isfinite(state.loss_scale.scale) || state.loss_scale.scale <= 0) {
    fail(fmt::format("key 'loss_scale' is {}; expected a positive number", state.loss_scale.scale));
  }
  if (state.loss_scale.growth_tracker < 0) {
    fail(fmt::format("key 'loss_scale_growth_tracker' is {}; expected a count",
                     state.loss_scale.growth_tracker));
  }
  return state;
}

/// One training run, set up and checked completely (data, model, weights, resumed state) when
/// constructed; nothing is written until train() calls the hooks.
class Trainer {
 public:
  Trainer(RunConfig config, Dataset dataset, TrainerOptions options = {})
      : c_(std::move(config)),
        data_(std::move(dataset)),
        options_(std::move(options)),
        group_(options_.group()),
        is_main_(group_ == nullptr || group_->is_main()),
        // Each process on a machine takes the GPU of its LOCAL_RANK.
        device_(c_.device == "cuda" ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(
                                                                      group_ ? group_->local_rank() : 0))
                                    : torch::Device(torch::kCPU)),
        dtype_(c_.bf16 ? torch::kBFloat16 : c_.fp16 ? torch::kHalf : torch::kFloat),
        train_samples_(c_.train_all ? data_.train_all : data_.train),
        has_val_(!c_.train_all && !data_.val.empty()),
        net_(nullptr) {
    check_run_config(c_);
    const auto& resume = options_.resume();
    if (device_.is_cuda() && !torch::cuda::is_available()) {
      throw ConfigError("--device cuda: no CUDA device is available to this LibTorch");
    }
    if (train_samples_.empty()) throw ConfigError("--data " + c_.data + ": no training images found");
    if (!resume.empty() && c_.class_num != data_.class_num()) {
      throw ConfigError(fmt::format("--resume {}: the run trains {} ids (opts.yaml nclasses), but "
                                    "--data {} has {}", resume, c_.class_num, c_.data,
                                    data_.class_num()));
    }
    c_.class_num = data_.class_num();
    torch::manual_seed(c_.seed);
    auto [family, model_args] = resolve_model(c_);
    net_ = create_model(family, model_args.class_num(c_.class_num));
    record_resolved_model(c_, family, model_args);
    make_loaders();
    say("model {}: {} parameters, {}-d embedding\n", family, count_parameters(*net_),
        net_->feature_dim());
    load_initial_weights();
    net_->to(device_);
    if (c_.channels_last) to_channels_last(*net_);
    // Rank 0's weights and buffers everywhere; from here on, averaged gradients. Some
    // families keep parameters they never use (ft_net: torchvision's fc, for its keys).
    if (group_) {
      averager_.emplace(*net_, *group_, GradientAveragerOptions().find_unused_parameters(true));
      if (c_.sync_bn) {
        const auto layers = synchronize_batch_norm(*net_, *group_);
        say("SyncBatchNorm: {} BatchNorm layers normalise over all {} processes' batches\n",
            layers, group_->size());
      }
    }
    make_optimizer();
    step_.emplace(net_, *optimizer_,
                  TrainingStepOptions()
                      .label_smoothing(c_.label_smoothing)
                      .triplet(c_.triplet)
                      .circle(c_.circle)
                      .dtype(dtype_),
                  averager_ ? &*averager_ : nullptr);
    if (!resume.empty()) {
      const std::filesystem::path folder(resume);
      state_ = read_trainer_state(folder / "trainer_state.yaml", c_.total_epoch, has_val_);
      detail::as_input_error(
          [&] { load_optimizer_state(*optimizer_, (folder / "optimizer.pt").string()); });
      step_->scaler().load_state(state_.loss_scale);
    }
  }

  // Its training step points into it.
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  void add_hook(std::shared_ptr<TrainerHook> hook) { hooks_.push_back(std::move(hook)); }

  /// Trains from the state's next epoch to total_epoch (or epochs_this_run of them).
  TrainResult train() {
    TrainResult result;
    result.epochs_done = state_.next_epoch;
    result.total_epochs = c_.total_epoch;
    result.folder = c_.out;
    const bool resumed = !options_.resume().empty();
    if (resumed && state_.next_epoch >= c_.total_epoch) {
      say("{} has finished all {} epochs: nothing to resume\n", options_.resume(), c_.total_epoch);
      result.outcome = TrainOutcome::kAlreadyDone;
      return result;
    }
    for (auto& hook : hooks_) hook->before_train(*this);
    if (c_.total_epoch == 0) return finish(result);
    if (resumed) say("resuming {} at epoch {}\n", options_.resume(), state_.next_epoch + 1);
    // Warm-up counts this process's steps: an epoch of its shard (DistributedSampler's size).
    const auto images = static_cast<int64_t>(train_samples_.size());
    const auto warmup = LossWarmup::for_data(
        c_.warm_epoch, group_ ? (images + group_->size() - 1) / group_->size() : images,
        c_.batch_size);
    say("training {} images of {} ids ({} val), {} batches of {} per epoch{}, {} epochs\n",
        train_samples_.size(), c_.class_num, data_.val.size(), batches_per_epoch_, c_.batch_size,
        group_ ? fmt::format(" on each of {} processes ({} backend)", group_->size(),
                             group_->backend_name())
               : std::string(),
        c_.total_epoch);
    const int64_t first_epoch = state_.next_epoch;
    const int64_t last_epoch = c_.epochs_this_run > 0
                                   ? std::min(c_.total_epoch, first_epoch + c_.epochs_this_run)
                                   : c_.total_epoch;
    for (int64_t epoch = first_epoch; epoch < last_epoch; ++epoch) {
      const auto rates = epoch_rates(epoch);
      set_learning_rates(*optimizer_, rates);
      // Dropout draws from the global generator: seeding it per epoch makes a resumed run
      // take the same random path as an uninterrupted one.
      torch::manual_seed(c_.seed * 1000003 + static_cast<uint64_t>(epoch));
      EpochReport report{epoch + 1, rates.back(), train_epoch(warmup, epoch, rates), std::nullopt};
      if (std::isfinite(report.train.loss) && has_val_ && is_main_) report.val = evaluate_val();
      const bool train_finite = std::isfinite(report.train.loss);
      if (!train_finite || (report.val && !std::isfinite(report.val->loss))) {
        result.outcome = TrainOutcome::kDiverged;
        result.diverged_epoch = epoch + 1;
        result.diverged_phase = train_finite ? "validation" : "training";
        result.diverged_value = train_finite ? report.val->loss : report.train.loss;
        for (auto& hook : hooks_) hook->after_train(*this, result);
        return result;
      }
      state_.history.train_loss.push_back(report.train.loss);
      state_.history.train_error.push_back(report.train.error);
      std::string val_text;
      if (report.val) {
        state_.history.val_loss.push_back(report.val->loss);
        state_.history.val_error.push_back(report.val->error);
        val_text = fmt::format(" val loss {:.4f} top1err {:.4f}", report.val->loss, report.val->error);
      }
      say("epoch {}/{} lr {:.5f} train loss {:.4f} top1err {:.4f}{}\n", epoch + 1, c_.total_epoch,
          report.lr, report.train.loss, report.train.error, val_text);
      state_.next_epoch = epoch + 1;
      state_.loss_scale = step_->scaler().state();
      result.epochs_done = state_.next_epoch;
      for (auto& hook : hooks_) hook->after_epoch(*this, report);
    }
    if (last_epoch < c_.total_epoch) result.outcome = TrainOutcome::kStopped;
    return finish(result);
  }

  /// The run's settings, with the data set's class count and the resolved family recorded.
  const RunConfig& config() const { return c_; }
  ReidModel& model() { return net_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  const TrainerState& state() const { return state_; }
  const Dataset& dataset() const { return data_; }
  bool is_main() const { return is_main_; }
  int64_t rank() const { return group_ ? group_->rank() : 0; }
  bool is_resumed() const { return !options_.resume().empty(); }
  int64_t batches_per_epoch() const { return batches_per_epoch_; }

  /// Prints a progress line (rank 0 only).
  template <class... Args>
  void say(fmt::format_string<Args...> format, Args&&... args) const {
    if (!is_main_) return;
    const auto text = fmt::format(format, std::forward<Args>(args)...);
    if (options_.log()) {
      options_.log()(text);
    } else {
      fmt::print("{}", text);
      std::fflush(stdout);
    }
  }

 private:
  TrainResult finish(TrainResult result) {
    for (auto& hook : hooks_) hook->after_train(*this, result);
    return result;
  }

  void make_loaders() {
    if (c_.triplet) {
      const auto k = c_.instances_per_id;
      if (c_.batch_size % k != 0) {
        throw ConfigError(fmt::format("--batch-size {} is not a multiple of --instances-per-id {} "
                                      "(P x K batches)", c_.batch_size, k));
      }
      if (c_.batch_size / k > c_.class_num) {
        throw ConfigError(fmt::format("--batch-size {} / --instances-per-id {}: P x K sampling "
                                      "needs at least P = {} identities, --data {} has {}",
                                      c_.batch_size, k, c_.batch_size / k, c_.data, c_.class_num));
      }
    }
    const auto loader_options =
        LoaderOptions()
            .batch_size(c_.batch_size)
            .workers(c_.workers)
            .shuffle(true)
            .drop_last(true)
            .seed(c_.seed)
            .pin_memory(device_.is_cuda())
            .instances_per_identity(c_.triplet ? c_.instances_per_id : 0)
            .shard(group_ ? std::optional<Shard>({group_->rank(), group_->size()}) : std::nullopt);
    // The family's own normalisation (mean, std, pixel range) and resize filter feed both
    // pipelines.
    const auto normalization = normalization_of(net_->config());
    const auto interpolation = interpolation_of(net_->config());
    train_loader_.emplace(train_samples_,
                          make_train_transform(TrainTransformOptions()
                                                   .height(c_.height)
                                                   .width(c_.width)
                                                   .color_jitter(c_.color_jitter ? 0.1 : 0.0)
                                                   .erasing_probability(c_.erasing_p)
                                                   .normalization(normalization)
                                                   .interpolation(interpolation)),
                          loader_options);
    val_loader_.emplace(data_.val, make_eval_transform(c_.height, c_.width, normalization, interpolation),
                        LoaderOptions().batch_size(c_.batch_size).workers(c_.workers));
    batches_per_epoch_ = static_cast<int64_t>(train_loader_->plan(0).size());
    if (batches_per_epoch_ == 0) {
      throw ConfigError(fmt::format(
          "--batch-size {} is larger than the {} training images{}", c_.batch_size,
          train_samples_.size(),
          group_ ? fmt::format(" of this process's shard (1 in {})", group_->size()) : std::string()));
    }
  }

  void load_initial_weights() {
    const auto& resume = options_.resume();
    if (!c_.weights.empty() && !resume.empty()) {
      say("resuming: the weights come from {}/net_last.pth, not --weights\n", resume);
    } else if (!c_.weights.empty()) {
      const auto report = detail::as_input_error([&] { return load_imagenet_weights(*net_, c_.weights); });
      say("loaded {} backbone tensors from {}\n", report.loaded.size(), c_.weights);
    } else if (resume.empty()) {
      say("no --weights: training from scratch, so the backbone learns at the full lr "
          "(backbone ratio 1.0 instead of {})\n", c_.backbone_lr_ratio);
      c_.backbone_lr_ratio = 1.0;
    }
    if (!resume.empty()) {
      detail::as_input_error([&] {
        load_state_dict(*net_, (std::filesystem::path(resume) / "net_last.pth").string());
      });
    }
  }

  void make_optimizer() {
    if (c_.optimizer == "sgd") {
      optimizer_ = make_sgd(*net_, SgdRecipe()
                                       .lr(c_.lr)
                                       .backbone_lr_ratio(c_.backbone_lr_ratio)
                                       .weight_decay(c_.weight_decay));
    } else {
      optimizer_ = make_adam(*net_, AdamRecipe()
                                        .lr(c_.lr)
                                        .backbone_lr_ratio(c_.backbone_lr_ratio)
                                        .weight_decay(c_.weight_decay)
                                        .decoupled_weight_decay(c_.optimizer == "adamw"));
    }
    base_rates_ = learning_rates(*optimizer_);
  }

  /// The epoch's rates (per parameter group) under the run's schedule.
  std::vector<double> epoch_rates(int64_t epoch) const {
    if (c_.cosine) return CosineSchedule{c_.total_epoch, 0.01 * c_.lr}.rates(base_rates_, epoch);
    if (!c_.milestones.empty()) return MultiStepSchedule{c_.milestones, 0.1}.rates(base_rates_, epoch);
    return StepSchedule::for_epochs(c_.total_epoch).rates(base_rates_, epoch);
  }

  torch::Tensor to_device(const torch::Tensor& images) const {
    auto moved = images.to(device_, /*non_blocking=*/true);
    return c_.channels_last ? moved.contiguous(torch::MemoryFormat::ChannelsLast) : moved;
  }

  /// One epoch at the schedule's `rates`, under the linear warm-up of the learning rate in
  /// its first iterations; stops at the first step whose loss is not finite.
  PhaseFigures train_epoch(const LossWarmup& warmup, int64_t epoch, const std::vector<double>& rates) {
    const int64_t batches = batches_per_epoch_;
    const LinearWarmup lr_warmup{c_.lr_warmup_epochs * batches, c_.lr_warmup_factor};
    PhaseFigures result;
    double loss_sum = 0;
    int64_t correct = 0, step = 0;
    auto run = train_loader_->epoch(epoch);
    while (auto batch = run.next()) {
      const auto labels = batch->labels.to(device_, /*non_blocking=*/true);
      const auto loss = step_->forward(to_device(batch->images), labels);
      // One sync per step for the figures (the baseline does the same with .item()); with
      // several processes, the job's figures: every rank then stops on the same step.
      auto figures = torch::tensor({loss.loss.item<double>() * static_cast<double>(labels.size(0)),
                                    loss.scores.argmax(1).eq(labels).sum().item<double>(),
                                    static_cast<double>(labels.size(0))},
                                   torch::kDouble);
      if (group_) group_->all_reduce_sum(figures);
      const auto* figure = figures.data_ptr<double>();
      if (!std::isfinite(figure[0])) {
        result.loss = figure[0];
        return result;
      }
      const int64_t iteration = epoch * batches + step;
      if (iteration <= lr_warmup.iterations) {  // at its end, back to the epoch's rates
        set_learning_rates(*optimizer_, lr_warmup.rates(rates, iteration));
      }
      step_->backward(loss, warmup.factor(epoch, iteration));
      loss_sum += figure[0];
      correct += static_cast<int64_t>(figure[1]);
      result.images += static_cast<int64_t>(figure[2]);
      ++step;
      const StepReport report{epoch + 1, step, batches, result.images, loss_sum / result.images,
                              static_cast<double>(correct) / result.images};
      for (auto& hook : hooks_) hook->after_step(*this, report);
    }
    result.loss = loss_sum / std::max<int64_t>(result.images, 1);
    result.error = 1.0 - static_cast<double>(correct) / std::max<int64_t>(result.images, 1);
    return result;
  }

  PhaseFigures evaluate_val() {
    auto& net = *net_;
    net.eval();
    torch::NoGradGuard no_grad;
    torch::nn::CrossEntropyLoss cross_entropy;
    PhaseFigures result;
    double loss_sum = 0;
    int64_t correct = 0;
    auto run = val_loader_->epoch(0);
    while (auto batch = run.next()) {
      const auto labels = batch->labels.to(device_);
      torch::Tensor logits, loss;
      {
        AutocastGuard autocast(device_, dtype_);
        const auto output = net.forward(to_device(batch->images));
        loss = TrainingStep::identity_loss(cross_entropy, output.logits, labels);
        logits = TrainingStep::identity_scores(output.logits);
      }
      loss_sum += loss.item<double>() * static_cast<double>(labels.size(0));
      correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
      result.images += labels.size(0);
    }
    result.loss = loss_sum / std::max<int64_t>(result.images, 1);
    result.error = 1.0 - static_cast<double>(correct) / std::max<int64_t>(result.images, 1);
    return result;
  }

  RunConfig c_;
  Dataset data_;
  TrainerOptions options_;
  const ProcessGroup* group_;
  bool is_main_;
  torch::Device device_;
  torch::ScalarType dtype_;
  const std::vector<Sample>& train_samples_;
  bool has_val_;
  std::optional<DataLoader> train_loader_, val_loader_;
  int64_t batches_per_epoch_ = 0;
  ReidModel net_;
  std::optional<GradientAverager> averager_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::optional<TrainingStep> step_;
  std::vector<double> base_rates_;
  TrainerState state_;
  std::vector<std::shared_ptr<TrainerHook>> hooks_;
};

/// Draws the training curves (losses and errors per epoch) as an RGB uint8 (H, W, 3) picture.
using CurvesRenderer = std::function<torch::Tensor(const TrainingHistory&)>;

struct CheckpointerOptions {
  /// Draws train.jpg; unset = no picture.
  TORCH_ARG(CurvesRenderer, render_curves) = nullptr;
  /// Called with the epoch (0 = a new run's first commit) to watch that commit's steps
  /// (crash testing); unset = none.
  TORCH_ARG(std::function<RunFolder::Commit::StepObserver(int64_t epoch)>, observe_commit) = nullptr;
  /// Keep net_NNN.pth every this many epochs (0 = never).
  TORCH_ARG(int64_t, keep_every) = 10;
};

/// The run folder's files: a new run first commits opts.yaml and its initial state, so that
/// the folder is a resumable run from the start; each epoch then ends in one commit of
/// net_last.pth, optimizer.pt, trainer_state.yaml, train.log and train.jpg (and net_NNN.pth).
/// Acts on rank 0 only.
class Checkpointer : public TrainerHook {
 public:
  /// `folder` (locked by the caller) must outlive the hook.
  explicit Checkpointer(RunFolder& folder, CheckpointerOptions options = {})
      : folder_(folder), options_(std::move(options)) {}

  void before_train(Trainer& trainer) override {
    if (!trainer.is_main() || trainer.is_resumed()) return;
    auto commit = folder_.begin();
    write_opts_yaml(trainer.config(), commit.stage("opts.yaml"));
    stage_epoch(trainer, commit, 0);
    publish(commit, 0);
    if (trainer.config().total_epoch == 0) {
      trainer.say("--total-epoch 0: wrote the initialised model to {}\n",
                  (folder_.path() / "net_last.pth").string());
    }
  }

  void after_epoch(Trainer& trainer, const EpochReport& report) override {
    if (!trainer.is_main()) return;
    auto commit = folder_.begin();
    stage_epoch(trainer, commit, report.epoch);
    publish(commit, report.epoch);
  }

 private:
  void publish(RunFolder::Commit& commit, int64_t epoch) {
    commit.publish(options_.observe_commit() ? options_.observe_commit()(epoch)
                                             : RunFolder::Commit::StepObserver{});
  }

  void stage_epoch(Trainer& trainer, RunFolder::Commit& commit, int64_t epoch) {
    save_state_dict(*trainer.model(), commit.stage("net_last.pth"));
    if (epoch > 0 && options_.keep_every() > 0 && epoch % options_.keep_every() == 0) {
      save_state_dict(*trainer.model(), commit.stage(fmt::format("net_{:03d}.pth", epoch)));
    }
    save_optimizer_state(trainer.optimizer(), commit.stage("optimizer.pt"));
    write_text_file(commit.stage("trainer_state.yaml"),
                                  detail::trainer_state_yaml(trainer.state()));
    const auto& history = trainer.state().history;
    std::string csv = "epoch,train_loss,train_top1_error,val_loss,val_top1_error\n";
    for (size_t e = 0; e < history.train_loss.size(); ++e) {
      const auto value = [e](const std::vector<double>& v) {
        return e < v.size() ? fmt::format("{:.6f}", v[e]) : std::string();
      };
      csv += fmt::format("{},{},{},{},{}\n", e + 1, value(history.train_loss),
                         value(history.train_error), value(history.val_loss),
                         value(history.val_error));
    }
    write_text_file(commit.stage("train.log"), csv);
    if (!history.train_loss.empty() && options_.render_curves()) {
      write_jpeg(commit.stage("train.jpg"), options_.render_curves()(history));
    }
  }

  RunFolder& folder_;
  CheckpointerOptions options_;
};

/// A training job as a program starts it.
struct TrainJob {
  RunConfig config;
  /// The fields the command line set (run_field names): a model switch overrides a preset's
  /// model, a size overrides the family's, and --resume accepts only run settings.
  std::set<std::string> given;
  /// A run folder to continue, with its opts.yaml's recipe.
  std::string resume;
  /// torchrun's environment, when this process is one of several.
  std::optional<LaunchEnvironment> launch;
  std::vector<std::shared_ptr<TrainerHook>> hooks;
  CheckpointerOptions checkpointer;
};

/// Checks everything, then locks the run folder and trains. A rejected job leaves the folder
/// as it was: nothing is written before the settings, the data set and every file read have
/// been checked. (A resume locks its folder first, so that the state it reads cannot change
/// under it; that may finish a commit a killed run had already published.) With several
/// processes, rank 0 alone locks and writes the folder.
inline TrainResult train_run(TrainJob job) {
  namespace fs = std::filesystem;
  auto& config = job.config;
  const bool is_main = !job.launch || job.launch->rank == 0;
  std::optional<ProcessGroup> group;
  const auto join = [&] {
    if (!job.launch || group) return;
    group = ProcessGroup::connect(*job.launch, config.device == "cuda" ? torch::kCUDA : torch::kCPU,
                                  ProcessGroupOptions()
                                      .backend(config.dist_backend)
                                      .timeout(std::chrono::seconds(config.dist_timeout)));
  };
  std::optional<RunFolder> folder;
  const auto lock = [&folder](const std::string& path) {
    try {
      folder.emplace(path);
    } catch (const RunFolderBusy& error) {
      throw ConfigError(error.what());
    }
  };
  if (!job.resume.empty()) {
    join();
    if (is_main) lock(job.resume);  // first: it finishes a commit that a killed run had published
    if (group) group->barrier();    // the others read the folder once rank 0 holds it
    for (const char* file : {"trainer_state.yaml", "optimizer.pt", "net_last.pth", "opts.yaml"}) {
      if (!fs::exists(fs::path(job.resume) / file)) {
        throw ConfigError(fmt::format("--resume {}: {} is missing; resume needs a folder written "
                                      "by reidnet-train", job.resume, file));
      }
    }
    config = resumed_run_config(job.resume, config, job.given);
  } else {
    if (config.data.empty()) throw ConfigError("--data is required (the data set root)");
    const bool switch_given = std::any_of(job.given.begin(), job.given.end(), [](const auto& name) {
      return std::holds_alternative<SwitchKey>(run_field(name).member);
    });
    if (switch_given && job.given.count("model") == 0) {
      config.model = "ft_net";  // a model switch on the command line overrides a preset's model
    }
  }
  check_run_config(config);
  torch::set_num_threads(static_cast<int>(config.threads));
  // Without a size given or preset, the family's own input size (PCB: 384x192), as the
  // baseline picks it.
  const bool size_given = job.given.count("height") > 0 || job.given.count("width") > 0 ||
                          config.height != RunConfig{}.height || config.width != RunConfig{}.width;
  if (job.resume.empty() && !size_given) {
    const auto [family, args] = resolve_model(config);
    auto own_size = args;  // the family's own input size, not the default one resolve_model passes
    const auto family_config = model_config(family, own_size.input_size(std::nullopt));
    config.height = family_config.height();
    config.width = family_config.width();
  }
  reuse_freed_host_memory();  // ~10% per step: no fresh pages for every activation
  auto dataset = detail::as_input_error([&] { return read_dataset(config.data); });
  join();
  Trainer trainer(config, std::move(dataset),
                  TrainerOptions().resume(job.resume).group(group ? &*group : nullptr));
  if (is_main && !folder) lock(config.out);
  if (folder) trainer.add_hook(std::make_shared<Checkpointer>(*folder, job.checkpointer));
  for (auto& hook : job.hooks) trainer.add_hook(hook);
  try {
    return trainer.train();
  } catch (const InputError&) {  // a picture or file this rank refused
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

}  // namespace reidnet
