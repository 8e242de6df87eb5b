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

/// Writes opts.yaml atomically: the baseline's keys (nclasses, stride, linear_num, droprate,
/// batchsize, lr, total_epoch, h/w, PCB, use_dense, fp16, ...) and reidnet's own.
inline void write_opts_yaml(const TrainConfig& c, const std::filesystem::path& path) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  auto put = [&out](const char* key, const auto& value) { out << YAML::Key << key << YAML::Value << value; };
  put("name", std::filesystem::path(c.out).filename().string());
  put("data_dir", c.data);
  put("train_all", c.train_all);
  put("color_jitter", c.color_jitter);
  put("batchsize", c.batch_size);
  put("linear_num", c.linear_num);
  put("stride", c.stride);
  put("droprate", c.droprate);
  put("erasing_p", c.erasing_p);
  put("lr", c.lr);
  put("weight_decay", c.weight_decay);
  put("total_epoch", c.total_epoch);
  put("warm_epoch", c.warm_epoch);
  put("cosine", c.cosine);
  put("use_circle", c.circle);
  put("use_triplet", c.triplet);
  put("label_smoothing", c.label_smoothing);
  put("fp16", c.fp16);
  put("bf16", c.bf16);
  put("h", c.height);
  put("w", c.width);
  put("height", c.height);
  put("width", c.width);
  put("nclasses", c.nclasses);
  // Model families of the baseline that reidnet does not build (yet): always false here.
  put("PCB", false);
  put("use_dense", false);
  put("use_NAS", false);
  put("use_swin", false);
  put("use_efficient", false);
  put("use_hr", false);
  put("ibn", false);
  put("backbone_lr_ratio", c.backbone_lr_ratio);
  put("seed", c.seed);
  put("weights", c.weights);
  put("instances_per_id", c.instances_per_id);
  put("channels_last", c.channels_last);
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
  for (const char* unsupported : {"PCB", "use_dense", "use_NAS", "use_swin", "use_efficient",
                                  "use_hr", "ibn"}) {
    bool on = false;
    get(unsupported, on);
    if (on) {
      throw std::runtime_error(path.string() + ": '" + unsupported +
                               ": true' is a model reidnet does not build yet; only ft_net "
                               "(ResNet-50) checkpoints are supported");
    }
  }
  get("nclasses", opts.nclasses);
  get("stride", opts.stride);
  get("linear_num", opts.linear_num);
  get("droprate", opts.droprate);
  get("h", opts.height);
  get("w", opts.width);
  get("height", opts.height);
  get("width", opts.width);
  get("data_dir", opts.data);
  get("train_all", opts.train_all);
  get("color_jitter", opts.color_jitter);
  get("batchsize", opts.batch_size);
  get("erasing_p", opts.erasing_p);
  get("lr", opts.lr);
  get("weight_decay", opts.weight_decay);
  get("total_epoch", opts.total_epoch);
  get("warm_epoch", opts.warm_epoch);
  get("cosine", opts.cosine);
  get("use_circle", opts.circle);
  get("use_triplet", opts.triplet);
  get("label_smoothing", opts.label_smoothing);
  get("fp16", opts.fp16);
  get("bf16", opts.bf16);
  get("backbone_lr_ratio", opts.backbone_lr_ratio);
  get("seed", opts.seed);
  get("weights", opts.weights);
  get("instances_per_id", opts.instances_per_id);
  get("channels_last", opts.channels_last);
  return opts;
}

}  // namespace reidnet::examples
