#pragma once
// opts.yaml: the options a training run was made with, in the Python baseline's keys, so that
// both the baseline's test script and reidnet-test can rebuild the model from it.
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace reidnet::examples {

/// Everything reidnet-train is run with (flag defaults = the baseline's recipe).
struct TrainConfig {
  // Data and output.
  std::string data;
  std::string out = "model/ft_ResNet50";
  bool train_all = false;
  int64_t height = 256;
  int64_t width = 128;
  int64_t workers = 2;
  // Model.
  int64_t stride = 2;
  double droprate = 0.5;
  int64_t linear_num = 512;
  std::string weights;
  int64_t nclasses = 0;  // filled from the data set
  // Optimiser and schedule.
  int64_t batch_size = 32;
  double lr = 0.05;
  double weight_decay = 5e-4;
  int64_t total_epoch = 60;
  int64_t warm_epoch = 0;
  bool cosine = false;
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
};

/// The baseline's model families that reidnet does not build (yet): written as false, and
/// refused when an opts.yaml turns one on.
inline constexpr const char* kUnbuiltModelFamilies[] = {"PCB", "use_dense", "use_NAS", "use_swin",
                                                        "use_efficient", "use_hr", "ibn"};

/// Calls `field(key, member)` for every opts.yaml key that maps to a TrainConfig member: the
/// one list that writing and reading share. `Config` is TrainConfig or const TrainConfig.
template <class Config, class Field>
void for_each_opts_field(Config& c, Field&& field) {
  field("data_dir", c.data);
  field("train_all", c.train_all);
  field("color_jitter", c.color_jitter);
  field("batchsize", c.batch_size);
  field("linear_num", c.linear_num);
  field("stride", c.stride);
  field("droprate", c.droprate);
  field("erasing_p", c.erasing_p);
  field("lr", c.lr);
  field("weight_decay", c.weight_decay);
  field("total_epoch", c.total_epoch);
  field("warm_epoch", c.warm_epoch);
  field("cosine", c.cosine);
  field("use_circle", c.circle);
  field("use_triplet", c.triplet);
  field("label_smoothing", c.label_smoothing);
  field("fp16", c.fp16);
  field("bf16", c.bf16);
  field("h", c.height);  // the baseline's spelling; reidnet's own follows and wins on reading
  field("w", c.width);
  field("height", c.height);
  field("width", c.width);
  field("nclasses", c.nclasses);
  field("backbone_lr_ratio", c.backbone_lr_ratio);
  field("seed", c.seed);
  field("weights", c.weights);
  field("instances_per_id", c.instances_per_id);
  field("channels_last", c.channels_last);
}

/// Writes opts.yaml atomically: the baseline's keys (nclasses, stride, linear_num, droprate,
/// batchsize, lr, total_epoch, h/w, PCB, use_dense, fp16, ...) and reidnet's own.
inline void write_opts_yaml(const TrainConfig& c, const std::filesystem::path& path) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  auto put = [&out](const char* key, const auto& value) { out << YAML::Key << key << YAML::Value << value; };
  put("name", std::filesystem::path(c.out).filename().string());
  for_each_opts_field(c, put);
  for (const char* family : kUnbuiltModelFamilies) put(family, false);
  out << YAML::EndMap;
  const auto temporary = path.string() + ".tmp";
  {
    std::ofstream file(temporary);
    file << out.c_str() << "\n";
    if (!file) throw std::runtime_error("cannot write " + temporary);
  }
  std::filesystem::rename(temporary, path);
}

/// Reads an opts.yaml (ours or the Python baseline's): the model (nclasses, stride,
/// linear_num, droprate, input size) for reidnet-test, and the whole recipe for
/// `reidnet-train --resume`; keys it lacks keep their defaults.
inline TrainConfig read_opts_yaml(const std::filesystem::path& path) {
  YAML::Node node;
  try {
    node = YAML::LoadFile(path.string());
  } catch (const YAML::Exception& error) {
    throw std::runtime_error(path.string() + ": cannot read opts.yaml (" + error.what() + ")");
  }
  TrainConfig opts;
  opts.nclasses = 751;  // the baseline's default when opts.yaml predates the key
  auto get = [&](const char* key, auto& value) {
    if (!node[key]) return;
    try {
      value = node[key].as<std::decay_t<decltype(value)>>();
    } catch (const YAML::Exception&) {
      throw std::runtime_error(path.string() + ": key '" + key + "' has an invalid value");
    }
  };
  for (const char* unsupported : kUnbuiltModelFamilies) {
    bool on = false;
    get(unsupported, on);
    if (on) {
      throw std::runtime_error(path.string() + ": '" + unsupported +
                               ": true' is a model reidnet does not build yet; only ft_net "
                               "(ResNet-50) checkpoints are supported");
    }
  }
  for_each_opts_field(opts, get);
  return opts;
}

}  // namespace reidnet::examples
