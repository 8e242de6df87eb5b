// The training recipe's library pieces against Debian's torch: losses, warm-up, parameter
// groups and learning-rate schedules.
#include "support.hpp"

#include <reidnet/reidnet.hpp>

#include <limits>
#include <sstream>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_training {

using reidnet::test::fixture;
using reidnet::test::scalar;

namespace {
const std::map<std::string, torch::Tensor>& reference() {
  static const auto tensors = reidnet::test::load_tensor_dict(fixture("training", "reference.pt"));
  return tensors;
}
}  // namespace

TEST_CASE("cross-entropy with and without label smoothing equals torch.nn.functional's") {
  const auto& r = reference();
  torch::nn::CrossEntropyLoss plain;
  torch::nn::CrossEntropyLoss smooth(torch::nn::CrossEntropyLossOptions().label_smoothing(0.1));
  CHECK(scalar(plain(r.at("logits"), r.at("targets"))) ==
        doctest::Approx(scalar(r.at("ce"))).epsilon(1e-12));
  CHECK(scalar(smooth(r.at("logits"), r.at("targets"))) ==
        doctest::Approx(scalar(r.at("ce_smooth"))).epsilon(1e-12));
}

TEST_CASE("batch-hard triplet and circle losses equal the Python reference within 1e-9") {
  const auto& r = reference();
  reidnet::TripletLoss triplet;
  reidnet::CircleLoss circle;
  const double triplet_value = scalar(triplet(r.at("features"), r.at("labels")));
  const double circle_value = scalar(circle(r.at("features"), r.at("labels")));
  MESSAGE("triplet " << triplet_value << ", circle " << circle_value);
  CHECK(triplet_value > 0);
  CHECK(triplet_value == doctest::Approx(scalar(r.at("triplet"))).epsilon(1e-9));
  CHECK(circle_value == doctest::Approx(scalar(r.at("circle"))).epsilon(1e-9));

  SUBCASE("losses are differentiable and refuse mismatched shapes") {
    auto features = r.at("features").clone().requires_grad_(true);
    (triplet(features, r.at("labels")) + circle(features, r.at("labels"))).backward();
    CHECK(features.grad().defined());
    CHECK(torch::isfinite(features.grad()).all().item<bool>());
    CHECK_THROWS_WITH_AS(triplet(r.at("features"), r.at("labels").narrow(0, 0, 3)),
                         doctest::Contains("one label per feature row"), c10::Error);
  }
  SUBCASE("a batch without positive pairs gives a zero triplet loss") {
    CHECK(scalar(triplet(r.at("features").narrow(0, 0, 3), torch::arange(3))) == 0.0);
  }
}

TEST_CASE("the warm-up factor sequence equals the baseline's loop") {
  const auto expected = reference().at("warmup");
  const auto warmup = reidnet::LossWarmup::for_data(/*warm_epochs=*/5, /*train_images=*/100,
                                                    /*batch_size=*/8);
  const int64_t per_epoch = 100 / 8;
  for (int64_t i = 0; i < expected.size(0); ++i) {
    CAPTURE(i);
    CHECK(warmup.factor(i / per_epoch, i) ==
          doctest::Approx(expected[i].item<double>()).epsilon(1e-12));
  }
  CHECK(reidnet::LossWarmup{}.factor(0, 0) == 1.0);  // warm_epochs 0: no warm-up
}

TEST_CASE("SGD groups: backbone (with the unused model.fc) at ratio x lr, head at lr") {
  reidnet::FtNet net(reidnet::FtNetOptions(10).linear_num(32));
  const auto groups = net->parameter_groups();
  CHECK(groups.head.size() == 6);  // Linear w/b, BN1d w/b, classifier Linear w/b
  CHECK(groups.backbone.size() == net->model->parameters().size());
  CHECK(groups.backbone.back().is_same(net->model->fc->bias));

  auto sgd = reidnet::make_sgd(*net, reidnet::SgdRecipe().lr(0.05).backbone_lr_ratio(0.1));
  const auto rates = reidnet::learning_rates(*sgd);
  REQUIRE(rates.size() == 2);
  CHECK(rates[0] == doctest::Approx(0.005));
  CHECK(rates[1] == doctest::Approx(0.05));
  const auto& head_options =
      static_cast<const torch::optim::SGDOptions&>(sgd->param_groups()[1].options());
  CHECK(head_options.nesterov());
  CHECK(head_options.momentum() == doctest::Approx(0.9));
  CHECK(head_options.weight_decay() == doctest::Approx(5e-4));
  CHECK_THROWS_WITH_AS(reidnet::make_sgd(reidnet::ParameterGroups{groups.backbone, {}}),
                       doctest::Contains("head group"), c10::Error);
}

TEST_CASE("Parameter groups follow the model's parts, not key prefixes: PCB's six classifiers, "
          "USAM inside the backbone, fast-reid's heads") {
  const auto count = [](const std::vector<torch::Tensor>& group) {
    int64_t total = 0;
    for (const auto& p : group) total += p.numel();
    return total;
  };
  auto args = reidnet::ModelArgs().class_num(10);
  auto pcb = reidnet::create_model("pcb", args);
  const auto pcb_groups = pcb->parameter_groups();
  CHECK(pcb_groups.head.size() == 6 * 6);  // per stripe: Linear w/b, BN1d w/b, classifier w/b
  CHECK(count(pcb_groups.backbone) == reidnet::count_parameters(*pcb->backbone().module()));
  auto usam = reidnet::create_model("ft_net_usam", args);
  const auto usam_groups = usam->parameter_groups();
  CHECK(usam_groups.head.size() == 6);
  CHECK(count(usam_groups.backbone) + count(usam_groups.head) == reidnet::count_parameters(*usam));
  auto bnneck = reidnet::create_model("bnneck", args.pool(reidnet::PoolType::kGem));
  const auto bnneck_groups = bnneck->parameter_groups();
  CHECK(bnneck_groups.head.size() == 4);  // weight, pool_layer.p, bottleneck.0 weight/bias
}

TEST_CASE("StepLR at 2/3 of the epochs and cosine equal PyTorch's schedulers per epoch") {
  const std::vector<double> base{0.005, 0.05};
  const auto step = reidnet::StepSchedule::for_epochs(60);
  const reidnet::CosineSchedule cosine{60, 0.01 * 0.05};
  const auto& step_expected = reference().at("step_rates");
  const auto& cosine_expected = reference().at("cosine_rates");
  for (int64_t epoch = 0; epoch < 60; ++epoch) {
    CAPTURE(epoch);
    const auto step_rates = step.rates(base, epoch);
    const auto cosine_rates = cosine.rates(base, epoch);
    for (int64_t group = 0; group < 2; ++group) {
      CHECK(step_rates[group] ==
            doctest::Approx(step_expected[epoch][group].item<double>()).epsilon(1e-12));
      CHECK(cosine_rates[group] ==
            doctest::Approx(cosine_expected[epoch][group].item<double>()).epsilon(1e-9));
    }
  }
}

namespace {
/// `schedule`'s rates of two groups at steps 0..steps-1 against PyTorch's, row by row.
template <class Schedule>
void check_rates(const Schedule& schedule, const torch::Tensor& expected, int64_t steps) {
  const std::vector<double> base{0.005, 0.05};
  for (int64_t step = 0; step < steps; ++step) {
    CAPTURE(step);
    const auto rates = schedule.rates(base, step);
    for (int64_t group = 0; group < 2; ++group) {
      CHECK(rates[group] == doctest::Approx(expected[step][group].item<double>()).epsilon(1e-12));
    }
  }
}
}  // namespace

TEST_CASE("the strong baseline's schedule: MultiStepLR per epoch and a linear warm-up per "
          "iteration equal PyTorch's MultiStepLR and LinearLR") {
  check_rates(reidnet::MultiStepSchedule{{40, 70}, 0.1}, reference().at("multistep_rates"), 120);
  const reidnet::LinearWarmup warmup{25, 0.1};
  check_rates(warmup, reference().at("linear_warmup_rates"), 40);
  CHECK(warmup.factor(0) == 0.1);
  CHECK(warmup.factor(25) == 1.0);
}

namespace {
/// GradScaler's steps on `device`: unscaled before the step, grown after growth_interval finite
/// steps, and a step with inf gradients skipped and the scale backed off.
void check_grad_scaler_steps(torch::Device device) {
  CAPTURE(device);
  auto weight = torch::ones({3}, torch::TensorOptions(device)).requires_grad_();
  torch::optim::SGD sgd({weight}, torch::optim::SGDOptions(0.1));
  reidnet::GradScaler scaler(reidnet::GradScalerOptions().init_scale(1024).growth_interval(2));
  auto finite_step = [&] {
    sgd.zero_grad();
    scaler.scale((weight * 2).sum()).backward();
    CHECK(weight.grad().cpu().eq(2048).all().item<bool>());  // d(2w)/dw, scaled
    const bool stepped = scaler.step(sgd);
    CHECK(weight.grad().cpu().eq(2).all().item<bool>());     // unscaled before the step
    scaler.update();
    return stepped;
  };
  CHECK(finite_step());
  CHECK(torch::allclose(weight.detach().cpu(), torch::full({3}, 0.8)));
  CHECK(scaler.current_scale() == 1024);
  CHECK(finite_step());
  CHECK(scaler.current_scale() == 2048);  // grows after growth_interval finite steps

  sgd.zero_grad();
  const auto infinite = torch::tensor({1.0f, std::numeric_limits<float>::infinity(), 1.0f},
                                      torch::TensorOptions(device));
  scaler.scale((weight * infinite).sum()).backward();
  const auto before = weight.detach().clone();
  CHECK_FALSE(scaler.step(sgd));
  CHECK(scaler.found_inf());
  CHECK(torch::equal(weight.detach(), before));  // the step was skipped
  scaler.update();
  CHECK(scaler.current_scale() == 1024);  // backed off
  CHECK(scaler.state().growth_tracker == 0);
}
}  // namespace

TEST_CASE("GradScaler unscales gradients, skips a step with inf gradients and adapts the scale") {
  check_grad_scaler_steps(torch::kCPU);

  SUBCASE("disabled, it passes the loss and the step through") {
    auto weight = torch::ones({2}).requires_grad_();
    torch::optim::SGD sgd({weight}, torch::optim::SGDOptions(0.5));
    reidnet::GradScaler scaler(reidnet::GradScalerOptions().enabled(false));
    const auto loss = weight.sum();
    CHECK(scaler.scale(loss).item<double>() == 2);
    loss.backward();
    CHECK(scaler.step(sgd));
    CHECK(torch::allclose(weight.detach(), torch::full({2}, 0.5)));
  }
  SUBCASE("bad options and states are refused") {
    CHECK_THROWS_WITH_AS(reidnet::GradScaler(reidnet::GradScalerOptions().backoff_factor(2)),
                         doctest::Contains("backoff_factor"), c10::Error);
    reidnet::GradScaler scaler;
    CHECK_THROWS_WITH_AS(scaler.load_state({-1.0, 0}), doctest::Contains("scale must be > 0"),
                         c10::Error);
  }
}

TEST_CASE("on CUDA GradScaler's fused unscale kernel takes the same steps" *
          reidnet::test::cuda_suite() * reidnet::test::skip_without_cuda()) {
  check_grad_scaler_steps(torch::kCUDA);
}

TEST_CASE("make_sgd's multi-tensor SGD takes exactly torch::optim::SGD's steps, and resumes") {
  auto make_parameters = [] {
    torch::manual_seed(5);
    return std::vector<torch::Tensor>{torch::randn({4, 3}).requires_grad_(),
                                      torch::randn({3}).requires_grad_()};
  };
  const auto options = torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(5e-4);
  auto plain_parameters = make_parameters();
  auto foreach_parameters = make_parameters();
  torch::optim::SGD plain(plain_parameters, options);
  reidnet::ForeachSGD foreach_sgd(foreach_parameters, options);
  auto take_step = [](torch::optim::Optimizer& optimizer, std::vector<torch::Tensor>& parameters,
                      int step) {
    optimizer.zero_grad();
    ((parameters[0] * (step + 1)).pow(2).sum() + parameters[1].sin().sum()).backward();
    optimizer.step();
  };
  for (int step = 0; step < 4; ++step) {
    take_step(plain, plain_parameters, step);
    take_step(foreach_sgd, foreach_parameters, step);
    for (size_t i = 0; i < plain_parameters.size(); ++i) {
      CHECK(torch::equal(plain_parameters[i], foreach_parameters[i]));
    }
  }
  // Its state is torch::optim::SGD's: a plain SGD continues from it as if it had run all along.
  std::ostringstream saved;
  torch::serialize::OutputArchive archive;
  foreach_sgd.save(archive);
  archive.save_to(saved);
  std::istringstream input(saved.str());
  torch::serialize::InputArchive loaded;
  loaded.load_from(input);
  auto resumed_parameters = foreach_parameters;
  torch::optim::SGD resumed(resumed_parameters, options);
  resumed.load(loaded);
  take_step(plain, plain_parameters, 4);
  take_step(resumed, resumed_parameters, 4);
  CHECK(torch::equal(plain_parameters[0], resumed_parameters[0]));
}

TEST_CASE("reuse_freed_host_memory applies on glibc, and large tensors still come and go") {
#if defined(__GLIBC__)
  CHECK(reidnet::reuse_freed_host_memory());
#else
  CHECK_FALSE(reidnet::reuse_freed_host_memory());
#endif
  for (int round = 0; round < 3; ++round) {  // over glibc's 32 MiB mmap limit, freed each round
    auto big = torch::full({48 << 20}, static_cast<float>(round), torch::kUInt8);
    CHECK(big.sum().item<int64_t>() == static_cast<int64_t>(round) * (48 << 20));
  }
}

namespace {
/// reidnet::Adam over the reference's two weights (backbone at a tenth of the lr), as
/// training_reference.py's adam_steps builds torch.optim's.
struct AdamRun {
  std::vector<torch::Tensor> weights;
  std::unique_ptr<reidnet::Adam> adam;

  explicit AdamRun(const std::string& kind) {
    const auto& r = reference();
    for (int i = 0; i < 2; ++i) {
      weights.push_back(r.at(kind + "_start_" + std::to_string(i)).clone().requires_grad_());
    }
    const auto recipe = reidnet::AdamRecipe().lr(0.01).backbone_lr_ratio(0.1).weight_decay(5e-4)
                            .decoupled_weight_decay(kind == "adamw");
    adam = reidnet::make_adam(reidnet::ParameterGroups{{weights[0]}, {weights[1]}}, recipe);
    if (kind == "amsgrad") {
      for (auto& group : adam->param_groups()) {
        static_cast<torch::optim::AdamOptions&>(group.options()).amsgrad(true);
      }
    }
  }

  /// The reference's gradients of step `step`, then the step.
  void step(const std::string& kind, int step) {
    for (int i = 0; i < 2; ++i) {
      weights[i].mutable_grad() = reference().at(kind + "_grad_" + std::to_string(step) + "_" + std::to_string(i)).clone();
    }
    adam->step();
  }
};
}  // namespace

TEST_CASE("Adam, AdamW and AMSGrad take torch.optim's three steps bit for bit; their state files "
          "load both ways, and a resumed run equals an uninterrupted one") {
  for (const std::string kind : {"adam", "adamw", "amsgrad"}) {
    CAPTURE(kind);
    AdamRun run(kind);
    for (int step = 0; step < 3; ++step) {
      run.step(kind, step);
      for (int i = 0; i < 2; ++i) {
        CAPTURE(step);
        CAPTURE(i);
        const auto& expected = reference().at(kind + "_after_" + std::to_string(step) + "_" + std::to_string(i));
        CHECK(torch::equal(run.weights[i].detach(), expected));
      }
    }
    // reidnet's file into Python, and Python's file into reidnet.
    const auto ours = fixture("training", kind + "_reidnet_state.pt");
    reidnet::save_optimizer_state(*run.adam, ours);
    CHECK(reidnet::test::run_python("optimizer_check.py",
                                    kind + " " + ours + " " + fixture("training", "")) == 0);
    AdamRun loaded(kind);
    reidnet::load_optimizer_state(*loaded.adam, fixture("training", kind + "_state.pt"));
    for (int i = 0; i < 2; ++i) {
      const auto* mine = reidnet::detail::parameter_state<torch::optim::AdamParamState>(*run.adam, run.weights[i]);
      const auto* theirs =
          reidnet::detail::parameter_state<torch::optim::AdamParamState>(*loaded.adam, loaded.weights[i]);
      REQUIRE(mine != nullptr);
      REQUIRE(theirs != nullptr);
      CHECK(theirs->step() == 3);
      CHECK(torch::equal(theirs->exp_avg(), mine->exp_avg()));
      CHECK(torch::equal(theirs->exp_avg_sq(), mine->exp_avg_sq()));
      CHECK(theirs->max_exp_avg_sq().defined() == (kind == "amsgrad"));
    }
    CHECK(reidnet::learning_rates(*loaded.adam) == reidnet::learning_rates(*run.adam));

    // Resume: two steps, the state through a file into a new optimizer, the third step.
    AdamRun first(kind);
    first.step(kind, 0);
    first.step(kind, 1);
    const auto halfway = fixture("training", kind + "_halfway.pt");
    reidnet::save_optimizer_state(*first.adam, halfway);
    AdamRun resumed(kind);
    for (int i = 0; i < 2; ++i) {
      torch::NoGradGuard no_grad;
      resumed.weights[i].copy_(first.weights[i]);
    }
    reidnet::load_optimizer_state(*resumed.adam, halfway);
    resumed.step(kind, 2);
    for (int i = 0; i < 2; ++i) CHECK(torch::equal(resumed.weights[i].detach(), run.weights[i].detach()));
  }
}

TEST_CASE("a bad Adam state file is refused by name and leaves the optimizer unchanged") {
  AdamRun run("adam");
  run.step("adam", 0);
  const auto before = run.adam->state().size();
  // An SGD file has no 'betas'; an AMSGrad file turns amsgrad on with its maxima.
  const auto sgd_file = fixture("training", "adam_refused_sgd.pt");
  {
    auto weight = torch::zeros({4, 3}, torch::requires_grad());
    auto other = torch::zeros({5}, torch::requires_grad());
    auto sgd = reidnet::make_sgd(reidnet::ParameterGroups{{weight}, {other}});
    reidnet::save_optimizer_state(*sgd, sgd_file);
  }
  auto message_of = [&](const std::string& path) {
    try {
      reidnet::load_optimizer_state(*run.adam, path);
    } catch (const std::exception& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  const auto sgd_message = message_of(sgd_file);
  CHECK(sgd_message.find(sgd_file) != std::string::npos);
  CHECK(sgd_message.find("param_groups[0] has no 'betas'") != std::string::npos);
  AdamRun amsgrad("amsgrad");
  amsgrad.step("amsgrad", 0);
  const auto amsgrad_file = fixture("training", "amsgrad_one_step.pt");
  reidnet::save_optimizer_state(*amsgrad.adam, amsgrad_file);
  AdamRun plain("adam");
  reidnet::load_optimizer_state(*plain.adam, amsgrad_file);  // amsgrad comes with the file
  CHECK(static_cast<const torch::optim::AdamOptions&>(plain.adam->param_groups()[0].options()).amsgrad());
  CHECK(message_of(fixture("training", "reference.pt")).find("no 'param_groups'") != std::string::npos);
  CHECK(run.adam->state().size() == before);
}

}  // namespace reidnet_test_training
