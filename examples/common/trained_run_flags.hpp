#pragma once
// The flags that name a trained model, as reidnet::describe_trained_run reads them: a run
// folder (--model-dir, with opts.yaml), or weights from another project (--model NAME
// --weights FILE), and the overrides of the run's description.
#include <reidnet/engine/evaluator.hpp>
#include <reidnet/engine/run_config.hpp>

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace reidnet::examples {

inline void add_trained_run_flags(CLI::App& app, std::string& model_dir, TrainedRunOptions& model) {
  const auto range = [](int64_t low, int64_t high) { return CLI::Range(low, high); };
  app.add_option("--model-dir", model_dir, "folder with opts.yaml and net_last.pth");
  app.add_option("--weights", model.weights(), "weights (default: <model-dir>/net_last.pth)")
      ->check(CLI::ExistingFile);
  app.add_option("--model", model.model(), "the model of --weights given without --model-dir "
                 "(reidnet-model-summary --list): torchreid's, fast-reid's or a bare state_dict "
                 "file; the class count is read from it");
  app.add_option("--class-num,--nclasses", model.class_num(), "override opts.yaml: training ids")
      ->check(range(1, kMaxClasses));
  app.add_option("--stride", model.last_stride(), "override opts.yaml: last stride")
      ->check(range(1, 2));
  app.add_option("--linear-num,--linear_num", model.linear_num(), "override opts.yaml: "
                 "bottleneck width")->check(range(0, kMaxLinearNum));
  app.add_option("--height", model.height(), "input height (default: opts.yaml)")
      ->check(range(1, kMaxImageSide));
  app.add_option("--width", model.width(), "input width (default: opts.yaml)")
      ->check(range(1, kMaxImageSide));
}

}  // namespace reidnet::examples
