#pragma once
/// A multi-threaded loader of labelled pictures: decoding and augmentation in worker threads,
/// a bounded number of batches prepared ahead, seeded shuffling, drop_last, and a P x K
/// identity sampler for the metric losses. One seed gives the same batches, pixel for pixel,
/// whatever the number of workers: each sample draws from sample_rng(seed, epoch, index).
///
///     reidnet::DataLoader loader(data.train, reidnet::make_train_transform({}),
///                                reidnet::LoaderOptions().batch_size(32).shuffle(true).drop_last(true));
///     for (const auto& batch : loader.epoch(0)) { /* batch.images [32, 3, 256, 128] */ }

#include <reidnet/data/datasets.hpp>
#include <reidnet/data/detail/random.hpp>
#include <reidnet/data/image.hpp>
#include <reidnet/data/transforms.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace reidnet {

/// One process's part of every epoch in data-parallel training.
struct Shard {
  int64_t rank = 0;
  int64_t world_size = 1;
};

/// How the loader batches and orders samples.
struct LoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 32;
  /// Threads that decode and transform; 0 loads in the calling thread.
  TORCH_ARG(int64_t, workers) = 2;
  /// Batches each worker may have ready ahead of the consumer.
  TORCH_ARG(int64_t, prefetch) = 2;
  TORCH_ARG(bool, shuffle) = false;
  /// Drop the last, incomplete batch of an epoch.
  TORCH_ARG(bool, drop_last) = false;
  TORCH_ARG(uint64_t, seed) = 0;
  /// Page-lock the images (faster, asynchronous copies to CUDA); ignored without CUDA.
  TORCH_ARG(bool, pin_memory) = false;
  /// K > 0: P x K identity sampling, P = batch_size / K identities with K pictures each
  /// (ids with fewer pictures are sampled with replacement); shuffle and drop_last are implied.
  TORCH_ARG(int64_t, instances_per_identity) = 0;
  /// Load only this rank's part of each epoch. Samples are split as torch's
  /// DistributedSampler splits them (the same permutation, padded to a multiple of the world
  /// size, every world_size-th index), P x K batches whole, one in world_size; every rank
  /// gets as many batches. A shard of world size 1 takes DistributedSampler's order too.
  TORCH_ARG(std::optional<Shard>, shard) = std::nullopt;
};

/// One batch: images float [B, 3, H, W], labels (class indices), cameras and the indices of the
/// samples in the loader's sample list, all int64 [B].
struct Batch {
  torch::Tensor images;
  torch::Tensor labels;
  torch::Tensor cameras;
  torch::Tensor indices;
};

namespace detail {

inline void check_loader_options(const LoaderOptions& options) {
  if (options.batch_size() < 1) throw std::runtime_error("LoaderOptions: batch_size must be >= 1");
  if (options.workers() < 0) throw std::runtime_error("LoaderOptions: workers must be >= 0");
  if (options.prefetch() < 1) throw std::runtime_error("LoaderOptions: prefetch must be >= 1");
  if (const auto& shard = options.shard();
      shard && (shard->world_size < 1 || shard->rank < 0 || shard->rank >= shard->world_size)) {
    throw std::runtime_error("LoaderOptions: shard rank " + std::to_string(shard->rank) +
                             " of world size " + std::to_string(shard->world_size) +
                             ": expected 0 <= rank < world size");
  }
  const int64_t k = options.instances_per_identity();
  if (k < 0 || (k > 0 && options.batch_size() % k != 0)) {
    throw std::runtime_error("LoaderOptions: batch_size (" + std::to_string(options.batch_size()) +
                             ") must be a multiple of instances_per_identity (" +
                             std::to_string(k) + ")");
  }
}

inline Rng epoch_rng(uint64_t seed, int64_t epoch) { return sample_rng(seed, epoch, -1); }

/// torch.utils.data.DistributedSampler's indices for `shard`: randperm(n) from a generator
/// seeded seed + epoch (or 0..n-1), padded from its start to a multiple of the world size,
/// then every world_size-th index from the rank's.
inline std::vector<int64_t> distributed_sampler_order(int64_t n, const Shard& shard, bool shuffle,
                                                      uint64_t seed, int64_t epoch) {
  std::vector<int64_t> all(static_cast<size_t>(n));
  if (shuffle) {
    const auto permutation = torch::randperm(
        n, at::detail::createCPUGenerator(seed + static_cast<uint64_t>(epoch)), torch::kInt64);
    std::memcpy(all.data(), permutation.data_ptr<int64_t>(), sizeof(int64_t) * all.size());
  } else {
    for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  }
  std::vector<int64_t> own;
  if (n == 0) return own;
  const int64_t per_rank = (n + shard.world_size - 1) / shard.world_size;
  for (int64_t i = 0; i < per_rank; ++i) {
    own.push_back(all[static_cast<size_t>((i * shard.world_size + shard.rank) % n)]);
  }
  return own;
}

}  // namespace detail

/// P x K identity batches (torchreid's RandomIdentitySampler): each id's pictures are shuffled
/// (drawn with replacement up to K when it has fewer) and cut into groups of K; then, while at
/// least P ids have groups left, P distinct ids are drawn and give one group each.
inline std::vector<std::vector<int64_t>> identity_batches(const std::vector<Sample>& samples,
                                                          int64_t identities_per_batch,
                                                          int64_t instances_per_identity, Rng& rng) {
  const int64_t p = identities_per_batch, k = instances_per_identity;
  std::map<int64_t, std::vector<int64_t>> by_id;
  for (size_t i = 0; i < samples.size(); ++i) {
    by_id[samples[i].person_id].push_back(static_cast<int64_t>(i));
  }
  if (static_cast<int64_t>(by_id.size()) < p) {
    throw std::runtime_error("P x K sampling needs at least P = " + std::to_string(p) +
                             " identities, the data has " + std::to_string(by_id.size()) +
                             ": lower batch_size or raise instances_per_identity");
  }
  std::map<int64_t, std::deque<std::vector<int64_t>>> groups;
  std::vector<int64_t> available;
  for (auto& [id, indices] : by_id) {
    std::vector<int64_t> pool = indices;
    if (static_cast<int64_t>(pool.size()) < k) {
      pool.clear();
      for (int64_t i = 0; i < k; ++i) {
        pool.push_back(indices[detail::random_integer(rng, 0, static_cast<int64_t>(indices.size()))]);
      }
    }
    detail::shuffle(pool, rng);
    for (size_t start = 0; start + k <= pool.size(); start += k) {
      groups[id].emplace_back(pool.begin() + static_cast<int64_t>(start),
                              pool.begin() + static_cast<int64_t>(start + k));
    }
    available.push_back(id);
  }
  std::vector<std::vector<int64_t>> batches;
  while (static_cast<int64_t>(available.size()) >= p) {
    // A partial Fisher-Yates shuffle picks P distinct ids.
    for (int64_t i = 0; i < p; ++i) {
      std::swap(available[i], available[detail::random_integer(rng, i, static_cast<int64_t>(available.size()))]);
    }
    std::vector<int64_t> batch;
    std::vector<int64_t> exhausted;
    for (int64_t i = 0; i < p; ++i) {
      auto& queue = groups[available[i]];
      batch.insert(batch.end(), queue.front().begin(), queue.front().end());
      queue.pop_front();
      if (queue.empty()) exhausted.push_back(available[i]);
    }
    for (int64_t id : exhausted) available.erase(std::find(available.begin(), available.end(), id));
    batches.push_back(std::move(batch));
  }
  return batches;
}

/// The sample indices of every batch of `epoch`, in order: what the loader will yield.
inline std::vector<std::vector<int64_t>> plan_batches(const std::vector<Sample>& samples,
                                                      const LoaderOptions& options, int64_t epoch) {
  detail::check_loader_options(options);
  auto rng = detail::epoch_rng(options.seed(), epoch);
  const auto& shard = options.shard();
  if (options.instances_per_identity() > 0) {
    const int64_t k = options.instances_per_identity();
    auto batches = identity_batches(samples, options.batch_size() / k, k, rng);
    if (!shard) return batches;
    std::vector<std::vector<int64_t>> own;
    const size_t whole_rounds = batches.size() / static_cast<size_t>(shard->world_size);
    for (size_t round = 0; round < whole_rounds; ++round) {
      own.push_back(std::move(batches[round * shard->world_size + shard->rank]));
    }
    return own;
  }
  std::vector<int64_t> order;
  if (shard) {
    order = detail::distributed_sampler_order(static_cast<int64_t>(samples.size()), *shard,
                                              options.shuffle(), options.seed(), epoch);
  } else {
    order.resize(samples.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    if (options.shuffle()) detail::shuffle(order, rng);
  }
  std::vector<std::vector<int64_t>> batches;
  for (size_t start = 0; start < order.size(); start += options.batch_size()) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(options.batch_size()));
    if (options.drop_last() && end - start < static_cast<size_t>(options.batch_size())) break;
    batches.emplace_back(order.begin() + static_cast<int64_t>(start),
                         order.begin() + static_cast<int64_t>(end));
  }
  return batches;
}

namespace detail {

/// Decodes and transforms the samples of one batch.
inline Batch load_batch(const std::vector<Sample>& samples, const std::vector<int64_t>& indices,
                        const Transform& transform, const LoaderOptions& options, int64_t epoch) {
  const auto count = static_cast<int64_t>(indices.size());
  torch::Tensor images;  // [B, ...] allocated once the first sample gives the shape
  auto labels = torch::empty({count}, torch::kInt64);
  auto cameras = torch::empty_like(labels);
  int64_t* label_data = labels.data_ptr<int64_t>();
  int64_t* camera_data = cameras.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    const Sample& sample = samples.at(static_cast<size_t>(indices[i]));
    const auto picture = read_image(sample.path);
    auto rng = sample_rng(options.seed(), epoch, indices[i]);
    torch::Tensor tensor;
    try {
      tensor = transform(picture, rng).to(torch::kFloat32).contiguous();
    } catch (const std::exception& error) {
      throw std::runtime_error("cannot transform " + sample.path + ": " + error.what());
    }
    if (!images.defined()) {
      std::vector<int64_t> shape{count};
      shape.insert(shape.end(), tensor.sizes().begin(), tensor.sizes().end());
      images = torch::empty(shape, torch::kFloat32);
    }
    if (tensor.sizes() != images.sizes().slice(1)) {
      throw std::runtime_error("the transform gave " + sample.path + " the shape " +
                               c10::str(tensor.sizes()) + " but earlier pictures " +
                               c10::str(images.sizes().slice(1)) + ": make it resize to one size");
    }
    // memcpy, not torch's copy or stack: those would start intra-op threads in every worker.
    std::memcpy(images.data_ptr<float>() + i * tensor.numel(), tensor.data_ptr<float>(),
                tensor.nbytes());
    label_data[i] = sample.label;
    camera_data[i] = sample.camera;
  }
  Batch batch{images, labels, cameras, torch::tensor(indices, torch::kInt64)};
  if (options.pin_memory() && torch::cuda::is_available()) {
    batch.images = batch.images.pin_memory();
    batch.labels = batch.labels.pin_memory();
  }
  return batch;
}

}  // namespace detail

/// One pass over the data: worker threads prepare batches ahead; iterate it once.
/// Destroying it stops the workers (also mid-epoch).
class EpochRun {
 public:
  EpochRun(std::shared_ptr<const std::vector<Sample>> samples, Transform transform,
           LoaderOptions options, int64_t epoch)
      : state_(std::make_shared<State>()) {
    state_->samples = std::move(samples);
    state_->transform = std::move(transform);
    state_->options = options;
    state_->epoch = epoch;
    state_->plan = plan_batches(*state_->samples, options, epoch);
    for (int64_t i = 0; i < options.workers(); ++i) {
      workers_.emplace_back([state = state_] { work(*state); });
    }
  }
  EpochRun(const EpochRun&) = delete;
  EpochRun& operator=(const EpochRun&) = delete;
  ~EpochRun() {
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->stop = true;
    }
    state_->changed.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  /// Batches in this epoch.
  int64_t size() const { return static_cast<int64_t>(state_->plan.size()); }

  /// The next batch, or std::nullopt at the end. Rethrows a worker's error (naming the file).
  std::optional<Batch> next() {
    State& s = *state_;
    if (consumed_ >= s.plan.size()) return std::nullopt;
    const size_t wanted = consumed_++;
    if (workers_.empty()) {
      return detail::load_batch(*s.samples, s.plan[wanted], s.transform, s.options, s.epoch);
    }
    std::unique_lock<std::mutex> lock(s.mutex);
    s.changed.wait(lock, [&] { return s.ready.count(wanted) > 0; });
    auto result = std::move(s.ready[wanted]);
    s.ready.erase(wanted);
    s.consumed = consumed_;
    lock.unlock();
    s.changed.notify_all();
    if (result.error) std::rethrow_exception(result.error);
    return std::move(result.batch);
  }

  /// Input iterator over the remaining batches.
  class Iterator {
   public:
    explicit Iterator(EpochRun* run) : run_(run) { advance(); }
    Iterator() = default;
    const Batch& operator*() const { return *current_; }
    const Batch* operator->() const { return &*current_; }
    Iterator& operator++() {
      advance();
      return *this;
    }
    bool operator!=(const Iterator& other) const { return current_.has_value() != other.current_.has_value(); }
    bool operator==(const Iterator& other) const { return !(*this != other); }

   private:
    void advance() { current_ = run_->next(); }
    EpochRun* run_ = nullptr;
    std::optional<Batch> current_;
  };
  Iterator begin() { return Iterator(this); }
  Iterator end() { return Iterator(); }

 private:
  struct Result {
    Batch batch;
    std::exception_ptr error;
  };
  struct State {
    std::shared_ptr<const std::vector<Sample>> samples;
    Transform transform;
    LoaderOptions options;
    int64_t epoch = 0;
    std::vector<std::vector<int64_t>> plan;
    std::mutex mutex;
    std::condition_variable changed;
    std::map<size_t, Result> ready;
    size_t claimed = 0;
    size_t consumed = 0;
    bool stop = false;
  };

  static void work(State& s) {
    const size_t window = static_cast<size_t>(s.options.workers() * s.options.prefetch());
    for (;;) {
      size_t index = 0;
      {
        std::unique_lock<std::mutex> lock(s.mutex);
        s.changed.wait(lock, [&] {
          return s.stop || s.claimed >= s.plan.size() || s.claimed < s.consumed + window;
        });
        if (s.stop || s.claimed >= s.plan.size()) return;
        index = s.claimed++;
      }
      Result result;
      try {
        result.batch = detail::load_batch(*s.samples, s.plan[index], s.transform, s.options, s.epoch);
      } catch (...) {
        result.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.ready.emplace(index, std::move(result));
      }
      s.changed.notify_all();
    }
  }

  std::shared_ptr<State> state_;
  std::vector<std::thread> workers_;
  size_t consumed_ = 0;
};

/// Loads `samples` in batches through `transform`.
///
///     reidnet::DataLoader loader(data.query, reidnet::make_eval_transform(256, 128),
///                                reidnet::LoaderOptions().batch_size(64));
class DataLoader {
 public:
  DataLoader(std::vector<Sample> samples, Transform transform, LoaderOptions options = {})
      : samples_(std::make_shared<const std::vector<Sample>>(std::move(samples))),
        transform_(std::move(transform)),
        options_(options) {
    detail::check_loader_options(options_);
    if (!transform_) throw std::runtime_error("DataLoader: the transform is empty");
  }

  /// Starts epoch `epoch` (its shuffling and augmentation depend on seed and epoch).
  EpochRun epoch(int64_t epoch) const { return EpochRun(samples_, transform_, options_, epoch); }

  /// The batches of `epoch`, as sample indices, without loading anything.
  std::vector<std::vector<int64_t>> plan(int64_t epoch) const {
    return plan_batches(*samples_, options_, epoch);
  }

  const std::vector<Sample>& samples() const { return *samples_; }
  const LoaderOptions& options() const { return options_; }

 private:
  std::shared_ptr<const std::vector<Sample>> samples_;
  Transform transform_;
  LoaderOptions options_;
};

}  // namespace reidnet
