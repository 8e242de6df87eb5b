// reidnet-embed: the embedding of every detection of a MOTChallenge sequence, for trackers.
// One .npy row per det.txt row: the row (as float32) followed by the feature, the layout
// deep_sort's generate_detections.py writes and StrongSORT's offline mode reads.
//
//   reidnet-embed --model-dir runs/toy --mot MOT17/train/MOT17-02-FRCNN --out MOT17-02-FRCNN.npy
//   reidnet-embed --model osnet_x0_25 --weights osnet.pth --mot-root MOT17/train --out features/
#include "common/cli.hpp"
#include "common/progress.hpp"
#include "common/trained_run_flags.hpp"

#include <reidnet/core/autocast.hpp>
#include <reidnet/core/cpu_threads.hpp>
#include <reidnet/core/files.hpp>
#include <reidnet/data/image.hpp>
#include <reidnet/data/mot_sequence.hpp>
#include <reidnet/engine/evaluator.hpp>
#include <reidnet/inference/box_embeddings.hpp>
#include <reidnet/io/npy.hpp>
#include <reidnet/reidnet.hpp>  // every family registered, for --model and opts.yaml

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <filesystem>
#include <functional>
#include <optional>

namespace reidnet_embed {

namespace fs = std::filesystem;
using reidnet::examples::UsageError;

struct EmbedConfig {
  std::string model_dir, mot, mot_root, out, resize = "config", device = "cpu", dtype = "fp32";
  reidnet::TrainedRunOptions model;
  int64_t batch_size = 256, threads = 2;
  bool optimize = true, normalize = true;
};

reidnet::CropResize crop_resize_from_name(const std::string& name) {
  if (name == "pil") return reidnet::CropResize::kPil;
  if (name == "opencv") return reidnet::CropResize::kOpenCV;
  return reidnet::CropResize::kConfig;
}

// Embeds every detection of `sequence` and writes the rows to `out`.
void embed_sequence(const reidnet::MotSequence& sequence, const std::string& out,
                    const std::function<reidnet::BoxEmbeddings(const torch::Tensor&, const torch::Tensor&)>& embed,
                    int64_t feature_dim) {
  const int64_t columns = sequence.rows.size(1);
  auto rows = torch::empty({sequence.rows.size(0), columns + feature_dim}, torch::kFloat32);
  rows.slice(1, 0, columns).copy_(sequence.rows);
  reidnet::examples::Progress progress(sequence.name + " frames",
                                       static_cast<int64_t>(sequence.frames.size()));
  int64_t crops = 0, rejected = 0, done = 0;
  for (const auto& frame : sequence.frames) {
    const auto picture = reidnet::read_image(sequence.image_path(frame.frame));
    const auto result = embed(picture, sequence.boxes(frame));
    rows.slice(0, frame.begin, frame.end).slice(1, columns).copy_(result.embeddings.cpu());
    for (const auto& box : result.rejected) {
      if (rejected++ < 5) {
        fmt::print("{} line {}: box has no pixels in the frame ({}); its feature is zeros\n",
                   sequence.detections, sequence.lines[frame.begin + box.index],
                   reidnet::box_problem_name(box.problem));
      }
    }
    crops += frame.end - frame.begin;
    const double seconds = progress.elapsed();
    ++done;
    progress.update(done, done,
                    fmt::format("{} crops {:.1f} crops/s", crops, seconds > 0 ? crops / seconds : 0.0));
  }
  reidnet::write_npy(out, rows);
  fmt::print("{}: {} rows of {} + {} columns written to {}{}\n", sequence.name, rows.size(0), columns,
             feature_dim, out,
             rejected > 0 ? fmt::format(" ({} boxes without pixels: zero features)", rejected) : "");
}

int run(const CLI::App& app, EmbedConfig& c) {
  if (c.mot.empty() == c.mot_root.empty()) {
    throw UsageError("give one of --mot SEQ (a sequence) or --mot-root DIR (a folder of sequences)");
  }
  if (c.out.empty()) throw UsageError("--out is required (SEQ.npy with --mot, a folder with --mot-root)");
  if (c.device == "cuda" && !torch::cuda::is_available()) {
    throw UsageError("--device cuda: no CUDA device is available to this LibTorch");
  }
  if (!c.optimize && app.count("--dtype") > 0 && c.dtype != "fp32") {
    throw UsageError("--dtype needs the inference fast path; drop --no-optimize");
  }
  // Every refusal before any work: the model's description, the output folder, every det.txt.
  auto trained = reidnet::describe_trained_run(c.model_dir, c.model);
  std::vector<std::pair<std::string, std::string>> jobs;  // sequence folder, output file
  if (!c.mot.empty()) {
    reidnet::check_output_folder(c.out, "--out");
    jobs.emplace_back(c.mot, c.out);
  } else {
    for (const auto& folder : reidnet::mot_sequence_folders(c.mot_root)) {
      jobs.emplace_back(folder, (fs::path(c.out) / (fs::path(folder).filename().string() + ".npy")).string());
    }
  }
  std::vector<reidnet::MotSequence> sequences;
  for (const auto& job : jobs) sequences.push_back(reidnet::read_mot_sequence(job.first));
  if (!c.mot_root.empty()) {  // made once every det.txt has been read
    std::error_code error;
    fs::create_directories(c.out, error);
    if (error) throw UsageError("--out " + c.out + ": cannot make the folder: " + error.message());
  }
  reidnet::load_trained_model(trained);
  const torch::Device device(c.device == "cuda" ? torch::kCUDA : torch::kCPU);
  const auto options = reidnet::BoxEmbeddingOptions()
                           .resize(crop_resize_from_name(c.resize))
                           .normalize(c.normalize)
                           .batch_size(c.batch_size);
  const auto config = trained.model->config();
  std::optional<reidnet::InferenceModel> fast;
  if (c.optimize) {
    fast = reidnet::optimize_for_inference(
        trained.model, reidnet::InferenceOptions().device(device).dtype(reidnet::compute_dtype_from_name(c.dtype)));
    fmt::print("model: {} ({})\n", trained.family, fast->describe());
  } else {
    trained.model->to(device);
    fmt::print("model: {} (module, {})\n", trained.family, device.str());
  }
  const auto embed = [&](const torch::Tensor& frame, const torch::Tensor& boxes) {
    return fast ? reidnet::embed_boxes(*fast, config, frame, boxes, options)
                : reidnet::embed_boxes(trained.model, frame, boxes, options);
  };
  const int64_t feature_dim = trained.model->feature_dim();
  for (size_t i = 0; i < sequences.size(); ++i) {
    embed_sequence(sequences[i], jobs[i].second, embed, feature_dim);
  }
  return 0;
}

}  // namespace reidnet_embed

int main(int argc, char** argv) {
  CLI::App app{"Embed every detection box of MOTChallenge sequences (det/det.txt) with a reidnet "
               "ReID model; writes the det.txt rows followed by the features as .npy"};
  reidnet_embed::EmbedConfig c;
  const auto range = [](int64_t low, int64_t high) { return CLI::Range(low, high); };
  reidnet::examples::add_trained_run_flags(app, c.model_dir, c.model);
  app.add_option("--mot", c.mot, "a MOTChallenge sequence folder (img1/, det/det.txt)");
  app.add_option("--mot-root", c.mot_root, "a folder of sequences (each with det/det.txt): every "
                 "one is embedded to <out>/<sequence>.npy");
  app.add_option("--out", c.out, "the .npy file (--mot) or the folder (--mot-root)");
  app.add_option("--resize", c.resize, "crop resize: config (OpenCV INTER_LINEAR for bilinear "
                 "models such as torchreid's, PIL bicubic for the baseline's), pil (the data "
                 "pipeline's PIL filter) or opencv")
      ->check(CLI::IsMember({"config", "pil", "opencv"}));
  app.add_flag("!--no-normalize", c.normalize, "write the features without L2 normalisation");
  app.add_option("--batch-size,--batchsize", c.batch_size, "crops per forward pass")
      ->check(range(1, reidnet::kMaxBatchSize));
  app.add_option("--device", c.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", c.dtype, "fp32, bf16 or fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_flag("!--no-optimize", c.optimize, "the plain module instead of the inference fast path");
  app.add_option("--threads", c.threads, "CPU threads")->check(range(1, reidnet::kMaxThreads));
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  reidnet::set_cpu_threads(static_cast<int>(c.threads));
  return reidnet::examples::run_reporting_errors("reidnet-embed",
                                                 [&] { return reidnet_embed::run(app, c); });
}
