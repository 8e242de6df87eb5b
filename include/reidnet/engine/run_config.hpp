#pragma once
/// The description of a training run: every setting once, in a table (run_fields()) that says
/// its opts.yaml key (the Python baseline's spelling), its flag and aliases, its bounds, and
/// whether it belongs to the recipe (fixed once the run has started) or says how to run it
/// (may change on --resume). Flags, validation, opts.yaml reading and writing, and the resume
/// rule all come from the table. Named recipes (presets) are registered, not hard-coded.
///
///     reidnet::RunConfig config;
///     reidnet::find_preset("bot")->apply(config);
///     config.data = "Market-1501";
///     reidnet::check_run_config(config);                 // ConfigError naming the flag
///     const auto [family, args] = reidnet::resolve_model(config);
///     reidnet::write_opts_yaml(config, "runs/bot/opts.yaml");
///
/// Needs the reidnet::engine target (yaml-cpp).
#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/core/errors.hpp>
#include <reidnet/core/files.hpp>
#include <reidnet/models/model_zoo.hpp>

#include <fmt/core.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace reidnet {

/// Everything a training run is made with; the defaults are the Python baseline's recipe.
struct RunConfig {
  std::string preset = "baseline";
  // Data and output.
  std::string data;
  std::string out = "model/ft_ResNet50";
  bool train_all = false;
  int64_t height = 256;
  int64_t width = 128;
  int64_t workers = 2;
  // Model: a name of model_names(), or the baseline's switches by opts.yaml key, which the
  // families and backbones register: use_dense, PCB, usam, bnneck pick a family, ibn its
  // backbone (absent = off).
  std::string model = "ft_net";
  std::string head;  // the head of a backbone named as the model (head_names()); "" = class_block
  std::map<std::string, bool> switches;
  std::string pool = "avg";
  int64_t last_stride = 2;
  int64_t patch_stride = 0;  // a vision transformer's; 0 = its patch size
  double droprate = 0.5;
  int64_t linear_num = 512;
  std::string weights;
  int64_t class_num = 0;  // 0 = the training data set's
  // Optimiser and schedule.
  std::string optimizer = "sgd";
  int64_t batch_size = 32;
  double lr = 0.05;
  double weight_decay = 5e-4;
  int64_t total_epoch = 60;
  int64_t warm_epoch = 0;
  bool cosine = false;
  std::vector<int64_t> milestones;  // MultiStepLR's epochs; none = StepLR at 2/3 of the epochs
  int64_t lr_warmup_epochs = 0;
  double lr_warmup_factor = 0.1;
  double backbone_lr_ratio = 0.1;
  // Augmentation and losses.
  double erasing_p = 0.0;
  bool color_jitter = false;
  double label_smoothing = 0.0;
  bool triplet = false;
  bool circle = false;
  int64_t instances_per_id = 4;
  // How to run it.
  std::string device = "cpu";
  bool fp16 = false;
  bool bf16 = false;
  bool channels_last = true;
  uint64_t seed = 0;
  int64_t threads = 2;
  int64_t epochs_this_run = 0;  // 0 = until total_epoch
  std::string dist_backend;     // "" = nccl on CUDA, gloo on CPU
  int64_t dist_timeout = 1800;  // seconds, as torch.distributed's default
  bool sync_bn = false;
};

/// Limits on what a run may ask for: far above any real ReID recipe, low enough that a typo
/// cannot ask for terabytes.
inline constexpr int64_t kMaxImageSide = 4096;
inline constexpr int64_t kMaxBatchSize = 4096;
inline constexpr int64_t kMaxClasses = 1000000;
inline constexpr int64_t kMaxLinearNum = 65536;
inline constexpr int64_t kMaxWorkers = 256;
inline constexpr int64_t kMaxThreads = 1024;

/// Whether a field is part of the recipe (opts.yaml fixes it once the run has started) or a
/// setting of how this process runs it (data location, device, threads: free on --resume).
enum class FieldRole { kRecipe, kRunSetting };

/// A switch of RunConfig::switches, by its opts.yaml key.
struct SwitchKey {
  std::string key;
};

/// One setting of RunConfig.
struct RunField {
  using Member = std::variant<std::string RunConfig::*, bool RunConfig::*, int64_t RunConfig::*,
                              uint64_t RunConfig::*, double RunConfig::*,
                              std::vector<int64_t> RunConfig::*, SwitchKey>;
  std::string name;        // unique; the opts.yaml key where it has one
  bool in_opts_yaml;       // written to and read from opts.yaml under `name`
  std::string yaml_alias;  // a key read before `name` (the baseline's h and w), or ""
  std::string flags;       // CLI11 spelling, first the flag messages name; "" = no flag
  Member member;
  FieldRole role;
  // Bounds of a number (each entry of a list, which must also ascend): low..high, low itself
  // excluded where low_excluded; of a text: one of choices() (when set).
  double low = 0, high = 0;
  bool low_excluded = false;
  std::function<std::vector<std::string>()> choices;
  std::string expected;  // the bounds in words, for messages
  std::string help;

  /// The flag messages name: the first spelling of `flags`.
  std::string flag() const { return flags.substr(0, flags.find(',')); }
};

/// A named recipe (--preset): the fields it sets; flags given beside it override them.
struct Preset {
  std::string name;
  std::string summary;
  std::function<void(RunConfig&)> apply;
};

namespace detail {

inline std::vector<Preset>& preset_registry() {
  static std::vector<Preset> presets{
      {"baseline", "the Python baseline's defaults (for fine-tuning ImageNet weights)",
       [](RunConfig&) {}},
      {"all-tricks",
       "the baseline's \"all tricks\": warm-up 5, stride 1, erasing 0.5, batch 8, lr 0.02",
       [](RunConfig& c) {
         c.warm_epoch = 5;
         c.last_stride = 1;
         c.erasing_p = 0.5;
         c.batch_size = 8;
         c.lr = 0.02;
       }},
      // Measured on the toy data sets from random weights: ResNet-18 learns more in the same
      // CPU time than ResNet-50; stride 1 gives layer4 an 8x4 map at 128x64, so its
      // BatchNorms see enough values; dropout only slows a model that starts from nothing;
      // colour jitter stands for the cameras' differing gain and colour cast; the cosine
      // schedule keeps the rate high for longer than StepLR's single drop.
      {"scratch",
       "for training without ImageNet weights: ResNet-18 + ClassBlock, 128x64, stride 1, "
       "batch 16, lr 0.02, warm-up 2, no dropout, colour jitter, cosine schedule",
       [](RunConfig& c) {
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
      // 120 epochs, a linear warm-up from 0.1 x lr. The decay epochs 40 and 70 and the
      // 10-epoch warm-up are the paper's (Base-bagtricks.yml: 40 and 90, 2,000 iterations).
      {"bot",
       "the strong baseline (BoT): BNNeck, stride 1, Adam lr 3.5e-4, P x K = 16 x 4 with "
       "triplet loss, label smoothing 0.1, erasing 0.5, 120 epochs, warm-up 10, decay at 40 and 70",
       [](RunConfig& c) {
         c.switches["bnneck"] = true;
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
  return presets;
}

}  // namespace detail

/// Adds a named recipe (or replaces the one of that name), for --preset and opts.yaml.
inline void register_preset(Preset preset) {
  auto& presets = detail::preset_registry();
  for (auto& known : presets) {
    if (known.name == preset.name) {
      known = std::move(preset);
      return;
    }
  }
  presets.push_back(std::move(preset));
}

inline const std::vector<Preset>& presets() { return detail::preset_registry(); }

/// The preset called `name`, or nullptr.
inline const Preset* find_preset(const std::string& name) {
  for (const auto& preset : presets()) {
    if (preset.name == name) return &preset;
  }
  return nullptr;
}

inline std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& preset : presets()) names.push_back(preset.name);
  return names;
}

/// The baseline's model switches that no registered family or backbone answers to (those of
/// families whose header was not included, or that reidnet does not build yet): written as
/// false, and refused when an opts.yaml turns one on.
inline std::vector<std::string> unbuilt_model_switches() {
  static const std::vector<std::string> baseline{"use_NAS",      "use_swin",      "use_swinv2", "use_dino",
                                                 "use_convnext", "use_efficient", "use_hr"};
  std::vector<std::string> unbuilt;
  for (const auto& key : baseline) {
    bool registered = false;
    for (const auto& item : model_entries()) registered = registered || item.second.switch_key == key;
    for (const auto& name : backbone_names()) registered = registered || backbone_entry(name).switch_key == key;
    if (!registered) unbuilt.push_back(key);
  }
  return unbuilt;
}

namespace detail {

inline std::vector<std::string> pool_names() { return {"avg", "max", "gem", "gem_fixed", "token"}; }

/// The table behind run_fields(), in opts.yaml's order.
inline std::vector<RunField> make_run_fields() {
  using C = RunConfig;
  constexpr auto recipe = FieldRole::kRecipe;
  constexpr auto setting = FieldRole::kRunSetting;
  constexpr bool yaml = true, no_yaml = false;
  std::vector<RunField> f;
  const auto text = [&](std::string name, bool in_yaml, std::string flags, std::string C::*member,
                        FieldRole role, std::function<std::vector<std::string>()> choices,
                        std::string expected, std::string help) {
    RunField field{std::move(name), in_yaml, "", std::move(flags), member, role};
    field.choices = std::move(choices);
    field.expected = std::move(expected);
    field.help = std::move(help);
    f.push_back(std::move(field));
  };
  const auto number = [&](std::string name, bool in_yaml, std::string flags, auto member,
                          FieldRole role, double low, double high, std::string expected,
                          std::string help, bool low_excluded = false) {
    RunField field{std::move(name), in_yaml, "", std::move(flags), member, role, low, high,
                   low_excluded};
    field.expected = std::move(expected);
    field.help = std::move(help);
    f.push_back(std::move(field));
  };
  const auto toggle = [&](std::string name, bool in_yaml, std::string flags, bool C::*member,
                          FieldRole role, std::string help) {
    RunField field{std::move(name), in_yaml, "", std::move(flags), member, role};
    field.help = std::move(help);
    f.push_back(std::move(field));
  };
  std::string preset_help = "named recipe; the flags given override it:";
  for (const auto& preset : presets()) preset_help += "\n  " + preset.name + ": " + preset.summary;
  const auto known = preset_names();
  text("preset", yaml, "--preset", &C::preset, recipe, preset_names,
       fmt::format("one of {}", fmt::join(known, ", ")), preset_help);
  text("data_dir", yaml, "--data,--data_dir", &C::data, setting, nullptr, "",
       "data set root (Market-1501, DukeMTMC-reID, MSMT17 or the baseline's folder-per-id "
       "layout); with --resume, opts.yaml's by default");
  text("out", no_yaml, "--out", &C::out, recipe, nullptr, "",
       "output folder (net_last.pth, opts.yaml, train.log, train.jpg)");
  toggle("train_all", yaml, "--train-all,--train_all", &C::train_all, recipe,
         "train on every image (no val split)");
  toggle("color_jitter", yaml, "--color-jitter,--color_jitter", &C::color_jitter, recipe,
         "ColorJitter(0.1, 0.1, 0.1)");
  number("batchsize", yaml, "--batch-size,--batchsize", &C::batch_size, recipe, 1, kMaxBatchSize,
         "1 to 4096", "images per batch (per process)");
  text("model", yaml, "--model", &C::model, recipe, model_names,
       "a name reidnet-model-summary --list prints", "model family (reidnet-model-summary --list)");
  const auto heads_or_none = [] {
    auto names = head_names();
    names.insert(names.begin(), "");
    return names;
  };
  text("head", yaml, "--head", &C::head, recipe, heads_or_none,
       fmt::format("one of {}, or empty for the model's own", fmt::join(head_names(), ", ")),
       "the head on a backbone named by --model (e.g. --model densenet121 --head bnneck); the "
       "families have their own");
  // The switches the families and backbones registered.
  const auto model_switch = [&](const std::string& key, const std::string& flags, std::string help) {
    RunField field{key, yaml, "", flags, SwitchKey{key}, recipe};
    field.help = std::move(help);
    f.push_back(std::move(field));
  };
  for (const auto& [name, entry] : model_entries()) {
    if (!entry.switch_key.empty()) model_switch(entry.switch_key, entry.switch_flags, entry.description);
  }
  for (const auto& name : backbone_names()) {
    const auto entry = backbone_entry(name);
    if (entry.switch_key.empty()) continue;
    std::string families;
    for (const auto& [family, model] : model_entries()) {
      if (model.takes_backbone) families += (families.empty() ? "" : ", ") + family;
    }
    model_switch(entry.switch_key, entry.switch_flags,
                 fmt::format("the backbone {} (with {})", name, families));
  }
  text("pool", yaml, "--pool", &C::pool, recipe, pool_names, "avg, max, gem, gem_fixed or token",
       "global pooling: avg, max, gem (learnable p), gem_fixed, or token (a transformer's class token)");
  number("linear_num", yaml, "--linear-num,--linear_num", &C::linear_num, recipe, 0,
         kMaxLinearNum, "0 (none) to 65536", "bottleneck width (0 = none)");
  number("stride", yaml, "--stride", &C::last_stride, recipe, 1, 2, "1 or 2",
         "stride of the last stage (1 or 2)");
  number("patch_stride", yaml, "--patch-stride", &C::patch_stride, recipe, 0, 64, "0 (the patch size) to 64",
         "pixels between a vision transformer's patches (0 = its patch size; TransReID's overlapping 12)");
  number("droprate", yaml, "--droprate", &C::droprate, recipe, 0, 0.99, "0 to 0.99",
         "dropout before the classifier (0 to 0.99)");
  number("erasing_p", yaml, "--erasing-p,--erasing_p", &C::erasing_p, recipe, 0, 1, "0 to 1",
         "random erasing probability");
  text("optimizer", yaml, "--optimizer", &C::optimizer, recipe,
       [] { return std::vector<std::string>{"sgd", "adam", "adamw"}; }, "sgd, adam or adamw",
       "sgd (Nesterov momentum 0.9), adam or adamw");
  number("lr", yaml, "--lr", &C::lr, recipe, 0, HUGE_VAL, "a positive number",
         "learning rate of the head", /*low_excluded=*/true);
  number("weight_decay", yaml, "--weight-decay", &C::weight_decay, recipe, 0, 1, "0 to 1",
         "weight decay (adamw: decoupled)");
  number("total_epoch", yaml, "--total-epoch,--total_epoch", &C::total_epoch, recipe, 0, 100000,
         "0 to 100000", "epochs (0 writes the initial model)");
  number("warm_epoch", yaml, "--warm-epoch,--warm_epoch", &C::warm_epoch, recipe, 0, 100000,
         "0 to 100000", "loss warm-up epochs");
  toggle("cosine", yaml, "--cosine", &C::cosine, recipe, "cosine schedule instead of StepLR");
  number("milestones", yaml, "--milestones", &C::milestones, recipe, 1, 100000,
         "up to 100 ascending epochs, each 1 to 100000",
         "MultiStepLR: epochs at which the lr drops tenfold, e.g. 40,70 (default: StepLR at 2/3 "
         "of the epochs)");
  number("lr_warmup_epochs", yaml, "--lr-warmup-epochs", &C::lr_warmup_epochs, recipe, 0, 100000,
         "0 to 100000", "linear lr warm-up, per iteration, over this many epochs");
  number("lr_warmup_factor", yaml, "--lr-warmup-factor", &C::lr_warmup_factor, recipe, 0, 1,
         "above 0, up to 1", "the lr warm-up's first factor (0 to 1]", /*low_excluded=*/true);
  toggle("use_circle", yaml, "--circle", &C::circle, recipe, "add circle loss (m 0.25, gamma 32)");
  toggle("use_triplet", yaml, "--triplet", &C::triplet, recipe,
         "add batch-hard triplet loss (margin 0.3), P x K batches");
  number("label_smoothing", yaml, "--label-smoothing", &C::label_smoothing, recipe, 0, 0.99,
         "0 to 0.99", "cross-entropy label smoothing");
  toggle("fp16", yaml, "--fp16", &C::fp16, recipe, "float16 autocast");
  toggle("bf16", yaml, "--bf16", &C::bf16, recipe, "bfloat16 autocast");
  number("height", yaml, "--height", &C::height, recipe, 1, kMaxImageSide, "1 to 4096",
         "input height (up to 4096)");
  f.back().yaml_alias = "h";  // the baseline's spelling; reidnet's own wins on reading
  number("width", yaml, "--width", &C::width, recipe, 1, kMaxImageSide, "1 to 4096",
         "input width (up to 4096)");
  f.back().yaml_alias = "w";
  number("nclasses", yaml, "", &C::class_num, recipe, 0, kMaxClasses, "1 to 1000000", "");
  number("backbone_lr_ratio", yaml, "--backbone-lr-ratio", &C::backbone_lr_ratio, recipe, 0, 10,
         "0 to 10", "backbone lr = ratio x lr (0 to 10)");
  number("seed", yaml, "--seed", &C::seed, recipe, 0, HUGE_VAL, "a count", "random seed");
  text("weights", yaml, "--weights", &C::weights, recipe, nullptr, "",
       "ImageNet weights of the backbone (torchvision's resnet50/densenet121, IBN-Net's "
       "resnet50_ibn_a, torchreid's osnet_*_imagenet.pth)");
  number("instances_per_id", yaml, "--instances-per-id", &C::instances_per_id, recipe, 1, 1024,
         "1 to 1024", "K of the P x K sampler (with --triplet)");
  toggle("channels_last", yaml, "--channels-last,!--no-channels-last", &C::channels_last, setting,
         "channels_last memory format (default: on, faster on CPU and GPU)");
  toggle("sync_bn", yaml, "--sync-bn,!--no-sync-bn", &C::sync_bn, setting,
         "with several processes, BatchNorm statistics over all their batches (SyncBatchNorm)");
  number("workers", no_yaml, "--workers", &C::workers, setting, 0, kMaxWorkers, "0 to 256",
         "decoding threads");
  text("device", no_yaml, "--device", &C::device, setting,
       [] { return std::vector<std::string>{"cpu", "cuda"}; }, "cpu or cuda", "cpu or cuda");
  number("threads", no_yaml, "--threads", &C::threads, setting, 1, kMaxThreads, "1 to 1024",
         "CPU threads (per process)");
  number("epochs_this_run", no_yaml, "--epochs-this-run", &C::epochs_this_run, setting, 0, 100000,
         "0 (all) to 100000",
         "stop after this many epochs (continue later with --resume), e.g. for time-limited jobs");
  text("dist_backend", no_yaml, "--dist-backend", &C::dist_backend, setting,
       [] { return std::vector<std::string>{"", "gloo", "nccl"}; }, "gloo or nccl",
       "multi-process communication: gloo or nccl (default: nccl with --device cuda, else gloo)");
  number("dist_timeout", no_yaml, "--dist-timeout", &C::dist_timeout, setting, 1, 86400,
         "1 to 86400", "seconds a process waits for the others (joining, and every collective)");
  return f;
}

}  // namespace detail

/// Every setting of a run, in opts.yaml's order. Built on first use, after the presets and
/// model families registered until then (their names are the bounds of --preset and --model).
inline const std::vector<RunField>& run_fields() {
  static const std::vector<RunField> fields = detail::make_run_fields();
  return fields;
}

/// The field called `name`; throws std::out_of_range for an unknown name.
inline const RunField& run_field(const std::string& name) {
  for (const auto& field : run_fields()) {
    if (field.name == name) return field;
  }
  throw std::out_of_range("no run field named " + name);
}

/// Calls `visit(value)` with the field's value in `c`: a reference into it, or for a switch of a
/// const config, whether it is on.
template <class Config, class Visit>
auto visit_field_value(Config& c, const RunField& field, Visit&& visit) {
  return std::visit(
      [&](const auto& member) {
        if constexpr (std::is_same_v<std::decay_t<decltype(member)>, SwitchKey>) {
          if constexpr (std::is_const_v<Config>) {
            const auto found = c.switches.find(member.key);
            const bool on = found != c.switches.end() && found->second;
            return visit(on);
          } else {
            return visit(c.switches[member.key]);
          }
        } else {
          return visit(c.*member);
        }
      },
      field.member);
}

/// How an error names a field: (opts.yaml key, flag) -> text.
using FieldNamer = std::function<std::string(const std::string& key, const std::string& flag)>;

/// Names fields by their flags (the key where a field has no flag).
inline std::string name_by_flag(const std::string& key, const std::string& flag) {
  return flag.empty() ? key : flag;
}

namespace detail {

/// A field's value as messages print it.
inline std::string field_text(const RunConfig& c, const RunField& field) {
  return visit_field_value(c, field, [](const auto& value) -> std::string {
    using T = std::decay_t<decltype(value)>;
    if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      return fmt::format("{}", fmt::join(value, ","));
    } else {
      return fmt::format("{}", value);
    }
  });
}

/// Whether a field's value lies within its bounds.
inline bool field_within_bounds(const RunConfig& c, const RunField& field) {
  const auto within = [&](double value) {
    return std::isfinite(value) && (field.low_excluded ? value > field.low : value >= field.low) &&
           value <= field.high;
  };
  return visit_field_value(c, field, [&](const auto& value) {
        using T = std::decay_t<decltype(value)>;
        if constexpr (std::is_same_v<T, bool>) {
          return true;
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (!field.choices) return true;
          const auto choices = field.choices();
          return std::find(choices.begin(), choices.end(), value) != choices.end();
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          return value.size() <= 100 &&
                 std::all_of(value.begin(), value.end(),
                             [&](int64_t entry) { return within(static_cast<double>(entry)); }) &&
                 std::adjacent_find(value.begin(), value.end(), std::greater_equal<int64_t>()) ==
                     value.end();
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          return true;  // every seed is one
        } else {
          return within(static_cast<double>(value));
        }
      });
}

}  // namespace detail

/// Checks every field of a run, whether it came from flags or from an opts.yaml, and the
/// combinations no recipe may hold. Throws ConfigError for the first field out of its bounds:
/// "<name> is <value>; expected <bounds>", with `name` from `namer`. NaN and infinities fail.
inline void check_run_config(const RunConfig& c, const FieldNamer& namer = name_by_flag) {
  for (const auto& field : run_fields()) {
    if (!detail::field_within_bounds(c, field)) {
      throw ConfigError(fmt::format("{} is {}; expected {}", namer(field.name, field.flag()),
                                    detail::field_text(c, field), field.expected));
    }
  }
  // RunConfig::switches is keyed by text: a key no family or backbone registered (a typo in
  // a program's own code) would otherwise be ignored.
  const auto unbuilt = unbuilt_model_switches();
  for (const auto& item : c.switches) {
    const auto& key = item.first;  // (a lambda below captures it: no structured binding)
    const bool on = item.second;
    const auto& fields = run_fields();
    const bool registered = std::any_of(fields.begin(), fields.end(), [&](const RunField& field) {
      const auto* switch_key = std::get_if<SwitchKey>(&field.member);
      return switch_key != nullptr && switch_key->key == key;
    });
    if (!registered && (on || std::find(unbuilt.begin(), unbuilt.end(), key) == unbuilt.end())) {
      std::vector<std::string> known;
      for (const auto& field : fields) {
        if (std::holds_alternative<SwitchKey>(field.member)) known.push_back(field.name);
      }
      throw ConfigError(fmt::format("the model switch '{}' is not one that a family or backbone "
                                    "registered (known: {})", key, fmt::join(known, ", ")));
    }
  }
  const auto& cosine = run_field("cosine");
  if (c.cosine && !c.milestones.empty()) {
    throw ConfigError(fmt::format("{} is true together with milestones; expected one schedule",
                                  namer(cosine.name, cosine.flag())));
  }
  const auto& fp16 = run_field("fp16");
  if (c.fp16 && c.bf16) {
    throw ConfigError(fmt::format("{} is true together with bf16; expected one of the two",
                                  namer(fp16.name, fp16.flag())));
  }
}

/// Whether the switch with opts.yaml key `key` is on.
inline bool switch_on(const RunConfig& c, const std::string& key) {
  const auto found = c.switches.find(key);
  return found != c.switches.end() && found->second;
}

/// The model family and arguments a run describes. A family's switch (the baseline's
/// use_dense, PCB, usam; bnneck) picks it instead of `model` (at most one, and `model` must be
/// the default or that family); a backbone's switch (ibn) puts a family that takes a backbone
/// on it, as the baseline's ft_net(ibn=True, usam=True) does. Throws ConfigError naming the
/// fields through `namer`.
inline std::pair<std::string, ModelArgs> resolve_model(const RunConfig& c,
                                                       const FieldNamer& namer = name_by_flag) {
  const auto name = [&](const std::string& field) {
    const auto& found = run_field(field);
    return namer(found.name, found.flag());
  };
  std::string model = c.model;
  std::string family_switch, all_switches;
  for (const auto& [family, entry] : model_entries()) {
    if (entry.switch_key.empty()) continue;
    all_switches += (all_switches.empty() ? "" : ", ") + name(entry.switch_key);
    if (!switch_on(c, entry.switch_key)) continue;
    if (!family_switch.empty()) {
      throw ConfigError(fmt::format("{} and {} each pick a model family; give at most one",
                                    name(family_switch), name(entry.switch_key)));
    }
    if (model != RunConfig{}.model && model != family) {
      throw ConfigError(fmt::format("{} is {}, but {} asks for {}", name("model"), c.model,
                                    name(entry.switch_key), family));
    }
    family_switch = entry.switch_key;
    model = family;
  }
  if (!c.head.empty() && find_model_entry(model) != nullptr && !is_backbone_name(model)) {
    throw ConfigError(fmt::format("{} puts a head on a backbone named by {}; {} has its own",
                                  name("head"), name("model"), model));
  }
  auto args = ModelArgs()
                  .head(c.head)
                  .class_num(std::max<int64_t>(c.class_num, 1))
                  .droprate(c.droprate)
                  .last_stride(c.last_stride)
                  .linear_num(c.linear_num)
                  .input_size(ImageSize{c.height, c.width})
                  .patch_stride(c.patch_stride > 0 ? std::optional<int64_t>(c.patch_stride) : std::nullopt)
                  .pool(pool_type_from_name(c.pool));
  for (const auto& backbone : backbone_names()) {
    const auto backbone_switch = backbone_entry(backbone).switch_key;
    if (backbone_switch.empty() || !switch_on(c, backbone_switch)) continue;
    if (!args.backbone().empty()) {
      throw ConfigError(fmt::format("{} and {} each pick a backbone; give at most one",
                                    name(backbone_switch), args.backbone()));
    }
    const auto* entry = find_model_entry(model);
    if (entry != nullptr && entry->fixed_backbone == backbone) continue;
    if (entry == nullptr || !entry->takes_backbone) {
      std::string families;
      for (const auto& [family, known] : model_entries()) {
        if (known.takes_backbone) families += (families.empty() ? "" : ", ") + family;
      }
      throw ConfigError(fmt::format("{} has no variant for {} (it works with {})",
                                    name(backbone_switch), model, families));
    }
    args.backbone(backbone);
  }
  return {model, args};
}

/// Records in `c` the family and backbone resolve_model picked, with the baseline's switches to
/// match, so that opts.yaml reads the same in Python.
inline void record_resolved_model(RunConfig& c, const std::string& family, const ModelArgs& args) {
  c.model = family;
  const auto* picked = find_model_entry(family);
  for (const auto& [name, entry] : model_entries()) {
    if (!entry.switch_key.empty()) c.switches[entry.switch_key] = name == family;
  }
  for (const auto& backbone : backbone_names()) {
    const auto key = backbone_entry(backbone).switch_key;
    if (key.empty()) continue;
    c.switches[key] = args.backbone() == backbone ||
                      (picked != nullptr && picked->fixed_backbone == backbone);
  }
}

/// Writes opts.yaml atomically: every field with an opts.yaml key (the baseline's nclasses,
/// stride, linear_num, droprate, batchsize, lr, total_epoch, h/w, PCB, use_dense, ...; a switch
/// absent from `c.switches` as false), the run's name and the baseline's unbuilt families as
/// false. Call record_resolved_model first.
inline void write_opts_yaml(const RunConfig& c, const std::string& path) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << std::filesystem::path(c.out).filename().string();
  for (const auto& field : run_fields()) {
    if (!field.in_opts_yaml) continue;
    visit_field_value(c, field, [&](const auto& value) {
      const auto put = [&](const std::string& key) {
        out << YAML::Key << key << YAML::Value;
        if constexpr (std::is_same_v<std::decay_t<decltype(value)>, std::vector<int64_t>>) {
          out << YAML::Flow;  // milestones: [40, 70]
        }
        out << value;
      };
      if (!field.yaml_alias.empty()) put(field.yaml_alias);
      put(field.name);
    });
  }
  for (const auto& key : unbuilt_model_switches()) out << YAML::Key << key << YAML::Value << false;
  out << YAML::EndMap;
  write_text_file(path, std::string(out.c_str()) + "\n");
}

/// Reads a small YAML file (opts.yaml, trainer_state.yaml): a regular file of at most 1 MiB,
/// parsed into a map in which no key appears twice (yaml-cpp would read the first value and
/// PyYAML the last: reidnet and the Python baseline would read different recipes). Throws
/// ConfigError naming the file (and the repeated key).
inline YAML::Node read_yaml_map(const std::filesystem::path& path) {
  YAML::Node node;
  try {
    const auto bytes = detail::read_file_bytes(path.string(), detail::kMaxSettingsFileBytes);
    node = YAML::Load(std::string(bytes.begin(), bytes.end()));
  } catch (const std::exception& error) {
    throw ConfigError(path.string() + ": cannot read it (" + error.what() + ")");
  }
  if (!node.IsMap()) throw ConfigError(path.string() + ": not a map of keys to values");
  std::set<std::string> keys;
  for (const auto& entry : node) {  // yaml-cpp keeps every pair a map lists, repeats included
    const auto key = entry.first.IsScalar() ? entry.first.Scalar() : YAML::Dump(entry.first);
    if (!keys.insert(key).second) {
      throw ConfigError(fmt::format("{}: the key '{}' appears twice", path.string(), key));
    }
  }
  return node;
}

/// Reads `key` of a YAML map into `value` (left as it is when the key is absent); ConfigError
/// naming the file, key and text when the value has the wrong type.
template <class T>
void read_yaml_field(const YAML::Node& node, const std::filesystem::path& path,
                     const std::string& key, T& value) {
  const auto field = node[key];
  if (!field) return;
  try {
    value = field.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(fmt::format("{}: key '{}' has the value '{}', which is not {}",
                                  path.string(), key,
                                  field.IsScalar() ? field.Scalar() : std::string("(not a scalar)"),
                                  std::is_same_v<T, bool> ? "true or false"
                                  : std::is_floating_point_v<T> ? "a number"
                                  : std::is_integral_v<T> ? "an integer"
                                                          : "of the right type"));
  }
}

/// Reads an opts.yaml (reidnet's or the Python baseline's): keys it lacks keep their defaults
/// (nclasses: the baseline's 751). Every value is checked; a ConfigError names the file, the
/// key and the value.
inline RunConfig read_opts_yaml(const std::filesystem::path& path) {
  const auto node = read_yaml_map(path);
  RunConfig c;
  c.class_num = 751;  // the baseline's default where opts.yaml predates the key
  for (const auto& key : unbuilt_model_switches()) {
    bool on = false;
    read_yaml_field(node, path, key, on);
    if (on) {
      throw ConfigError(path.string() + ": '" + key +
                        ": true' is a model reidnet does not build yet; reidnet-model-summary "
                        "--list prints those it builds");
    }
  }
  for (const auto& field : run_fields()) {
    if (!field.in_opts_yaml) continue;
    visit_field_value(c, field, [&](auto& value) {
      if (!field.yaml_alias.empty()) read_yaml_field(node, path, field.yaml_alias, value);
      read_yaml_field(node, path, field.name, value);
    });
  }
  check_run_config(c, [&](const std::string& key, const std::string&) {
    return fmt::format("{}: key '{}'", path.string(), key);
  });
  if (c.class_num < 1) {
    throw ConfigError(path.string() + ": key 'nclasses' is 0; expected 1 to 1000000");
  }
  // The baseline records no input size: its test.py picks the family's (Swin 224x224, PCB
  // 384x192), and so does this.
  const bool size_recorded = node["height"] || node["h"] || node["width"] || node["w"];
  if (!size_recorded) {
    auto [family, args] = resolve_model(c);
    const auto own = model_config(family, args.input_size(std::nullopt));
    c.height = own.height();
    c.width = own.width();
  }
  return c;
}

/// The run that `folder/opts.yaml` records, continued with this command line's run settings:
/// `given` names the fields the command line set. A recipe field may not be given again, since
/// the resumed run would silently differ from the one that was started.
inline RunConfig resumed_run_config(const std::filesystem::path& folder,
                                    const RunConfig& command_line,
                                    const std::set<std::string>& given) {
  for (const auto& name : given) {
    const auto& field = run_field(name);
    if (field.role == FieldRole::kRecipe) {
      throw ConfigError(fmt::format("{} cannot be combined with --resume: the run continues with "
                                    "the options in {}",
                                    name_by_flag(field.name, field.flag()),
                                    (folder / "opts.yaml").string()));
    }
  }
  auto c = read_opts_yaml(folder / "opts.yaml");
  c.out = folder.string();
  for (const auto& field : run_fields()) {
    if (field.role != FieldRole::kRunSetting) continue;
    // Settings opts.yaml does not hold are this process's own; those it holds change only
    // when given.
    if (!field.in_opts_yaml || given.count(field.name) > 0) {
      visit_field_value(c, field, [&](auto& to) {
        visit_field_value(command_line, field, [&](const auto& from) {
          if constexpr (std::is_same_v<std::decay_t<decltype(to)>, std::decay_t<decltype(from)>>) {
            to = from;
          }
        });
      });
    }
  }
  return c;
}

}  // namespace reidnet
