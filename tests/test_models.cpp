// Parity of reidnet's models with torchvision and the Python baseline:
// state_dict keys, order and shapes; eval-mode outputs; init statistics; shapes.
#include "support.hpp"

#include <reidnet/reidnet.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <regex>
#include <thread>
#include <type_traits>
#include <utility>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_models {

using reidnet::test::copy_state;
using reidnet::test::fixture;
using reidnet::test::max_relative_difference;
using reidnet::test::scalar;

namespace {

constexpr double kForwardTolerance = 1e-4;  // max relative difference, fp32

nlohmann::json key_references() {
  std::ifstream file(fixture("models", "keys.json"));
  REQUIRE_MESSAGE(file.good(), "missing keys.json: run ctest so the Python fixture runs first");
  return nlohmann::json::parse(file);
}

// "<family>/<name>=<value>/..." -> value of `name`.
double option_of(const std::string& config, const std::string& name) {
  std::smatch match;
  const std::regex pattern("/" + name + "=([0-9.]+)");
  REQUIRE_MESSAGE(std::regex_search(config, match, pattern), config);
  return std::stod(match[1]);
}

std::shared_ptr<torch::nn::Module> build(const std::string& config) {
  using namespace reidnet;
  if (config.rfind("resnet", 0) == 0) {
    const auto options = ResNetOptions()
                             .class_num(static_cast<int64_t>(option_of(config, "num_classes")))
                             .last_stride(static_cast<int64_t>(option_of(config, "last_stride")));
    const int depth = std::stoi(config.substr(6, config.find('/') - 6));
    switch (depth) {
      case 18: return resnet18(options).ptr();
      case 34: return resnet34(options).ptr();
      case 50: return resnet50(options).ptr();
      case 101: return resnet101(options).ptr();
      case 152: return resnet152(options).ptr();
    }
  }
  if (config.rfind("ft_net", 0) == 0) {
    return FtNet(FtNetOptions(static_cast<int64_t>(option_of(config, "class_num")))
                     .stride(static_cast<int64_t>(option_of(config, "stride")))
                     .linear_num(static_cast<int64_t>(option_of(config, "linear_num")))
                     .droprate(option_of(config, "droprate")))
        .ptr();
  }
  if (config.rfind("class_block", 0) == 0) {
    return ClassBlock(ClassBlockOptions(2048, 751)
                          .relu(option_of(config, "relu") != 0)
                          .bnorm(option_of(config, "bnorm") != 0)
                          .linear_num(static_cast<int64_t>(option_of(config, "linear")))
                          .droprate(option_of(config, "droprate")))
        .ptr();
  }
  FAIL("unknown reference model " << config);
  return nullptr;
}

}  // namespace

TEST_CASE("state_dict keys, order, shapes and parameter counts equal Python's for every option") {
  const auto references = key_references();
  REQUIRE(references.size() >= 60);
  for (const auto& [config, reference] : references.items()) {
    CAPTURE(config);
    const auto module = build(config);
    const auto state = reidnet::state_dict(*module);
    const auto& keys = reference["keys"];
    REQUIRE(state.size() == keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      const auto& item = state[i];
      CHECK_MESSAGE(item.key() == keys[i][0].get<std::string>(), "entry ", i);
      CHECK(item.value().sizes().vec() == keys[i][1].get<std::vector<int64_t>>());
    }
    CHECK(reidnet::count_parameters(*module) == reference["parameters"].get<int64_t>());
  }
}

TEST_CASE("ft_net for 751 classes has 329 entries and 26,992,407 parameters, keeping model.fc") {
  reidnet::FtNet net(751);
  const auto state = reidnet::state_dict(*net);
  CHECK(state.size() == 329);
  CHECK(reidnet::count_parameters(*net) == 26992407);
  CHECK(state.contains("model.fc.weight"));
  CHECK(state[state.size() - 1].key() == "classifier.classifier.0.bias");
  CHECK(reidnet::state_dict(*reidnet::resnet50()).size() == 320);
  CHECK(reidnet::count_parameters(*reidnet::resnet50()) == 25557032);
}

TEST_CASE("eval-mode outputs equal torchvision's resnet18 and resnet50 within 1e-4 relative") {
  const auto tensors = reidnet::test::load_tensor_dict(fixture("models", "forward.pt"));
  const auto& input = tensors.at("input");
  torch::NoGradGuard no_grad;
  SUBCASE("resnet18 (BasicBlock)") {
    auto net = reidnet::resnet18();
    copy_state(*net, tensors, "resnet18/");
    net->eval();
    const double error = max_relative_difference(net(input), tensors.at("resnet18/output"));
    MESSAGE("resnet18 max relative difference: " << error);
    CHECK(error < kForwardTolerance);
  }
  SUBCASE("resnet50 (Bottleneck)") {
    auto net = reidnet::resnet50();
    copy_state(*net, tensors, "resnet50/");
    net->eval();
    const double error = max_relative_difference(net(input), tensors.at("resnet50/output"));
    MESSAGE("resnet50 max relative difference: " << error);
    CHECK(error < kForwardTolerance);
  }
}

TEST_CASE("FtNet eval outputs equal the Python ft_net for stride 1/2 and linear_num 0/512") {
  const auto tensors = reidnet::test::load_tensor_dict(fixture("models", "forward.pt"));
  const auto& input = tensors.at("input");
  torch::NoGradGuard no_grad;
  for (const int64_t linear : {512, 0}) {
    for (const int64_t stride : {2, 1}) {
      CAPTURE(linear);
      CAPTURE(stride);
      reidnet::FtNet net(reidnet::FtNetOptions(751).stride(stride).linear_num(linear));
      copy_state(*net->model, tensors, "resnet50/");
      copy_state(*net->classifier, tensors, "head" + std::to_string(linear) + "/");
      net->eval();
      const std::string tag =
          "ft_net_linear" + std::to_string(linear) + "_stride" + std::to_string(stride) + "/";
      const double logits = max_relative_difference(net->logits(input), tensors.at(tag + "logits"));
      const double embed = max_relative_difference(net->embed(input), tensors.at(tag + "embed"));
      const double features =
          max_relative_difference(net->pooled_features(input), tensors.at(tag + "features"));
      const double single = max_relative_difference(
          net->embed(tensors.at("input_single")), tensors.at(tag + "embed_single"));
      MESSAGE("max relative difference: logits " << logits << ", embed " << embed
                                                 << ", features " << features
                                                 << ", batch-1 embed " << single);
      CHECK(logits < kForwardTolerance);
      CHECK(embed < kForwardTolerance);
      CHECK(features < kForwardTolerance);
      CHECK(single < kForwardTolerance);
    }
  }
}

TEST_CASE("Kaiming head init: Linear std within 5% of sqrt(2/fan_out), BN1d ~ N(1, 0.02), zero biases") {
  torch::manual_seed(1);
  reidnet::ClassBlock head(reidnet::ClassBlockOptions(2048, 751));
  const auto& linear = head->add_block[0]->as<torch::nn::Linear>()->weight;
  const double expected_std = std::sqrt(2.0 / 512.0);  // fan_out = 512 outputs
  CHECK(linear.std().item<double>() == doctest::Approx(expected_std).epsilon(0.05));
  CHECK(std::abs(linear.mean().item<double>()) < 0.05 * expected_std);
  CHECK(head->add_block[0]->as<torch::nn::Linear>()->bias.abs().max().item<double>() == 0.0);
  auto* norm = head->add_block[1]->as<reidnet::BatchNorm1d>();
  CHECK(norm->weight.mean().item<double>() == doctest::Approx(1.0).epsilon(0.01));
  CHECK(norm->weight.std().item<double>() == doctest::Approx(0.02).epsilon(0.2));
  CHECK(norm->bias.abs().max().item<double>() == 0.0);

  SUBCASE("Kaiming fan_in for convs in any module tree") {
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(64, 128, 3));
    reidnet::apply_init(*conv, reidnet::KaimingHeadInit{});
    const double fan_in = 64 * 3 * 3;
    CHECK(conv->weight.std().item<double>() ==
          doctest::Approx(std::sqrt(2.0 / fan_in)).epsilon(0.05));
    CHECK(conv->bias.abs().max().item<double>() == 0.0);
  }
}

TEST_CASE("Classifier init: N(0, std) with std 0.001 by default and settable, zero bias") {
  torch::manual_seed(2);
  reidnet::ClassBlock head(reidnet::ClassBlockOptions(2048, 751));
  auto* classifier = head->classifier[0]->as<torch::nn::Linear>();
  CHECK(classifier->weight.std().item<double>() == doctest::Approx(0.001).epsilon(0.05));
  CHECK(classifier->bias.abs().max().item<double>() == 0.0);

  reidnet::FtNet net(reidnet::FtNetOptions(751).classifier_std(0.0001));
  auto* small = net->classifier->classifier[0]->as<torch::nn::Linear>();
  CHECK(small->weight.std().item<double>() == doctest::Approx(0.0001).epsilon(0.05));

  reidnet::BasicClassBlock<reidnet::KaimingHeadInit, reidnet::NoInit> untouched(
      reidnet::ClassBlockOptions(2048, 751));
  // LibTorch's default Linear init is uniform(+-1/sqrt(512)), far wider than 0.001.
  CHECK(untouched->classifier[0]->as<torch::nn::Linear>()->weight.std().item<double>() > 0.01);
}

TEST_CASE_TEMPLATE("torchvision init: conv Kaiming fan_out, BN 1/0, zero_init_residual zeroes "
                   "the last BN of every block", Block, reidnet::BasicBlock, reidnet::Bottleneck) {
  torch::manual_seed(3);
  reidnet::ResNet<Block> net(reidnet::ResNetOptions().zero_init_residual(true));
  const auto& conv1 = net->conv1->weight;
  const double fan_out = 64 * 7 * 7;
  CHECK(scalar(conv1.std()) == doctest::Approx(std::sqrt(2.0 / fan_out)).epsilon(0.05));
  CHECK(scalar(net->bn1->weight.min()) == 1.0);
  CHECK(scalar(net->bn1->bias.abs().max()) == 0.0);
  for (size_t stage = 1; stage <= 4; ++stage) {
    auto& layer = net->layer(stage);
    for (size_t i = 0; i < layer->size(); ++i) {
      auto& block = layer->template at<typename Block::Impl>(i);
      CHECK(scalar(block.last_norm()->weight.abs().max()) == 0.0);
    }
  }
}

TEST_CASE("NoInitGuard leaves LibTorch's initialisation in place while one lives on the thread") {
  torch::NoGradGuard no_grad;
  auto weight = torch::full({64, 64}, 3.0);
  torch::nn::Linear linear(64, 64);
  const auto made = linear->weight.detach().clone();
  {
    reidnet::NoInitGuard outer;
    { reidnet::NoInitGuard inner; }  // nested guards: the outer one still holds
    CHECK(reidnet::NoInitGuard::active());
    reidnet::truncated_normal_(weight, 0.02);
    reidnet::apply_init(*linear, reidnet::TruncatedNormalInit{0.02});
    CHECK(torch::equal(weight, torch::full({64, 64}, 3.0)));
    CHECK(torch::equal(linear->weight, made));
  }
  CHECK_FALSE(reidnet::NoInitGuard::active());
  reidnet::truncated_normal_(weight, 0.02);
  reidnet::apply_init(*linear, reidnet::TruncatedNormalInit{0.02});
  CHECK(weight.abs().max().item<double>() <= 2.0);
  CHECK(weight.std().item<double>() == doctest::Approx(0.02).epsilon(0.1));
  CHECK_FALSE(torch::equal(linear->weight, made));
  // Another thread's guard is its own.
  std::thread([] { reidnet::NoInitGuard elsewhere; }).join();
  bool seen_elsewhere = true;
  {
    reidnet::NoInitGuard here;
    std::thread([&] { seen_elsewhere = reidnet::NoInitGuard::active(); }).join();
  }
  CHECK_FALSE(seen_elsewhere);
}

TEST_CASE("shapes: batch 1, 16x8 layer4 with stride 1, return_f, train versus eval") {
  torch::NoGradGuard no_grad;
  const auto image = torch::randn({1, 3, 256, 128});
  SUBCASE("stride 1 doubles the final map") {
    reidnet::FtNet net(reidnet::FtNetOptions(751).stride(1));
    net->eval();
    CHECK(net->model->forward_features(image).sizes() == torch::IntArrayRef({1, 2048, 16, 8}));
    reidnet::FtNet strided(reidnet::FtNetOptions(751).stride(2));
    strided->eval();
    CHECK(strided->model->forward_features(image).sizes() == torch::IntArrayRef({1, 2048, 8, 4}));
  }
  SUBCASE("batch 1 works for every output") {
    reidnet::FtNet net(751);
    net->eval();
    CHECK(net->logits(image).sizes() == torch::IntArrayRef({1, 751}));
    CHECK(net->embed(image).sizes() == torch::IntArrayRef({1, 512}));
    CHECK(net->pooled_features(image).sizes() == torch::IntArrayRef({1, 2048}));
    CHECK(net->forward_features(image).sizes() == torch::IntArrayRef({1, 2048, 8, 4}));
    CHECK(net->feature_dim() == 512);
  }
  SUBCASE("return_f gives the logits and the feature together") {
    reidnet::FtNet net(reidnet::FtNetOptions(10).return_f(true).linear_num(0));
    net->eval();
    const auto both = net->forward_with_feature(image);
    CHECK(both.logits.sizes() == torch::IntArrayRef({1, 10}));
    CHECK(both.feature.sizes() == torch::IntArrayRef({1, 2048}));
    const auto outputs = net->forward_outputs(image);
    REQUIRE(outputs.size() == 2);
    CHECK(torch::equal(outputs[0], both.logits));
    reidnet::FtNet plain(reidnet::FtNetOptions(10));
    plain->eval();
    CHECK(plain->forward_outputs(image).size() == 1);
  }
  SUBCASE("train mode uses batch statistics and dropout; eval is deterministic") {
    reidnet::ClassBlock head(reidnet::ClassBlockOptions(64, 5).linear_num(32));
    const auto x = torch::randn({8, 64});
    head->eval();
    CHECK(torch::equal(head->embed(x), head->embed(x)));
    head->train();
    const auto train_feature = head->embed(x);
    // Dropout zeroes about half of the entries in training mode only.
    const double zeros = (train_feature == 0).to(torch::kDouble).mean().item<double>();
    CHECK(zeros > 0.3);
    CHECK(zeros < 0.7);
  }
}

TEST_CASE("models run with other dtypes and clone deeply") {
  torch::NoGradGuard no_grad;
  reidnet::FtNet net(reidnet::FtNetOptions(10).linear_num(32));
  net->eval();
  const auto image = torch::randn({2, 3, 64, 32});
  const auto reference = net->embed(image);
  net->to(torch::kDouble);
  const auto as_double = net->embed(image.to(torch::kDouble));
  CHECK(as_double.dtype() == torch::kDouble);
  CHECK(max_relative_difference(as_double.to(torch::kFloat), reference) < 1e-4);

  auto copy = std::dynamic_pointer_cast<reidnet::FtNetImpl>(net->clone());
  REQUIRE(copy);
  copy->classifier->classifier[0]->as<torch::nn::Linear>()->bias.fill_(1.0);
  CHECK(net->classifier->classifier[0]->as<torch::nn::Linear>()->bias.abs().max().item<double>() == 0.0);
  CHECK(reidnet::state_dict(*copy).size() == reidnet::state_dict(*net).size());
}

namespace {

/// Random affine terms, the same in both modules.
template <class Mine, class Theirs>
void same_random_affine(Mine& mine, Theirs& theirs) {
  torch::NoGradGuard no_grad;
  mine->weight.uniform_(0.5, 1.5);
  mine->bias.uniform_(-0.5, 0.5);
  theirs->weight.copy_(mine->weight);
  theirs->bias.copy_(mine->bias);
}

}  // namespace

TEST_CASE_TEMPLATE("reidnet's BatchNorm equals torch::nn's bit for bit, in training and eval", Pair,
                   std::pair<reidnet::BatchNorm1d, torch::nn::BatchNorm1d>,
                   std::pair<reidnet::BatchNorm2d, torch::nn::BatchNorm2d>) {
  torch::manual_seed(3);
  constexpr bool is_2d = std::is_same_v<typename Pair::first_type, reidnet::BatchNorm2d>;
  const auto input = (is_2d ? torch::randn({6, 5, 4, 3}) : torch::randn({6, 5})) * 3 + 2;
  typename Pair::first_type mine(5);
  typename Pair::second_type theirs(5);
  same_random_affine(mine, theirs);
  for (const bool training : {true, true, false}) {
    CAPTURE(training);
    mine->train(training);
    theirs->train(training);
    CHECK(torch::equal(mine(input), theirs(input)));
    CHECK(torch::equal(mine->running_mean, theirs->running_mean));
    CHECK(torch::equal(mine->running_var, theirs->running_var));
    CHECK(torch::equal(mine->num_batches_tracked, theirs->num_batches_tracked));
  }
  CHECK_THROWS_WITH_AS(mine(torch::randn({2, 5, 3, 3, 3})), doctest::Contains("BatchNorm"), c10::Error);
}

TEST_CASE("shared BatchNorm statistics over one process equal the batch's own within 1e-5") {
  // The shared path's own arithmetic (float64 moments, autograd through them) against
  // at::batch_norm: output, every gradient and the running statistics.
  torch::manual_seed(4);
  const auto input = torch::randn({6, 5, 4, 3}) * 3 + 2;
  const auto upstream = torch::randn({6, 5, 4, 3});
  reidnet::BatchNorm2d shared(5), plain(5);
  same_random_affine(shared, plain);
  shared->share_statistics([](torch::Tensor&) {});  // one process: the sum is the term itself
  CHECK(shared->shares_statistics());
  auto shared_input = input.clone().requires_grad_(true);
  auto plain_input = input.clone().requires_grad_(true);
  for (int step = 0; step < 2; ++step) {
    const auto shared_output = shared(shared_input);
    const auto plain_output = plain(plain_input);
    CHECK(max_relative_difference(shared_output, plain_output) < 1e-5);
    (shared_output * upstream).sum().backward();
    (plain_output * upstream).sum().backward();
  }
  CHECK(max_relative_difference(shared_input.grad(), plain_input.grad()) < 1e-5);
  CHECK(max_relative_difference(shared->weight.grad(), plain->weight.grad()) < 1e-5);
  CHECK(max_relative_difference(shared->bias.grad(), plain->bias.grad()) < 1e-5);
  CHECK(max_relative_difference(shared->running_mean, plain->running_mean) < 1e-5);
  CHECK(max_relative_difference(shared->running_var, plain->running_var) < 1e-5);
  CHECK(torch::equal(shared->num_batches_tracked, plain->num_batches_tracked));
  // A batch of one value per channel cannot be normalised in training.
  CHECK_THROWS_WITH_AS(shared(torch::randn({1, 5, 1, 1})), doctest::Contains("more than one value"),
                       c10::Error);
}

TEST_CASE("bad options are refused with a message naming the option") {
  CHECK_THROWS_WITH_AS(reidnet::ClassBlock(reidnet::ClassBlockOptions(2048, 751).linear_num(-1)),
                       doctest::Contains("linear"), c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::ClassBlock(reidnet::ClassBlockOptions(2048, 751).droprate(1.5)),
                       doctest::Contains("droprate"), c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::FtNet(reidnet::FtNetOptions(751).stride(3)),
                       doctest::Contains("last_stride"), c10::Error);
}

}  // namespace reidnet_test_models
