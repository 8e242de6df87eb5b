#pragma once
/// Data-parallel training over several processes, on LibTorch's own c10d engine: a TCPStore
/// rendezvous, Gloo (CPU) or NCCL (CUDA) collectives, and c10d's Reducer, which averages
/// gradients in buckets while backward still runs. It is what torch.nn.parallel.
/// DistributedDataParallel drives from Python, driven the same way, so that a step equals a
/// PyTorch DDP step.
///
///     auto launch = reidnet::LaunchEnvironment::from_environment();   // torchrun's variables
///     auto group = reidnet::ProcessGroup::connect(*launch, torch::kCPU);
///     reidnet::GradientAverager averager(*model, group);   // rank 0's weights everywhere
///     for (auto& batch : loader.epoch(epoch)) {             // a shard per rank
///       averager.before_forward();                          // rank 0's BatchNorm buffers
///       auto loss = criterion(model->forward(batch.images), batch.labels);
///       optimizer.zero_grad();
///       averager.before_backward({loss});
///       loss.backward();                                    // returns with averaged gradients
///       optimizer.step();
///     }
///
/// Every rank must issue the same collectives in the same order: the same number of steps
/// per epoch (LoaderOptions::shard gives that) and every trainable parameter used by every
/// step.

#include <reidnet/batch_norm.hpp>

#include <torch/torch.h>
#include <torch/version.h>

#if !defined(USE_C10D_GLOO)
#error "reidnet/distributed.hpp needs c10d's Gloo backend: build with USE_C10D_GLOO (reidnet's CMake package sets it where LibTorch's Gloo headers are found)"
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <fmt/core.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet {

/// Where this process stands in a job, as torchrun (and SLURM or Kubernetes launchers that
/// mimic it) describes it in the environment.
struct LaunchEnvironment {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;

  /// RANK, WORLD_SIZE, LOCAL_RANK (default: RANK), MASTER_ADDR (default 127.0.0.1) and
  /// MASTER_PORT (default 29500), or nullopt when WORLD_SIZE is unset. A malformed or
  /// inconsistent variable throws std::invalid_argument naming it.
  static std::optional<LaunchEnvironment> from_environment() {
    if (std::getenv("WORLD_SIZE") == nullptr) return std::nullopt;
    LaunchEnvironment launch;
    launch.world_size = integer_variable("WORLD_SIZE", 1, 1 << 20);
    if (std::getenv("RANK") == nullptr) {
      throw std::invalid_argument("WORLD_SIZE is set but RANK is not: set both (torchrun does)");
    }
    launch.rank = integer_variable("RANK", 0, launch.world_size - 1);
    launch.local_rank = std::getenv("LOCAL_RANK") != nullptr
        ? integer_variable("LOCAL_RANK", 0, launch.world_size - 1) : launch.rank;
    if (const char* address = std::getenv("MASTER_ADDR"); address != nullptr && *address != 0) {
      launch.master_addr = address;
    }
    if (std::getenv("MASTER_PORT") != nullptr) launch.master_port = integer_variable("MASTER_PORT", 1, 65535);
    return launch;
  }

 private:
  static int64_t integer_variable(const char* name, int64_t low, int64_t high) {
    const std::string text = std::getenv(name);
    size_t used = 0;
    int64_t value = -1;
    try {
      value = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size() || value < low || value > high) {
      throw std::invalid_argument(fmt::format("environment variable {}='{}': expected an integer "
                                              "from {} to {}", name, text, low, high));
    }
    return value;
  }
};

/// How ProcessGroup::connect reaches the other ranks.
struct ProcessGroupOptions {
  /// "gloo", "nccl", or "" for NCCL on CUDA and Gloo on CPU.
  TORCH_ARG(std::string, backend) = "";
  /// How long the rendezvous and every collective may wait for the other ranks (PyTorch's
  /// default: 30 minutes). A rank that never joins fails the others after this long.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::minutes(30);
};

/// The ranks of one job and their communication: a handle on a c10d process group.
class ProcessGroup {
 public:
  /// Joins the job `launch` describes: rank 0 serves a TCPStore on MASTER_ADDR:MASTER_PORT,
  /// every rank connects to it, and the backend connects every rank to every other. Throws
  /// std::runtime_error naming the address and the timeout when the others are not reached.
  static ProcessGroup connect(const LaunchEnvironment& launch, torch::Device device,
                              const ProcessGroupOptions& options = {}) {
    const std::string backend = !options.backend().empty() ? options.backend()
                                : device.is_cuda()         ? "nccl" : "gloo";
    if (backend != "gloo" && backend != "nccl") {
      throw std::invalid_argument("process group backend '" + backend + "': expected gloo or nccl");
    }
    const auto failure = [&](const char* stage, const std::exception& error) {
      return std::runtime_error(fmt::format(
          "rank {} of {} did not reach the other ranks through {} at MASTER_ADDR:MASTER_PORT "
          "{}:{} within the {} s timeout ({}); check that every rank was started, with the same "
          "MASTER_ADDR, MASTER_PORT and WORLD_SIZE", launch.rank, launch.world_size, stage,
          launch.master_addr, launch.master_port, options.timeout().count() / 1000.0,
          first_line(error.what())));
    };
    c10::intrusive_ptr<c10d::Store> store;
    try {
      c10d::TCPStoreOptions store_options;
      store_options.port = static_cast<uint16_t>(launch.master_port);
      store_options.isServer = launch.rank == 0;
      store_options.numWorkers = static_cast<size_t>(launch.world_size);
      store_options.waitWorkers = true;  // rank 0 returns once every rank has connected
      store_options.timeout = options.timeout();
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
      store_options.useLibUV = false;  // the default since 2.4, but optional in LibTorch builds
#endif
      store = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, store_options);
    } catch (const std::exception& error) {
      throw failure("the TCPStore", error);
    }
    ProcessGroup group;
    group.rank_ = launch.rank;
    group.size_ = launch.world_size;
    group.local_rank_ = launch.local_rank;
    group.backend_name_ = backend;
    try {
      group.group_ = backend == "gloo" ? make_gloo(store, launch, options)
                                       : make_nccl(store, launch, options);
    } catch (const std::exception& error) {
      throw failure(backend == "gloo" ? "Gloo" : "NCCL", error);
    }
    return group;
  }

  int64_t rank() const { return rank_; }
  int64_t size() const { return size_; }
  /// The rank among this machine's processes (which GPU it takes).
  int64_t local_rank() const { return local_rank_; }
  /// Rank 0, the one that writes files and whose state the others take.
  bool is_main() const { return rank_ == 0; }
  const std::string& backend_name() const { return backend_name_; }
  /// The c10d process group, for collectives reidnet does not wrap.
  const c10::intrusive_ptr<c10d::ProcessGroup>& c10d_group() const { return group_; }

  /// Sums `tensor` over the ranks, in place.
  void all_reduce_sum(torch::Tensor& tensor) const {
    std::vector<torch::Tensor> tensors{tensor};
    group_->allreduce(tensors)->wait();
  }

  /// Gives every rank `main`'s values of `tensors`, in place, in coalesced buckets.
  void broadcast(const std::vector<torch::Tensor>& tensors, int64_t main = 0) const {
    if (tensors.empty()) return;
    c10d::broadcast_coalesced(group_, tensors, kBroadcastBucketBytes, static_cast<int>(main));
  }

  /// Returns once every rank has called it.
  void barrier() const { group_->barrier()->wait(); }

 private:
  static constexpr size_t kBroadcastBucketBytes = 250u << 20;  // as DistributedDataParallel

  static std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

  static c10::intrusive_ptr<c10d::ProcessGroup> make_gloo(
      const c10::intrusive_ptr<c10d::Store>& store, const LaunchEnvironment& launch,
      const ProcessGroupOptions& options) {
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout());
    // As torch.distributed: GLOO_SOCKET_IFNAME picks the network interface, else the address
    // this machine's host name resolves to.
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface != nullptr && *interface != 0) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    } else {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    gloo_options->threads = 2;
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        store, static_cast<int>(launch.rank), static_cast<int>(launch.world_size), gloo_options);
    return wrap(store, launch, gloo, c10::DeviceType::CPU, "gloo");
  }

  static c10::intrusive_ptr<c10d::ProcessGroup> make_nccl(
      const c10::intrusive_ptr<c10d::Store>& store, const LaunchEnvironment& launch,
      const ProcessGroupOptions& options) {
#if defined(USE_C10D_NCCL)
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = options.timeout();
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        store, static_cast<int>(launch.rank), static_cast<int>(launch.world_size), nccl_options);
    return wrap(store, launch, nccl, c10::DeviceType::CUDA, "nccl");
#else
    (void)store, (void)launch, (void)options;
    throw std::invalid_argument("this LibTorch has no NCCL backend (CPU build): use gloo");
#endif
  }

  /// LibTorch 1.x backends are process groups; 2.x puts a backend inside a ProcessGroup.
  template <class Backend>
  static c10::intrusive_ptr<c10d::ProcessGroup> wrap(const c10::intrusive_ptr<c10d::Store>& store,
                                                     const LaunchEnvironment& launch,
                                                     const c10::intrusive_ptr<Backend>& backend,
                                                     c10::DeviceType device, const char* name) {
#if TORCH_VERSION_MAJOR >= 2
    auto group = c10::make_intrusive<c10d::ProcessGroup>(
        store, static_cast<int>(launch.rank), static_cast<int>(launch.world_size));
    const auto type = std::string(name) == "nccl" ? c10d::ProcessGroup::BackendType::NCCL
                                                  : c10d::ProcessGroup::BackendType::GLOO;
    group->setDefaultBackend(type);
    group->setBackend(device, type, backend);
    return group;
#else
    (void)store, (void)launch, (void)device, (void)name;
    return backend;
#endif
  }

  int64_t rank_ = 0;
  int64_t size_ = 1;
  int64_t local_rank_ = 0;
  std::string backend_name_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
};

/// SyncBatchNorm: from now on every reidnet::BatchNorm1d/2d in `module` normalises training
/// batches with the statistics of all ranks' batches together (see reidnet/batch_norm.hpp), so
/// that P ranks at batch B train as one process at batch P x B. Nothing changes with one rank,
/// or in eval mode. Returns how many layers now share statistics; throws naming the first
/// torch::nn::BatchNorm in `module`, whose statistics cannot be shared.
inline int64_t synchronize_batch_norm(torch::nn::Module& module, const ProcessGroup& group) {
  // Checked first, so that a rejected module is left as it was.
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    const auto& child = *item.value();
    if (child.as<torch::nn::BatchNorm1d>() || child.as<torch::nn::BatchNorm2d>() ||
        child.as<torch::nn::BatchNorm3d>()) {
      throw std::invalid_argument("synchronize_batch_norm: '" + item.key() + "' is a " + child.name() +
                                  ", whose batch statistics cannot be shared; build it as a "
                                  "reidnet::BatchNorm1d or BatchNorm2d");
    }
  }
  const ProcessSum sum = [group](torch::Tensor& tensor) { group.all_reduce_sum(tensor); };
  int64_t count = 0;
  const auto share = [&](torch::nn::Module& candidate) {
    auto* norm1d = candidate.as<BatchNorm1d>();
    auto* norm2d = candidate.as<BatchNorm2d>();
    if (norm1d == nullptr && norm2d == nullptr) return;
    if (group.size() > 1) norm1d != nullptr ? norm1d->share_statistics(sum) : norm2d->share_statistics(sum);
    ++count;
  };
  share(module);
  for (const auto& child : module.modules(/*include_self=*/false)) share(*child);
  return count;
}

/// How GradientAverager buckets and synchronises, with DistributedDataParallel's defaults.
struct GradientAveragerOptions {
  /// Gradients are all-reduced in buckets of about this size, the first bucket 1 MiB.
  TORCH_ARG(int64_t, bucket_bytes) = 25 << 20;
  /// Give every rank rank 0's buffers (BatchNorm's running statistics) before each forward.
  TORCH_ARG(bool, broadcast_buffers) = true;
  /// Some trainable parameters take no part in a step (ft_net keeps torchvision's unused
  /// `fc`, for its keys): each backward then first walks the graph back from the outputs given
  /// to before_backward, and parameters no rank used keep no gradient, as in one process.
  TORCH_ARG(bool, find_unused_parameters) = false;
};

/// Keeps a module's replicas equal across ranks: rank 0's parameters and buffers at the start,
/// then gradients averaged over the ranks at every backward, bucket by bucket as backward
/// produces them (c10d's Reducer). The module's parameters must stay the same tensors.
class GradientAverager {
 public:
  GradientAverager(torch::nn::Module& module, ProcessGroup group, GradientAveragerOptions options = {})
      : group_(std::move(group)), options_(options), buffers_(module.buffers()) {
    for (const auto& parameter : module.parameters()) {
      if (parameter.requires_grad()) parameters_.push_back(parameter);
    }
    if (parameters_.empty()) throw std::invalid_argument("GradientAverager: the module has no trainable parameters");
    // A clear error when the ranks built different models, before any collective on them.
    c10d::verify_params_across_processes(group_.c10d_group(), parameters_, c10::nullopt);
    std::vector<torch::Tensor> state = parameters_;
    state.insert(state.end(), buffers_.begin(), buffers_.end());
    {
      torch::NoGradGuard no_grad;
      group_.broadcast(state);
    }
    const std::vector<bool> dense(parameters_.size(), false);
    auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
        parameters_, {kFirstBucketBytes, static_cast<size_t>(options_.bucket_bytes())}, dense);
    // Backward produces gradients last layer first: reduce the last parameters' bucket first.
    std::reverse(buckets.begin(), buckets.end());
    std::reverse(limits.begin(), limits.end());
    reducer_ = std::make_unique<c10d::Reducer>(
        parameters_, std::move(buckets), std::move(limits), group_.c10d_group(), dense,
        options_.bucket_bytes(), options_.find_unused_parameters(),
        /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{},
        static_cast<int64_t>(kFirstBucketBytes));
  }

  /// Call before each training forward: after the first step the buckets are rebuilt in the
  /// order backward produced gradients, and rank 0's buffers are broadcast.
  void before_forward() {
    reducer_->prepare_for_forward();
    reducer_->rebuild_buckets();
    if (options_.broadcast_buffers() && !buffers_.empty()) {
      torch::NoGradGuard no_grad;
      group_.broadcast(buffers_);
    }
  }

  /// Call after the forward and before backward: the backward that follows averages the
  /// gradients (and returns only once they are). With find_unused_parameters, `outputs` are
  /// what the loss was computed from (or the loss itself).
  void before_backward(const std::vector<torch::Tensor>& outputs = {}) {
    if (options_.find_unused_parameters() && outputs.empty()) {
      throw std::invalid_argument("GradientAverager::before_backward: find_unused_parameters needs "
                                  "the outputs that backward starts from");
    }
    reducer_->prepare_for_backward(options_.find_unused_parameters() ? outputs : std::vector<torch::Tensor>{});
  }

  const ProcessGroup& group() const { return group_; }

 private:
  static constexpr size_t kFirstBucketBytes = 1u << 20;

  ProcessGroup group_;
  GradientAveragerOptions options_;
  std::vector<torch::Tensor> parameters_;
  std::vector<torch::Tensor> buffers_;
  std::unique_ptr<c10d::Reducer> reducer_;
};

}  // namespace reidnet
