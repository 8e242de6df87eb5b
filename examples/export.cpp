// reidnet-export: writes a trained ReID model as an ONNX file, for ONNX Runtime, TensorRT,
// OpenVINO or OpenCV DNN. The graph takes `images` (N x 3 x H x W) and gives `features`, the
// embedding reidnet-test uses before the flip; its metadata says how to prepare the pixels.
//
//   reidnet-export --model-dir runs/toy --out toy.onnx
//   reidnet-export --model osnet_x1_0 --weights osnet_x1_0_market.pth --out osnet.onnx --dtype fp16
#include "common/cli.hpp"
#include "common/trained_run_flags.hpp"

#include <reidnet/core/files.hpp>
#include <reidnet/engine/evaluator.hpp>
#include <reidnet/export/onnx_export.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <string>

namespace {

struct ExportConfig {
  std::string model_dir, out, dtype = "fp32";
  reidnet::TrainedRunOptions model;
  int64_t opset = reidnet::kDefaultOnnxOpset;
  bool normalize_in_graph = false, fold_batch_norms = true;
};

int run_export(ExportConfig& c) {
  reidnet::check_output_folder(c.out, "--out");
  auto run = reidnet::describe_trained_run(c.model_dir, c.model);
  reidnet::load_trained_model(run);
  const auto options = reidnet::OnnxExportOptions()
                           .opset(c.opset)
                           .dtype(c.dtype == "fp16" ? torch::kFloat16 : torch::kFloat32)
                           .fold_batch_norms(c.fold_batch_norms)
                           .normalize_in_graph(c.normalize_in_graph)
                           .model_name(run.family);
  fmt::print("exporting {} ({}x{}, {} features) to {}\n", run.family, run.model->config().height(),
             run.model->config().width(), run.model->feature_dim(), c.out);
  const auto report = reidnet::export_onnx(*run.model, c.out, options);
  fmt::print("{}\n", report.summary());
  fmt::print("wrote {}: input images (N x 3 x {} x {}), output features (N x {})\n", c.out,
             run.model->config().height(), run.model->config().width(), run.model->feature_dim());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a trained reidnet ReID model as an ONNX file"};
  ExportConfig c;
  reidnet::examples::add_trained_run_flags(app, c.model_dir, c.model);
  app.add_option("--out", c.out, "the ONNX file to write")->required();
  app.add_option("--opset", c.opset, "ONNX opset (17 by default: Debian 12's ONNX checks it and "
                 "current runtimes run it; up to the newest this build's ONNX library knows)");
  app.add_option("--dtype", c.dtype, "fp32, or fp16 (weights and arithmetic in float16; the "
                 "input and output stay float32)")->check(CLI::IsMember({"fp32", "fp16"}));
  app.add_flag("--normalize-in-graph", c.normalize_in_graph, "the graph takes RGB levels 0..255 "
               "and normalises them itself with the model's mean and std");
  app.add_flag("!--no-fold", c.fold_batch_norms, "keep the BatchNorms that follow a conv as "
               "BatchNormalization nodes");
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  torch::set_num_threads(2);
  return reidnet::examples::run_reporting_errors("reidnet-export", [&] { return run_export(c); });
}
