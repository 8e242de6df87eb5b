// reidnet-test: extract query and gallery features with a trained ReID model (the family its
// opts.yaml names) and evaluate Rank@k and mAP with the Market-1501 protocol.
//
//   reidnet-test --data Market-1501 --model-dir model/ft_ResNet50
//   reidnet-test --data toy --model-dir runs/toy --rerank --show 0
//   reidnet-test --from-mat pytorch_result.mat   (features the Python baseline's test.py wrote)
#include "common/cli.hpp"
#include "common/csv.hpp"
#include "common/gallery_search.hpp"
#include "common/opts_yaml.hpp"
#include "common/ranked_list.hpp"

#include <reidnet/io/checkpoint.hpp>
#include <reidnet/data.hpp>
#include <reidnet/io/mat_file.hpp>
#include <reidnet/reidnet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <cmath>
#include <filesystem>
#include <sstream>

namespace fs = std::filesystem;

using reidnet::examples::UsageError;

namespace {

struct TestConfig {
  std::string data, model_dir, weights, features_out, ranks_out, show_out, mat_out, from_mat;
  int64_t class_num = 0, last_stride = 0, linear_num = -1, height = 0, width = 0;
  int64_t batch_size = 256, threads = 2, workers = 2, show = -1, top_k = 10;
  bool top_k_given = false;  // an explicit --top-k past the gallery is refused, the default clamped
  std::string ms = "1", ap = "trapezoid", device = "cpu", dtype = "fp32";
  bool rerank = false, save_ranks = false, optimize = true;
  // --index: evaluate from a gallery index's top-k lists instead of the dense scores.
  reidnet::examples::IndexFlags index;
  bool use_index = false;
  int64_t index_k = 1000;
};

// Bounds on what sizes the work, from the flags or opts.yaml; all are checked before the
// weights are read or a feature extracted, so that a typo fails at once instead of after the
// whole extraction, or in an out-of-memory kill.
// --height, --width, --batch-size and --class-num share reidnet-train's bounds (opts_yaml.hpp).
using reidnet::examples::kMaxBatchSize;
using reidnet::examples::kMaxClasses;  // the classifier is built before the weights are read
constexpr int64_t kMaxSide = reidnet::examples::kMaxImageSide;
using reidnet::examples::kMaxLinearNum;
using reidnet::examples::kMaxThreads;
using reidnet::examples::kMaxWorkers;
constexpr double kMinScale = 1.0 / 16;       // --ms: sides resized by sqrt(s), so 1/4x ..
constexpr double kMaxScale = 4.0;            //   2x (4x the pixels)
constexpr size_t kMaxScales = 8;             //   each scale runs the network once more
constexpr int64_t kMaxDrawnRanks = 100;      // --top-k with --show: one picture per rank

std::vector<double> parse_scales(const std::string& text) {
  std::vector<double> scales;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) {
    try {
      size_t used = 0;
      scales.push_back(std::stod(item, &used));
      const double s = scales.back();
      if (used != item.size() || !std::isfinite(s) || s < kMinScale || s > kMaxScale) {
        throw std::invalid_argument(item);
      }
    } catch (const std::exception&) {
      throw UsageError(fmt::format("--ms {}: expected numbers in {}..{} separated by commas, e.g. "
                                   "1,1.1 (images are resized by the square root of each)",
                                   text, kMinScale, kMaxScale));
    }
  }
  if (scales.empty() || scales.size() > kMaxScales || text.back() == ',') {
    throw UsageError(fmt::format("--ms {}: expected 1 to {} scales separated by commas", text,
                                 kMaxScales));
  }
  return scales;
}

// Refuses `value` outside low..high; `source` names the flag or opts.yaml key it came from.
void require_within(int64_t value, int64_t low, int64_t high, const std::string& source) {
  if (value < low || value > high) {
    throw UsageError(fmt::format("{} {}: expected {}..{}", source, value, low, high));
  }
}

// An output file's folder must exist before the run, not be found missing after it.
void require_folder_of(const std::string& path, const std::string& flag) {
  const auto folder = fs::path(path).parent_path();
  std::error_code error;
  if (!folder.empty() && !fs::is_directory(folder, error)) {
    throw UsageError(flag + " " + path + ": the folder " + folder.string() + " does not exist");
  }
}

torch::Tensor column(const std::vector<reidnet::Sample>& samples, int64_t reidnet::Sample::*field) {
  std::vector<int64_t> values;
  for (const auto& sample : samples) values.push_back(sample.*field);
  return torch::tensor(values, torch::kLong);
}

struct ModelChoice {
  std::string name;
  reidnet::ModelArgs args;
};

// The model that opts.yaml and the flags overriding it describe; sets c.weights, c.height
// and c.width from opts.yaml where the flags leave them, and checks their bounds.
ModelChoice model_options(TestConfig& c) {
  reidnet::examples::TrainConfig opts;
  std::string yaml_name = "the built-in defaults";
  if (!c.model_dir.empty()) {
    const auto yaml = fs::path(c.model_dir) / "opts.yaml";
    if (!fs::exists(yaml)) throw UsageError("--model-dir " + c.model_dir + ": no opts.yaml there");
    try {
      opts = reidnet::examples::read_opts_yaml(yaml);
    } catch (const std::exception& error) {
      throw UsageError(error.what());
    }
    yaml_name = yaml.string();
    if (c.weights.empty()) c.weights = (fs::path(c.model_dir) / "net_last.pth").string();
  }
  if (c.weights.empty()) throw UsageError("give --model-dir (with opts.yaml) or --weights");
  // Names where a value came from: the flag when given, else opts.yaml's key.
  const auto source = [&](bool from_flag, const char* flag, const char* key) {
    return from_flag ? std::string(flag) : fmt::format("{} of {}", key, yaml_name);
  };
  if (c.class_num > 0) opts.class_num = c.class_num;
  if (c.last_stride > 0) opts.last_stride = c.last_stride;
  if (c.linear_num >= 0) opts.linear_num = c.linear_num;
  require_within(opts.class_num, 1, kMaxClasses, source(c.class_num > 0, "--class-num", "nclasses"));
  require_within(opts.linear_num, 0, kMaxLinearNum,
                 source(c.linear_num >= 0, "--linear-num", "linear_num"));
  require_within(c.height > 0 ? c.height : opts.height, 1, kMaxSide,
                 source(c.height > 0, "--height", "height"));
  require_within(c.width > 0 ? c.width : opts.width, 1, kMaxSide,
                 source(c.width > 0, "--width", "width"));
  if (c.height <= 0) c.height = opts.height;
  if (c.width <= 0) c.width = opts.width;
  auto [name, args] = reidnet::examples::resolve_model(opts, [&](const char* key, const char*) {
    return fmt::format("{} of {}", key, yaml_name);
  });
  return {name, args};
}

reidnet::ReidModel load_model(const ModelChoice& model, const std::string& weights) {
  auto net = reidnet::create_model(model.name, model.args);
  // fast-reid's files also carry the input normalisation, which the data pipeline applies.
  if (model.name == "bnneck") {
    reidnet::load_fastreid_checkpoint(*net, weights);
  } else {
    reidnet::load_state_dict(*net, weights);
  }
  net->eval();
  return net;
}


// One row per (query, rank), paths quoted as RFC 4180 wants; written atomically.
void write_ranks(const std::string& path, const std::vector<reidnet::Sample>& query,
                 const std::vector<reidnet::Sample>& gallery, const reidnet::RankedLists& top) {
  using reidnet::examples::csv_field;
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
  reidnet::detail::write_file_atomically(path, std::vector<unsigned char>(text.begin(), text.end()));
}

struct Evaluation {
  torch::Tensor scores;  // query x gallery: similarities, or distances after re-ranking
  reidnet::EvalOptions options;
  reidnet::EvalResult result;
};

// --index: Rank@k and mAP from the top --index-k of a gallery index (KNN re-ranking with
// --rerank); see evaluate_top_k for what a list shorter than the gallery changes.
reidnet::EvalResult evaluate_with_index(const TestConfig& c, const reidnet::RetrievalFeatures& f,
                                        reidnet::EvalOptions options) {
  reidnet::GalleryIndex index = [&] {
    try {
      return reidnet::GalleryIndex::create(
          f.gallery_f.size(1), f.gallery_f.size(0),
          c.index.build_options().progress(reidnet::examples::index_progress("index")));
    } catch (const std::exception& error) {
      throw UsageError(std::string("--index ") + c.index.type + ": " + error.what());
    }
  }();
  index.train(f.gallery_f);
  index.add(f.gallery_f);
  const auto k = std::min(c.index_k, index.size());
  const auto search = c.index.search_options();
  fmt::print("evaluating each query's top {} from a gallery index: {} (FAISS \"{}\")\n", k,
             c.index.type, index.describe().factory);
  if (c.rerank) {
    const auto lists = reidnet::knn_re_ranking(f.query_f, f.gallery_f, index, k, {}, search);
    options.score_kind(reidnet::kDistance);
    return reidnet::evaluate_top_k(lists.indices, lists.distances, f.query_label, f.query_cam,
                                   f.gallery_label, f.gallery_cam, options);
  }
  const auto top = index.search(f.query_f, k, search);
  return reidnet::evaluate_top_k(top.indices, top.scores, f.query_label, f.query_cam,
                                 f.gallery_label, f.gallery_cam, options);
}

// Rank@k and mAP as the flags ask (--rerank, --ap, --index), printed in the baseline's line.
Evaluation evaluate_and_print(const TestConfig& c, const reidnet::RetrievalFeatures& f) {
  Evaluation evaluation;
  if (c.ap == "plain") evaluation.options.average_precision(reidnet::kPlainAP);
  if (c.use_index) {
    evaluation.result = evaluate_with_index(c, f, evaluation.options);
  } else if (c.rerank) {
    evaluation.scores = reidnet::re_ranking_features(f.query_f, f.gallery_f);
    evaluation.options.score_kind(reidnet::kDistance);
    evaluation.result = reidnet::evaluate_scores(evaluation.scores, f.query_label, f.query_cam,
                                                 f.gallery_label, f.gallery_cam, evaluation.options);
  } else {
    evaluation.scores = f.query_f.matmul(f.gallery_f.t());
    evaluation.result = reidnet::evaluate(f.query_f, f.query_label, f.query_cam, f.gallery_f,
                                          f.gallery_label, f.gallery_cam, evaluation.options);
  }
  fmt::print("{}\n", reidnet::format_baseline_line(evaluation.result));
  return evaluation;
}

// --from-mat: the features of a pytorch_result.mat, no model and no pictures.
int run_from_mat(const CLI::App& app, const TestConfig& c) {
  for (const char* flag : {"--data", "--model-dir", "--weights", "--show", "--save-ranks",
                           "--features-out", "--mat-out"}) {
    if (app.count(flag) > 0) {
      throw UsageError(fmt::format("{} cannot be combined with --from-mat, which evaluates the "
                                   "file's features alone", flag));
    }
  }
  reidnet::RetrievalFeatures features;
  try {
    features = reidnet::read_pytorch_result(c.from_mat);
  } catch (const std::exception& error) {
    throw UsageError(error.what());
  }
  fmt::print("evaluating {} queries against {} gallery pictures from {}\n",
             features.query_label.numel(), features.gallery_label.numel(), c.from_mat);
  evaluate_and_print(c, features);
  return 0;
}

int run(const CLI::App& app, TestConfig& c) {
  c.use_index = app.count("--index") > 0;
  for (const char* flag : {"--nlist", "--pq-m", "--pq-bits", "--sq-bits", "--hnsw-m",
                           "--ef-construction", "--nprobe", "--ef-search", "--index-k"}) {
    if (app.count(flag) > 0 && !c.use_index) throw UsageError(fmt::format("{} needs --index", flag));
  }
  if (c.use_index && (app.count("--show") > 0 || app.count("--save-ranks") > 0)) {
    throw UsageError("--show and --save-ranks rank the dense scores; they cannot be combined "
                     "with --index");
  }
  if (!c.from_mat.empty()) return run_from_mat(app, c);
  if (c.data.empty()) throw UsageError("--data is required (the data set root), or --from-mat");
  const auto scales = parse_scales(c.ms);
  const torch::Device device(c.device == "cuda" ? torch::kCUDA : torch::kCPU);
  if (device.is_cuda() && !torch::cuda::is_available()) {
    throw UsageError("--device cuda: no CUDA device is available to this LibTorch");
  }
  const auto model = model_options(c);
  const std::string features_path = c.features_out.empty()
      ? (fs::path(c.model_dir.empty() ? "." : c.model_dir) / "features.pth").string()
      : c.features_out;
  const std::string mat_path = c.mat_out.empty()
      ? (fs::path(features_path).parent_path() / "pytorch_result.mat").string()
      : c.mat_out;
  const auto ranks_path = c.ranks_out.empty() ? features_path + ".ranks.csv" : c.ranks_out;
  const auto show_path = c.show_out.empty() ? fmt::format("show_{}.png", c.show) : c.show_out;
  require_folder_of(features_path, "--features-out");
  require_folder_of(mat_path, "--mat-out");
  if (c.save_ranks) require_folder_of(ranks_path, "--ranks-out");
  if (c.show >= 0) require_folder_of(show_path, "--show-out");

  reidnet::Dataset data;
  try {
    data = reidnet::read_dataset(c.data);
  } catch (const std::exception& error) {
    throw UsageError(error.what());
  }
  if (data.query.empty()) throw UsageError("--data " + c.data + ": the query split has no images");
  if (data.gallery.empty()) throw UsageError("--data " + c.data + ": the gallery split has no images");
  const auto gallery_size = static_cast<int64_t>(data.gallery.size());
  if (c.show >= static_cast<int64_t>(data.query.size())) {
    throw UsageError(fmt::format("--show {}: there are only {} query images (0..{})", c.show,
                                 data.query.size(), data.query.size() - 1));
  }
  if (c.top_k > gallery_size) {
    if (c.top_k_given) {
      throw UsageError(fmt::format("--top-k {}: the gallery has only {} images", c.top_k,
                                   gallery_size));
    }
    c.top_k = gallery_size;
  }
  if (c.show >= 0 && c.top_k > kMaxDrawnRanks) {
    throw UsageError(fmt::format("--top-k {} with --show: the picture holds at most {} ranks",
                                 c.top_k, kMaxDrawnRanks));
  }
  auto net = load_model(model, c.weights);

  const auto dtype = c.dtype == "bf16" ? torch::kBFloat16 : c.dtype == "fp16" ? torch::kHalf
                                                                               : torch::kFloat;
  const auto normalization = reidnet::normalization_of(net->config());
  auto features_of = [&](const std::vector<reidnet::Sample>& samples, const char* split) {
    reidnet::DataLoader loader(samples, reidnet::make_eval_transform(c.height, c.width, normalization),
                               reidnet::LoaderOptions().batch_size(c.batch_size).workers(c.workers));
    fmt::print("extracting {} features of {} images\n", split, samples.size());
    return reidnet::extract_features(
        net, loader.epoch(0),
        reidnet::FeatureOptions().device(device).scales(scales).dtype(dtype).optimize(c.optimize));
  };
  const auto qf = features_of(data.query, "query");
  const auto gf = features_of(data.gallery, "gallery");
  const auto ql = column(data.query, &reidnet::Sample::person_id);
  const auto qc = column(data.query, &reidnet::Sample::camera);
  const auto gl = column(data.gallery, &reidnet::Sample::person_id);
  const auto gc = column(data.gallery, &reidnet::Sample::camera);

  const reidnet::RetrievalFeatures retrieval{qf, ql, qc, gf, gl, gc};
  const auto evaluation = evaluate_and_print(c, retrieval);

  reidnet::StateDict features;
  for (const auto& [key, value] : {std::pair<const char*, torch::Tensor>{"qf", qf}, {"ql", ql},
                                   {"qc", qc}, {"gf", gf}, {"gl", gl}, {"gc", gc}}) {
    features.insert(key, value);
  }
  reidnet::save_tensors(features, features_path);
  fmt::print("features written to {}\n", features_path);
  reidnet::write_pytorch_result(mat_path, retrieval);
  fmt::print("features written to {} for the Python baseline's scripts\n", mat_path);

  if (c.save_ranks || c.show >= 0) {
    const auto top = reidnet::top_k_ranks(
        evaluation.scores, ql, qc, gl, gc,
        reidnet::RankOptions().k(c.top_k).score_kind(evaluation.options.score_kind()));
    if (c.save_ranks) {
      write_ranks(ranks_path, data.query, data.gallery, top);
      fmt::print("top-{} lists written to {}\n", c.top_k, ranks_path);
    }
    if (c.show >= 0) {
      reidnet::write_png(show_path, reidnet::examples::render_ranked_list(
                                        data.query[c.show], data.gallery, top, c.show));
      fmt::print("ranked list of query {} drawn to {}\n", c.show, show_path);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Evaluate a reidnet ReID model on a ReID data set (Rank@k, mAP)"};
  TestConfig c;
  app.add_option("--data,--test_dir", c.data, "data set root with query and gallery images");
  app.add_option("--from-mat", c.from_mat, "evaluate the features of a pytorch_result.mat (as the "
                 "Python baseline's test.py writes it) instead of a model on --data");
  app.add_option("--model-dir", c.model_dir, "folder with opts.yaml and net_last.pth (reidnet-train's --out)");
  app.add_option("--weights", c.weights, "weights file (default: <model-dir>/net_last.pth)")
      ->check(CLI::ExistingFile);
  app.add_option("--class-num,--nclasses", c.class_num, "override opts.yaml: number of training ids")
      ->check(CLI::Range(int64_t{1}, kMaxClasses));
  app.add_option("--stride", c.last_stride, "override opts.yaml: last stride")->check(CLI::IsMember({1, 2}));
  app.add_option("--linear-num,--linear_num", c.linear_num, "override opts.yaml: bottleneck width")
      ->check(CLI::Range(int64_t{0}, kMaxLinearNum));
  app.add_option("--height", c.height, "input height (default: opts.yaml)")
      ->check(CLI::Range(int64_t{1}, kMaxSide));
  app.add_option("--width", c.width, "input width (default: opts.yaml)")
      ->check(CLI::Range(int64_t{1}, kMaxSide));
  app.add_option("--batch-size,--batchsize", c.batch_size, "images per batch")
      ->check(CLI::Range(int64_t{1}, kMaxBatchSize));
  app.add_option("--ms", c.ms,
                 fmt::format("multi-scale factors s (images resized by sqrt(s)), e.g. 1,1.1; up to "
                             "{} of them, each in {}..{}", kMaxScales, kMinScale, kMaxScale));
  app.add_flag("--rerank", c.rerank, "k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)");
  app.add_option("--ap", c.ap, "average precision: trapezoid (the baseline's) or plain")
      ->check(CLI::IsMember({"trapezoid", "plain"}));
  app.add_option("--device", c.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", c.dtype, "fp32, bf16 or fp16")->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_flag("!--no-optimize", c.optimize, "run the plain module instead of the inference fast path");
  app.add_option("--threads", c.threads, "CPU threads")->check(CLI::Range(int64_t{1}, kMaxThreads));
  app.add_option("--workers", c.workers, "decoding threads")->check(CLI::Range(int64_t{0}, kMaxWorkers));
  app.add_option("--features-out", c.features_out, "where to write qf/ql/qc/gf/gl/gc (default: <model-dir>/features.pth)");
  app.add_option("--mat-out", c.mat_out, "where to write the baseline's pytorch_result.mat "
                 "(default: beside the features file)");
  app.add_option("--show", c.show, "draw query QUERY_INDEX and its top-k to a PNG")->check(CLI::NonNegativeNumber);
  app.add_option("--show-out", c.show_out, "PNG path for --show (default: show_<index>.png)");
  app.add_flag("--save-ranks", c.save_ranks, "write every query's top-k list to a CSV");
  app.add_option("--ranks-out", c.ranks_out, "CSV path for --save-ranks");
  app.add_option("--top-k", c.top_k,
                 fmt::format("length of the lists of --save-ranks and --show: at most the gallery "
                             "size (default 10, or the gallery size if smaller), and {} with --show",
                             kMaxDrawnRanks))
      ->check(CLI::PositiveNumber);
  reidnet::examples::add_index_build_flags(app, c.index, "--index");
  reidnet::examples::add_index_search_flags(app, c.index);
  app.add_option("--index-k", c.index_k, "with --index: list length evaluated (default 1000, "
                 "or the gallery size if smaller)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  c.top_k_given = app.count("--top-k") > 0;
  torch::set_num_threads(static_cast<int>(c.threads));
  reidnet::reuse_freed_host_memory();
  return reidnet::examples::run_reporting_errors("reidnet-test", [&] { return run(app, c); });
}
