// reidnet-model-summary: builds the ReID model and prints its structure and size.
//
//   reidnet-model-summary --classes 751 --stride 1
#include "common/cli.hpp"

#include <reidnet/reidnet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

int main(int argc, char** argv) {
  CLI::App app{"Print the structure and parameter count of reidnet's FtNet"};
  int64_t classes = 751;
  int64_t stride = 2;
  int64_t linear_num = 512;
  app.add_option("--classes", classes, "number of identities")->check(CLI::PositiveNumber);
  app.add_option("--stride", stride, "stride of layer4 (1 or 2)")->check(CLI::IsMember({1, 2}));
  app.add_option("--linear-num", linear_num, "bottleneck width (0 = none)")
      ->check(CLI::NonNegativeNumber);
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;

  reidnet::FtNet net(reidnet::FtNetOptions(classes).stride(stride).linear_num(linear_num));
  net->eval();
  std::cout << *net << "\n";
  const auto state = reidnet::state_dict(*net);
  fmt::print("state_dict entries: {}\nparameters: {}\n", state.size(),
             reidnet::count_parameters(*net));
  torch::NoGradGuard no_grad;
  const auto feature = net->embed(torch::randn({1, 3, 256, 128}));
  fmt::print("feature for one 256x128 image: [{}, {}]\n", feature.size(0), feature.size(1));
  return 0;
}
