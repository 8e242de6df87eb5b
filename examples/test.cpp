// reidnet-test: extract query and gallery features with a trained ReID model (the family its
// opts.yaml names) and evaluate Rank@k and mAP with the Market-1501 protocol.
//
//   reidnet-test --data Market-1501 --model-dir model/ft_ResNet50
//   reidnet-test --data toy --model-dir runs/toy --rerank --show 0
//   reidnet-test --from-mat pytorch_result.mat   (features the Python baseline's test.py wrote)
//   reidnet-test --data toy --model-dir runs/toy --dtype int8   (calibrated once, on train_all)
#include "common/cli.hpp"
#include "common/gallery_search.hpp"
#include "common/int8_flags.hpp"
#include "common/trained_run_flags.hpp"
#include "common/ranked_list.hpp"

#include <reidnet/core/autocast.hpp>
#include <reidnet/core/cpu_threads.hpp>
#include <reidnet/core/files.hpp>
#include <reidnet/core/host_memory.hpp>
#include <reidnet/engine/evaluator.hpp>
#include <reidnet/io/mat_file.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <filesystem>

namespace fs = std::filesystem;
using reidnet::examples::UsageError;

namespace {

constexpr int64_t kMaxDrawnRanks = 100;  // --top-k with --show: one picture per rank

struct TestConfig {
  std::string data, model_dir, features_out, ranks_out, show_out, mat_out, from_mat;
  reidnet::TrainedRunOptions model;
  int64_t batch_size = 256, threads = 2, workers = 2, show = -1, top_k = 10, index_k = 1000;
  std::string ms = "1", ap = "trapezoid", device = "cpu", dtype = "fp32";
  bool rerank = false, save_ranks = false, optimize = true, use_index = false;
  reidnet::examples::IndexFlags index;  // --index: evaluate from a gallery index's top-k lists
  reidnet::examples::Int8Flags int8;
};

// Rank@k and mAP as the flags ask (--rerank, --ap, --index), printed in the baseline's line.
reidnet::RetrievalEvaluation evaluate_and_print(const TestConfig& c,
                                                const reidnet::RetrievalFeatures& f) {
  const auto protocol = reidnet::RetrievalProtocol().re_rank(c.rerank).plain_ap(c.ap == "plain");
  reidnet::RetrievalEvaluation evaluation;
  if (c.use_index) {
    if (protocol.plain_ap()) evaluation.options.average_precision(reidnet::kPlainAP);
    evaluation.result = reidnet::examples::evaluate_with_index(f, c.index, c.index_k, c.rerank,
                                                               evaluation.options);
  } else {
    evaluation = reidnet::evaluate_retrieval(f, protocol);
  }
  fmt::print("{}\n", reidnet::format_baseline_line(evaluation.result));
  return evaluation;
}

int run(const CLI::App& app, TestConfig& c) {
  using reidnet::examples::refuse_flags;
  c.use_index = app.count("--index") > 0;
  if (!c.use_index) {
    refuse_flags(app, {"--nlist", "--pq-m", "--pq-bits", "--sq-bits", "--hnsw-m",
                       "--ef-construction", "--nprobe", "--ef-search", "--index-k"},
                 "needs --index");
  } else {
    refuse_flags(app, {"--show", "--save-ranks"}, "ranks the dense scores; it cannot be combined "
                 "with --index");
  }
  if (!c.from_mat.empty()) {  // the features of a pytorch_result.mat, no model and no pictures
    refuse_flags(app, {"--data", "--model-dir", "--weights", "--model", "--show", "--save-ranks",
                       "--features-out", "--mat-out"},
                 "cannot be combined with --from-mat, which evaluates the file's features alone");
    const auto features = reidnet::examples::read_retrieval_features(c.from_mat);
    fmt::print("evaluating {} queries against {} gallery pictures from {}\n",
               features.query_label.numel(), features.gallery_label.numel(), c.from_mat);
    evaluate_and_print(c, features);
    return 0;
  }
  if (c.data.empty()) throw UsageError("--data is required (the data set root), or --from-mat");
  const bool int8 = reidnet::examples::int8_runs_here(app, c.dtype == "int8");
  if (c.dtype == "int8" && (!c.optimize || c.device == "cuda")) {
    throw UsageError("--dtype int8 runs on the inference fast path on the CPU; drop --no-optimize "
                     "and --device cuda");
  }
  auto features_options = reidnet::FeatureOptions()
      .device(torch::Device(c.device == "cuda" ? torch::kCUDA : torch::kCPU))
      .scales(reidnet::parse_scales(c.ms))
      .dtype(c.dtype == "int8" ? torch::kFloat32 : reidnet::compute_dtype_from_name(c.dtype))
      .optimize(c.optimize);
  if (c.device == "cuda" && !torch::cuda::is_available()) {
    throw UsageError("--device cuda: no CUDA device is available to this LibTorch");
  }
  const fs::path run_dir = c.model_dir.empty() ? "." : c.model_dir;
  if (c.features_out.empty()) c.features_out = (run_dir / "features.pth").string();
  const auto features_dir = fs::path(c.features_out).parent_path();
  if (c.mat_out.empty()) c.mat_out = (features_dir / "pytorch_result.mat").string();
  if (c.ranks_out.empty()) c.ranks_out = c.features_out + ".ranks.csv";
  if (c.show_out.empty()) c.show_out = fmt::format("show_{}.png", c.show);
  reidnet::check_output_folder(c.features_out, "--features-out");
  reidnet::check_output_folder(c.mat_out, "--mat-out");
  if (c.save_ranks) reidnet::check_output_folder(c.ranks_out, "--ranks-out");
  if (c.show >= 0) reidnet::check_output_folder(c.show_out, "--show-out");
  auto run = reidnet::describe_trained_run(c.model_dir, c.model);  // its bounds, before any work
  if (c.int8.ranges_file.empty()) {
    c.int8.ranges_file = c.model_dir.empty() ? run.weights + ".int8_calibration.pth"
                                             : (run_dir / "int8_calibration.pth").string();
  }
  if (int8) reidnet::check_output_folder(c.int8.ranges_file, "--int8-calibration");
  const auto data = reidnet::read_dataset(c.data);
  reidnet::check_retrieval_splits(data, "--data " + c.data);
  if (c.show >= static_cast<int64_t>(data.query.size())) {
    throw UsageError(fmt::format("--show {}: there are only {} query images (0..{})", c.show,
                                 data.query.size(), data.query.size() - 1));
  }
  const auto gallery_size = static_cast<int64_t>(data.gallery.size());
  if (c.top_k > gallery_size && app.count("--top-k") > 0) {
    throw UsageError(
        fmt::format("--top-k {}: the gallery has only {} images", c.top_k, gallery_size));
  }
  c.top_k = std::min(c.top_k, gallery_size);  // the default, clamped
  if (c.show >= 0 && c.top_k > kMaxDrawnRanks) {
    throw UsageError(fmt::format("--top-k {} with --show: the picture holds at most {} ranks",
                                 c.top_k, kMaxDrawnRanks));
  }
  reidnet::load_trained_model(run);
  if (int8) {
    const auto ranges = reidnet::int8_ranges_of_run(
        run, data, c.int8.ranges_file, "--data " + c.data,
        reidnet::Int8CalibrationOptions()
            .images(c.int8.calibration_images)
            .workers(c.workers)
            .on_start([](int64_t images) {
              fmt::print("calibrating int8 on {} training pictures\n", images);
            }));
    fmt::print("int8 ranges {} {}\n", ranges.measured ? "written to" : "read from", c.int8.ranges_file);
    features_options.int8(ranges.ranges);
  }
  const auto extraction = reidnet::RetrievalExtractionOptions()
                              .batch_size(c.batch_size)
                              .workers(c.workers)
                              .features(features_options)
                              .on_split([](const std::string& split, size_t images) {
                                fmt::print("extracting {} features of {} images\n", split, images);
                              });
  const auto retrieval = reidnet::extract_retrieval_features(run, data, extraction);
  const auto evaluation = evaluate_and_print(c, retrieval);
  reidnet::save_retrieval_features(retrieval, c.features_out);
  fmt::print("features written to {}\n", c.features_out);
  reidnet::write_pytorch_result(c.mat_out, retrieval);
  fmt::print("features written to {} for the Python baseline's scripts\n", c.mat_out);
  if (c.save_ranks || c.show >= 0) {
    const auto& r = retrieval;
    const auto top = reidnet::top_k_ranks(
        evaluation.scores, r.query_label, r.query_cam, r.gallery_label, r.gallery_cam,
        reidnet::RankOptions().k(c.top_k).score_kind(evaluation.options.score_kind()));
    if (c.save_ranks) {
      reidnet::write_ranked_lists_csv(c.ranks_out, data.query, data.gallery, top);
      fmt::print("top-{} lists written to {}\n", c.top_k, c.ranks_out);
    }
    if (c.show >= 0) {
      const auto picture =
          reidnet::examples::render_ranked_list(data.query[c.show], data.gallery, top, c.show);
      reidnet::write_png(c.show_out, picture);
      fmt::print("ranked list of query {} drawn to {}\n", c.show, c.show_out);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Evaluate a reidnet ReID model on a ReID data set (Rank@k, mAP)"};
  TestConfig c;
  const auto range = [](int64_t low, int64_t high) { return CLI::Range(low, high); };
  app.add_option("--data,--test_dir", c.data, "data set root with query and gallery images");
  app.add_option("--from-mat", c.from_mat, "evaluate the features of a pytorch_result.mat (as "
                 "the Python baseline's test.py writes it) instead of a model on --data");
  reidnet::examples::add_trained_run_flags(app, c.model_dir, c.model);
  app.add_option("--batch-size,--batchsize", c.batch_size, "images per batch")
      ->check(range(1, reidnet::kMaxBatchSize));
  app.add_option("--ms", c.ms, "multi-scale factors s (images resized by sqrt(s)), e.g. 1,1.1; "
                 "up to 8 of them, each in 1/16..4");
  app.add_flag("--rerank", c.rerank, "k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)");
  app.add_option("--ap", c.ap, "average precision: trapezoid (the baseline's) or plain")
      ->check(CLI::IsMember({"trapezoid", "plain"}));
  app.add_option("--device", c.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", c.dtype, "fp32, bf16, fp16, or int8 (the ResNet or OSNet trunk's "
                 "convs; calibrated on --data's training pictures)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16", "int8"}));
  reidnet::examples::add_int8_flags(app, c.int8, "<model-dir>/int8_calibration.pth, or "
                                    "<weights>.int8_calibration.pth");
  app.add_flag("!--no-optimize", c.optimize, "the plain module instead of the inference fast path");
  app.add_option("--threads", c.threads, "CPU threads")->check(range(1, reidnet::kMaxThreads));
  app.add_option("--workers", c.workers, "decoding threads")->check(range(0, reidnet::kMaxWorkers));
  app.add_option("--features-out", c.features_out, "where to write qf/ql/qc/gf/gl/gc (default: "
                 "<model-dir>/features.pth)");
  app.add_option("--mat-out", c.mat_out, "where to write the baseline's pytorch_result.mat "
                 "(default: beside the features file)");
  app.add_option("--show", c.show, "draw query QUERY_INDEX and its top-k to a PNG")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--show-out", c.show_out, "PNG path for --show (default: show_<index>.png)");
  app.add_flag("--save-ranks", c.save_ranks, "write every query's top-k list to a CSV");
  app.add_option("--ranks-out", c.ranks_out, "CSV path for --save-ranks");
  app.add_option("--top-k", c.top_k, "length of the lists of --save-ranks and --show: at most the "
                 "gallery size (default 10, or the gallery size if smaller), and 100 with --show")
      ->check(CLI::PositiveNumber);
  reidnet::examples::add_index_build_flags(app, c.index, "--index");
  reidnet::examples::add_index_search_flags(app, c.index);
  app.add_option("--index-k", c.index_k, "with --index: list length evaluated (default 1000, or "
                 "the gallery size if smaller)")->check(range(1, int64_t{1} << 16));
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  reidnet::set_cpu_threads(static_cast<int>(c.threads));
  reidnet::reuse_freed_host_memory();
  return reidnet::examples::run_reporting_errors("reidnet-test", [&] { return run(app, c); });
}
