// reidnet-model-summary: builds a ReID model and prints its state_dict (keys, shapes) and size.
//
//   reidnet-model-summary --list
//   reidnet-model-summary --model NAME --class-num 751
//   reidnet-model-summary --model NAME --pool gem --keys
#include "common/cli.hpp"

#include <reidnet/engine/run_config.hpp>
#include <reidnet/reidnet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <fmt/ranges.h>

int main(int argc, char** argv) {
  CLI::App app{"Print the structure, state_dict and parameter count of a reidnet ReID model"};
  std::string model = reidnet::RunConfig{}.model, pool = "avg";
  int64_t class_num = 751, last_stride = 2, linear_num = 512;
  bool list = false, keys = false;
  app.add_flag("--list", list, "list the model names and stop");
  app.add_option("--model", model, "model name (see --list)");
  app.add_option("--class-num", class_num, "number of identities")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  app.add_option("--stride", last_stride, "last stride (1 or 2)")->check(CLI::IsMember({1, 2}));
  app.add_option("--linear-num", linear_num, "bottleneck width (0 = none)")
      ->check(CLI::Range(int64_t{0}, int64_t{65536}));
  app.add_option("--pool", pool, "global pooling")
      ->check(CLI::IsMember({"avg", "max", "gem", "gem_fixed"}));
  app.add_flag("--keys", keys, "print every state_dict key with its shape");
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  if (list) {
    for (const auto& name : reidnet::model_names()) {
      fmt::print("{:<16} {}\n", name, reidnet::model_description(name));
    }
    return 0;
  }
  if (!reidnet::is_model_name(model)) {
    fmt::print(stderr, "reidnet-model-summary: --model {}: unknown; --list prints the names\n", model);
    return 2;
  }
  auto net = reidnet::create_model(model, reidnet::ModelArgs()
                                              .class_num(class_num)
                                              .last_stride(last_stride)
                                              .linear_num(linear_num)
                                              .pool(reidnet::pool_type_from_name(pool)));
  net->eval();
  const auto state = reidnet::state_dict(*net);
  if (keys) {
    for (const auto& item : state) {
      fmt::print("{} {}\n", item.key(), fmt::format("[{}]", fmt::join(item.value().sizes(), ", ")));
    }
  }
  const auto groups = net->parameter_groups();
  const auto count = [](const std::vector<torch::Tensor>& group) {
    int64_t total = 0;
    for (const auto& parameter : group) total += parameter.numel();
    return total;
  };
  const auto& config = net->config();
  fmt::print("model: {} ({})\nstate_dict entries: {}\nparameters: {} (backbone {}, new layers {})\n",
             model, reidnet::model_description(model), state.size(), reidnet::count_parameters(*net),
             count(groups.backbone), count(groups.head));
  torch::NoGradGuard no_grad;
  const auto feature = net->embed(torch::randn({1, 3, config.height(), config.width()}));
  fmt::print("input: {}x{}; embedding of one image: [{}, {}] in {} part(s)\n", config.height(),
             config.width(), feature.size(0), feature.size(1), net->embedding_parts());
  return 0;
}
