#pragma once
/// Evaluating a trained model: build the model a run folder describes and load its weights in
/// one call, extract the features of a data set's query and gallery with the family's test-time
/// rule (flip, scales, the config's normalisation), and apply the Market-1501 protocol.
///
///     auto run = reidnet::load_trained_run("runs/bot");     // opts.yaml + net_last.pth
///     const auto dataset = reidnet::read_dataset("Market-1501");
///     const auto features = reidnet::extract_retrieval_features(run, dataset);
///     const auto result = reidnet::evaluate_retrieval(features);
///     std::cout << reidnet::format_baseline_line(result.result) << '\n';
///
/// Needs the reidnet::engine target.
#include <reidnet/core/errors.hpp>
#include <reidnet/core/files.hpp>
#include <reidnet/data/data_loader.hpp>
#include <reidnet/data/datasets.hpp>
#include <reidnet/data/model_input.hpp>
#include <reidnet/data/transforms.hpp>
#include <reidnet/engine/run_config.hpp>
#include <reidnet/evaluation/evaluate.hpp>
#include <reidnet/evaluation/features.hpp>
#include <reidnet/evaluation/re_ranking.hpp>
#include <reidnet/io/checkpoint.hpp>
#include <reidnet/io/csv.hpp>
#include <reidnet/io/retrieval_features.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/model_zoo.hpp>

#include <fmt/core.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace reidnet {

/// What to change of a run folder's description when loading it (a program's flags).
struct TrainedRunOptions {
  /// The weights file; empty = <folder>/net_last.pth.
  TORCH_ARG(std::string, weights) = "";
  /// For weights without a run folder (torchreid's, fast-reid's, a bare state_dict): the model
  /// they are for (model_names()); class_num, unless given, is read from the file.
  TORCH_ARG(std::string, model) = "";
  /// Overrides of opts.yaml's values; 0 (linear_num: -1) keeps opts.yaml's.
  TORCH_ARG(int64_t, class_num) = 0;
  TORCH_ARG(int64_t, last_stride) = 0;
  TORCH_ARG(int64_t, linear_num) = -1;
  TORCH_ARG(int64_t, height) = 0;
  TORCH_ARG(int64_t, width) = 0;
};

/// A trained model with the run description it was built from.
struct TrainedRun {
  RunConfig config;  // height and width: the input size to evaluate at
  ReidModel model;   // in eval mode, on the CPU
  std::string weights;
  std::string family;  // what config describes (resolve_model's answer)
  ModelArgs args;
};

/// What `folder/opts.yaml` (reidnet's or the Python baseline's) describes, with `options`'
/// overrides, checked, and where the weights are; the model is not built yet (see
/// load_trained_model). An empty `folder` takes RunConfig's defaults (751 ids), or the model
/// options.model names with the class count of its file, and then needs options.weights.
/// ConfigError names the flag, or the file and key, at fault.
inline TrainedRun describe_trained_run(const std::string& folder,
                                       const TrainedRunOptions& options = {}) {
  namespace fs = std::filesystem;
  TrainedRun run{RunConfig{}, nullptr, options.weights(), "", ModelArgs()};
  std::string source = "the built-in defaults";
  if (!options.model().empty()) {
    if (!folder.empty()) {
      throw ConfigError("--model names the model of --weights given without a run folder; --model-dir " +
                        folder + " has its opts.yaml");
    }
    if (!is_model_name(options.model())) {
      throw ConfigError(fmt::format("--model {}: no such model; known: {}", options.model(),
                                    fmt::join(model_names(), ", ")));
    }
    run.config.model = options.model();
  }
  if (!folder.empty()) {
    const auto yaml = fs::path(folder) / "opts.yaml";
    if (!fs::exists(yaml)) throw ConfigError("--model-dir " + folder + ": no opts.yaml there");
    run.config = read_opts_yaml(yaml);
    source = yaml.string();
    if (run.weights.empty()) run.weights = (fs::path(folder) / "net_last.pth").string();
  } else {
    run.config.class_num = 751;  // the baseline's, as opts.yaml without nclasses reads
  }
  if (run.weights.empty()) throw ConfigError("give --model-dir (with opts.yaml) or --weights");
  auto& c = run.config;
  std::set<std::string> overridden;
  const auto override_with = [&](int64_t value, bool given, int64_t& field, const char* name) {
    if (!given) return;
    field = value;
    overridden.insert(name);
  };
  override_with(options.class_num(), options.class_num() > 0, c.class_num, "nclasses");
  override_with(options.last_stride(), options.last_stride() > 0, c.last_stride, "stride");
  override_with(options.linear_num(), options.linear_num() >= 0, c.linear_num, "linear_num");
  override_with(options.height(), options.height() > 0, c.height, "height");
  override_with(options.width(), options.width() > 0, c.width, "width");
  const auto namer = [&](const std::string& key, const std::string& flag) {
    if (overridden.count(key) == 0) return fmt::format("{} of {}", key, source);
    return key == "nclasses" ? std::string("--class-num") : flag;
  };
  check_run_config(c, namer);
  if (c.class_num < 1) throw ConfigError(namer("nclasses", "") + " is 0; expected 1 to 1000000");
  std::tie(run.family, run.args) = resolve_model(c, namer);
  if (folder.empty() && overridden.count("height") == 0 && overridden.count("width") == 0) {
    // A file without a run folder: the model's own input size (Swin's 224x224, PCB's 384x192).
    auto own_size = run.args;
    const auto own = model_config(run.family, own_size.input_size(std::nullopt));
    c.height = own.height();
    c.width = own.width();
    run.args.input_size(ImageSize{c.height, c.width});
  }
  if (!options.model().empty() && overridden.count("nclasses") == 0) {
    c.class_num = class_num_of_weights(run.family, run.args, run.weights);
    run.args.class_num(c.class_num);
  }
  record_resolved_model(c, run.family, run.args);
  return run;
}

/// Builds the model `run.config` describes and loads `run.weights` into it, strictly, in its
/// family's checkpoint layout; leaves it in eval mode. A file that does not fit throws, naming
/// the file and the keys.
inline void load_trained_model(TrainedRun& run) {
  {
    NoInitGuard no_init;  // the strict load replaces every weight
    run.model = create_model(run.family, run.args);
  }
  load_trained_weights(*run.model, run.weights);
  run.model->eval();
}

/// describe_trained_run and load_trained_model in one call: the model a run folder describes,
/// with its weights.
inline TrainedRun load_trained_run(const std::string& folder, const TrainedRunOptions& options = {}) {
  auto run = describe_trained_run(folder, options);
  load_trained_model(run);
  return run;
}

/// How extract_retrieval_features reads pictures and runs the model.
struct RetrievalExtractionOptions {
  TORCH_ARG(int64_t, batch_size) = 256;
  TORCH_ARG(int64_t, workers) = 2;
  /// Everything else: device, scales, dtype, the fast path (flip and L2 normalisation stay on,
  /// as the protocol expects).
  TORCH_ARG(FeatureOptions, features) = {};
  /// Told the split's name and size before each split is extracted.
  TORCH_ARG(std::function<void(const std::string& split, size_t images)>, on_split) = nullptr;
};

/// The labels or cameras of `samples`, as an int64 tensor.
inline torch::Tensor sample_column(const std::vector<Sample>& samples, int64_t Sample::*field) {
  std::vector<int64_t> values;
  values.reserve(samples.size());
  for (const auto& sample : samples) values.push_back(sample.*field);
  return torch::tensor(values, torch::kLong);
}

/// Checks that `dataset` has query and gallery pictures; ConfigError "<source>: the query
/// split has no images" otherwise.
inline void check_retrieval_splits(const Dataset& dataset, const std::string& source) {
  for (const auto& [split, samples] :
       {std::pair{"query", &dataset.query}, {"gallery", &dataset.gallery}}) {
    if (samples->empty()) {
      throw ConfigError(fmt::format("{}: the {} split has no images", source, split));
    }
  }
}

/// The query and gallery features of `dataset` with the run's input size and its family's
/// normalisation, resize filter and test-time rule, with their identities and cameras.
inline RetrievalFeatures extract_retrieval_features(TrainedRun& run, const Dataset& dataset,
                                                    const RetrievalExtractionOptions& options = {}) {
  const auto normalization = normalization_of(run.model->config());
  const auto interpolation = interpolation_of(run.model->config());
  check_retrieval_splits(dataset, "the data set");
  const auto features_of = [&](const std::vector<Sample>& samples, const char* split) {
    DataLoader loader(samples, make_eval_transform(run.config.height, run.config.width, normalization, interpolation),
                      LoaderOptions().batch_size(options.batch_size()).workers(options.workers()));
    if (options.on_split()) options.on_split()(split, samples.size());
    return extract_features(run.model, loader.epoch(0), options.features());
  };
  RetrievalFeatures features;
  features.query_f = features_of(dataset.query, "query");
  features.gallery_f = features_of(dataset.gallery, "gallery");
  features.query_label = sample_column(dataset.query, &Sample::person_id);
  features.query_cam = sample_column(dataset.query, &Sample::camera);
  features.gallery_label = sample_column(dataset.gallery, &Sample::person_id);
  features.gallery_cam = sample_column(dataset.gallery, &Sample::camera);
  return features;
}

/// How calibrate_int8 reads its pictures.
struct Int8CalibrationOptions {
  /// Pictures measured, evenly spaced over the list given (all of them, where there are fewer).
  TORCH_ARG(int64_t, images) = 256;
  TORCH_ARG(int64_t, batch_size) = 64;
  TORCH_ARG(int64_t, workers) = 2;
  /// Told how many pictures are measured, before the first.
  TORCH_ARG(std::function<void(int64_t images)>, on_start) = nullptr;
};

/// The int8 activation ranges of `model` measured on its training pictures, read as the
/// model reads test pictures (its normalisation and resize filter, at `size`: height, width).
/// ConfigError where `pictures` has fewer than kMinCalibrationImages (naming `source`).
inline Int8Calibration calibrate_int8(const ReidModelImpl& model, const std::vector<Sample>& pictures,
                                      const ImageSize& size, const std::string& source,
                                      const Int8CalibrationOptions& options = {}) {
  const auto count = std::min<int64_t>(options.images(), static_cast<int64_t>(pictures.size()));
  if (count < kMinCalibrationImages) {
    throw ConfigError(fmt::format("{}: int8 calibration needs at least {} training pictures, {}",
                                  source, kMinCalibrationImages,
                                  pictures.size() < static_cast<size_t>(kMinCalibrationImages)
                                      ? fmt::format("the data set has {}", pictures.size())
                                      : fmt::format("{} were asked for", options.images())));
  }
  std::vector<Sample> chosen;
  for (int64_t k = 0; k < count; ++k) {
    chosen.push_back(pictures[static_cast<size_t>(k * static_cast<int64_t>(pictures.size()) / count)]);
  }
  if (options.on_start()) options.on_start()(count);
  Int8Calibrator calibrator(model);
  DataLoader loader(chosen,
                    make_eval_transform(size[0], size[1], normalization_of(model.config()),
                                        interpolation_of(model.config())),
                    LoaderOptions().batch_size(options.batch_size()).workers(options.workers()));
  for (auto& batch : loader.epoch(0)) calibrator.observe(batch.images);
  return calibrator.finish();
}

/// The pictures int8 calibration measures: train_all, else train; ConfigError naming
/// `source` where the data set has neither.
inline const std::vector<Sample>& calibration_pictures(const Dataset& dataset, const std::string& source) {
  if (!dataset.train_all.empty()) return dataset.train_all;
  if (!dataset.train.empty()) return dataset.train;
  throw ConfigError(source + ": no training pictures (train_all or train) to calibrate int8 on");
}

/// A trained run's int8 ranges and where they came from.
struct Int8RangesOfRun {
  std::shared_ptr<const Int8Calibration> ranges;
  bool measured = false;  // calibrated now (and written), rather than read
};

/// The int8 ranges of a trained run, kept in `path` so that calibration runs once: read from
/// there where the file exists (InputError if it holds ranges of other weights), else measured
/// on `dataset`'s training pictures at the run's input size and written there atomically.
inline Int8RangesOfRun int8_ranges_of_run(const TrainedRun& run, const Dataset& dataset,
                                          const std::string& path, const std::string& source,
                                          const Int8CalibrationOptions& options = {}) {
  Int8RangesOfRun out;
  if (std::filesystem::exists(path)) {
    out.ranges = std::make_shared<const Int8Calibration>(load_int8_calibration(path, *run.model));
    return out;
  }
  out.ranges = std::make_shared<const Int8Calibration>(
      calibrate_int8(*run.model, calibration_pictures(dataset, source),
                     ImageSize{run.config.height, run.config.width}, source, options));
  save_int8_calibration(*out.ranges, path);
  out.measured = true;
  return out;
}

/// Rank@k and mAP of the dense scores, and the scores themselves for ranked lists.
struct RetrievalEvaluation {
  torch::Tensor scores;  // query x gallery: similarities, or distances after re-ranking
  EvalOptions options;
  EvalResult result;
};

struct RetrievalProtocol {
  /// k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3) of the distances.
  TORCH_ARG(bool, re_rank) = false;
  /// The baseline's trapezoid average precision, or the plain one.
  TORCH_ARG(bool, plain_ap) = false;
};

/// The Market-1501 protocol on dense scores: junk (same id and camera, id -1) left out.
inline RetrievalEvaluation evaluate_retrieval(const RetrievalFeatures& f,
                                              const RetrievalProtocol& protocol = {}) {
  RetrievalEvaluation evaluation;
  if (protocol.plain_ap()) evaluation.options.average_precision(kPlainAP);
  if (protocol.re_rank()) {
    evaluation.scores = re_ranking_features(f.query_f, f.gallery_f);
    evaluation.options.score_kind(kDistance);
    evaluation.result = evaluate_scores(evaluation.scores, f.query_label, f.query_cam,
                                        f.gallery_label, f.gallery_cam, evaluation.options);
  } else {
    evaluation.scores = f.query_f.matmul(f.gallery_f.t());
    evaluation.result = evaluate(f.query_f, f.query_label, f.query_cam, f.gallery_f,
                                 f.gallery_label, f.gallery_cam, evaluation.options);
  }
  return evaluation;
}

/// Writes the features as reidnet-test's features.pth: the tensors qf, ql, qc, gf, gl, gc in a
/// zip file that torch.load reads.
inline void save_retrieval_features(const RetrievalFeatures& f, const std::string& path) {
  StateDict tensors;
  const torch::Tensor* values[] = {&f.query_f, &f.query_label, &f.query_cam,
                                   &f.gallery_f, &f.gallery_label, &f.gallery_cam};
  for (size_t i = 0; i < 6; ++i) tensors.insert(kFeaturesFileNames.names[i], *values[i]);
  save_tensors(tensors, path);
}

/// Writes every query's ranked list, one row per (query, rank), atomically: query_index,
/// query_path, rank, gallery_index, gallery_path, score, good (paths quoted as RFC 4180 wants).
inline void write_ranked_lists_csv(const std::string& path, const std::vector<Sample>& query,
                                   const std::vector<Sample>& gallery, const RankedLists& top) {
  std::string text = "query_index,query_path,rank,gallery_index,gallery_path,score,good\n";
  for (int64_t q = 0; q < top.indices.size(0); ++q) {
    for (int64_t i = 0; i < top.indices.size(1); ++i) {
      const int64_t index = top.indices[q][i].item<int64_t>();
      if (index < 0) break;
      text += fmt::format("{},{},{},{},{},{:.6f},{}\n", q, csv_field(query[q].path), i + 1, index,
                          csv_field(gallery[index].path), top.scores[q][i].item<double>(),
                          top.good[q][i].item<bool>() ? 1 : 0);
    }
  }
  write_text_file(path, text);
}

/// The baseline's --ms: scale factors separated by commas ("1,1.1"), each in 1/16..4 (the
/// sides are resized by its square root), at most 8 of them. ConfigError names `flag`.
inline std::vector<double> parse_scales(const std::string& text, const std::string& flag = "--ms") {
  constexpr double kMinScale = 1.0 / 16, kMaxScale = 4.0;
  constexpr size_t kMaxScales = 8;  // each scale runs the network once more
  std::vector<double> scales;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) {
    size_t used = 0;
    double scale = NAN;
    try {
      scale = std::stod(item, &used);
    } catch (const std::exception&) {
    }
    if (used != item.size() || !std::isfinite(scale) || scale < kMinScale || scale > kMaxScale) {
      throw ConfigError(fmt::format("{} {}: expected numbers in {}..{} separated by commas, e.g. "
                                    "1,1.1 (images are resized by the square root of each)",
                                    flag, text, kMinScale, kMaxScale));
    }
    scales.push_back(scale);
  }
  if (scales.empty() || scales.size() > kMaxScales || text.back() == ',') {
    throw ConfigError(fmt::format("{} {}: expected 1 to {} scales separated by commas", flag, text,
                                  kMaxScales));
  }
  return scales;
}

}  // namespace reidnet
