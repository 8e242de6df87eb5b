#pragma once
// opts.yaml: the options a training run was made with, in the Python baseline's keys, so that
// both the baseline's test script and reidnet-test can rebuild the model from it.
#include "cli.hpp"

#include <fmt/core.h>
#include <fmt/ranges.h>
#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/models/model_zoo.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace reidnet::examples {

/// Everything reidnet-train is run with (flag defaults = the baseline's recipe).
struct TrainConfig {
  // The named recipe the values below started from (presets.hpp); flags override it.
  std::string preset = "baseline";
  // Data and output.
  std::string data;
  std::string out = "model/ft_ResNet50";
  bool train_all = false;
  int64_t height = 256;
  int64_t width = 128;
  int64_t workers = 2;
  // Model: a name of reidnet::model_names(), or the baseline's switches (--use_dense, --PCB,
  // --ibn, --usam) and the strong baseline's (--bnneck, --pool).
  std::string model = "ft_net";
  bool use_dense = false;
  bool pcb = false;
  bool ibn = false;
  bool usam = false;
  bool bnneck = false;
  std::string pool = "avg";
  int64_t last_stride = 2;
  double droprate = 0.5;
  int64_t linear_num = 512;
  std::string weights;
  int64_t class_num = 0;  // filled from the data set
  // Optimiser and schedule.
  std::string optimizer = "sgd";  // sgd (Nesterov), adam or adamw
  int64_t batch_size = 32;
  double lr = 0.05;
  double weight_decay = 5e-4;
  int64_t total_epoch = 60;
  int64_t warm_epoch = 0;
  bool cosine = false;
  std::vector<int64_t> milestones;  // MultiStepLR's epochs; none = StepLR at 2/3 of the epochs
  int64_t lr_warmup_epochs = 0;     // linear learning-rate warm-up, per iteration
  double lr_warmup_factor = 0.1;    // its factor at the first iteration
  double backbone_lr_ratio = 0.1;
  // Augmentation.
  double erasing_p = 0.0;
  bool color_jitter = false;
  // Losses.
  double label_smoothing = 0.0;
  bool triplet = false;
  bool circle = false;
  int64_t instances_per_id = 4;  // K of the P x K sampler used with --triplet
  // Run.
  std::string device = "cpu";
  bool fp16 = false;
  bool bf16 = false;
  bool channels_last = true;
  uint64_t seed = 0;
  int64_t threads = 2;
  int64_t epochs_this_run = 0;  // 0 = until total_epoch
  // Several processes (with torchrun's environment): how they talk.
  std::string dist_backend;      // "" = nccl on CUDA, gloo on CPU
  int64_t dist_timeout = 1800;   // seconds, as torch.distributed's default
  bool sync_bn = false;          // BatchNorm statistics over all processes' batches
};

/// A named recipe of reidnet-train (--preset): the fields it sets; a flag given on the command
/// line overrides them, and opts.yaml records the result.
struct Preset {
  const char* name;
  const char* summary;
  void (*apply)(TrainConfig&);
};

inline constexpr Preset kPresets[] = {
    {"baseline", "the Python baseline's defaults (for fine-tuning ImageNet weights)",
     [](TrainConfig&) {}},
    {"all-tricks", "the baseline's \"all tricks\": warm-up 5, stride 1, erasing 0.5, batch 8, lr 0.02",
     [](TrainConfig& c) {
       c.warm_epoch = 5;
       c.last_stride = 1;
       c.erasing_p = 0.5;
       c.batch_size = 8;
       c.lr = 0.02;
     }},
    // Measured on the toy data sets from random weights (the README's main job): ResNet-18
    // learns more in the same CPU time than ResNet-50; stride 1 gives layer4 a 8x4 map at
    // 128x64, so its BatchNorms see enough values; dropout only slows a model that starts from
    // nothing; colour jitter stands for the cameras' differing gain and colour cast; the
    // cosine schedule keeps the rate high for longer than StepLR's single drop.
    {"scratch", "for training without ImageNet weights: ResNet-18 + ClassBlock, 128x64, stride 1, "
                "batch 16, lr 0.02, warm-up 2, no dropout, colour jitter, cosine schedule",
     [](TrainConfig& c) {
       c.model = "resnet18";
       c.height = 128;
       c.width = 64;
       c.last_stride = 1;
       c.batch_size = 16;
       c.lr = 0.02;
       c.warm_epoch = 2;
       c.droprate = 0;
       c.color_jitter = true;
       c.cosine = true;
     }},
    // The strong baseline, BoT (Luo et al., "Bag of Tricks and A Strong Baseline for Deep
    // Person Re-identification", 2019), as fast-reid's configs/Base-bagtricks.yml states it:
    // BNNeck, stride 1, Adam at 3.5e-4 with weight decay 5e-4 on every parameter, 16 ids x 4
    // pictures, label smoothing 0.1, random erasing 0.5, triplet loss (margin 0.3), 256x128,
    // 120 epochs, a linear warm-up from 0.1 x lr. The decay epochs 40 and 70 and the 10-epoch
    // warm-up are the paper's (Base-bagtricks.yml: 40 and 90, 2,000 iterations).
    {"bot", "the strong baseline (BoT): BNNeck, stride 1, Adam lr 3.5e-4, P x K = 16 x 4 with "
            "triplet loss, label smoothing 0.1, erasing 0.5, 120 epochs, warm-up 10, decay at 40 and 70",
     [](TrainConfig& c) {
       c.bnneck = true;
       c.last_stride = 1;
       c.optimizer = "adam";
       c.lr = 3.5e-4;
       c.weight_decay = 5e-4;
       c.backbone_lr_ratio = 1.0;
       c.batch_size = 64;
       c.instances_per_id = 4;
       c.triplet = true;
       c.label_smoothing = 0.1;
       c.erasing_p = 0.5;
       c.total_epoch = 120;
       c.milestones = {40, 70};
       c.lr_warmup_epochs = 10;
       c.lr_warmup_factor = 0.1;
     }},
};

/// The preset called `name`, or nullptr.
inline const Preset* find_preset(const std::string& name) {
  for (const auto& preset : kPresets) {
    if (name == preset.name) return &preset;
  }
  return nullptr;
}

inline std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& preset : kPresets) names.emplace_back(preset.name);
  return names;
}

/// The baseline's model families that reidnet does not build (yet): written as false, and
/// refused when an opts.yaml turns one on.
inline constexpr const char* kUnbuiltModelFamilies[] = {"use_NAS", "use_swin", "use_swinv2",
                                                        "use_convnext", "use_efficient", "use_hr"};

/// Calls `field(key, member)` for every opts.yaml key that maps to a TrainConfig member: the
/// one list that writing and reading share. `Config` is TrainConfig or const TrainConfig.
template <class Config, class Field>
void for_each_opts_field(Config& c, Field&& field) {
  field("preset", c.preset);
  field("data_dir", c.data);
  field("train_all", c.train_all);
  field("color_jitter", c.color_jitter);
  field("batchsize", c.batch_size);
  field("model", c.model);
  field("use_dense", c.use_dense);
  field("PCB", c.pcb);
  field("ibn", c.ibn);
  field("usam", c.usam);
  field("bnneck", c.bnneck);
  field("pool", c.pool);
  field("linear_num", c.linear_num);
  field("stride", c.last_stride);  // the baseline's key for the last stride
  field("droprate", c.droprate);
  field("erasing_p", c.erasing_p);
  field("optimizer", c.optimizer);
  field("lr", c.lr);
  field("weight_decay", c.weight_decay);
  field("total_epoch", c.total_epoch);
  field("warm_epoch", c.warm_epoch);
  field("cosine", c.cosine);
  field("milestones", c.milestones);
  field("lr_warmup_epochs", c.lr_warmup_epochs);
  field("lr_warmup_factor", c.lr_warmup_factor);
  field("use_circle", c.circle);
  field("use_triplet", c.triplet);
  field("label_smoothing", c.label_smoothing);
  field("fp16", c.fp16);
  field("bf16", c.bf16);
  field("h", c.height);  // the baseline's spelling; reidnet's own follows and wins on reading
  field("w", c.width);
  field("height", c.height);
  field("width", c.width);
  field("nclasses", c.class_num);  // the baseline's key for the class count
  field("backbone_lr_ratio", c.backbone_lr_ratio);
  field("seed", c.seed);
  field("weights", c.weights);
  field("instances_per_id", c.instances_per_id);
  field("channels_last", c.channels_last);
  field("sync_bn", c.sync_bn);
}

/// Limits on what a run may ask for: far above any real ReID recipe, low enough that a typo
/// cannot ask for terabytes.
inline constexpr int64_t kMaxImageSide = 4096;
inline constexpr int64_t kMaxBatchSize = 4096;
inline constexpr int64_t kMaxClasses = 1000000;
inline constexpr int64_t kMaxLinearNum = 65536;
inline constexpr int64_t kMaxWorkers = 256;
inline constexpr int64_t kMaxThreads = 1024;

/// Checks every field of a run's recipe, whether it came from flags or from an opts.yaml;
/// `name(key, flag)` says how the message names the field. Throws UsageError for the first
/// field out of range; NaN and infinities fail every check.
template <class Name>
void check_train_config(const TrainConfig& c, Name&& name) {
  const auto require = [&](bool ok, const char* key, const char* flag, const auto& value,
                           const char* expected) {
    if (!ok) {
      throw UsageError(fmt::format("{} is {}; expected {}", name(key, flag), value, expected));
    }
  };
  const auto within = [](double value, double low, double high) {
    return std::isfinite(value) && value >= low && value <= high;
  };
  require(find_preset(c.preset) != nullptr, "preset", "--preset", c.preset,
          "baseline, all-tricks, scratch or bot");
  require(c.height >= 1 && c.height <= kMaxImageSide, "height", "--height", c.height, "1 to 4096");
  require(c.width >= 1 && c.width <= kMaxImageSide, "width", "--width", c.width, "1 to 4096");
  require(c.workers >= 0 && c.workers <= kMaxWorkers, "workers", "--workers", c.workers, "0 to 256");
  require(c.last_stride == 1 || c.last_stride == 2, "stride", "--stride", c.last_stride, "1 or 2");
  require(reidnet::is_model_name(c.model), "model", "--model", c.model,
          "a name reidnet-model-summary --list prints");
  require(c.pool == "avg" || c.pool == "max" || c.pool == "gem" || c.pool == "gem_fixed", "pool",
          "--pool", c.pool, "avg, max, gem or gem_fixed");
  require(within(c.droprate, 0, 0.99), "droprate", "--droprate", c.droprate, "0 to 0.99");
  require(c.linear_num >= 0 && c.linear_num <= kMaxLinearNum, "linear_num", "--linear-num", c.linear_num,
          "0 (none) to 65536");
  require(c.class_num >= 0 && c.class_num <= kMaxClasses, "nclasses", "--class-num", c.class_num,
          "1 to 1000000");
  require(c.batch_size >= 1 && c.batch_size <= kMaxBatchSize, "batchsize", "--batch-size",
          c.batch_size, "1 to 4096");
  require(c.optimizer == "sgd" || c.optimizer == "adam" || c.optimizer == "adamw", "optimizer",
          "--optimizer", c.optimizer, "sgd, adam or adamw");
  require(std::isfinite(c.lr) && c.lr > 0, "lr", "--lr", c.lr, "a positive number");
  require(within(c.weight_decay, 0, 1), "weight_decay", "--weight-decay", c.weight_decay, "0 to 1");
  require(c.total_epoch >= 0 && c.total_epoch <= 100000, "total_epoch", "--total-epoch",
          c.total_epoch, "0 to 100000");
  require(c.warm_epoch >= 0 && c.warm_epoch <= 100000, "warm_epoch", "--warm-epoch", c.warm_epoch,
          "0 to 100000");
  require(c.milestones.size() <= 100 &&
              std::all_of(c.milestones.begin(), c.milestones.end(),
                          [](int64_t epoch) { return epoch >= 1 && epoch <= 100000; }) &&
              std::adjacent_find(c.milestones.begin(), c.milestones.end(),
                                 std::greater_equal<int64_t>()) == c.milestones.end(),
          "milestones", "--milestones", fmt::format("{}", fmt::join(c.milestones, ",")),
          "up to 100 ascending epochs, each 1 to 100000");
  require(!(c.cosine && !c.milestones.empty()), "cosine", "--cosine", "true together with milestones",
          "one schedule");
  require(c.lr_warmup_epochs >= 0 && c.lr_warmup_epochs <= 100000, "lr_warmup_epochs",
          "--lr-warmup-epochs", c.lr_warmup_epochs, "0 to 100000");
  require(std::isfinite(c.lr_warmup_factor) && c.lr_warmup_factor > 0 && c.lr_warmup_factor <= 1,
          "lr_warmup_factor", "--lr-warmup-factor", c.lr_warmup_factor, "above 0, up to 1");
  require(within(c.backbone_lr_ratio, 0, 10), "backbone_lr_ratio", "--backbone-lr-ratio",
          c.backbone_lr_ratio, "0 to 10");
  require(within(c.erasing_p, 0, 1), "erasing_p", "--erasing-p", c.erasing_p, "0 to 1");
  require(within(c.label_smoothing, 0, 0.99), "label_smoothing", "--label-smoothing",
          c.label_smoothing, "0 to 0.99");
  require(c.instances_per_id >= 1 && c.instances_per_id <= 1024, "instances_per_id",
          "--instances-per-id", c.instances_per_id, "1 to 1024");
  require(!(c.fp16 && c.bf16), "fp16", "--fp16", "true together with bf16", "one of the two");
  require(c.device == "cpu" || c.device == "cuda", "device", "--device", c.device, "cpu or cuda");
  require(c.threads >= 1 && c.threads <= kMaxThreads, "threads", "--threads", c.threads, "1 to 1024");
  require(c.epochs_this_run >= 0, "epochs_this_run", "--epochs-this-run", c.epochs_this_run,
          "a positive count");
}

/// The model family and arguments a run's options describe. The baseline's switches pick the
/// family (at most one of --use_dense, --PCB, --usam, --bnneck; --ibn with ft_net or --bnneck);
/// `name(key, flag)` says how an error names a field. Throws UsageError.
template <class Name>
std::pair<std::string, reidnet::ModelArgs> resolve_model(const TrainConfig& c, Name&& name) {
  const std::pair<bool, const char*> switches[] = {{c.use_dense, "ft_net_dense"},
                                                   {c.pcb, "pcb"},
                                                   {c.usam, "ft_net_usam"},
                                                   {c.bnneck, "bnneck"}};
  std::string model = c.model;
  int on = 0;
  for (const auto& [set, family] : switches) {
    if (!set) continue;
    if (++on > 1) {
      throw UsageError(fmt::format("{}, {}, {} and {} each pick a model family; give at most one",
                                   name("use_dense", "--use_dense"), name("PCB", "--PCB"),
                                   name("usam", "--usam"), name("bnneck", "--bnneck")));
    }
    if (model != "ft_net" && model != family) {
      throw UsageError(fmt::format("{} is {}, but {} asks for {}", name("model", "--model"), c.model,
                                   name(family, "its switch"), family));
    }
    model = family;
  }
  auto args = reidnet::ModelArgs()
                  .class_num(std::max<int64_t>(c.class_num, 1))
                  .droprate(c.droprate)
                  .last_stride(c.last_stride)
                  .linear_num(c.linear_num)
                  .pool(reidnet::pool_type(c.pool));
  if (c.ibn) {
    if (model == "ft_net" || model == "ft_net_ibn") {
      model = "ft_net_ibn";
    } else if (model == "bnneck") {
      args.backbone("resnet50_ibn_a");
    } else {
      throw UsageError(fmt::format("{} has no IBN variant (ibn works with ft_net and bnneck)",
                                   name("ibn", "--ibn")));
    }
  }
  return {model, args};
}

/// Writes opts.yaml atomically: the baseline's keys (nclasses, stride, linear_num, droprate,
/// batchsize, lr, total_epoch, h/w, PCB, use_dense, ibn, usam, fp16, ...) and reidnet's own.
/// `c.model` must be resolved (resolve_model) and `c.ibn` say whether the backbone is IBN-a.
inline void write_opts_yaml(const TrainConfig& c, const std::string& path) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  auto put = [&out](const char* key, const auto& value) {
    out << YAML::Key << key << YAML::Value;
    if constexpr (std::is_same_v<std::decay_t<decltype(value)>, std::vector<int64_t>>) {
      out << YAML::Flow;  // milestones: [40, 70]
    }
    out << value;
  };
  put("name", std::filesystem::path(c.out).filename().string());
  for_each_opts_field(c, [&](const char* key, const auto& value) {
    // The switches are written as the model they resolved to, so that Python reads the same.
    const std::string field = key;
    if (field == "model") return put(key, c.model);
    if (field == "use_dense") return put(key, c.model == "ft_net_dense");
    if (field == "PCB") return put(key, c.model == "pcb");
    if (field == "usam") return put(key, c.model == "ft_net_usam");
    if (field == "bnneck") return put(key, c.model == "bnneck");
    put(key, value);
  });
  for (const char* family : kUnbuiltModelFamilies) put(family, false);
  out << YAML::EndMap;
  const std::string text = std::string(out.c_str()) + "\n";
  detail::write_file_atomically(path, std::vector<unsigned char>(text.begin(), text.end()));
}

/// Reads a small YAML file (opts.yaml, trainer_state.yaml): a regular file of at most 1 MiB,
/// parsed into a map in which no key appears twice (yaml-cpp would read the first value and
/// PyYAML the last: reidnet and the Python baseline would read different recipes). Throws
/// UsageError naming the file (and the repeated key).
inline YAML::Node read_yaml_map(const std::filesystem::path& path) {
  YAML::Node node;
  try {
    const auto bytes = detail::read_file_bytes(path.string(), detail::kMaxSettingsFileBytes);
    node = YAML::Load(std::string(bytes.begin(), bytes.end()));
  } catch (const std::exception& error) {
    throw UsageError(path.string() + ": cannot read it (" + error.what() + ")");
  }
  if (!node.IsMap()) throw UsageError(path.string() + ": not a map of keys to values");
  std::set<std::string> keys;
  for (const auto& entry : node) {  // yaml-cpp keeps every pair a map lists, repeats included
    const auto key = entry.first.IsScalar() ? entry.first.Scalar() : YAML::Dump(entry.first);
    if (!keys.insert(key).second) {
      throw UsageError(fmt::format("{}: the key '{}' appears twice", path.string(), key));
    }
  }
  return node;
}

/// Reads `key` of a YAML map into `value` (left as it is when the key is absent); UsageError
/// naming the file, key and text when the value has the wrong type.
template <class T>
void read_yaml_field(const YAML::Node& node, const std::filesystem::path& path, const char* key,
                     T& value) {
  const auto field = node[key];
  if (!field) return;
  try {
    value = field.as<T>();
  } catch (const YAML::Exception&) {
    throw UsageError(fmt::format("{}: key '{}' has the value '{}', which is not {}", path.string(),
                                 key, field.IsScalar() ? field.Scalar() : std::string("(not a scalar)"),
                                 std::is_same_v<T, bool> ? "true or false"
                                 : std::is_floating_point_v<T> ? "a number"
                                 : std::is_integral_v<T> ? "an integer" : "of the right type"));
  }
}

/// Reads an opts.yaml (ours or the Python baseline's): the model (nclasses, stride,
/// linear_num, droprate, input size) for reidnet-test, and the whole recipe for
/// `reidnet-train --resume`; keys it lacks keep their defaults. Every value is checked, and
/// errors (UsageError) name the file, the key and the value.
inline TrainConfig read_opts_yaml(const std::filesystem::path& path) {
  const auto node = read_yaml_map(path);
  TrainConfig opts;
  opts.class_num = 751;  // the baseline's default when opts.yaml predates the key
  auto get = [&](const char* key, auto& value) { read_yaml_field(node, path, key, value); };
  for (const char* unsupported : kUnbuiltModelFamilies) {
    bool on = false;
    get(unsupported, on);
    if (on) {
      throw UsageError(path.string() + ": '" + unsupported +
                       ": true' is a model reidnet does not build yet; reidnet-model-summary "
                       "--list prints those it builds");
    }
  }
  for_each_opts_field(opts, get);
  check_train_config(opts, [&](const char* key, const char*) {
    return fmt::format("{}: key '{}'", path.string(), key);
  });
  if (opts.class_num < 1) throw UsageError(path.string() + ": key 'nclasses' is 0; expected 1 to 1000000");
  return opts;
}

}  // namespace reidnet::examples
